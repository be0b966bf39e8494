//! `eliminate-identity`: removes nodes that pass their first input through unchanged.
//!
//! `op(x) → x` for: Identity; Dropout in inference (opset < 12: always, as inference ignores it;
//! opset ≥ 12: `training_mode` absent or a constant false) with its mask unused; Cast to the dtype x
//! already has; Transpose whose perm is the identity; Pad whose pads are all zero; Concat of one
//! input; Split into one output; Reshape/Expand whose result has x's static shape; Slice that keeps
//! every element (starts 0, steps 1, ends past the known dim); Unsqueeze(Squeeze(x, a), a) and
//! Squeeze(Unsqueeze(x, a), a).
//!
//! When the removed node's output is a graph output, x's producer takes over the output's name
//! instead (declined when x is a graph input, initializer default, or already a graph output, since
//! that would change the interface). Declined too when either name is read by a subgraph.
//! Static shapes and dtypes come from `analysis::shapes` (main graph only); subgraphs get the
//! rewrites that need no shapes.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::analysis::shapes::Fact;
use crate::ir::{DataType, Graph, Model, NodeId, NodeKind, ValueId};
use std::collections::HashMap;

pub struct EliminateIdentity;

/// Ops that can be no-ops and whose no-op test needs static shapes or dtypes.
const NEEDS_FACTS: &[&str] = &["Cast", "Reshape", "Expand", "Slice"];

fn fact_dims<'a>(g: &Graph, facts: &'a HashMap<String, Fact>, v: ValueId) -> Option<Vec<i64>> {
    if let Some(t) = g.constant(v) {
        return Some(t.dims.clone());
    }
    if let Some(d) = g.value(v).ty.as_ref().and_then(|t| t.fixed_dims()) {
        return Some(d);
    }
    facts.get(&g.value(v).name)?.dims.clone()
}

fn fact_dtype(g: &Graph, facts: &HashMap<String, Fact>, v: ValueId) -> Option<DataType> {
    if let Some(t) = g.constant(v) {
        return Some(t.dtype);
    }
    if let Some((dt, _)) = g.value(v).ty.as_ref().and_then(|t| t.as_tensor()) {
        return Some(dt);
    }
    facts.get(&g.value(v).name)?.dtype
}

/// Axes of Squeeze/Unsqueeze: attribute (opset < 13) or constant second input.
fn axes(g: &Graph, id: NodeId) -> Option<Vec<i64>> {
    let n = g.node(id);
    util::attr_ints(n, "axes").or_else(|| util::const_i64(g, n.inputs().get(1).copied().flatten()))
}

/// Whether node `id` returns its first input unchanged; the value it passes through.
fn passthrough(
    g: &Graph,
    id: NodeId,
    facts: &HashMap<String, Fact>,
    opset: i64,
) -> Option<ValueId> {
    let n = g.node(id);
    let op = n.op()?;
    if !op.is_default_domain() || n.subgraphs().next().is_some() {
        return None;
    }
    let x = n.inputs().first().copied().flatten()?;
    let used = |k: usize| {
        let v = ValueId {
            node: id,
            output: k,
        };
        !g.uses(v).is_empty() || g.is_graph_output(v)
    };
    let ins = n.inputs();
    let ok = match op.op_type.as_str() {
        "Identity" => n.outputs.len() == 1,
        "Dropout" => {
            let training = ins.get(2).copied().flatten();
            let inference = match training {
                None => true,
                Some(t) => util::const_i64(g, Some(t)).is_some_and(|v| v.iter().all(|&b| b == 0)),
            };
            inference && (n.outputs.len() < 2 || !used(1))
        }
        "Cast" => {
            fact_dtype(g, facts, x).is_some_and(|dt| dt.0 as i64 == util::attr_int(n, "to", -1))
        }
        "Transpose" => {
            let perm = util::attr_ints(n, "perm");
            match perm {
                Some(p) => p.iter().enumerate().all(|(i, &v)| i as i64 == v),
                None => fact_dims(g, facts, x).is_some_and(|d| d.len() <= 1),
            }
        }
        "Pad" => {
            let pads = if opset < 11 {
                util::attr_ints(n, "pads")
            } else {
                util::const_i64(g, ins.get(1).copied().flatten())
            };
            pads.is_some_and(|p| p.iter().all(|&v| v == 0))
        }
        "Concat" => ins.len() == 1,
        "Split" => n.outputs.len() == 1,
        "Reshape" | "Expand" => {
            let (Some(a), Some(b)) = (
                fact_dims(g, facts, x),
                fact_dims(
                    g,
                    facts,
                    ValueId {
                        node: id,
                        output: 0,
                    },
                ),
            ) else {
                return None;
            };
            a == b
        }
        "Slice" if opset >= 10 => {
            let (Some(dims), Some(starts), Some(ends)) = (
                fact_dims(g, facts, x),
                util::const_i64(g, ins.get(1).copied().flatten()),
                util::const_i64(g, ins.get(2).copied().flatten()),
            ) else {
                return None;
            };
            let axes: Vec<i64> = match ins.get(3).copied().flatten() {
                Some(a) => util::const_i64(g, Some(a))?,
                None => (0..starts.len() as i64).collect(),
            };
            let steps_ok = match ins.get(4).copied().flatten() {
                Some(s) => util::const_i64(g, Some(s))?.iter().all(|&v| v == 1),
                None => true,
            };
            let rank = dims.len() as i64;
            steps_ok
                && axes
                    .iter()
                    .zip(starts.iter().zip(&ends))
                    .all(|(&a, (&s, &e))| {
                        let a = if a < 0 { a + rank } else { a };
                        (0..rank).contains(&a) && s == 0 && e >= dims[a as usize]
                    })
        }
        "Unsqueeze" | "Squeeze" => {
            let inner = x.node;
            let other = if op.op_type == "Unsqueeze" {
                "Squeeze"
            } else {
                "Unsqueeze"
            };
            if g.node(inner).op().map(|o| o.op_type.as_str()) != Some(other) {
                return None;
            }
            let (Some(a), Some(b)) = (axes(g, id), axes(g, inner)) else {
                return None;
            };
            // Axes of both are relative to the same rank (that of the Squeeze input or Unsqueeze
            // output); compare them normalised.
            let rank = fact_dims(
                g,
                facts,
                if op.op_type == "Unsqueeze" {
                    ValueId {
                        node: id,
                        output: 0,
                    }
                } else {
                    x
                },
            )
            .map(|d| d.len() as i64);
            let norm = |v: Vec<i64>| -> Option<Vec<i64>> {
                let mut v: Vec<i64> = v
                    .into_iter()
                    .map(|a| if a < 0 { rank.map(|r| a + r) } else { Some(a) })
                    .collect::<Option<_>>()?;
                v.sort();
                Some(v)
            };
            if norm(a)? != norm(b)? {
                return None;
            }
            // Unsqueeze(Squeeze(y)) → y, Squeeze(Unsqueeze(y)) → y: pass through the inner input.
            return g
                .node(inner)
                .inputs()
                .first()
                .copied()
                .flatten()
                .filter(|_| n.outputs.len() == 1);
        }
        _ => false,
    };
    ok.then_some(x)
}

fn run_graph(
    g: &mut Graph,
    facts: &HashMap<String, Fact>,
    opset: i64,
    cx: &mut PassContext,
) -> bool {
    let mut changed = false;
    let Ok(order) = g.topo_order() else {
        return false;
    };
    let mut names = util::all_names(g);
    for id in order {
        if !g.contains(id) {
            continue;
        }
        let Some(x) = passthrough(g, id, facts, opset) else {
            continue;
        };
        let out = ValueId {
            node: id,
            output: 0,
        };
        let label = format!("{} '{}'", g.node(id).op_type(), g.node(id).display_name());
        if g.uses(out).iter().any(|(_, slot)| slot.is_none()) {
            cx.skip(format!(
                "{label}: its output is read by name inside a subgraph"
            ));
            continue;
        }
        if g.is_graph_output(out) {
            let producer_ok = matches!(
                g.node(x.node).kind,
                NodeKind::Op(_) | NodeKind::Initializer(_)
            ) && !g.is_graph_output(x)
                && g.uses(x).iter().all(|(_, slot)| slot.is_some());
            if !producer_ok {
                cx.skip(format!(
                    "{label}: output is a graph output and its input cannot take over the name"
                ));
                continue;
            }
            let name = g.value(out).name.clone();
            let ty = g.value(out).ty.clone();
            g.value_mut(out).name = util::fresh_name(&mut names, &format!("{name}__removed"));
            g.value_mut(x).name = name;
            if ty.is_some() {
                g.value_mut(x).ty = ty;
            }
        }
        g.replace_all_uses(out, x, true);
        // The node (and a now-unused inner Squeeze/Unsqueeze) go; dead-code elimination would too.
        let inner = g.node(id).inputs().first().copied().flatten();
        if g.remove_node(id).is_ok() {
            changed = true;
        }
        if let Some(inner) = inner {
            if inner != x && matches!(g.node(inner.node).kind, NodeKind::Op(_)) {
                let v = ValueId {
                    node: inner.node,
                    output: 0,
                };
                if g.uses(v).is_empty() && !g.is_graph_output(v) {
                    let _ = g.remove_node(inner.node);
                }
            }
        }
    }
    changed
}

impl Pass for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let opset = model.opset("").unwrap_or(1);
        let needs_facts = model
            .graph
            .ops()
            .any(|(_, _, op)| NEEDS_FACTS.contains(&op.op_type.as_str()));
        let facts = if needs_facts {
            cx.facts(model)
        } else {
            Default::default()
        };
        let empty = HashMap::new();
        let main = &model.graph as *const Graph;
        util::each_graph_of(model, &mut |g| {
            // Shape facts describe the main graph only.
            let f = if std::ptr::eq(g as *const Graph, main) {
                &*facts
            } else {
                &empty
            };
            Ok(run_graph(g, f, opset, cx))
        })
    }
}
