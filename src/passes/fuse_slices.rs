//! `fuse-slices`: `Slice(Slice(x, s1, e1, a1, st1), s2, e2, a2, st2) → Slice(x, s1++s2, e1++e2,
//! a1++a2, st1++st2)` when both use constant parameters (opset ≥ 10 inputs), their axes are
//! disjoint and known (non-negative, or the rank of x is known), and the inner Slice has no other
//! use. Slices on different axes commute, so one Slice does both.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, Tensor, ValueId};

pub struct FuseSlices;

/// `(starts, ends, axes, steps)` of a Slice with constant parameters; absent axes are 0..n and
/// absent steps are 1, per the spec.
fn params(g: &Graph, id: NodeId) -> Option<[Vec<i64>; 4]> {
    let ins = g.node(id).inputs();
    let starts = util::const_i64(g, ins.get(1).copied().flatten())?;
    let ends = util::const_i64(g, ins.get(2).copied().flatten())?;
    let axes = match ins.get(3).copied().flatten() {
        Some(a) => util::const_i64(g, Some(a))?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match ins.get(4).copied().flatten() {
        Some(s) => util::const_i64(g, Some(s))?,
        None => vec![1; starts.len()],
    };
    if [ends.len(), axes.len(), steps.len()]
        .iter()
        .any(|&l| l != starts.len())
        || axes.iter().any(|&a| a < 0)
    {
        return None;
    }
    Some([starts, ends, axes, steps])
}

impl Pass for FuseSlices {
    fn name(&self) -> &'static str {
        "fuse-slices"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        if model.opset("").unwrap_or(1) < 10 {
            return Ok(false);
        }
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let mut names = util::all_names(g);
            let Ok(order) = g.topo_order() else {
                return Ok(false);
            };
            for outer in order {
                if !g.contains(outer)
                    || g.node(outer).op().map(|o| o.op_type.as_str()) != Some("Slice")
                {
                    continue;
                }
                let Some(mid) = g.node(outer).inputs().first().copied().flatten() else {
                    continue;
                };
                let inner = mid.node;
                if g.node(inner).op().map(|o| o.op_type.as_str()) != Some("Slice")
                    || util::single_use(g, mid) != Some((outer, 0))
                {
                    continue;
                }
                let (Some(p1), Some(p2)) = (params(g, inner), params(g, outer)) else {
                    continue;
                };
                if p1[2].iter().any(|a| p2[2].contains(a)) {
                    continue;
                }
                let Some(x) = g.node(inner).inputs().first().copied().flatten() else {
                    continue;
                };
                let base = g.node(outer).display_name().to_string();
                let merged: Vec<ValueId> = (0..4)
                    .map(|k| {
                        let v: Vec<i64> = p1[k].iter().chain(&p2[k]).copied().collect();
                        let suffix = ["starts", "ends", "axes", "steps"][k];
                        let name = util::fresh_name(&mut names, &format!("{base}_{suffix}"));
                        util::add_initializer(g, &name, Tensor::from_i64(vec![v.len() as i64], &v))
                    })
                    .collect();
                g.set_inputs(
                    outer,
                    vec![
                        Some(x),
                        Some(merged[0]),
                        Some(merged[1]),
                        Some(merged[2]),
                        Some(merged[3]),
                    ],
                );
                util::remove_dead(g);
                changed = true;
            }
            Ok(changed)
        })
    }
}
