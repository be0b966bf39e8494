//! A deterministic text rendering of the IR, used for golden tests and to compare two IRs
//! (`import → export → import` must give the same dump). Tensors print dtype, shape, placement and a
//! hash of their values, so storage form (raw or typed field) does not matter.

use super::{
    AttrValue, Attribute, Const, Graph, Model, NodeKind, SparseTensor, Tensor, TensorData,
};
use std::fmt::Write;

/// FNV-1a over the canonical little-endian bytes (or the strings) of a tensor.
pub fn tensor_hash(t: &Tensor) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    match &t.data {
        TensorData::Strings(s) => {
            for b in s {
                eat(&(b.len() as u64).to_le_bytes());
                eat(b);
            }
        }
        _ => {
            if let Some(b) = t.to_le_bytes() {
                eat(&b);
            }
        }
    }
    h
}

fn tensor_str(t: &Tensor) -> String {
    let mut s = format!("{}{:?} #{:016x}", t.dtype, t.dims, tensor_hash(t));
    if t.placement == super::Placement::External {
        s.push_str(" external");
    }
    if !t.name.is_empty() {
        write!(s, " name={:?}", t.name).unwrap();
    }
    if !t.doc_string.is_empty() {
        write!(s, " doc={:?}", t.doc_string).unwrap();
    }
    if !t.metadata_props.is_empty() {
        write!(s, " meta={:?}", t.metadata_props).unwrap();
    }
    s
}

fn sparse_str(t: &SparseTensor) -> String {
    format!(
        "sparse{:?}(values {}, indices {})",
        t.dims,
        tensor_str(&t.values),
        tensor_str(&t.indices)
    )
}

fn attr_str(a: &Attribute, depth: usize, out: &mut String) -> String {
    let v = match &a.value {
        AttrValue::Float(f) => format!("{f:?}"),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::String(s) => format!("{:?}", String::from_utf8_lossy(s)),
        AttrValue::Tensor(t) => tensor_str(t),
        AttrValue::SparseTensor(t) => sparse_str(t),
        AttrValue::Type(t) => t.to_string(),
        AttrValue::Floats(v) => format!("{v:?}"),
        AttrValue::Ints(v) => format!("{v:?}"),
        AttrValue::Strings(v) => format!(
            "{:?}",
            v.iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<Vec<_>>()
        ),
        AttrValue::Tensors(v) => format!(
            "[{}]",
            v.iter().map(tensor_str).collect::<Vec<_>>().join(", ")
        ),
        AttrValue::SparseTensors(v) => format!(
            "[{}]",
            v.iter().map(sparse_str).collect::<Vec<_>>().join(", ")
        ),
        AttrValue::Types(v) => format!(
            "[{}]",
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        AttrValue::Graph(g) => {
            dump_graph(g, depth + 2, out);
            format!("<graph {:?}>", g.name)
        }
        AttrValue::Graphs(gs) => {
            for g in gs {
                dump_graph(g, depth + 2, out);
            }
            format!("<{} graphs>", gs.len())
        }
        AttrValue::None => "<none>".into(),
    };
    let mut s = format!("{}={v}", a.name);
    if let Some(r) = &a.ref_attr_name {
        write!(s, " @{r}").unwrap();
    }
    if a.declared_type != 0 {
        write!(s, " :{}", a.declared_type).unwrap();
    }
    if !a.doc_string.is_empty() {
        write!(s, " doc={:?}", a.doc_string).unwrap();
    }
    s
}

/// A string that is equal for equal attributes (subgraphs included), for comparing nodes.
pub fn attr_key(a: &Attribute) -> String {
    let mut sub = String::new();
    let s = attr_str(a, 0, &mut sub);
    s + &sub
}

pub fn dump_graph(g: &Graph, depth: usize, out: &mut String) {
    let pad = " ".repeat(depth);
    writeln!(out, "{pad}graph {:?} doc={:?}", g.name, g.doc_string).unwrap();
    let ty = |t: &Option<super::Type>| {
        t.as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into())
    };
    for &i in g.inputs() {
        let n = g.node(i);
        let v = &n.outputs[0];
        let mut line = format!("{pad}  input {:?}: {}", v.name, ty(&v.ty));
        if let NodeKind::Input { default: Some(t) } = &n.kind {
            write!(line, " = {}", tensor_str(t)).unwrap();
        }
        writeln!(out, "{line}{}", meta(&v.doc_string, &v.metadata_props)).unwrap();
    }
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(_) => g.node_ids().collect(),
    };
    for id in order {
        let n = g.node(id);
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|v| {
                let mut s = format!("{:?}", v.name);
                if let Some(t) = &v.ty {
                    write!(s, ": {t}").unwrap();
                }
                s.push_str(&meta(&v.doc_string, &v.metadata_props));
                s
            })
            .collect();
        let name_of = |v: &super::ValueId| format!("{:?}", g.value(*v).name);
        match &n.kind {
            NodeKind::Input { .. } => continue,
            NodeKind::Capture => writeln!(out, "{pad}  capture {}", outs.join(", ")).unwrap(),
            NodeKind::Initializer(Const::Dense(t)) => {
                writeln!(out, "{pad}  init {} = {}", outs.join(", "), tensor_str(t)).unwrap()
            }
            NodeKind::Initializer(Const::Sparse(t)) => {
                writeln!(out, "{pad}  init {} = {}", outs.join(", "), sparse_str(t)).unwrap()
            }
            NodeKind::Op(op) => {
                let ins: Vec<String> = n
                    .inputs()
                    .iter()
                    .map(|v| v.as_ref().map(name_of).unwrap_or_else(|| "_".into()))
                    .collect();
                let implicit: Vec<String> = n.implicit_inputs().iter().map(name_of).collect();
                let mut sub = String::new();
                let attrs: Vec<String> = op
                    .attributes
                    .iter()
                    .map(|a| attr_str(a, depth, &mut sub))
                    .collect();
                let dom = if op.domain.is_empty() {
                    String::new()
                } else {
                    format!("{}::", op.domain)
                };
                let ovl = if op.overload.is_empty() {
                    String::new()
                } else {
                    format!(":{}", op.overload)
                };
                let mut line = format!(
                    "{pad}  {} = {dom}{}{ovl}({}) {{{}}} name={:?}",
                    outs.join(", "),
                    op.op_type,
                    ins.join(", "),
                    attrs.join(", "),
                    n.name
                );
                if !implicit.is_empty() {
                    write!(line, " reads=[{}]", implicit.join(", ")).unwrap();
                }
                if !op.device_configurations.is_empty() {
                    write!(line, " devcfg={}", op.device_configurations.len()).unwrap();
                }
                writeln!(out, "{line}{}", meta(&n.doc_string, &n.metadata_props)).unwrap();
                out.push_str(&sub);
            }
        }
    }
    for o in &g.outputs {
        writeln!(
            out,
            "{pad}  output {:?}: {}{}",
            g.value(o.value).name,
            ty(&o.ty),
            meta(&o.doc_string, &o.metadata_props)
        )
        .unwrap();
    }
    for v in &g.extra_value_info {
        writeln!(out, "{pad}  value_info {:?}: {}", v.name, ty(&v.ty)).unwrap();
    }
    if !g.quantization_annotation.is_empty() || !g.metadata_props.is_empty() {
        writeln!(
            out,
            "{pad}  qa={} meta={:?}",
            g.quantization_annotation.len(),
            g.metadata_props
        )
        .unwrap();
    }
}

fn meta(doc: &str, props: &[(String, String)]) -> String {
    let mut s = String::new();
    if !doc.is_empty() {
        write!(s, " doc={doc:?}").unwrap();
    }
    if !props.is_empty() {
        write!(s, " meta={props:?}").unwrap();
    }
    s
}

/// Full text of a model: header, opsets, functions, main graph.
pub fn dump_model(m: &Model) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "model ir={} producer={:?} {:?} domain={:?} version={} doc={:?}",
        m.ir_version, m.producer_name, m.producer_version, m.domain, m.model_version, m.doc_string
    )
    .unwrap();
    writeln!(out, "opsets {:?}", m.opset_imports).unwrap();
    if !m.metadata_props.is_empty() {
        writeln!(out, "metadata {:?}", m.metadata_props).unwrap();
    }
    if !m.training_info.is_empty() || !m.configuration.is_empty() {
        writeln!(
            out,
            "training_info={:?} configuration={:?}",
            m.training_info, m.configuration
        )
        .unwrap();
    }
    for f in &m.functions {
        let mut sub = String::new();
        let attrs: Vec<String> = f
            .attribute_protos
            .iter()
            .map(|a| attr_str(a, 0, &mut sub))
            .collect();
        writeln!(
            out,
            "function {}::{}:{} attrs={:?} defaults=[{}] opsets={:?} doc={:?} meta={:?}",
            f.domain,
            f.name,
            f.overload,
            f.attributes,
            attrs.join(", "),
            f.opset_imports,
            f.doc_string,
            f.metadata_props
        )
        .unwrap();
        out.push_str(&sub);
        dump_graph(&f.body, 2, &mut out);
    }
    dump_graph(&m.graph, 0, &mut out);
    out
}
