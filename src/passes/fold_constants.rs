//! `fold-constants`: computes constant parts of the main graph once, at optimisation time.
//!
//! 1. `Constant` nodes become initializers (same value, one node fewer).
//! 2. `Shape(x)` and `Size(x)` become constants when x's shape is static (from
//!    `analysis::shapes`, with `--input-shape` fixing symbolic dims); this is what unlocks shape
//!    sub-graphs such as `Shape→Gather→Unsqueeze→Concat→Reshape`.
//! 3. Every operator whose inputs are all constant joins a constant region. The whole region is
//!    evaluated in tract in one run (a small model whose outputs are the region's boundary values);
//!    no kernel is written by hand. If tract rejects a node, that node is left out and the run is
//!    retried, up to [`MAX_RETRIES`] times.
//!
//! 4. An `If` whose condition is now a constant is replaced by the branch it always takes.
//!
//! Declines: non-deterministic ops (Random*, Multinomial, Bernoulli), ops outside the default
//! domain, nodes holding subgraphs, graph inputs that have an initializer (overridable, so not
//! constant), DequantizeLinear ([`KEPT_AS_WRITTEN`]), and any folded value over the size guard
//! ([`fits_budget`]): a value is folded only if it is at most [`SMALL_VALUE_BYTES`] or no larger than
//! the constant inputs it makes dead, and a region's large values together store no more than the
//! region frees. So
//! `ConstantOfShape` of a big shape, `Expand`/`Tile` of a scalar and the like stay as they are, and
//! folding never grows the model. Subgraphs are left alone (their values may depend on the
//! enclosing scope at run time).

use super::common_subexpression::NONDETERMINISTIC;
use super::{util, Changed, Pass, PassContext, PassError};
use crate::analysis::shapes;
use crate::ir::{
    AttrValue, Const, DataType, Graph, GraphOutput, Model, Node, NodeId, NodeKind, Tensor,
    TensorData, ValueId,
};
use crate::verify::Runner;
use std::collections::{HashMap, HashSet};

pub struct FoldConstants;

/// Values up to this size are always worth folding: shapes, axes, scalars (1 KiB is 128 int64s).
pub const SMALL_VALUE_BYTES: usize = 1024;

/// How many times a round may shrink its region (a node tract rejects, a value over the size
/// guard) before it gives up on what is left.
pub const MAX_RETRIES: usize = 16;

/// The tensor a `Constant` node produces, for every `value*` attribute form.
fn constant_value(n: &Node) -> Option<Tensor> {
    let op = n.op()?;
    let a = op.attributes.first()?;
    if op.attributes.len() != 1 {
        return None;
    }
    let bytes_of = |v: &[Vec<u8>]| {
        v.iter()
            .map(|b| bytes::Bytes::from(b.clone()))
            .collect::<Vec<_>>()
    };
    let _ = bytes_of;
    Some(match (a.name.as_str(), &a.value) {
        ("value", AttrValue::Tensor(t)) => t.clone(),
        ("value_float", AttrValue::Float(f)) => Tensor::from_f32(vec![], &[*f]),
        ("value_floats", AttrValue::Floats(v)) => Tensor::from_f32(vec![v.len() as i64], v),
        ("value_int", AttrValue::Int(i)) => Tensor::from_i64(vec![], &[*i]),
        ("value_ints", AttrValue::Ints(v)) => Tensor::from_i64(vec![v.len() as i64], v),
        ("value_string", AttrValue::String(s)) => {
            let mut t = Tensor::from_raw(DataType::STRING, vec![], Vec::new());
            t.data = TensorData::Strings(vec![s.clone()]);
            t
        }
        ("value_strings", AttrValue::Strings(v)) => {
            let mut t = Tensor::from_raw(DataType::STRING, vec![v.len() as i64], Vec::new());
            t.data = TensorData::Strings(v.clone());
            t
        }
        _ => return None,
    })
}

/// Ops never folded although their inputs are constant: a DequantizeLinear of an int8 weight is
/// how QDQ models store weights (folding it would grow the file 4× and hide the quantization from
/// runtimes, which fuse DQ→Conv into int8 kernels).
const KEPT_AS_WRITTEN: &[&str] = &["DequantizeLinear"];

/// Size guard: fold `value_bytes` if small, or if it does not exceed what it frees.
pub fn fits_budget(value_bytes: usize, freed_bytes: usize) -> bool {
    value_bytes <= SMALL_VALUE_BYTES || value_bytes <= freed_bytes
}

fn is_const(g: &Graph, v: ValueId) -> bool {
    matches!(g.node(v.node).kind, NodeKind::Initializer(Const::Dense(_))) || g.constant(v).is_some()
}

/// Step 1: Constant nodes → initializers.
fn constants_to_initializers(g: &mut Graph) -> bool {
    let mut changed = false;
    let ids: Vec<NodeId> = g
        .ops()
        .filter(|(_, _, op)| op.op_type == "Constant" && op.is_default_domain())
        .map(|(id, _, _)| id)
        .collect();
    for id in ids {
        let out = ValueId {
            node: id,
            output: 0,
        };
        if g.uses(out).iter().any(|(_, s)| s.is_none()) {
            continue;
        }
        let Some(t) = constant_value(g.node(id)) else {
            continue;
        };
        let name = g.value(out).name.clone();
        let ty = g.value(out).ty.clone();
        g.value_mut(out).name = format!("{name}__constant_node");
        let new = util::add_initializer(g, &name, t);
        g.value_mut(new).ty = ty;
        g.replace_all_uses(out, new, true);
        let _ = g.remove_node(id);
        changed = true;
    }
    changed
}

/// Step 2: Shape/Size of statically shaped values → constants.
fn fold_shapes(
    g: &mut Graph,
    facts: &HashMap<String, shapes::Fact>,
    names: &mut HashSet<String>,
) -> bool {
    let mut changed = false;
    let targets: Vec<(NodeId, Vec<i64>, bool, i64, Option<i64>)> = g
        .ops()
        .filter(|(_, _, op)| {
            op.is_default_domain() && (op.op_type == "Shape" || op.op_type == "Size")
        })
        .filter_map(|(id, n, op)| {
            let x = n.inputs().first().copied().flatten()?;
            let dims = match g.constant(x) {
                Some(t) => t.dims.clone(),
                None => facts.get(&g.value(x).name)?.dims.clone()?,
            };
            let start = util::attr_int(n, "start", 0);
            let end = op.attr("end").and_then(|a| a.as_int());
            Some((id, dims, op.op_type == "Size", start, end))
        })
        .collect();
    for (id, dims, size, start, end) in targets {
        let out = ValueId {
            node: id,
            output: 0,
        };
        if g.uses(out).iter().any(|(_, s)| s.is_none()) {
            continue;
        }
        let t = if size {
            Tensor::from_i64(vec![], &[dims.iter().product()])
        } else {
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
            let part: Vec<i64> = if s < e { dims[s..e].to_vec() } else { vec![] };
            Tensor::from_i64(vec![part.len() as i64], &part)
        };
        util::replace_with_constant(g, names, out, t);
        changed = true;
    }
    changed
}

/// Step 2b: with symbolic dims, `Gather` or `Slice` of a `Shape` that picks only known dims is a
/// constant even though the whole shape is not (e.g. the channel and spatial dims under a
/// symbolic batch).
fn fold_partial_shapes(
    g: &mut Graph,
    facts: &HashMap<String, shapes::Fact>,
    names: &mut HashSet<String>,
) -> bool {
    let mut plans: Vec<(ValueId, Tensor)> = Vec::new();
    for (id, n, op) in g.ops() {
        if op.op_type != "Shape" || !op.is_default_domain() {
            continue;
        }
        let Some(x) = n.inputs().first().copied().flatten() else {
            continue;
        };
        let declared: Option<Vec<Option<i64>>> = g
            .value(x)
            .ty
            .as_ref()
            .and_then(|t| t.as_tensor())
            .and_then(|(_, s)| {
                s.map(|dims| {
                    dims.iter()
                        .map(|d| {
                            if let crate::ir::Dim::Fixed(v) = d.dim {
                                Some(v)
                            } else {
                                None
                            }
                        })
                        .collect()
                })
            });
        let Some(partial) = facts
            .get(&g.value(x).name)
            .and_then(|f| f.partial.clone())
            .or(declared)
        else {
            continue;
        };
        let r = partial.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (s0, e0) = (
            clamp(util::attr_int(n, "start", 0)),
            clamp(op.attr("end").and_then(|a| a.as_int()).unwrap_or(r)),
        );
        let dims: Vec<Option<i64>> = if s0 < e0 {
            partial[s0..e0].to_vec()
        } else {
            vec![]
        };
        let out = ValueId {
            node: id,
            output: 0,
        };
        for (c, slot) in g.uses(out) {
            if slot != Some(0) {
                continue;
            }
            let cn = g.node(c);
            let Some(cop) = cn.op() else { continue };
            let len = dims.len() as i64;
            let picked: Option<(Vec<i64>, Vec<i64>)> = match cop.op_type.as_str() {
                "Gather" if util::attr_int(cn, "axis", 0) == 0 => (|| {
                    let iv = cn.inputs().get(1).copied().flatten()?;
                    let it = g.constant(iv)?;
                    let idx = it.to_i64_vec()?;
                    let vals = idx
                        .iter()
                        .map(|&i| {
                            let i = if i < 0 { i + len } else { i };
                            if (0..len).contains(&i) {
                                dims[i as usize]
                            } else {
                                None
                            }
                        })
                        .collect::<Option<Vec<i64>>>()?;
                    Some((it.dims.clone(), vals))
                })(),
                "Slice" => (|| {
                    let ins = cn.inputs();
                    let starts = util::const_i64(g, ins.get(1).copied().flatten())?;
                    let ends = util::const_i64(g, ins.get(2).copied().flatten())?;
                    if starts.len() != 1 || ends.len() != 1 {
                        return None;
                    }
                    if let Some(a) = ins.get(3).copied().flatten() {
                        if util::const_i64(g, Some(a))? != vec![0] {
                            return None;
                        }
                    }
                    if let Some(st) = ins.get(4).copied().flatten() {
                        if util::const_i64(g, Some(st))? != vec![1] {
                            return None;
                        }
                    }
                    let norm = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
                    let (a, b) = (norm(starts[0]), norm(ends[0]));
                    let vals: Vec<i64> = if a < b {
                        dims[a..b].iter().copied().collect::<Option<Vec<_>>>()?
                    } else {
                        vec![]
                    };
                    Some((vec![vals.len() as i64], vals))
                })(),
                _ => None,
            };
            if let Some((shape, vals)) = picked {
                let cout = ValueId { node: c, output: 0 };
                if g.uses(cout).iter().all(|(_, s)| s.is_some()) {
                    plans.push((cout, Tensor::from_i64(shape, &vals)));
                }
            }
        }
    }
    let changed = !plans.is_empty();
    for (v, t) in plans {
        util::replace_with_constant(g, names, v, t);
    }
    changed
}

/// Step 4: an `If` whose condition is a constant is replaced by the branch it always takes: the
/// branch's nodes and initializers move into the enclosing graph, its captures become the outer
/// values they name, and its outputs take the `If` outputs' names (through an Identity when the
/// branch simply returns an outer value, which must keep its own name).
fn inline_constant_ifs(g: &mut Graph, names: &mut HashSet<String>) -> bool {
    let ifs: Vec<(NodeId, bool)> = g
        .ops()
        .filter(|(_, _, op)| op.op_type == "If" && op.is_default_domain())
        .filter_map(|(id, n, _)| {
            let c = g.constant(n.inputs().first().copied().flatten()?)?;
            let v = c.to_i64_vec()?;
            (v.len() == 1).then_some((id, v[0] != 0))
        })
        .collect();
    let mut changed = false;
    for (id, cond) in ifs {
        let attr = if cond { "then_branch" } else { "else_branch" };
        let Some(branch) = g
            .node(id)
            .op()
            .and_then(|op| op.attr(attr))
            .and_then(|a| a.graphs().next().cloned())
        else {
            continue;
        };
        let outer: HashMap<String, ValueId> = g
            .node(id)
            .implicit_inputs()
            .iter()
            .map(|v| (g.value(*v).name.clone(), *v))
            .collect();
        let Ok(order) = branch.topo_order() else {
            continue;
        };
        let resolvable = order.iter().all(|&b| match &branch.node(b).kind {
            NodeKind::Capture => outer.contains_key(&branch.node(b).outputs[0].name),
            NodeKind::Input { .. } => false,
            _ => true,
        });
        if !resolvable || branch.outputs.len() != g.node(id).outputs.len() {
            continue;
        }
        let mut map: HashMap<ValueId, ValueId> = HashMap::new();
        let mut copied: HashSet<NodeId> = HashSet::new();
        for b in order {
            let bn = branch.node(b);
            if let NodeKind::Capture = bn.kind {
                map.insert(ValueId { node: b, output: 0 }, outer[&bn.outputs[0].name]);
                continue;
            }
            let inputs: Vec<Option<ValueId>> =
                bn.inputs().iter().map(|v| v.map(|v| map[&v])).collect();
            let mut node = Node::new(bn.name.clone(), bn.kind.clone(), inputs, bn.outputs.clone());
            node.doc_string = bn.doc_string.clone();
            node.metadata_props = bn.metadata_props.clone();
            let nid = g.add_node(node);
            if !bn.implicit_inputs().is_empty() {
                let imp: Vec<ValueId> = bn.implicit_inputs().iter().map(|v| map[v]).collect();
                g.set_implicit_inputs(nid, imp);
            }
            copied.insert(nid);
            for k in 0..bn.outputs.len() {
                map.insert(
                    ValueId { node: b, output: k },
                    ValueId {
                        node: nid,
                        output: k,
                    },
                );
            }
        }
        for (k, bo) in branch.outputs.iter().enumerate() {
            let src = map[&bo.value];
            let if_out = ValueId {
                node: id,
                output: k,
            };
            let if_name = g.value(if_out).name.clone();
            let if_ty = g.value(if_out).ty.clone();
            g.value_mut(if_out).name = util::fresh_name(names, &format!("{if_name}__inlined"));
            let target = if copied.contains(&src.node)
                && matches!(g.node(src.node).kind, NodeKind::Op(_))
                && !g.is_graph_output(src)
            {
                g.value_mut(src).name = if_name;
                src
            } else {
                let mut v = crate::ir::Value::named(if_name);
                v.ty = if_ty.clone();
                let nid = g.add_node(Node::new(
                    String::new(),
                    NodeKind::Op(crate::ir::Op::new("Identity")),
                    vec![Some(src)],
                    vec![v],
                ));
                ValueId {
                    node: nid,
                    output: 0,
                }
            };
            if g.value(target).ty.is_none() {
                g.value_mut(target).ty = if_ty;
            }
            g.replace_all_uses(if_out, target, true);
        }
        if g.remove_node(id).is_ok() {
            changed = true;
        }
    }
    changed
}

/// The foldable operator nodes, in topological order.
fn region(g: &Graph, excluded: &HashSet<NodeId>) -> Vec<NodeId> {
    let Ok(order) = g.topo_order() else {
        return vec![];
    };
    let mut foldable: HashSet<NodeId> = HashSet::new();
    let mut out = Vec::new();
    for id in order {
        let n = g.node(id);
        let Some(op) = n.op() else { continue };
        if op.op_type == "Constant"
            || !op.is_default_domain()
            || NONDETERMINISTIC.contains(&op.op_type.as_str())
            || KEPT_AS_WRITTEN.contains(&op.op_type.as_str())
            || n.subgraphs().next().is_some()
            || excluded.contains(&id)
            || n.inputs().iter().all(Option::is_none)
        {
            continue;
        }
        let all_const = n
            .inputs()
            .iter()
            .flatten()
            .all(|v| foldable.contains(&v.node) || is_const(g, *v));
        if all_const {
            foldable.insert(id);
            out.push(id);
        }
    }
    out
}

/// Builds a standalone model computing the region's boundary values.
fn region_model(model: &Model, nodes: &[NodeId], boundary: &[ValueId]) -> Model {
    let g = &model.graph;
    let mut sub = Graph::new("fold");
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let import = |sub: &mut Graph, map: &mut HashMap<ValueId, ValueId>, v: ValueId| -> ValueId {
        if let Some(&m) = map.get(&v) {
            return m;
        }
        let src = g.node(v.node);
        let mut n = Node::new(
            src.name.clone(),
            src.kind.clone(),
            vec![],
            src.outputs.clone(),
        );
        if let NodeKind::Op(_) = src.kind {
            // A Constant op: copy as is.
        }
        n.outputs.iter_mut().for_each(|o| o.ty = None);
        let id = sub.add_node(n);
        for k in 0..src.outputs.len() {
            map.insert(
                ValueId {
                    node: v.node,
                    output: k,
                },
                ValueId {
                    node: id,
                    output: k,
                },
            );
        }
        map[&v]
    };
    for &id in nodes {
        let src = g.node(id);
        let inputs: Vec<Option<ValueId>> = src
            .inputs()
            .iter()
            .map(|v| v.map(|v| import(&mut sub, &mut map, v)))
            .collect();
        let mut n = Node::new(
            src.name.clone(),
            src.kind.clone(),
            inputs,
            src.outputs.clone(),
        );
        n.outputs.iter_mut().for_each(|o| o.ty = None);
        let nid = sub.add_node(n);
        for k in 0..src.outputs.len() {
            map.insert(
                ValueId {
                    node: id,
                    output: k,
                },
                ValueId {
                    node: nid,
                    output: k,
                },
            );
        }
    }
    for v in boundary {
        sub.outputs.push(GraphOutput {
            value: map[v],
            ty: None,
            doc_string: String::new(),
            metadata_props: vec![],
        });
    }
    Model {
        ir_version: model.ir_version.max(7),
        opset_imports: model.opset_imports.clone(),
        graph: sub,
        ..Model::default()
    }
}

fn fold_regions(
    model: &mut Model,
    cx: &mut PassContext,
    names: &mut HashSet<String>,
) -> Result<bool, PassError> {
    let mut excluded: HashSet<NodeId> = HashSet::new();
    for _ in 0..=MAX_RETRIES {
        let g = &model.graph;
        let nodes = region(g, &excluded);
        if nodes.is_empty() {
            return Ok(false);
        }
        let set: HashSet<NodeId> = nodes.iter().copied().collect();
        let mut boundary = Vec::new();
        for &id in &nodes {
            for k in 0..g.node(id).outputs.len() {
                let v = ValueId {
                    node: id,
                    output: k,
                };
                if g.value(v).name.is_empty() {
                    continue;
                }
                let external_use = g.is_graph_output(v)
                    || g.uses(v)
                        .iter()
                        .any(|(c, slot)| slot.is_none() || !set.contains(c));
                if external_use {
                    boundary.push(v);
                }
            }
        }
        if boundary.is_empty() {
            return Ok(false);
        }
        let sub = region_model(model, &nodes, &boundary);
        let result = Runner::from_model(&sub, &[]).and_then(|r| r.run(&[]));
        let values = match result {
            Ok(v) => v,
            Err(e) => {
                // Leave out the node tract names, and everything that depends on it, then retry.
                let msg = e.to_string();
                let culprit = nodes.iter().copied().find(|&id| {
                    let n = g.node(id);
                    (!n.name.is_empty() && msg.contains(&format!("'{}'", n.name)))
                        || n.outputs
                            .iter()
                            .any(|o| !o.name.is_empty() && msg.contains(&format!("\"{}\"", o.name)))
                });
                match culprit {
                    Some(id) => {
                        cx.skip(format!(
                            "{} '{}': tract cannot evaluate it ({msg})",
                            g.node(id).op_type(),
                            g.node(id).display_name()
                        ));
                        excluded.insert(id);
                        continue;
                    }
                    None => {
                        cx.skip(format!(
                            "constant region of {} nodes not folded: {msg}",
                            nodes.len()
                        ));
                        return Ok(false);
                    }
                }
            }
        };
        // Bytes of constant leaves that only the region reads: freed once it is folded.
        let mut freed = 0usize;
        let mut leaves: HashSet<NodeId> = HashSet::new();
        for &id in &nodes {
            for v in g.node(id).inputs().iter().flatten() {
                if !set.contains(&v.node)
                    && leaves.insert(v.node)
                    && g.uses(*v)
                        .iter()
                        .all(|(c, s)| s.is_some() && set.contains(c))
                    && !g.is_graph_output(*v)
                {
                    freed += g.constant(*v).map(|t| t.byte_size()).unwrap_or(0);
                }
            }
        }
        let declared: Vec<(String, Option<DataType>)> = boundary
            .iter()
            .map(|v| {
                (
                    g.value(*v).name.clone(),
                    g.value(*v)
                        .ty
                        .as_ref()
                        .and_then(|t| t.as_tensor())
                        .map(|(d, _)| d),
                )
            })
            .collect();
        // A value over the size guard stays computed at run time, but its own inputs may still
        // fold (a ConstantOfShape keeps a folded shape): leave its producer out and retry.
        let mut over_budget = Vec::new();
        // The guard holds for the region as a whole: its large values together must not store
        // more than the region frees (each alone could pass while all together grow the model).
        let large: usize = values
            .iter()
            .map(|t| t.byte_size())
            .filter(|&b| b > SMALL_VALUE_BYTES)
            .sum();
        let region_fits = large <= freed;
        for ((v, t), (vname, _)) in boundary.iter().zip(&values).zip(&declared) {
            if !fits_budget(t.byte_size(), freed)
                || (!region_fits && t.byte_size() > SMALL_VALUE_BYTES)
            {
                cx.skip(format!(
                    "'{vname}': folding would store {} bytes, more than the {} bytes it frees (size guard)",
                    t.byte_size(),
                    freed
                ));
                over_budget.push(v.node);
            }
        }
        if !over_budget.is_empty() {
            excluded.extend(over_budget);
            continue;
        }
        let mut changed = false;
        for ((v, t), (vname, declared)) in boundary.iter().zip(values).zip(declared) {
            if declared.is_some_and(|d| d != t.dtype) {
                cx.skip(format!(
                    "'{vname}': tract computed {} where the model declares {}",
                    t.dtype,
                    declared.unwrap()
                ));
                continue;
            }
            util::replace_with_constant(&mut model.graph, names, *v, t);
            changed = true;
        }
        let g = &mut model.graph;
        util::remove_dead(g);
        return Ok(changed);
    }
    Ok(false)
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = constants_to_initializers(&mut model.graph);
        let mut names = util::all_names(&model.graph);
        if model
            .graph
            .ops()
            .any(|(_, _, op)| op.op_type == "Shape" || op.op_type == "Size")
        {
            let facts = cx.facts(model);
            changed |= fold_shapes(&mut model.graph, &facts, &mut names);
            changed |= fold_partial_shapes(&mut model.graph, &facts, &mut names);
        }
        changed |= fold_regions(model, cx, &mut names)?;
        changed |= inline_constant_ifs(&mut model.graph, &mut names);
        if changed {
            util::remove_dead(&mut model.graph);
        }
        Ok(changed)
    }
}
