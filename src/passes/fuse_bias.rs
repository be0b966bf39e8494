//! `fuse-bias`:
//! - `Add(Conv(x, W, b), c) → Conv(x, W, b + c)` when `c` is a constant holding one value per output
//!   channel (shape `[M, 1, …]` or `[1, M, 1, …]`, trailing ones up to the spatial rank);
//! - `Add(MatMul(a, B), c) → Gemm(a, B, c)` when `a` is 2-D (static shape), `B` a constant
//!   `[K, N]` and `c` a constant `[N]` or `[1, N]` (Gemm's bias broadcast is exactly that).
//!
//! Declines: shared weights or bias, a Conv/MatMul output read elsewhere or a graph output,
//! non-float constants, `a` of unknown or other rank.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::analysis::shapes;
use crate::ir::{Graph, Model, Node, NodeId, NodeKind, Op, Tensor, Value, ValueId};
use std::collections::HashSet;

pub struct FuseBias;

enum Plan {
    ConvBias { conv: NodeId, bias: Tensor },
    Gemm { matmul: NodeId, a: ValueId, b: ValueId, c: ValueId },
}

fn try_match(g: &Graph, add: NodeId, rank_of: &dyn Fn(ValueId) -> Option<usize>) -> Result<Plan, String> {
    let n = g.node(add);
    let ins = n.inputs();
    let (Some(l), Some(r)) = (ins.first().copied().flatten(), ins.get(1).copied().flatten()) else {
        return Err("needs two inputs".into());
    };
    // The constant side and the producer side, in either order.
    let (p, c) = if g.constant(r).is_some() { (l, r) } else if g.constant(l).is_some() { (r, l) } else { return Err("no constant operand".into()) };
    let pn = g.node(p.node);
    let Some(pop) = pn.op() else { return Err("not after an operator".into()) };
    if !pop.is_default_domain() || !matches!(pop.op_type.as_str(), "Conv" | "MatMul") {
        return Err(format!("after {}, not Conv/MatMul", pop.op_type));
    }
    if util::single_use(g, p) != Some((add, if p == l { 0 } else { 1 })) {
        return Err(format!("{} output is used elsewhere or is a graph output", pop.op_type));
    }
    if g.uses(ValueId { node: add, output: 0 }).iter().any(|(_, s)| s.is_none()) {
        return Err("output is read by name inside a subgraph".into());
    }
    let (cdims, cvals) = util::const_f32(g, Some(c)).ok_or("constant is not float")?;
    if pop.op_type == "Conv" {
        let wv = pn.inputs().get(1).copied().flatten().ok_or("no weight")?;
        let w = g.constant(wv).ok_or("weight is not constant")?;
        let m = *w.dims.first().ok_or("weight has no dims")? as usize;
        let spatial = w.dims.len().saturating_sub(2);
        // [M, 1, ...] (rank spatial+1) or [1, M, 1, ...] (rank spatial+2)
        let per_channel = (cdims.len() == spatial + 1 && cdims[0] as usize == m && cdims[1..].iter().all(|&d| d == 1))
            || (cdims.len() == spatial + 2 && cdims[0] == 1 && cdims[1] as usize == m && cdims[2..].iter().all(|&d| d == 1));
        if !per_channel {
            return Err(format!("constant {cdims:?} is not one value per output channel"));
        }
        let b: Vec<f32> = match pn.inputs().get(2).copied().flatten() {
            None => vec![0.0; m],
            Some(bv) => {
                if !util::exclusive_initializer(g, bv, p.node) {
                    return Err("bias is shared or not constant".into());
                }
                util::const_f32(g, Some(bv)).ok_or("bias is not float")?.1
            }
        };
        if b.len() != m {
            return Err("bias length differs from output channels".into());
        }
        let bias: Vec<f32> = b.iter().zip(&cvals).map(|(x, y)| x + y).collect();
        return Ok(Plan::ConvBias { conv: p.node, bias: Tensor::from_f32(vec![m as i64], &bias) });
    }
    // MatMul → Gemm
    let a = pn.inputs().first().copied().flatten().ok_or("no A")?;
    let b = pn.inputs().get(1).copied().flatten().ok_or("no B")?;
    let bt = g.constant(b).ok_or("B is not constant")?;
    if bt.dims.len() != 2 {
        return Err("B is not 2-D".into());
    }
    if rank_of(a) != Some(2) {
        return Err("A is not known to be 2-D".into());
    }
    let n_out = bt.dims[1];
    let ok = (cdims.len() == 1 && cdims[0] == n_out) || (cdims.len() == 2 && cdims[0] == 1 && cdims[1] == n_out);
    if !ok {
        return Err(format!("bias {cdims:?} does not broadcast as Gemm's C [{n_out}]"));
    }
    Ok(Plan::Gemm { matmul: p.node, a, b, c })
}

impl Pass for FuseBias {
    fn name(&self) -> &'static str {
        "fuse-bias"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let has_matmul = model.graph.ops().any(|(_, _, op)| op.op_type == "MatMul");
        let facts = if has_matmul { shapes::infer(model, &cx.input_shapes).unwrap_or_default() } else { Default::default() };
        let g = &mut model.graph;
        let mut names: HashSet<String> = util::all_names(g);
        let mut changed = false;
        let adds: Vec<NodeId> = g.ops().filter(|(_, _, op)| op.op_type == "Add" && op.is_default_domain()).map(|(id, _, _)| id).collect();
        for add in adds {
            if !g.contains(add) {
                continue;
            }
            let rank_of = |v: ValueId| -> Option<usize> {
                let gg = &*g;
                gg.value(v)
                    .ty
                    .as_ref()
                    .and_then(|t| t.fixed_dims())
                    .map(|d| d.len())
                    .or_else(|| facts.get(&gg.value(v).name).and_then(|f| f.dims.as_ref()).map(|d| d.len()))
            };
            let plan = try_match(g, add, &rank_of);
            match plan {
                Err(why) => {
                    if !why.starts_with("after") && !why.starts_with("no constant") && !why.starts_with("not after") {
                        cx.skip(format!("Add '{}': {why}", g.node(add).display_name()));
                    }
                }
                Ok(Plan::ConvBias { conv, bias }) => {
                    let base = format!("{}_bias", g.node(conv).display_name());
                    util::set_const_input(g, &mut names, conv, 2, bias, &base);
                    changed |= util::absorb(g, &mut names, ValueId { node: conv, output: 0 }, add);
                }
                Ok(Plan::Gemm { matmul, a, b, c }) => {
                    let mm = g.node(matmul);
                    let name = if mm.name.is_empty() { String::new() } else { util::fresh_name(&mut names, &format!("{}_gemm", mm.name)) };
                    let out_value = mm.outputs[0].clone();
                    let mut node = Node::new(name, NodeKind::Op(Op::new("Gemm")), vec![Some(a), Some(b), Some(c)], vec![Value { name: util::fresh_name(&mut names, &format!("{}_gemm", out_value.name)), ..out_value }]);
                    node.doc_string = mm.doc_string.clone();
                    let gemm = g.add_node(node);
                    let gemm_out = ValueId { node: gemm, output: 0 };
                    // The Add's output becomes the Gemm's; MatMul dies.
                    let add_out = ValueId { node: add, output: 0 };
                    let add_name = g.value(add_out).name.clone();
                    let add_ty = g.value(add_out).ty.clone();
                    g.value_mut(add_out).name = util::fresh_name(&mut names, &format!("{add_name}__fused"));
                    g.value_mut(gemm_out).name = add_name;
                    g.value_mut(gemm_out).ty = add_ty;
                    g.replace_all_uses(add_out, gemm_out, true);
                    let _ = g.remove_node(add);
                    let _ = g.remove_node(matmul);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }
}
