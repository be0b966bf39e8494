//! `fuse-hard-swish`: the decomposed hard-swish exporters emit (Paddle, older PyTorch/TF),
//! `Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)` or `Mul(x, Div(Clip(Add(x, 3), 0, 6), 6))`, becomes
//! `HardSwish(x)` (opset ≥ 14) or `Mul(x, HardSigmoid(x))` with `alpha = 1/6, beta = 0.5`
//! (opset 6–13).
//!
//! `clip(x + 3, 0, 6) / 6 = max(0, min(1, x/6 + 1/2))`, HardSigmoid's definition with those
//! parameters; the results agree to float rounding (a few ulp). Four elementwise passes over the
//! tensor become one or two, and runtimes fuse HardSwish/HardSigmoid into the preceding conv.
//! Declines: any intermediate value read elsewhere or a graph output, constants other than the
//! scalars 3, 0, 6 and 6, Clip bounds not constant, opset < 6.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{AttrValue, Attribute, Graph, Model, Node, NodeId, NodeKind, Op, Value, ValueId};

pub struct FuseHardSwish;

fn out(id: NodeId) -> ValueId {
    ValueId {
        node: id,
        output: 0,
    }
}

fn op_is(g: &Graph, id: NodeId, t: &str) -> bool {
    g.node(id)
        .op()
        .is_some_and(|o| o.is_default_domain() && o.op_type == t)
}

/// The scalar value of a constant input.
fn scalar(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let (_, vals) = util::const_f32(g, v)?;
    (vals.len() == 1).then(|| vals[0])
}

/// `(binary node's non-constant operand, its constant scalar)` for a commutative or
/// right-constant binary op.
fn operand_and_scalar(g: &Graph, id: NodeId, commutative: bool) -> Option<(ValueId, f32)> {
    let ins = g.node(id).inputs();
    let (a, b) = (
        ins.first().copied().flatten()?,
        ins.get(1).copied().flatten()?,
    );
    if let Some(c) = scalar(g, Some(b)) {
        return Some((a, c));
    }
    if commutative {
        if let Some(c) = scalar(g, Some(a)) {
            return Some((b, c));
        }
    }
    None
}

/// `x` when `v` is `Clip(Add(x, 3), 0, 6)` read only by `reader`.
fn relu6_plus_3(g: &Graph, v: ValueId, reader: NodeId) -> Option<ValueId> {
    if !op_is(g, v.node, "Clip") || util::single_use(g, v).map(|u| u.0) != Some(reader) {
        return None;
    }
    let clip = g.node(v.node);
    let (lo, hi) = match clip.inputs().len() {
        1 => (
            util::attr_float(clip, "min", f32::MIN),
            util::attr_float(clip, "max", f32::MAX),
        ),
        _ => (
            scalar(g, clip.inputs().get(1).copied().flatten())?,
            scalar(g, clip.inputs().get(2).copied().flatten())?,
        ),
    };
    if lo != 0.0 || hi != 6.0 {
        return None;
    }
    let add = clip.inputs()[0]?;
    if !op_is(g, add.node, "Add") || util::single_use(g, add).map(|u| u.0) != Some(v.node) {
        return None;
    }
    let (x, c) = operand_and_scalar(g, add.node, true)?;
    (c == 3.0).then_some(x)
}

/// For the final node `id` of the pattern: `(x, intermediate nodes)`.
fn try_match(g: &Graph, id: NodeId) -> Option<(ValueId, Vec<NodeId>)> {
    let ins = g.node(id).inputs();
    let private = |v: ValueId, reader: NodeId| {
        util::single_use(g, v).map(|u| u.0) == Some(reader) && !g.is_graph_output(v)
    };
    if op_is(g, id, "Div") {
        // Div(Mul(x, relu6(x + 3)), 6)
        let (m, six) = operand_and_scalar(g, id, false)?;
        if six != 6.0 || !op_is(g, m.node, "Mul") || !private(m, id) {
            return None;
        }
        let mi = g.node(m.node).inputs();
        let (a, b) = (
            mi.first().copied().flatten()?,
            mi.get(1).copied().flatten()?,
        );
        for (x, c) in [(a, b), (b, a)] {
            if !g.is_graph_output(c) && relu6_plus_3(g, c, m.node) == Some(x) {
                let add = g.node(c.node).inputs()[0]?.node;
                return Some((x, vec![m.node, c.node, add]));
            }
        }
        return None;
    }
    if op_is(g, id, "Mul") {
        // Mul(x, Div(relu6(x + 3), 6))
        let (a, b) = (
            ins.first().copied().flatten()?,
            ins.get(1).copied().flatten()?,
        );
        for (x, d) in [(a, b), (b, a)] {
            if !op_is(g, d.node, "Div") || !private(d, id) {
                continue;
            }
            let Some((c, six)) = operand_and_scalar(g, d.node, false) else {
                continue;
            };
            if six == 6.0 && !g.is_graph_output(c) && relu6_plus_3(g, c, d.node) == Some(x) {
                let add = g.node(c.node).inputs()[0]?.node;
                return Some((x, vec![d.node, c.node, add]));
            }
        }
    }
    None
}

impl Pass for FuseHardSwish {
    fn name(&self) -> &'static str {
        "fuse-hard-swish"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let opset = model.opset("").unwrap_or(1);
        if opset < 6 {
            return Ok(false);
        }
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let mut names = util::all_names(g);
            let Ok(order) = g.topo_order() else {
                return Ok(false);
            };
            for id in order {
                if !g.contains(id) {
                    continue;
                }
                let Some((x, _)) = try_match(g, id) else {
                    continue;
                };
                let base = g.node(id).display_name().to_string();
                let mut add = |g: &mut Graph, t: &str, inputs: Vec<ValueId>, attrs| {
                    let mut o = Op::new(t);
                    o.attributes = attrs;
                    let node = util::fresh_name(&mut names, &format!("{base}/{t}"));
                    let value = util::fresh_name(&mut names, &format!("{base}_{t}"));
                    out(g.add_node(Node::new(
                        node,
                        NodeKind::Op(o),
                        inputs.into_iter().map(Some).collect(),
                        vec![Value::named(value)],
                    )))
                };
                let new = if opset >= 14 {
                    add(g, "HardSwish", vec![x], vec![])
                } else {
                    let hs = add(
                        g,
                        "HardSigmoid",
                        vec![x],
                        vec![
                            Attribute::new("alpha", AttrValue::Float(1.0 / 6.0)),
                            Attribute::new("beta", AttrValue::Float(0.5)),
                        ],
                    );
                    add(g, "Mul", vec![x, hs], vec![])
                };
                let mut names2 = util::all_names(g);
                util::take_over(g, &mut names2, out(id), new, "__unfused");
                util::remove_dead(g);
                changed = true;
            }
            Ok(changed)
        })
    }
}
