//! Static shapes and dtypes of values, where derivable.
//!
//! Inference is tract's (its ONNX front end knows every op's shape rules); input dims come from the
//! declared types, with `--input-shape` overriding symbolic ones. Values whose shape stays symbolic
//! or unknown are simply absent from the result. Subgraph values are not covered.

use crate::export;
use crate::ir::{DataType, Dim, Model, TypeKind};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub dtype: Option<DataType>,
    /// Concrete dims when every one is known.
    pub dims: Option<Vec<i64>>,
    /// Per-dim knowledge when the rank is known: `Some(d)` for a concrete dim, `None` otherwise.
    pub partial: Option<Vec<Option<i64>>>,
}

/// Facts by value name for the main graph.
pub fn infer(
    model: &Model,
    input_shapes: &[(String, Vec<i64>)],
) -> Result<HashMap<String, Fact>, String> {
    crate::verify::sane_for_tract(model).map_err(|e| e.to_string())?;
    crate::verify::guard(|| {
        infer_unguarded(model, input_shapes).map_err(crate::verify::RunError::Unsupported)
    })
    .map_err(|e| e.to_string())
}

fn infer_unguarded(
    model: &Model,
    input_shapes: &[(String, Vec<i64>)],
) -> Result<HashMap<String, Fact>, String> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::Factoid;
    let bytes = export::to_bytes_for_shapes(model).map_err(|e| e.to_string())?;
    let mut m = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| format!("{e:#}").lines().next().unwrap_or("").to_string())?;
    let g = &model.graph;
    // Inputs first, in the model's order; weights turned into inputs come after and keep their facts.
    for (k, &i) in g.inputs().iter().enumerate() {
        let v = &g.node(i).outputs[0];
        let Some(TypeKind::Tensor { elem, shape }) = v.ty.as_ref().map(|t| &t.kind) else {
            continue;
        };
        let dims: Option<Vec<i64>> = match input_shapes.iter().find(|(n, _)| *n == v.name) {
            Some((_, d)) => Some(d.clone()),
            None => shape.as_ref().and_then(|s| {
                s.iter()
                    .map(|d| {
                        if let Dim::Fixed(x) = d.dim {
                            Some(x)
                        } else {
                            None
                        }
                    })
                    .collect()
            }),
        };
        if let (Some(dims), Some(dt)) = (dims, crate::verify::tract_dtype(*elem)) {
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let _ = m.set_input_fact(k, InferenceFact::dt_shape(dt, shape));
        }
    }
    // Partial results are fine: a node tract cannot analyse leaves later facts unknown.
    let _ = m.analyse(false);
    let mut out = HashMap::new();
    for node in m.nodes() {
        for (ix, o) in node.outputs.iter().enumerate() {
            let Some(label) = m.outlet_label(OutletId::new(node.id, ix)) else {
                continue;
            };
            let dtype = o
                .fact
                .datum_type
                .concretize()
                .and_then(crate::verify::onnx_dtype);
            let dims = o
                .fact
                .shape
                .as_concrete_finite()
                .ok()
                .flatten()
                .map(|s| s.iter().map(|&d| d as i64).collect());
            let partial = if o.fact.shape.is_open() {
                None
            } else {
                Some(
                    o.fact
                        .shape
                        .dims()
                        .map(|d| d.concretize().and_then(|t| t.to_i64().ok()))
                        .collect(),
                )
            };
            out.insert(
                label.to_string(),
                crate::analysis::shapes::Fact {
                    dtype,
                    dims,
                    partial,
                },
            );
        }
    }
    Ok(out)
}
