//! `fuse-bias`:
//! - `Add(Conv(x, W, b), c) → Conv(x, W, b + c)` when `c` is a constant holding one value per output
//!   channel (shape `[M, 1, …]` or `[1, M, 1, …]`, trailing ones up to the spatial rank);
//! - `Add(MatMul(a, B), c) → Gemm(a, B, c)` when `a` is 2-D (static shape), `B` a constant
//!   `[K, N]` and `c` a constant `[N]` or `[1, N]` (Gemm's bias broadcast is exactly that).
//!
//! Declines: shared weights or bias, a Conv/MatMul output read elsewhere or a graph output,
//! non-float constants, `a` of unknown or other rank.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{Graph, Model, Node, NodeId, NodeKind, Op, Tensor, Value, ValueId};
use std::collections::HashSet;

pub struct FuseBias;

enum Plan {
    ConvBias {
        conv: NodeId,
        bias: Tensor,
    },
    Gemm {
        matmul: NodeId,
        a: ValueId,
        b: ValueId,
        c: ValueId,
    },
    /// A has rank > 2: flatten it to `[-1, K]`, Gemm, reshape back to `[d0, …, N]`.
    GemmNd {
        matmul: NodeId,
        a: ValueId,
        b: ValueId,
        c: ValueId,
        a_dims: Vec<i64>,
    },
}

/// Whether `v` (single use) feeds a Reshape with a constant target free of `0`: fuse-reshapes will
/// merge a Reshape placed before it.
fn feeds_reshape(g: &Graph, v: ValueId) -> bool {
    let Some((c, 0)) = util::single_use(g, v) else {
        return false;
    };
    let n = g.node(c);
    n.op().is_some_and(|o| o.op_type == "Reshape")
        && util::const_i64(g, n.inputs().get(1).copied().flatten()).is_some_and(|t| !t.contains(&0))
}

/// A `Flatten(a, axis = rank-1)` already reading `a` (made for another MatMul on the same input).
fn existing_flatten(g: &Graph, a: ValueId, rank: usize) -> Option<ValueId> {
    g.uses(a).into_iter().find_map(|(u, slot)| {
        let n = g.node(u);
        (slot == Some(0)
            && n.op().is_some_and(|o| o.op_type == "Flatten")
            && util::attr_int(n, "axis", 1) == rank as i64 - 1)
            .then_some(ValueId { node: u, output: 0 })
    })
}

fn try_match(
    g: &Graph,
    add: NodeId,
    dims_of: &dyn Fn(ValueId) -> Option<Vec<i64>>,
) -> Result<Plan, String> {
    let (p, c) = util::binary_after(g, add, &["Conv", "MatMul"])?;
    let pn = g.node(p.node);
    let pop = pn.op().expect("checked by binary_after");
    let (cdims, cvals) = util::const_f32(g, Some(c)).ok_or("constant is not float")?;
    if pop.op_type == "Conv" {
        let wv = pn.inputs().get(1).copied().flatten().ok_or("no weight")?;
        let w = g.constant(wv).ok_or("weight is not constant")?;
        let m = *w.dims.first().ok_or("weight has no dims")? as usize;
        let spatial = w.dims.len().saturating_sub(2);
        // [M, 1, ...] (rank spatial+1) or [1, M, 1, ...] (rank spatial+2)
        let per_channel = (cdims.len() == spatial + 1
            && cdims[0] as usize == m
            && cdims[1..].iter().all(|&d| d == 1))
            || (cdims.len() == spatial + 2
                && cdims[0] == 1
                && cdims[1] as usize == m
                && cdims[2..].iter().all(|&d| d == 1));
        if !per_channel {
            return Err(format!(
                "constant {cdims:?} is not one value per output channel"
            ));
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
        return Ok(Plan::ConvBias {
            conv: p.node,
            bias: Tensor::from_f32(vec![m as i64], &bias),
        });
    }
    // MatMul → Gemm
    let a = pn.inputs().first().copied().flatten().ok_or("no A")?;
    let b = pn.inputs().get(1).copied().flatten().ok_or("no B")?;
    let bt = g.constant(b).ok_or("B is not constant")?;
    if bt.dims.len() != 2 {
        return Err("B is not 2-D".into());
    }
    let n_out = bt.dims[1];
    let ok = (cdims.len() == 1 && cdims[0] == n_out)
        || (cdims.len() == 2 && cdims[0] == 1 && cdims[1] == n_out);
    if !ok {
        return Err(format!(
            "bias {cdims:?} does not broadcast as Gemm's C [{n_out}]"
        ));
    }
    let a_dims = dims_of(a).ok_or("A has no static shape (not known to be 2-D)")?;
    if a_dims.len() == 2 {
        return Ok(Plan::Gemm {
            matmul: p.node,
            a,
            b,
            c,
        });
    }
    if a_dims.len() < 2 {
        return Err("A is 1-D".into());
    }
    // Worth it only when both added reshapes disappear: the result feeds a Reshape (the one added
    // after the Gemm merges into it), and A comes from a Reshape/Flatten read only here (the one
    // added before merges into it) or is shared with another MatMul by a constant (their identical
    // Flattens merge into one). Then the rewrite removes nodes and adds no shape constant.
    let an = g.node(a.node);
    let pre = (an
        .op()
        .is_some_and(|o| o.op_type == "Reshape" || o.op_type == "Flatten")
        && util::single_use(g, a).is_some())
        || g.uses(a)
            .iter()
            .filter(|(u, _)| {
                let un = g.node(*u);
                *u != p.node
                    && un.op().is_some_and(|o| o.op_type == "MatMul")
                    && un
                        .inputs()
                        .get(1)
                        .copied()
                        .flatten()
                        .and_then(|w| g.constant(w))
                        .is_some_and(|w| w.dims.len() == 2)
            })
            .count()
            > 0
        || existing_flatten(g, a, a_dims.len()).is_some();
    let post = feeds_reshape(
        g,
        ValueId {
            node: add,
            output: 0,
        },
    );
    if !(pre && post) {
        return Err("A is not 2-D and the reshapes around a Gemm would not all merge".into());
    }
    Ok(Plan::GemmNd {
        matmul: p.node,
        a,
        b,
        c,
        a_dims,
    })
}

impl Pass for FuseBias {
    fn name(&self) -> &'static str {
        "fuse-bias"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let has_matmul = model.graph.ops().any(|(_, _, op)| op.op_type == "MatMul");
        let facts = if has_matmul {
            cx.facts(model)
        } else {
            Default::default()
        };
        let g = &mut model.graph;
        let mut names: HashSet<String> = util::all_names(g);
        let mut changed = false;
        let adds: Vec<NodeId> = g
            .ops()
            .filter(|(_, _, op)| op.op_type == "Add" && op.is_default_domain())
            .map(|(id, _, _)| id)
            .collect();
        for add in adds {
            if !g.contains(add) {
                continue;
            }
            let dims_of = |v: ValueId| -> Option<Vec<i64>> {
                let gg = &*g;
                gg.value(v)
                    .ty
                    .as_ref()
                    .and_then(|t| t.fixed_dims())
                    .or_else(|| facts.get(&gg.value(v).name).and_then(|f| f.dims.clone()))
            };
            let plan = try_match(g, add, &dims_of);
            match plan {
                Err(why) => {
                    if !why.starts_with("not a fusion site") {
                        cx.skip(format!("Add '{}': {why}", g.node(add).display_name()));
                    }
                }
                Ok(Plan::ConvBias { conv, bias }) => {
                    let base = format!("{}_bias", g.node(conv).display_name());
                    util::set_const_input(g, &mut names, conv, 2, bias, &base);
                    changed |= util::absorb(
                        g,
                        &mut names,
                        ValueId {
                            node: conv,
                            output: 0,
                        },
                        add,
                    );
                }
                Ok(Plan::GemmNd {
                    matmul,
                    a,
                    b,
                    c,
                    a_dims,
                }) => {
                    let k = *a_dims.last().unwrap();
                    let n_out = g.constant(b).map(|t| t.dims[1]).unwrap_or(0);
                    // Reuse the names of the nodes and values this replaces, so the file does not grow.
                    let base = g.node(matmul).display_name().to_string();
                    let mm_out = ValueId {
                        node: matmul,
                        output: 0,
                    };
                    let mm_name = g.value(mm_out).name.clone();
                    g.value_mut(mm_out).name =
                        util::fresh_name(&mut names, &format!("{mm_name}__fused"));
                    // A Reshape/Flatten producing A absorbs a Reshape to [-1, K]; otherwise a Flatten at
                    // the last axis does the same with no shape constant (and CSE merges the
                    // Flattens of MatMuls sharing A).
                    let a_from_reshape = g
                        .node(a.node)
                        .op()
                        .is_some_and(|o| o.op_type == "Reshape" || o.op_type == "Flatten");
                    let pre = if let Some(f) =
                        existing_flatten(g, a, a_dims.len()).filter(|_| !a_from_reshape)
                    {
                        f.node
                    } else if a_from_reshape {
                        let pre_shape_name = util::fresh_name(&mut names, &format!("{base}_2d"));
                        let pre_shape = util::add_initializer(
                            g,
                            &pre_shape_name,
                            Tensor::from_i64(vec![2], &[-1, k]),
                        );
                        g.add_node(Node::new(
                            String::new(),
                            NodeKind::Op(Op::new("Reshape")),
                            vec![Some(a), Some(pre_shape)],
                            vec![Value::named(mm_name)],
                        ))
                    } else {
                        let mut flat = Op::new("Flatten");
                        flat.attributes.push(crate::ir::Attribute::new(
                            "axis",
                            crate::ir::AttrValue::Int(a_dims.len() as i64 - 1),
                        ));
                        g.add_node(Node::new(
                            String::new(),
                            NodeKind::Op(flat),
                            vec![Some(a)],
                            vec![Value::named(mm_name)],
                        ))
                    };
                    let gemm_out_name = util::fresh_name(&mut names, &format!("{base}_gemm"));
                    let gemm = g.add_node(Node::new(
                        base.clone(),
                        NodeKind::Op(Op::new("Gemm")),
                        vec![
                            Some(ValueId {
                                node: pre,
                                output: 0,
                            }),
                            Some(b),
                            Some(c),
                        ],
                        vec![Value::named(gemm_out_name)],
                    ));
                    let mut out_dims = a_dims[..a_dims.len() - 1].to_vec();
                    out_dims.push(n_out);
                    let post_shape_name = util::fresh_name(&mut names, &format!("{base}_nd"));
                    let post_shape = util::add_initializer(
                        g,
                        &post_shape_name,
                        Tensor::from_i64(vec![out_dims.len() as i64], &out_dims),
                    );
                    let post_name = util::fresh_name(&mut names, &format!("{base}_nd_out"));
                    let post = g.add_node(Node::new(
                        String::new(),
                        NodeKind::Op(Op::new("Reshape")),
                        vec![
                            Some(ValueId {
                                node: gemm,
                                output: 0,
                            }),
                            Some(post_shape),
                        ],
                        vec![Value::named(post_name)],
                    ));
                    let post_out = ValueId {
                        node: post,
                        output: 0,
                    };
                    let add_out = ValueId {
                        node: add,
                        output: 0,
                    };
                    util::take_over(g, &mut names, add_out, post_out, "__fused");
                    let _ = g.remove_node(add);
                    let _ = g.remove_node(matmul);
                    changed = true;
                }
                Ok(Plan::Gemm { matmul, a, b, c }) => {
                    let mm = g.node(matmul);
                    let name = if mm.name.is_empty() {
                        String::new()
                    } else {
                        util::fresh_name(&mut names, &format!("{}_gemm", mm.name))
                    };
                    let out_value = mm.outputs[0].clone();
                    let mut node = Node::new(
                        name,
                        NodeKind::Op(Op::new("Gemm")),
                        vec![Some(a), Some(b), Some(c)],
                        vec![Value {
                            name: util::fresh_name(&mut names, &format!("{}_gemm", out_value.name)),
                            ..out_value
                        }],
                    );
                    node.doc_string = mm.doc_string.clone();
                    let gemm = g.add_node(node);
                    let gemm_out = ValueId {
                        node: gemm,
                        output: 0,
                    };
                    // The Add's output becomes the Gemm's; MatMul dies.
                    let add_out = ValueId {
                        node: add,
                        output: 0,
                    };
                    util::take_over(g, &mut names, add_out, gemm_out, "__fused");
                    let _ = g.remove_node(add);
                    let _ = g.remove_node(matmul);
                    changed = true;
                }
            }
        }
        Ok(changed)
    }
}
