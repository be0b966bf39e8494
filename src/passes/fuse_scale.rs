//! `fuse-scale`: `Mul(P(x), c) → P'(x)` for P = Conv or Gemm with constant weight, when `c` is a
//! constant scalar or holds one value per output channel (Conv: `[M, 1, …]` or `[1, M, 1, …]`;
//! Gemm: `[N]` or `[1, N]`).
//!
//! `(W∗x + b)·c = (W·c)∗x + b·c`: scale the weight's output-channel slices and the bias by `c`.
//! Declines: shared weight or bias, a producer output read elsewhere or a graph output, non-float
//! data, Gemm with `alpha`/`beta` ≠ 1, any other broadcast of `c`.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, Tensor, ValueId};

pub struct FuseScale;

struct Plan {
    producer: NodeId,
    weight: Tensor,
    bias: Option<Tensor>,
}

fn try_match(g: &Graph, mul: NodeId) -> Result<Plan, String> {
    let (p, c) = util::binary_after(g, mul, &["Conv", "Gemm"])?;
    let pn = g.node(p.node);
    let pop = pn.op().expect("checked by binary_after");
    let (cdims, cv) = util::const_f32(g, Some(c)).ok_or("constant is not float")?;
    let wv = pn.inputs().get(1).copied().flatten().ok_or("no weight")?;
    if !util::exclusive_initializer(g, wv, p.node) {
        return Err("weight is not a constant used only by this node".into());
    }
    let (wdims, mut w) = util::const_f32(g, Some(wv)).ok_or("weight is not float")?;
    let bias = match pn.inputs().get(2).copied().flatten() {
        None => None,
        Some(bv) => {
            if !util::exclusive_initializer(g, bv, p.node) {
                return Err("bias is shared or not constant".into());
            }
            Some(util::const_f32(g, Some(bv)).ok_or("bias is not float")?)
        }
    };
    let scalar = cv.len() == 1 && cdims.iter().all(|&d| d == 1);
    let (m, scale_of): (usize, Box<dyn Fn(usize) -> f32>) = if pop.op_type == "Conv" {
        let m = wdims[0] as usize;
        let spatial = wdims.len().saturating_sub(2);
        let per_channel = (cdims.len() == spatial + 1
            && cdims[0] as usize == m
            && cdims[1..].iter().all(|&d| d == 1))
            || (cdims.len() == spatial + 2
                && cdims[0] == 1
                && cdims[1] as usize == m
                && cdims[2..].iter().all(|&d| d == 1));
        if !scalar && !per_channel {
            return Err(format!(
                "constant {cdims:?} is not a scalar or one value per output channel"
            ));
        }
        let per = w.len() / m.max(1);
        let cv2 = cv.clone();
        for (k, chunk) in w.chunks_mut(per).enumerate() {
            let s = if scalar { cv2[0] } else { cv2[k] };
            chunk.iter_mut().for_each(|x| *x *= s);
        }
        (m, Box::new(move |k| if scalar { cv[0] } else { cv[k] }))
    } else {
        if util::attr_float(pn, "alpha", 1.0) != 1.0 || util::attr_float(pn, "beta", 1.0) != 1.0 {
            return Err("Gemm alpha or beta is not 1".into());
        }
        let trans_b = util::attr_int(pn, "transB", 0) == 1;
        let (rows, cols) = (wdims[0] as usize, wdims[1] as usize);
        let n_out = if trans_b { rows } else { cols };
        let per_channel = (cdims.len() == 1 && cdims[0] as usize == n_out)
            || (cdims.len() == 2 && cdims[0] == 1 && cdims[1] as usize == n_out);
        if !scalar && !per_channel {
            return Err(format!("constant {cdims:?} is not a scalar or [N]"));
        }
        for i in 0..rows {
            for j in 0..cols {
                let k = if trans_b { i } else { j };
                w[i * cols + j] *= if scalar { cv[0] } else { cv[k] };
            }
        }
        (n_out, Box::new(move |k| if scalar { cv[0] } else { cv[k] }))
    };
    let bias = match bias {
        None => None,
        Some((bd, b)) => {
            if b.len() != m {
                return Err(format!("bias {bd:?} is not one value per output"));
            }
            Some(Tensor::from_f32(
                vec![m as i64],
                &b.iter()
                    .enumerate()
                    .map(|(k, x)| x * scale_of(k))
                    .collect::<Vec<_>>(),
            ))
        }
    };
    Ok(Plan {
        producer: p.node,
        weight: Tensor::from_f32(wdims, &w),
        bias,
    })
}

impl Pass for FuseScale {
    fn name(&self) -> &'static str {
        "fuse-scale"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let mut names = util::all_names(g);
            let muls: Vec<NodeId> = g
                .ops()
                .filter(|(_, _, op)| op.op_type == "Mul" && op.is_default_domain())
                .map(|(id, _, _)| id)
                .collect();
            for mul in muls {
                if !g.contains(mul) {
                    continue;
                }
                match try_match(g, mul) {
                    Err(why) => {
                        if !why.starts_with("not a fusion site") {
                            cx.skip(format!("Mul '{}': {why}", g.node(mul).display_name()));
                        }
                    }
                    Ok(plan) => {
                        util::set_const_input(
                            g,
                            &mut names,
                            plan.producer,
                            1,
                            plan.weight,
                            "unused",
                        );
                        if let Some(b) = plan.bias {
                            util::set_const_input(g, &mut names, plan.producer, 2, b, "unused");
                        }
                        changed |= util::absorb(
                            g,
                            &mut names,
                            ValueId {
                                node: plan.producer,
                                output: 0,
                            },
                            mul,
                        );
                    }
                }
            }
            Ok(changed)
        })
    }
}
