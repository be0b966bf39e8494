//! What `onnxopt inspect` reports: interface, node counts, op histogram, parameters by dtype,
//! external-data files and an estimated multiply-accumulate count.
//!
//! MACs are counted for Conv, ConvTranspose, Gemm and MatMul in the main graph, using shapes that
//! tract's shape inference derives from the declared input shapes. A node whose shapes stay unknown
//! (symbolic dims, an op tract does not know) is left out and counted in `macs_unknown_nodes`.

use crate::export;
use crate::ir::{Const, Dim, Graph, Model, NodeKind, Tensor, TypeKind};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Serialize, Debug, Default, Clone, PartialEq)]
pub struct DtypeCount {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct ValueSummary {
    pub name: String,
    pub dtype: String,
    /// Integers for fixed dims, strings for symbolic ones, null for unknown; null shape = unknown rank.
    pub shape: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Params {
    /// Elements in initializers and `Constant` nodes (subgraphs included).
    pub count: u64,
    pub bytes: u64,
    pub tensors: u64,
    pub by_dtype: BTreeMap<String, DtypeCount>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Stats {
    pub producer: String,
    pub producer_version: String,
    pub ir_version: i64,
    /// Domain (`ai.onnx` for the default one) → version.
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    /// Operator nodes in the main graph.
    pub nodes: usize,
    /// Operator nodes including every nested subgraph.
    pub nodes_total: usize,
    /// Op type (prefixed by its domain outside `ai.onnx`) → count, subgraphs included.
    pub ops: BTreeMap<String, usize>,
    pub params: Params,
    pub functions: usize,
    pub external_data: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub macs: Option<u64>,
    pub macs_unknown_nodes: usize,
    pub macs_note: String,
}

fn summarize(name: &str, ty: Option<&crate::ir::Type>) -> ValueSummary {
    let (dtype, shape) = match ty.map(|t| &t.kind) {
        Some(TypeKind::Tensor { elem, shape }) => (
            elem.to_string(),
            shape.as_ref().map(|dims| {
                dims.iter()
                    .map(|d| match &d.dim {
                        Dim::Fixed(v) => serde_json::Value::from(*v),
                        Dim::Symbol(s) => serde_json::Value::from(s.clone()),
                        Dim::Unknown => serde_json::Value::Null,
                    })
                    .collect()
            }),
        ),
        Some(_) => (ty.unwrap().to_string(), None),
        None => ("?".into(), None),
    };
    ValueSummary {
        name: name.to_string(),
        dtype,
        shape,
    }
}

fn count_tensor(p: &mut Params, t: &Tensor) {
    let n = t.element_count().unwrap_or(0) as u64;
    let b = t.byte_size() as u64;
    p.count += n;
    p.bytes += b;
    p.tensors += 1;
    let e = p.by_dtype.entry(t.dtype.to_string()).or_default();
    e.count += n;
    e.bytes += b;
}

fn walk(g: &Graph, ops: &mut BTreeMap<String, usize>, params: &mut Params, ext: &mut bool) {
    for (_, n) in g.nodes() {
        match &n.kind {
            NodeKind::Initializer(Const::Dense(t)) | NodeKind::Input { default: Some(t) } => {
                *ext |= t.placement == crate::ir::Placement::External;
                count_tensor(params, t);
            }
            NodeKind::Initializer(Const::Sparse(s)) => count_tensor(params, &s.values),
            NodeKind::Op(op) => {
                let key = if op.is_default_domain() {
                    op.op_type.clone()
                } else {
                    format!("{}::{}", op.domain, op.op_type)
                };
                *ops.entry(key).or_default() += 1;
                if op.op_type == "Constant" {
                    if let Some(crate::ir::AttrValue::Tensor(t)) =
                        op.attr("value").map(|a| &a.value)
                    {
                        count_tensor(params, t);
                    }
                }
                for sub in n.subgraphs() {
                    walk(sub, ops, params, ext);
                }
            }
            _ => {}
        }
    }
}

/// Parameter element count (initializers and Constant nodes, subgraphs included).
pub fn stats_params(model: &Model) -> u64 {
    let mut ops = BTreeMap::new();
    let mut params = Params::default();
    let mut ext = false;
    walk(&model.graph, &mut ops, &mut params, &mut ext);
    params.count
}

/// Collects the statistics. `external_files` are the data files the model was read with.
pub fn stats(model: &Model, external_files: Vec<String>) -> Stats {
    let g = &model.graph;
    let mut ops = BTreeMap::new();
    let mut params = Params::default();
    let mut any_ext = false;
    walk(g, &mut ops, &mut params, &mut any_ext);
    let (macs, unknown, note) = match estimate_macs(model) {
        Ok((m, u)) => (
            if m == 0 && u > 0 { None } else { Some(m) },
            u,
            if u == 0 {
                "Conv, ConvTranspose, Gemm and MatMul in the main graph".to_string()
            } else {
                format!("{u} node(s) with unknown shapes left out")
            },
        ),
        Err(e) => (None, 0, format!("shapes unavailable: {e}")),
    };
    Stats {
        producer: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        ir_version: model.ir_version,
        opsets: model
            .opset_imports
            .iter()
            .map(|(d, v)| {
                (
                    if d.is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        d.clone()
                    },
                    *v,
                )
            })
            .collect(),
        inputs: g
            .inputs()
            .iter()
            .map(|&i| {
                let v = &g.node(i).outputs[0];
                summarize(&v.name, v.ty.as_ref())
            })
            .collect(),
        outputs: g
            .outputs
            .iter()
            .map(|o| summarize(&g.value(o.value).name, o.ty.as_ref()))
            .collect(),
        nodes: g.ops().count(),
        nodes_total: g.op_count_total(),
        ops,
        params,
        functions: model.functions.len(),
        external_data: external_files,
        metadata: model.metadata_props.iter().cloned().collect(),
        macs,
        macs_unknown_nodes: unknown,
        macs_note: note,
    }
}

/// Concrete shapes of named values as tract's inference sees them.
pub fn infer_shapes(model: &Model) -> Result<HashMap<String, Vec<usize>>, String> {
    crate::verify::sane_for_tract(model).map_err(|e| e.to_string())?;
    crate::verify::guard(|| {
        infer_shapes_unguarded(model).map_err(crate::verify::RunError::Unsupported)
    })
    .map_err(|e| e.to_string())
}

fn infer_shapes_unguarded(model: &Model) -> Result<HashMap<String, Vec<usize>>, String> {
    use tract_onnx::prelude::*;
    let bytes = export::to_bytes_inline(model).map_err(|e| e.to_string())?;
    let mut m = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| format!("{e:#}").lines().next().unwrap_or("").to_string())?;
    // Partial results are fine: a failing node leaves later facts unknown.
    let _ = m.analyse(false);
    let mut out = HashMap::new();
    for node in m.nodes() {
        for (ix, o) in node.outputs.iter().enumerate() {
            let label = m
                .outlet_label(OutletId::new(node.id, ix))
                .map(str::to_string)
                .unwrap_or_else(|| node.name.clone());
            if let Ok(Some(s)) = o.fact.shape.as_concrete_finite() {
                out.insert(label, s.to_vec());
            }
        }
    }
    Ok(out)
}

fn estimate_macs(model: &Model) -> Result<(u64, usize), String> {
    let g = &model.graph;
    let interesting = g.ops().any(|(_, _, op)| {
        matches!(
            op.op_type.as_str(),
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
        )
    });
    if !interesting {
        return Ok((0, 0));
    }
    let shapes = infer_shapes(model)?;
    let shape_of = |v: Option<crate::ir::ValueId>| -> Option<Vec<u64>> {
        let v = v?;
        if let Some(t) = g.constant(v) {
            return Some(t.dims.iter().map(|&d| d as u64).collect());
        }
        shapes
            .get(&g.value(v).name)
            .map(|s| s.iter().map(|&d| d as u64).collect())
    };
    let out_of = |n: &crate::ir::Node| -> Option<Vec<u64>> {
        shapes
            .get(&n.outputs.first()?.name)
            .map(|s| s.iter().map(|&d| d as u64).collect())
    };
    let (mut total, mut unknown) = (0u64, 0usize);
    for (_, n, op) in g.ops() {
        let ins = n.inputs();
        let macs = match op.op_type.as_str() {
            "Conv" => (|| {
                let w = shape_of(*ins.get(1)?)?;
                let y = out_of(n)?;
                Some(y.iter().product::<u64>() * w[1..].iter().product::<u64>())
            })(),
            "ConvTranspose" => (|| {
                let x = shape_of(*ins.first()?)?;
                let w = shape_of(*ins.get(1)?)?;
                Some(x.iter().product::<u64>() * w[1..].iter().product::<u64>())
            })(),
            "MatMul" | "Gemm" => (|| {
                let a = shape_of(*ins.first()?)?;
                let y = out_of(n)?;
                let trans_a = op.attr("transA").and_then(|a| a.as_int()).unwrap_or(0) == 1;
                let k = if op.op_type == "Gemm" && trans_a {
                    a[0]
                } else {
                    *a.last()?
                };
                Some(y.iter().product::<u64>() * k)
            })(),
            _ => continue,
        };
        match macs {
            Some(m) => total += m,
            None => unknown += 1,
        }
    }
    Ok((total, unknown))
}
