//! Structural checks run between stages: every input is defined, no cycles, value names unique
//! across a graph and its subgraphs, each input slot holds at most one value and matches its edge,
//! and every operator's domain has an opset import. Errors name the node as the user knows it.

use super::{Graph, Model, NodeKind};
use std::collections::HashSet;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidateError {
    #[error("node '{node}' input {slot} refers to a value that does not exist")]
    Dangling { node: String, slot: usize },
    #[error("graph output {index} refers to a value that does not exist")]
    DanglingOutput { index: usize },
    #[error("graph has a cycle through node '{0}'")]
    Cycle(String),
    #[error("value name '{name}' is defined twice (by '{first}' and '{second}')")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    #[error("node '{node}' ({op}) uses domain '{domain}', which the model does not import (no opset_import entry)")]
    MissingOpset {
        node: String,
        op: String,
        domain: String,
    },
    #[error("node '{node}': input slots and graph edges disagree (internal error)")]
    EdgeMismatch { node: String },
}

pub fn validate(model: &Model) -> Result<(), ValidateError> {
    let domains: HashSet<String> = model.opset_imports.iter().map(|(d, _)| norm(d)).collect();
    let local_fn_domains: HashSet<String> =
        model.functions.iter().map(|f| norm(&f.domain)).collect();
    let mut names = rustc_hash::FxHashMap::default();
    validate_graph(&model.graph, &domains, &mut names)?;
    for f in &model.functions {
        let mut fdomains: HashSet<String> = f.opset_imports.iter().map(|(d, _)| norm(d)).collect();
        if f.opset_imports.is_empty() {
            fdomains = domains.clone();
        }
        fdomains.extend(local_fn_domains.iter().cloned());
        let mut fnames = rustc_hash::FxHashMap::default();
        validate_graph(&f.body, &fdomains, &mut fnames)?;
    }
    Ok(())
}

fn norm(d: &str) -> String {
    if d == "ai.onnx" {
        String::new()
    } else {
        d.to_string()
    }
}

/// Checks one graph and, recursively, its subgraphs. `names` maps each value name defined so far in
/// this scope chain to its producer, to catch duplicates across scopes.
pub fn validate_graph<'a>(
    g: &'a Graph,
    domains: &HashSet<String>,
    names: &mut rustc_hash::FxHashMap<&'a str, &'a str>,
) -> Result<(), ValidateError> {
    for (id, n) in g.nodes() {
        for (slot, v) in n.inputs().iter().enumerate() {
            if let Some(v) = v {
                if !g.contains(v.node) || v.output >= g.node(v.node).outputs.len() {
                    return Err(ValidateError::Dangling {
                        node: n.display_name().into(),
                        slot,
                    });
                }
            }
        }
        for v in n.implicit_inputs() {
            if !g.contains(v.node) || v.output >= g.node(v.node).outputs.len() {
                return Err(ValidateError::Dangling {
                    node: n.display_name().into(),
                    slot: usize::MAX,
                });
            }
        }
        let expected = n.inputs().iter().flatten().count() + n.implicit_inputs().len();
        let found =
            g.g.edges_directed(id.0, petgraph::Direction::Incoming)
                .count();
        if found != expected {
            return Err(ValidateError::EdgeMismatch {
                node: n.display_name().into(),
            });
        }
        if let NodeKind::Op(op) = &n.kind {
            let d: &str = if op.domain == "ai.onnx" {
                ""
            } else {
                &op.domain
            };
            if !domains.contains(d) {
                return Err(ValidateError::MissingOpset {
                    node: n.display_name().into(),
                    op: op.op_type.clone(),
                    domain: if op.domain.is_empty() {
                        "ai.onnx".into()
                    } else {
                        op.domain.clone()
                    },
                });
            }
        }
    }
    for (index, o) in g.outputs.iter().enumerate() {
        if !g.contains(o.value.node) || o.value.output >= g.node(o.value.node).outputs.len() {
            return Err(ValidateError::DanglingOutput { index });
        }
    }
    g.topo_order().map_err(|e| match e {
        super::GraphError::Cycle(n) => ValidateError::Cycle(n),
        super::GraphError::StillUsed(n) => ValidateError::Cycle(n),
    })?;
    for (_, n) in g.nodes() {
        if matches!(n.kind, NodeKind::Capture) {
            continue;
        }
        for v in &n.outputs {
            if v.name.is_empty() {
                continue;
            }
            let who = if n.name.is_empty() {
                n.op_type()
            } else {
                n.name.as_str()
            };
            if let Some(first) = names.insert(v.name.as_str(), who) {
                return Err(ValidateError::DuplicateName {
                    name: v.name.clone(),
                    first: first.into(),
                    second: who.into(),
                });
            }
        }
    }
    for (_, n) in g.nodes() {
        for sub in n.subgraphs() {
            // Sibling subgraphs (then/else branches) are separate scopes; each may not redefine a
            // name of an enclosing one.
            let mut scope = names.clone();
            validate_graph(sub, domains, &mut scope)?;
        }
    }
    Ok(())
}
