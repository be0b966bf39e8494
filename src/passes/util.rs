//! Small helpers shared by passes.

use super::PassError;
use crate::ir::{AttrValue, Const, Graph, Model, Node, NodeId, NodeKind, Tensor, Value, ValueId};
use std::collections::HashSet;
use std::sync::Arc;

/// Runs `f` on every subgraph (innermost first) and then on the graph itself. After a subgraph
/// changes, its owner's implicit uses are recomputed from the captures still in use, so values an
/// optimised-away subgraph no longer reads can die.
pub fn each_graph(
    g: &mut Graph,
    f: &mut dyn FnMut(&mut Graph) -> Result<bool, PassError>,
) -> Result<bool, PassError> {
    let mut changed = false;
    let owners: Vec<NodeId> = g
        .nodes()
        .filter(|(_, n)| n.subgraphs().next().is_some())
        .map(|(id, _)| id)
        .collect();
    for id in owners {
        let mut sub_changed = false;
        if let Some(op) = g.node_mut(id).op_mut() {
            for a in &mut op.attributes {
                for sub in a.graphs_mut() {
                    sub_changed |= each_graph(sub, f)?;
                }
            }
        }
        if sub_changed {
            refresh_captures(g, id);
            changed = true;
        }
    }
    changed |= f(g)?;
    Ok(changed)
}

/// Applies `f` to the main graph and all subgraphs of a model.
pub fn each_graph_of(
    model: &mut Model,
    f: &mut dyn FnMut(&mut Graph) -> Result<bool, PassError>,
) -> Result<bool, PassError> {
    each_graph(&mut model.graph, f)
}

/// Drops unused capture nodes inside `owner`'s subgraphs and sets its implicit uses to the outer
/// values the remaining captures name.
pub fn refresh_captures(g: &mut Graph, owner: NodeId) {
    let mut names: Vec<String> = Vec::new();
    if let Some(op) = g.node_mut(owner).op_mut() {
        for a in &mut op.attributes {
            for sub in a.graphs_mut() {
                let captures: Vec<NodeId> = sub
                    .nodes()
                    .filter(|(_, n)| matches!(n.kind, NodeKind::Capture))
                    .map(|(id, _)| id)
                    .collect();
                for c in captures {
                    let v = ValueId { node: c, output: 0 };
                    if sub.uses(v).is_empty() && !sub.is_graph_output(v) {
                        let _ = sub.remove_node(c);
                    } else {
                        let name = sub.value(v).name.clone();
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
        }
    }
    let current: Vec<ValueId> = g.node(owner).implicit_inputs().to_vec();
    let keep: Vec<ValueId> = current
        .into_iter()
        .filter(|v| names.contains(&g.value(*v).name))
        .collect();
    g.set_implicit_inputs(owner, keep);
}

/// The only use of a value, when it has exactly one and is not a graph output.
pub fn single_use(g: &Graph, v: ValueId) -> Option<(NodeId, usize)> {
    if g.is_graph_output(v) {
        return None;
    }
    match g.uses(v).as_slice() {
        [(n, Some(slot))] => Some((*n, *slot)),
        _ => None,
    }
}

pub fn attr_int(n: &Node, name: &str, default: i64) -> i64 {
    n.op()
        .and_then(|op| op.attr(name))
        .and_then(|a| a.as_int())
        .unwrap_or(default)
}

pub fn attr_ints(n: &Node, name: &str) -> Option<Vec<i64>> {
    n.op()
        .and_then(|op| op.attr(name))
        .and_then(|a| a.as_ints())
        .map(|v| v.to_vec())
}

pub fn attr_str(n: &Node, name: &str) -> Option<String> {
    match n.op().and_then(|op| op.attr(name)).map(|a| &a.value) {
        Some(AttrValue::String(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

pub fn attr_float(n: &Node, name: &str, default: f32) -> f32 {
    match n.op().and_then(|op| op.attr(name)).map(|a| &a.value) {
        Some(AttrValue::Float(f)) => *f,
        _ => default,
    }
}

/// Every value name in a graph and its subgraphs.
pub fn all_names(g: &Graph) -> HashSet<String> {
    let mut names = HashSet::new();
    g.visit_graphs(&mut |g| {
        for (_, n) in g.nodes() {
            for v in &n.outputs {
                names.insert(v.name.clone());
            }
        }
    });
    names
}

/// `base`, or `base_1`, `base_2` … whichever is free; the result is reserved in `names`.
pub fn fresh_name(names: &mut HashSet<String>, base: &str) -> String {
    let mut candidate = base.to_string();
    let mut k = 1;
    while names.contains(&candidate) {
        candidate = format!("{base}_{k}");
        k += 1;
    }
    names.insert(candidate.clone());
    candidate
}

/// Adds an initializer holding `t` under `name`.
pub fn add_initializer(g: &mut Graph, name: &str, mut t: Tensor) -> ValueId {
    t.name = name.to_string();
    let id = g.add_node(Node::new(
        "",
        NodeKind::Initializer(Const::Dense(Arc::new(t))),
        vec![],
        vec![Value::named(name)],
    ));
    ValueId {
        node: id,
        output: 0,
    }
}

/// `new` takes over `old`'s name, declared type and every use (graph outputs included); `old` keeps
/// a fresh `{name}{suffix}` name so both stay unique until dead-code elimination removes it.
pub fn take_over(
    g: &mut Graph,
    names: &mut HashSet<String>,
    old: ValueId,
    new: ValueId,
    suffix: &str,
) {
    let name = g.value(old).name.clone();
    let ty = g.value(old).ty.clone();
    g.value_mut(old).name = fresh_name(names, &format!("{name}{suffix}"));
    g.value_mut(new).name = name;
    if ty.is_some() {
        g.value_mut(new).ty = ty;
    }
    g.replace_all_uses(old, new, true);
}

/// Makes `old` a constant: a new initializer takes over its name and every use (graph outputs
/// included); the old producer keeps a renamed, now unused output for dead-code elimination.
pub fn replace_with_constant(
    g: &mut Graph,
    names: &mut HashSet<String>,
    old: ValueId,
    t: Tensor,
) -> ValueId {
    let name = g.value(old).name.clone();
    let renamed = fresh_name(names, &format!("{name}__replaced"));
    g.value_mut(old).name = renamed;
    let ty = g.value(old).ty.clone();
    let new = add_initializer(g, &name, t);
    g.value_mut(new).ty = ty;
    g.replace_all_uses(old, new, true);
    new
}

/// Removes op nodes none of whose outputs are used, repeatedly. Returns how many went.
pub fn remove_dead(g: &mut Graph) -> usize {
    let mut removed = 0;
    loop {
        let dead: Vec<NodeId> = g
            .nodes()
            .filter(|(id, n)| {
                matches!(n.kind, NodeKind::Op(_) | NodeKind::Initializer(_))
                    && (0..n.outputs.len()).all(|k| {
                        let v = ValueId {
                            node: *id,
                            output: k,
                        };
                        g.uses(v).is_empty() && !g.is_graph_output(v)
                    })
            })
            .map(|(id, _)| id)
            .collect();
        if dead.is_empty() {
            return removed;
        }
        for id in dead {
            if g.remove_node(id).is_ok() {
                removed += 1;
            }
        }
    }
}

/// f32 values of a constant value, when it is one.
pub fn const_f32(g: &Graph, v: Option<ValueId>) -> Option<(Vec<i64>, Vec<f32>)> {
    let t = g.constant(v?)?;
    if t.dtype != crate::ir::DataType::FLOAT {
        return None;
    }
    Some((t.dims.clone(), t.to_f32_vec()?))
}

/// i64 values of a constant value, when it is one.
pub fn const_i64(g: &Graph, v: Option<ValueId>) -> Option<Vec<i64>> {
    g.constant(v?)?.to_i64_vec()
}

/// `outer` computes the same value as `inner` now (its rewrite was folded into `inner`'s producer):
/// every use of `outer`'s first output moves to `inner`. When `outer` is a graph output, `inner`
/// takes over its name and type (allowed only when `inner` is not itself a graph output and not
/// read by name from a subgraph). Removes `outer`'s node. `false` when that is impossible.
pub fn absorb(
    g: &mut Graph,
    names: &mut HashSet<String>,
    inner: ValueId,
    outer_node: NodeId,
) -> bool {
    let outer = ValueId {
        node: outer_node,
        output: 0,
    };
    if g.uses(outer).iter().any(|(_, s)| s.is_none())
        || g.uses(inner).iter().any(|(_, s)| s.is_none())
    {
        return false;
    }
    if g.is_graph_output(outer) {
        if g.is_graph_output(inner) {
            return false;
        }
        let name = g.value(outer).name.clone();
        let ty = g.value(outer).ty.clone();
        g.value_mut(outer).name = fresh_name(names, &format!("{name}__fused"));
        g.value_mut(inner).name = name;
        g.value_mut(inner).ty = ty;
    }
    g.replace_all_uses(outer, inner, true);
    g.remove_node(outer_node).is_ok()
}

/// Replaces the tensor of an initializer used only by `user` in place, or gives `user` a new
/// initializer in `slot` when the old one is shared or absent.
pub fn set_const_input(
    g: &mut Graph,
    names: &mut HashSet<String>,
    user: NodeId,
    slot: usize,
    t: Tensor,
    base: &str,
) {
    if let Some(v) = g.node(user).inputs().get(slot).copied().flatten() {
        let exclusive = matches!(g.node(v.node).kind, NodeKind::Initializer(Const::Dense(_)))
            && g.uses(v) == vec![(user, Some(slot))]
            && !g.is_graph_output(v);
        if exclusive {
            let mut t = t;
            t.name = g.value(v).name.clone();
            g.node_mut(v.node).kind = NodeKind::Initializer(Const::Dense(Arc::new(t)));
            return;
        }
    }
    let name = fresh_name(names, base);
    let v = add_initializer(g, &name, t);
    g.set_input(user, slot, Some(v));
}

/// A dense initializer value used by nothing but `user` (in any slots).
pub fn exclusive_initializer(g: &Graph, v: ValueId, user: NodeId) -> bool {
    matches!(g.node(v.node).kind, NodeKind::Initializer(Const::Dense(_)))
        && !g.is_graph_output(v)
        && g.uses(v).iter().all(|(c, s)| *c == user && s.is_some())
}

/// For a binary elementwise node (`Add`, `Mul`) with one constant operand, the other operand when
/// it is the only-read output of one of `producers`: `(producer output, constant)`. `Err` says why
/// not; reasons starting with "not a fusion site" are routine and need not be logged.
pub fn binary_after(
    g: &Graph,
    node: NodeId,
    producers: &[&str],
) -> Result<(ValueId, ValueId), String> {
    let ins = g.node(node).inputs();
    let (Some(l), Some(r)) = (
        ins.first().copied().flatten(),
        ins.get(1).copied().flatten(),
    ) else {
        return Err("not a fusion site: needs two inputs".into());
    };
    // The constant side and the producer side, in either order.
    let (p, c) = if g.constant(r).is_some() {
        (l, r)
    } else if g.constant(l).is_some() {
        (r, l)
    } else {
        return Err("not a fusion site: no constant operand".into());
    };
    let Some(pop) = g.node(p.node).op() else {
        return Err("not a fusion site: not after an operator".into());
    };
    if !pop.is_default_domain() || !producers.contains(&pop.op_type.as_str()) {
        return Err(format!("not a fusion site: after {}", pop.op_type));
    }
    if single_use(g, p) != Some((node, if p == l { 0 } else { 1 })) {
        return Err(format!(
            "{} output is used elsewhere or is a graph output",
            pop.op_type
        ));
    }
    if g.uses(ValueId { node, output: 0 })
        .iter()
        .any(|(_, s)| s.is_none())
    {
        return Err("output is read by name inside a subgraph".into());
    }
    Ok((p, c))
}
