//! `fuse-batch-norm`: `BatchNormalization(P(x)) → P'(x)` for P = Conv, ConvTranspose or Gemm with
//! constant weights.
//!
//! Inference BN computes `y = (p − mean)·s + β` with `s = γ / √(var + ε)` per output channel. With
//! `p = W∗x + b` that is `(W·s)∗x + ((b − mean)·s + β)`: scale the weight's output-channel slices
//! by `s` and replace the bias. Output channels are axis 0 of a Conv weight `[M, C/g, k…]`; axis 1,
//! group by group, of a ConvTranspose weight `[C, M/g, k…]`; for Gemm the N axis of B (`transB`
//! picks which), with `alpha = beta = 1`.
//!
//! Declines: BN in training mode or with extra outputs in use; non-float or non-constant
//! parameters; a weight or bias shared with another node; a producer output that is also read
//! elsewhere or is a graph output (it would change); ε default 1e-5 per the ONNX spec.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, NodeId, Tensor, ValueId};

pub struct FuseBatchNorm;

/// ONNX's default `epsilon` for BatchNormalization.
const DEFAULT_EPSILON: f32 = 1e-5;

struct Plan {
    producer: NodeId,
    weight: Tensor,
    bias: Tensor,
}

fn try_match(g: &Graph, bn: NodeId) -> Result<Plan, String> {
    let n = g.node(bn);
    let ins = n.inputs();
    if util::attr_int(n, "training_mode", 0) != 0 {
        return Err("training mode".into());
    }
    if (1..n.outputs.len()).any(|k| {
        let v = ValueId {
            node: bn,
            output: k,
        };
        !g.uses(v).is_empty() || g.is_graph_output(v)
    }) {
        return Err("running statistics outputs are used".into());
    }
    if g.uses(ValueId {
        node: bn,
        output: 0,
    })
    .iter()
    .any(|(_, s)| s.is_none())
    {
        return Err("output is read by name inside a subgraph".into());
    }
    let x = ins.first().copied().flatten().ok_or("no input")?;
    let p = x.node;
    let pn = g.node(p);
    let pop = pn.op().ok_or("input is not produced by an operator")?;
    if !pop.is_default_domain()
        || !matches!(pop.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm")
    {
        return Err(format!(
            "input comes from {}, not Conv/ConvTranspose/Gemm",
            pop.op_type
        ));
    }
    if util::single_use(g, x) != Some((bn, 0)) {
        return Err(format!(
            "{} output is used elsewhere or is a graph output",
            pop.op_type
        ));
    }
    let param = |k: usize| {
        util::const_f32(g, ins.get(k).copied().flatten())
            .ok_or(format!("parameter {k} is not a constant float tensor"))
    };
    let (gamma, beta, mean, var) = (param(1)?.1, param(2)?.1, param(3)?.1, param(4)?.1);
    let eps = util::attr_float(n, "epsilon", DEFAULT_EPSILON);
    let m = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != m) {
        return Err("parameters differ in length".into());
    }
    let s: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();

    let wv = pn.inputs().get(1).copied().flatten().ok_or("no weight")?;
    if !util::exclusive_initializer(g, wv, p) {
        return Err("weight is not a constant used only by this node".into());
    }
    let (wdims, mut w) = util::const_f32(g, Some(wv)).ok_or("weight is not float")?;
    let bslot = 2;
    let bias_v = pn.inputs().get(bslot).copied().flatten();
    let b: Vec<f32> = match bias_v {
        None => vec![0.0; m],
        Some(bv) => {
            if !util::exclusive_initializer(g, bv, p) {
                return Err("bias is not a constant used only by this node".into());
            }
            let (bd, b) = util::const_f32(g, Some(bv)).ok_or("bias is not float")?;
            if b.len() != m || bd.len() > 2 {
                return Err(format!("bias shape {bd:?} is not per output channel"));
            }
            b
        }
    };
    match pop.op_type.as_str() {
        "Conv" => {
            if wdims.first() != Some(&(m as i64)) {
                return Err(format!(
                    "weight has {:?} output channels, BN has {m}",
                    wdims.first()
                ));
            }
            if m == 0 || w.is_empty() {
                return Err("empty weight or no channels".into());
            }
            let per = w.len() / m;
            for (c, chunk) in w.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|x| *x *= s[c]);
            }
        }
        "ConvTranspose" => {
            let group = util::attr_int(pn, "group", 1).max(1) as usize;
            if wdims.len() < 2 || (wdims[1] as usize) * group != m {
                return Err(format!(
                    "weight {wdims:?} with group {group} does not give {m} output channels"
                ));
            }
            let (cin, mpg) = (wdims[0] as usize, wdims[1] as usize);
            if cin == 0 || cin % group != 0 {
                return Err(format!(
                    "{cin} input channels do not split into {group} groups"
                ));
            }
            let k: usize = wdims[2..].iter().product::<i64>() as usize;
            for ci in 0..cin {
                let grp = ci / (cin / group);
                for j in 0..mpg {
                    let sc = s[grp * mpg + j];
                    let base = (ci * mpg + j) * k;
                    w[base..base + k].iter_mut().for_each(|x| *x *= sc);
                }
            }
        }
        _ => {
            // Gemm
            if util::attr_float(pn, "alpha", 1.0) != 1.0 || util::attr_float(pn, "beta", 1.0) != 1.0
            {
                return Err("Gemm alpha or beta is not 1".into());
            }
            let trans_b = util::attr_int(pn, "transB", 0) == 1;
            if wdims.len() != 2 {
                return Err("Gemm weight is not 2-D".into());
            }
            let (rows, cols) = (wdims[0] as usize, wdims[1] as usize);
            let n_out = if trans_b { rows } else { cols };
            if n_out != m {
                return Err(format!("Gemm has {n_out} outputs, BN has {m}"));
            }
            for r in 0..rows {
                for c in 0..cols {
                    w[r * cols + c] *= s[if trans_b { r } else { c }];
                }
            }
        }
    }
    let new_b: Vec<f32> = (0..m).map(|c| (b[c] - mean[c]) * s[c] + beta[c]).collect();
    Ok(Plan {
        producer: p,
        weight: Tensor::from_f32(wdims, &w),
        bias: Tensor::from_f32(vec![m as i64], &new_b),
    })
}

impl Pass for FuseBatchNorm {
    fn name(&self) -> &'static str {
        "fuse-batch-norm"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let mut names = util::all_names(g);
            let bns: Vec<NodeId> = g
                .ops()
                .filter(|(_, _, op)| op.op_type == "BatchNormalization" && op.is_default_domain())
                .map(|(id, _, _)| id)
                .collect();
            for bn in bns {
                match try_match(g, bn) {
                    Err(why) => cx.skip(format!(
                        "BatchNormalization '{}': {why}",
                        g.node(bn).display_name()
                    )),
                    Ok(plan) => {
                        let out = ValueId {
                            node: plan.producer,
                            output: 0,
                        };
                        let base = format!("{}_fused_bias", g.value(out).name);
                        util::set_const_input(
                            g,
                            &mut names,
                            plan.producer,
                            1,
                            plan.weight,
                            "unused",
                        );
                        util::set_const_input(g, &mut names, plan.producer, 2, plan.bias, &base);
                        // Only the first output is used (checked), so the BN can go.
                        changed |= util::absorb(g, &mut names, out, bn);
                    }
                }
            }
            Ok(changed)
        })
    }
}
