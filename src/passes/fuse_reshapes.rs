//! `fuse-reshapes`: `Reshape(R(x), s) → Reshape(x, s)` where R is a Reshape or Flatten whose only
//! use is the outer Reshape, and the constant target `s` has no `0` entry (a `0` copies a dim of
//! the intermediate shape, which x does not have). `-1` is fine: the element count is the same.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{Model, ValueId};

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
            let Ok(order) = g.topo_order() else { return Ok(false) };
            for outer in order {
                if !g.contains(outer) || g.node(outer).op().map(|o| o.op_type.as_str()) != Some("Reshape") {
                    continue;
                }
                let ins = g.node(outer).inputs().to_vec();
                let (Some(mid), Some(shape)) = (ins.first().copied().flatten(), ins.get(1).copied().flatten()) else { continue };
                let Some(target) = util::const_i64(g, Some(shape)) else { continue };
                if target.contains(&0) {
                    continue;
                }
                let inner = mid.node;
                let is_reshape = matches!(g.node(inner).op().map(|o| o.op_type.as_str()), Some("Reshape" | "Flatten"));
                if !is_reshape || util::single_use(g, mid) != Some((outer, 0)) {
                    continue;
                }
                let Some(x) = g.node(inner).inputs().first().copied().flatten() else { continue };
                g.set_input(outer, 0, Some(x));
                if g.uses(ValueId { node: inner, output: 0 }).is_empty() {
                    let _ = g.remove_node(inner);
                }
                changed = true;
            }
            Ok(changed)
        })
    }
}
