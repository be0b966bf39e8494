//! `fuse-transposes`: `Transpose(Transpose(x, p1), p2) → Transpose(x, p)` with `p[i] = p1[p2[i]]`,
//! or just `x` when `p` is the identity.
//!
//! Declines: a missing `perm` (its meaning depends on the rank), an inner Transpose whose output is
//! read elsewhere or is a graph output.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{AttrValue, Attribute, Model, NodeId, ValueId};

pub struct FuseTransposes;

impl Pass for FuseTransposes {
    fn name(&self) -> &'static str {
        "fuse-transposes"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let mut names = util::all_names(g);
            let Ok(order) = g.topo_order() else {
                return Ok(false);
            };
            for outer in order {
                if !g.contains(outer)
                    || g.node(outer).op().map(|o| o.op_type.as_str()) != Some("Transpose")
                {
                    continue;
                }
                let Some(mid) = g.node(outer).inputs().first().copied().flatten() else {
                    continue;
                };
                let inner: NodeId = mid.node;
                if g.node(inner).op().map(|o| o.op_type.as_str()) != Some("Transpose")
                    || util::single_use(g, mid) != Some((outer, 0))
                {
                    continue;
                }
                let (Some(p1), Some(p2)) = (
                    util::attr_ints(g.node(inner), "perm"),
                    util::attr_ints(g.node(outer), "perm"),
                ) else {
                    continue;
                };
                if p1.len() != p2.len() || p2.iter().any(|&i| i < 0 || i as usize >= p1.len()) {
                    continue;
                }
                let p: Vec<i64> = p2.iter().map(|&i| p1[i as usize]).collect();
                let Some(x) = g.node(inner).inputs().first().copied().flatten() else {
                    continue;
                };
                if p.iter().enumerate().all(|(i, &v)| v == i as i64) {
                    if util::absorb(g, &mut names, x, outer) {
                        let _ = g.remove_node(inner);
                        changed = true;
                    }
                    continue;
                }
                // Outer reads x directly with the composed perm; inner dies.
                g.set_input(outer, 0, Some(x));
                if let Some(op) = g.node_mut(outer).op_mut() {
                    op.attributes.retain(|a| a.name != "perm");
                    op.attributes
                        .push(Attribute::new("perm", AttrValue::Ints(p)));
                }
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
