//! `fuse-reshapes`:
//! - `Reshape(R(x), s) → Reshape(x, s)` where R is a Reshape or Flatten whose only use is the outer
//!   Reshape, and the constant target `s` has no `0` entry (a `0` copies a dim of the intermediate
//!   shape, which x does not have). `-1` is fine: the element count is the same.
//! - `Reshape(x, Concat(Shape(x)[0:1], [-1])) → Flatten(x, axis=1)`, PyTorch's
//!   `x.view(x.size(0), -1)`: both keep dim 0 and merge the rest, whatever the batch size. The
//!   first operand may be `Slice(Shape(x), [0], [1])`, `Gather(Shape(x), [0])` or
//!   `Unsqueeze(Gather(Shape(x), 0), [0])`; the shape computation is left to dead-code elimination.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{AttrValue, Attribute, Graph, Model, NodeKind, Op, ValueId};

/// Whether `v` is `x.shape[0:1]` computed from a Shape of `x`.
fn is_leading_dim_of(g: &Graph, v: ValueId, x: ValueId) -> bool {
    let n = g.node(v.node);
    let Some(op) = n.op() else { return false };
    let ins = n.inputs();
    let shape_of_x = |s: Option<ValueId>| {
        s.is_some_and(|s| {
            let sn = g.node(s.node);
            sn.op().is_some_and(|o| o.op_type == "Shape")
                && sn.inputs().first().copied().flatten() == Some(x)
                && util::attr_int(sn, "start", 0) == 0
        })
    };
    match op.op_type.as_str() {
        "Slice" => {
            shape_of_x(ins.first().copied().flatten())
                && util::const_i64(g, ins.get(1).copied().flatten()) == Some(vec![0])
                && util::const_i64(g, ins.get(2).copied().flatten()) == Some(vec![1])
                && ins
                    .get(3)
                    .copied()
                    .flatten()
                    .is_none_or(|a| util::const_i64(g, Some(a)) == Some(vec![0]))
                && ins
                    .get(4)
                    .copied()
                    .flatten()
                    .is_none_or(|a| util::const_i64(g, Some(a)) == Some(vec![1]))
        }
        "Gather" => {
            util::attr_int(n, "axis", 0) == 0
                && shape_of_x(ins.first().copied().flatten())
                && ins
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|i| g.constant(i))
                    .is_some_and(|t| t.dims == vec![1] && t.to_i64_vec() == Some(vec![0]))
        }
        "Unsqueeze" => {
            let axes = util::attr_ints(n, "axes")
                .or_else(|| util::const_i64(g, ins.get(1).copied().flatten()));
            let Some(inner) = ins.first().copied().flatten() else {
                return false;
            };
            let gn = g.node(inner.node);
            axes == Some(vec![0])
                && gn.op().is_some_and(|o| o.op_type == "Gather")
                && util::attr_int(gn, "axis", 0) == 0
                && shape_of_x(gn.inputs().first().copied().flatten())
                && gn
                    .inputs()
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|i| g.constant(i))
                    .is_some_and(|t| t.dims.is_empty() && t.to_i64_vec() == Some(vec![0]))
        }
        _ => false,
    }
}

/// Whether the Reshape `id` is `x.view(x.size(0), -1)`.
fn is_flatten_pattern(g: &Graph, id: crate::ir::NodeId) -> bool {
    let ins = g.node(id).inputs();
    let (Some(x), Some(s)) = (
        ins.first().copied().flatten(),
        ins.get(1).copied().flatten(),
    ) else {
        return false;
    };
    let cn = g.node(s.node);
    if cn.op().map(|o| o.op_type.as_str()) != Some("Concat")
        || cn.inputs().len() != 2
        || util::attr_int(cn, "axis", 0) != 0
    {
        return false;
    }
    let (Some(a), Some(b)) = (cn.inputs()[0], cn.inputs()[1]) else {
        return false;
    };
    util::const_i64(g, Some(b)) == Some(vec![-1])
        && g.constant(b).is_some_and(|t| t.dims == vec![1])
        && is_leading_dim_of(g, a, x)
}

pub struct FuseReshapes;

impl Pass for FuseReshapes {
    fn name(&self) -> &'static str {
        "fuse-reshapes"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        if model.opset("").unwrap_or(1) < 5 {
            // Reshape took its shape as an attribute before opset 5.
            return Ok(false);
        }
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let Ok(order) = g.topo_order() else {
                return Ok(false);
            };
            for outer in order {
                if !g.contains(outer)
                    || g.node(outer).op().map(|o| o.op_type.as_str()) != Some("Reshape")
                {
                    continue;
                }
                if is_flatten_pattern(g, outer) {
                    let x = g.node(outer).inputs()[0];
                    g.set_inputs(outer, vec![x]);
                    let n = g.node_mut(outer);
                    let mut op = Op::new("Flatten");
                    op.attributes
                        .push(Attribute::new("axis", AttrValue::Int(1)));
                    n.kind = NodeKind::Op(op);
                    util::remove_dead(g);
                    changed = true;
                    continue;
                }
                let ins = g.node(outer).inputs().to_vec();
                let (Some(mid), Some(shape)) = (
                    ins.first().copied().flatten(),
                    ins.get(1).copied().flatten(),
                ) else {
                    continue;
                };
                let Some(target) = util::const_i64(g, Some(shape)) else {
                    continue;
                };
                if target.contains(&0) {
                    continue;
                }
                let inner = mid.node;
                let is_reshape = matches!(
                    g.node(inner).op().map(|o| o.op_type.as_str()),
                    Some("Reshape" | "Flatten")
                );
                if !is_reshape || util::single_use(g, mid) != Some((outer, 0)) {
                    continue;
                }
                let Some(x) = g.node(inner).inputs().first().copied().flatten() else {
                    continue;
                };
                g.set_input(outer, 0, Some(x));
                if g.uses(ValueId {
                    node: inner,
                    output: 0,
                })
                .is_empty()
                {
                    let _ = g.remove_node(inner);
                }
                changed = true;
            }
            Ok(changed)
        })
    }
}
