//! Channel dependency groups: which output channels of which layers must be removed together.
//!
//! Every output channel of a prunable producer — a Conv with `group = 1` (its weight's axis 0), a
//! Gemm or 2-D MatMul with a constant weight (its output features) — is an *atom*. Walking the
//! main graph in order, each value that carries producer channels on its channel axis gets the
//! list of atoms behind its channels. Ops that keep channels in place pass the list on
//! (activations, pooling, Resize, Pad, BatchNormalization, per-channel constants …); a residual
//! `Add`/`Mul`/`Sum` of two channel streams unites their atoms pairwise (removing channel i of
//! one stream forces removing channel i of the other); `Concat` on the channel axis concatenates
//! the lists; a depthwise Conv passes its input's list through (and is sliced with it), a grouped
//! Conv with equal group widths too, with each group's channels one class (whole groups go); Flatten
//! (or Reshape to `[N, -1]`) of `[N, C, H, W]` repeats each atom H·W times for the Gemm rows that
//! follow. Each op that reads a list and must be edited when channels go is recorded as a
//! [`Member`]. An op or pattern not understood **freezes** every atom it reads, with the reason;
//! so do graph outputs and subgraph captures. A [`Group`] is a set of producers whose atoms are
//! coupled; its channels are the classes of coupled atoms.

use crate::analysis::shapes::Fact;
use crate::ir::{Graph, Model, NodeId, ValueId};
use crate::passes::util;
use std::collections::{BTreeMap, HashMap};

/// A producer whose output channels can be removed.
#[derive(Clone, Debug)]
pub struct Source {
    pub node: NodeId,
    pub name: String,
    pub op: String,
    pub channels: usize,
    /// Index of its channel 0 among all atoms.
    pub first_atom: usize,
}

/// An op that reads channels and must be edited when some go.
#[derive(Clone, Debug)]
pub enum Member {
    /// Conv (group 1) reading channels: its weight's axis 1.
    ConvInput { node: NodeId, atoms: Vec<usize> },
    /// Depthwise Conv (group = C): its weight's axis 0, its bias and `group`.
    Depthwise { node: NodeId, atoms: Vec<usize> },
    /// Grouped Conv with equal input and output group widths: whole groups of `per_group`
    /// channels go together (weight axis 0, bias, `group`).
    Grouped {
        node: NodeId,
        atoms: Vec<usize>,
        per_group: usize,
    },
    /// Gemm / MatMul reading features, one atom per weight row (K).
    MatrixRows { node: NodeId, atoms: Vec<usize> },
    /// A constant input holding one value per channel (BatchNormalization parameters, a `[C,1,1]`
    /// Mul/Add operand), sliced on `axis`.
    PerChannel {
        node: NodeId,
        slot: usize,
        axis: usize,
        atoms: Vec<usize>,
    },
    /// Slice on the channel axis (step 1): `starts[index]`/`ends[index]` select `start..end` of
    /// the input's `atoms`.
    SliceChannels {
        node: NodeId,
        index: usize,
        atoms: Vec<usize>,
        start: usize,
        end: usize,
    },
    /// Split on the channel axis into parts of `sizes` channels of the input's `atoms`.
    SplitChannels {
        node: NodeId,
        atoms: Vec<usize>,
        sizes: Vec<usize>,
    },
    /// A value whose declared type must shrink on `axis` (one element per atom).
    Value {
        value: ValueId,
        axis: usize,
        atoms: Vec<usize>,
    },
}

/// Coupled producers and their channel classes.
#[derive(Clone, Debug)]
pub struct Group {
    /// Indices into [`ChannelGroups::sources`].
    pub sources: Vec<usize>,
    /// Each channel class: the atoms removed together (one per coupled producer).
    pub classes: Vec<Vec<usize>>,
    /// Why it cannot be pruned, if so.
    pub frozen: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ChannelGroups {
    pub sources: Vec<Source>,
    pub members: Vec<Member>,
    pub groups: Vec<Group>,
    /// Atom → its source index.
    pub atom_source: Vec<usize>,
}

struct Walk<'a> {
    g: &'a Graph,
    facts: &'a HashMap<String, Fact>,
    parent: Vec<usize>,
    frozen: HashMap<usize, String>,
    lists: HashMap<ValueId, (usize, Vec<usize>)>,
    out: ChannelGroups,
}

impl Walk<'_> {
    fn find(&mut self, a: usize) -> usize {
        let mut r = a;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        let mut x = a;
        while self.parent[x] != r {
            let next = self.parent[x];
            self.parent[x] = r;
            x = next;
        }
        r
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb] = ra;
            if let Some(why) = self.frozen.remove(&rb) {
                self.frozen.entry(ra).or_insert(why);
            }
        }
    }

    fn freeze(&mut self, atoms: &[usize], why: &str) {
        for &a in atoms {
            let r = self.find(a);
            self.frozen.entry(r).or_insert_with(|| why.to_string());
        }
    }

    fn new_atoms(&mut self, n: usize) -> usize {
        let first = self.parent.len();
        self.parent.extend(first..first + n);
        first
    }

    fn dims(&self, v: ValueId) -> Option<Vec<i64>> {
        self.facts
            .get(&self.g.value(v).name)
            .and_then(|f| f.dims.clone())
            .or_else(|| {
                let ty = self.g.value(v).ty.as_ref()?;
                let (_, shape) = ty.as_tensor()?;
                shape?
                    .iter()
                    .map(|d| match d.dim {
                        crate::ir::Dim::Fixed(x) => Some(x),
                        _ => None,
                    })
                    .collect()
            })
    }

    fn rank(&self, v: ValueId) -> Option<usize> {
        if let Some(d) = self.dims(v) {
            return Some(d.len());
        }
        let f = self.facts.get(&self.g.value(v).name)?;
        f.partial.as_ref().map(|p| p.len())
    }

    fn set(&mut self, v: ValueId, axis: usize, atoms: Vec<usize>) {
        self.out.members.push(Member::Value {
            value: v,
            axis,
            atoms: atoms.clone(),
        });
        self.lists.insert(v, (axis, atoms));
    }

    fn add_source(&mut self, id: NodeId, channels: usize, axis: usize) {
        let n = self.g.node(id);
        let first = self.new_atoms(channels);
        let idx = self.out.sources.len();
        self.out.sources.push(Source {
            node: id,
            name: n.display_name().to_string(),
            op: n.op_type().to_string(),
            channels,
            first_atom: first,
        });
        self.out
            .atom_source
            .extend(std::iter::repeat_n(idx, channels));
        self.set(
            ValueId {
                node: id,
                output: 0,
            },
            axis,
            (first..first + channels).collect(),
        );
    }

    /// Handles node `id`; returns the reason when it cannot, so its channel inputs get frozen.
    fn visit(&mut self, id: NodeId) -> Result<(), String> {
        let g = self.g;
        let n = g.node(id);
        let Some(op) = n.op() else { return Ok(()) };
        let ins: Vec<Option<ValueId>> = n.inputs().to_vec();
        let listed: Vec<usize> = (0..ins.len())
            .filter(|&i| ins[i].is_some_and(|v| self.lists.contains_key(&v)))
            .collect();
        let y = ValueId {
            node: id,
            output: 0,
        };
        let t = op.op_type.as_str();
        if !op.is_default_domain() {
            return if listed.is_empty() {
                Ok(())
            } else {
                Err(format!("read by {}-domain op {t}", op.domain))
            };
        }
        let list_of = |w: &Walk, i: usize| w.lists.get(&ins[i].unwrap()).cloned().unwrap();
        // Producers (also consumers of their input's channels).
        if t == "Conv" {
            let w = ins.get(1).copied().flatten().and_then(|w| g.constant(w));
            let Some(w) = w.filter(|w| w.dims.len() >= 3) else {
                return if listed.is_empty() {
                    Ok(())
                } else {
                    Err("Conv with a non-constant weight".into())
                };
            };
            let group = util::attr_int(n, "group", 1);
            let (cout, cin_per_group) = (w.dims[0] as usize, w.dims[1] as usize);
            if listed.iter().any(|&i| i != 0) {
                return Err("channels reach a Conv's weight or bias".into());
            }
            if group == 1 {
                if let Some(&0) = listed.first() {
                    let (axis, atoms) = list_of(self, 0);
                    if axis != 1 || atoms.len() != cin_per_group {
                        return Err("Conv input channels do not match its weight".into());
                    }
                    self.out.members.push(Member::ConvInput { node: id, atoms });
                }
                self.add_source(id, cout, 1);
                return Ok(());
            }
            if cin_per_group == 1 && group as usize == cout {
                // Depthwise: channel c in, channel c out.
                if let Some(&0) = listed.first() {
                    let (axis, atoms) = list_of(self, 0);
                    if axis != 1 || atoms.len() != cout {
                        return Err("depthwise Conv channels do not match".into());
                    }
                    self.out.members.push(Member::Depthwise {
                        node: id,
                        atoms: atoms.clone(),
                    });
                    self.set(y, 1, atoms);
                }
                return Ok(());
            }
            let per_in = cin_per_group;
            let per_out = cout / group.max(1) as usize;
            if group > 1 && per_in == per_out && cout % group as usize == 0 {
                // Grouped with C_in = C_out: output channel c reads group c / k; whole groups go
                // together, so the k channels of each group become one class.
                if let Some(&0) = listed.first() {
                    let (axis, atoms) = list_of(self, 0);
                    if axis != 1 || atoms.len() != cout {
                        return Err("grouped Conv channels do not match".into());
                    }
                    for chunk in atoms.chunks(per_in) {
                        for pair in chunk.windows(2) {
                            self.union(pair[0], pair[1]);
                        }
                    }
                    self.out.members.push(Member::Grouped {
                        node: id,
                        atoms: atoms.clone(),
                        per_group: per_in,
                    });
                    self.set(y, 1, atoms);
                }
                return Ok(());
            }
            return if listed.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "grouped Conv (group {group}) with different input and output group widths"
                ))
            };
        }
        if t == "Gemm" || t == "MatMul" {
            let w = ins.get(1).copied().flatten().and_then(|w| g.constant(w));
            let gemm_ok = t == "MatMul"
                || (util::attr_int(n, "transA", 0) == 0
                    && util::attr_float(n, "alpha", 1.0) == 1.0);
            let x_rank = ins[0].and_then(|x| self.rank(x));
            let Some(w) = w.filter(|w| w.dims.len() == 2 && gemm_ok && x_rank == Some(2)) else {
                return if listed.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{t} that is not x·W with a constant 2-D W"))
                };
            };
            let trans_b = t == "Gemm" && util::attr_int(n, "transB", 0) == 1;
            let (k, nout) = if trans_b {
                (w.dims[1], w.dims[0])
            } else {
                (w.dims[0], w.dims[1])
            };
            if listed.iter().any(|&i| i != 0) {
                return Err(format!("channels reach a {t}'s weight or bias"));
            }
            if let Some(&0) = listed.first() {
                let (axis, atoms) = list_of(self, 0);
                if axis != 1 || atoms.len() as i64 != k {
                    return Err(format!("{t} rows do not match its input's features"));
                }
                self.out
                    .members
                    .push(Member::MatrixRows { node: id, atoms });
            }
            if t == "Gemm" {
                if let Some(c) = ins.get(2).copied().flatten() {
                    match g.constant(c) {
                        Some(c) if c.dims.len() == 1 && c.dims[0] == nout => {}
                        Some(c) if c.dims.iter().product::<i64>() == 1 => {}
                        _ => return Ok(()), // bias not per feature: its outputs stay as they are
                    }
                }
            }
            self.add_source(id, nout as usize, 1);
            return Ok(());
        }
        if listed.is_empty() {
            return Ok(());
        }
        const SAME_CHANNELS: &[&str] = &[
            "Relu",
            "LeakyRelu",
            "Sigmoid",
            "HardSigmoid",
            "HardSwish",
            "Tanh",
            "Elu",
            "Selu",
            "Softplus",
            "Mish",
            "Gelu",
            "Erf",
            "Identity",
            "Dropout",
            "Clip",
            "MaxPool",
            "AveragePool",
            "GlobalAveragePool",
            "GlobalMaxPool",
            "LpPool",
            "Cast",
            "Abs",
            "Neg",
            "Sqrt",
            "Exp",
        ];
        if SAME_CHANNELS.contains(&t) {
            if listed != [0] {
                return Err(format!("{t} with channels on a parameter input"));
            }
            let (axis, atoms) = list_of(self, 0);
            self.set(y, axis, atoms);
            return Ok(());
        }
        match t {
            "Resize" | "Upsample" | "Pad" => {
                if listed != [0] {
                    return Err(format!("{t} with channels on a parameter input"));
                }
                let (axis, atoms) = list_of(self, 0);
                let ok = match t {
                    "Pad" => util::const_i64(g, ins.get(1).copied().flatten())
                        .or_else(|| util::attr_ints(n, "pads"))
                        .is_some_and(|p| {
                            let r = p.len() / 2;
                            axis < r && p[axis] == 0 && p[axis + r] == 0
                        }),
                    // Channel scale 1 (sizes would name the channel count: not understood).
                    _ => {
                        let scales = ins
                            .iter()
                            .skip(1)
                            .flatten()
                            .filter_map(|&v| util::const_f32(g, Some(v)))
                            .find(|(_, s)| !s.is_empty());
                        let sizes = ins.get(3).copied().flatten();
                        sizes.is_none() && scales.is_some_and(|(_, s)| s.get(axis) == Some(&1.0))
                    }
                };
                if !ok {
                    return Err(format!("{t} that may change the channel axis"));
                }
                self.set(y, axis, atoms);
                Ok(())
            }
            "BatchNormalization" | "InstanceNormalization" => {
                if listed != [0] {
                    return Err(format!("{t} with channels on a parameter input"));
                }
                let (axis, atoms) = list_of(self, 0);
                let params = if t == "BatchNormalization" {
                    1..5
                } else {
                    1..3
                };
                for slot in params {
                    let c = ins.get(slot).copied().flatten();
                    if !c.is_some_and(|c| g.constant(c).is_some_and(|c| c.dims.len() == 1)) {
                        return Err(format!("{t} with a non-constant parameter"));
                    }
                    self.out.members.push(Member::PerChannel {
                        node: id,
                        slot,
                        axis: 0,
                        atoms: atoms.clone(),
                    });
                }
                if n.outputs.len() > 1 && n.outputs[1..].iter().any(|o| !o.name.is_empty()) {
                    return Err(format!("{t} in training mode"));
                }
                self.set(y, axis, atoms);
                Ok(())
            }
            "Add" | "Sub" | "Mul" | "Div" | "Sum" | "Max" | "Min" | "PRelu" => {
                self.elementwise(id, &ins, &listed)
            }
            "Concat" => {
                let (axis0, _) = list_of(self, listed[0]);
                let rank = self.rank(y).ok_or("Concat of unknown rank")?;
                let mut axis = util::attr_int(n, "axis", 0);
                if axis < 0 {
                    axis += rank as i64;
                }
                if axis as usize != axis0 {
                    return Err("Concat on another axis than the channels".into());
                }
                let mut all = Vec::new();
                for (i, v) in ins.iter().enumerate() {
                    let v = v.ok_or("Concat with an empty input")?;
                    if let Some((a, atoms)) = self.lists.get(&v).cloned() {
                        if a != axis0 {
                            return Err("Concat of channel lists on different axes".into());
                        }
                        all.extend(atoms);
                    } else {
                        // Channels from elsewhere (an input, a fixed tensor): kept, never pruned.
                        let c = self
                            .dims(v)
                            .and_then(|d| d.get(axis0).copied())
                            .ok_or(format!("Concat input {i} has an unknown channel count"))?;
                        let first = self.new_atoms(c as usize);
                        let atoms: Vec<usize> = (first..first + c as usize).collect();
                        self.out
                            .atom_source
                            .extend(std::iter::repeat_n(usize::MAX, c as usize));
                        self.freeze(&atoms, "concatenated with channels that are not prunable");
                        all.extend(atoms);
                    }
                }
                self.set(y, axis0, all);
                Ok(())
            }
            "Slice" => {
                if listed != [0] {
                    return Err("Slice with channels on a parameter input".into());
                }
                let (axis, atoms) = list_of(self, 0);
                let rank = self.rank(ins[0].unwrap()).ok_or("Slice of unknown rank")? as i64;
                let c = |i: usize| util::const_i64(g, ins.get(i).copied().flatten());
                let (Some(starts), Some(ends)) = (c(1), c(2)) else {
                    return Err("Slice with non-constant (or attribute) bounds".into());
                };
                let axes = match ins.get(3).copied().flatten() {
                    Some(_) => c(3).ok_or("Slice with non-constant axes")?,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match ins.get(4).copied().flatten() {
                    Some(_) => c(4).ok_or("Slice with non-constant steps")?,
                    None => vec![1; starts.len()],
                };
                let k = axes
                    .iter()
                    .position(|&a| (if a < 0 { a + rank } else { a }) == axis as i64);
                let Some(k) = k else {
                    self.set(y, axis, atoms);
                    return Ok(());
                };
                if steps.get(k) != Some(&1) {
                    return Err("Slice of the channel axis with a step".into());
                }
                let n = atoms.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
                let (start, end) = (clamp(starts[k]), clamp(ends[k]));
                if start >= end {
                    return Err("empty channel Slice".into());
                }
                self.out.members.push(Member::SliceChannels {
                    node: id,
                    index: k,
                    atoms: atoms.clone(),
                    start,
                    end,
                });
                self.set(y, axis, atoms[start..end].to_vec());
                Ok(())
            }
            "Split" => {
                if listed != [0] {
                    return Err("Split with channels on a parameter input".into());
                }
                let (axis, atoms) = list_of(self, 0);
                let rank = self.rank(ins[0].unwrap()).ok_or("Split of unknown rank")? as i64;
                let mut a = util::attr_int(n, "axis", 0);
                if a < 0 {
                    a += rank;
                }
                let parts = n.outputs.len();
                if a as usize != axis {
                    for o in 0..parts {
                        self.set(
                            ValueId {
                                node: id,
                                output: o,
                            },
                            axis,
                            atoms.clone(),
                        );
                    }
                    return Ok(());
                }
                let sizes: Vec<usize> = match ins.get(1).copied().flatten() {
                    Some(v) => util::const_i64(g, Some(v))
                        .ok_or("Split with non-constant sizes")?
                        .iter()
                        .map(|&x| x as usize)
                        .collect(),
                    None => match util::attr_ints(n, "split") {
                        Some(v) => v.iter().map(|&x| x as usize).collect(),
                        None if atoms.len() % parts == 0 => vec![atoms.len() / parts; parts],
                        None => return Err("uneven Split without sizes".into()),
                    },
                };
                if sizes.len() != parts || sizes.iter().sum::<usize>() != atoms.len() {
                    return Err("Split sizes do not match the channels".into());
                }
                let mut at = 0;
                for (o, &sz) in sizes.iter().enumerate() {
                    self.set(
                        ValueId {
                            node: id,
                            output: o,
                        },
                        axis,
                        atoms[at..at + sz].to_vec(),
                    );
                    at += sz;
                }
                self.out.members.push(Member::SplitChannels {
                    node: id,
                    atoms,
                    sizes,
                });
                Ok(())
            }
            "Flatten" | "Reshape" => {
                if listed != [0] {
                    return Err(format!("{t} with channels on its shape input"));
                }
                let (axis, atoms) = list_of(self, 0);
                let x = ins[0].unwrap();
                let dims = self.dims(x).ok_or(format!("{t} of unknown input shape"))?;
                let flat_from_1 = match t {
                    "Flatten" => util::attr_int(n, "axis", 1) == 1,
                    _ => util::const_i64(g, ins.get(1).copied().flatten()).is_some_and(|s| {
                        s.len() == 2 && (s[0] == 0 || Some(&s[0]) == dims.first()) && s[1] == -1
                    }),
                };
                if axis != 1 || !flat_from_1 {
                    return Err(format!("{t} that does not flatten [N, C, …] into [N, C·…]"));
                }
                let inner: i64 = dims[2..].iter().product();
                let rows: Vec<usize> = atoms
                    .iter()
                    .flat_map(|&a| std::iter::repeat_n(a, inner as usize))
                    .collect();
                self.set(y, 1, rows);
                Ok(())
            }
            _ => Err(format!("read by {t}, which pruning does not follow")),
        }
    }

    fn elementwise(
        &mut self,
        id: NodeId,
        ins: &[Option<ValueId>],
        listed: &[usize],
    ) -> Result<(), String> {
        let g = self.g;
        let t = g.node(id).op_type().to_string();
        let y = ValueId {
            node: id,
            output: 0,
        };
        let (axis, atoms) = self.lists.get(&ins[listed[0]].unwrap()).cloned().unwrap();
        let yrank = self.rank(y).ok_or(format!("{t} of unknown rank"))?;
        for (i, v) in ins.iter().enumerate() {
            let v = v.ok_or(format!("{t} with an empty input"))?;
            if listed.contains(&i) {
                let (a2, at2) = self.lists.get(&v).cloned().unwrap();
                if a2 != axis || at2.len() != atoms.len() || self.rank(v) != Some(yrank) {
                    return Err(format!("{t} of channel streams that do not line up"));
                }
                for (&p, &q) in atoms.iter().zip(&at2) {
                    self.union(p, q);
                }
                continue;
            }
            let Some(c) = g.constant(v) else {
                return Err(format!("{t} with a non-constant operand"));
            };
            let count: i64 = c.dims.iter().product();
            if count == 1 {
                continue;
            }
            // Per-channel: broadcasting puts C at `axis` of the output; ones elsewhere.
            let offset = yrank as i64 - c.dims.len() as i64;
            let caxis = axis as i64 - offset;
            let per_channel = caxis >= 0
                && c.dims[caxis as usize] == atoms.len() as i64
                && count == atoms.len() as i64;
            if !per_channel {
                return Err(format!("{t} with a constant that is not per-channel"));
            }
            self.out.members.push(Member::PerChannel {
                node: id,
                slot: i,
                axis: caxis as usize,
                atoms: atoms.clone(),
            });
        }
        self.set(y, axis, atoms);
        Ok(())
    }
}

/// The channel groups of `model`'s main graph. `facts`: static shapes by value name (from
/// [`crate::analysis::shapes::infer`]); declared types are used where facts are missing.
pub fn channel_groups(
    model: &Model,
    facts: &HashMap<String, Fact>,
) -> Result<ChannelGroups, String> {
    let g = &model.graph;
    let mut w = Walk {
        g,
        facts,
        parent: Vec::new(),
        frozen: HashMap::new(),
        lists: HashMap::new(),
        out: ChannelGroups::default(),
    };
    let order = g.topo_order().map_err(|e| e.to_string())?;
    for id in order {
        let result = w.visit(id);
        let n = g.node(id);
        // Reads of listed values by inputs this op did not take over, and implicit captures.
        if let Err(why) = result {
            let why = format!("{why} ('{}')", n.display_name());
            for v in n.inputs().iter().flatten() {
                if let Some((_, atoms)) = w.lists.get(v).cloned() {
                    w.freeze(&atoms, &why);
                }
            }
        }
        for v in n.implicit_inputs() {
            if let Some((_, atoms)) = w.lists.get(v).cloned() {
                w.freeze(
                    &atoms,
                    &format!("read by a subgraph of '{}'", n.display_name()),
                );
            }
        }
    }
    for o in &g.outputs {
        if let Some((_, atoms)) = w.lists.get(&o.value).cloned() {
            let why = format!("reaches graph output '{}'", g.value(o.value).name);
            w.freeze(&atoms, &why);
        }
    }
    // Classes of coupled atoms, grouped by the producers they join.
    let natoms = w.parent.len();
    let mut classes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for a in 0..natoms {
        let r = w.find(a);
        classes.entry(r).or_default().push(a);
    }
    let mut src_parent: Vec<usize> = (0..w.out.sources.len()).collect();
    fn sfind(p: &mut [usize], a: usize) -> usize {
        let mut r = a;
        while p[r] != r {
            r = p[r];
        }
        p[a] = r;
        r
    }
    for atoms in classes.values() {
        let srcs: Vec<usize> = atoms
            .iter()
            .map(|&a| w.out.atom_source[a])
            .filter(|&s| s != usize::MAX)
            .collect();
        for pair in srcs.windows(2) {
            let (a, b) = (
                sfind(&mut src_parent, pair[0]),
                sfind(&mut src_parent, pair[1]),
            );
            if a != b {
                src_parent[b] = a;
            }
        }
    }
    let mut by_group: BTreeMap<usize, Group> = BTreeMap::new();
    for (root, atoms) in classes {
        let Some(&s) = atoms
            .iter()
            .map(|&a| &w.out.atom_source[a])
            .find(|&&s| s != usize::MAX)
        else {
            continue;
        };
        let gid = sfind(&mut src_parent, s);
        let grp = by_group.entry(gid).or_insert_with(|| Group {
            sources: vec![],
            classes: vec![],
            frozen: None,
        });
        if let Some(why) = w.frozen.get(&root) {
            grp.frozen.get_or_insert_with(|| why.clone());
        }
        for &a in &atoms {
            let s = w.out.atom_source[a];
            if s != usize::MAX && !grp.sources.contains(&s) {
                grp.sources.push(s);
            }
        }
        grp.classes.push(atoms);
    }
    let mut out = w.out;
    out.groups = by_group.into_values().collect();
    for grp in &mut out.groups {
        grp.sources.sort();
    }
    Ok(out)
}
