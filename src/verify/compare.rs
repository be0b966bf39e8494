//! Comparing two models (or a model and stored expected outputs) on a sample set.
//!
//! Metrics per output, worst and mean over samples:
//! - `max_abs` = max |a−b|; `mean_abs` = mean |a−b| over all elements of all samples;
//! - `max_rel` = max |a−b| / |b| over elements with |b| > 1e-6 (smaller reference values make
//!   relative error meaningless);
//! - `cosine` of the flattened outputs (1 when both are all-zero), worst sample;
//! - `sqnr_db` = 10·log10(Σb² / Σ(a−b)²), worst sample; `null` (infinite) when identical;
//! - for class scores (`[N, C]`, or named by `--classes`) `top1_agreement`: share of rows whose
//!   argmax agrees; `top5_agreement`: share of rows whose reference argmax is in the candidate's top 5.
//!
//! Pass rule: every element within `atol + rtol·|b|` (numpy `allclose`, NaN equal to NaN), or, when a
//! minimum cosine is given, cosine ≥ that minimum for every output and sample. Integer and bool
//! outputs must be equal; shapes and dtypes must always match exactly.

use super::{RunError, Runner};
use crate::inputs::Sample;
use crate::ir::{DataType, GraphOutput, Model, NodeKind, Tensor};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    pub min_cosine: Option<f64>,
}

impl Default for Tolerance {
    /// `atol 1e-5, rtol 1e-4`: float32 reassociation in a lossless rewrite (a fused BatchNorm, a
    /// folded constant) moves outputs by a few ulps; far tighter than any accuracy-relevant change.
    fn default() -> Self {
        Tolerance {
            atol: 1e-5,
            rtol: 1e-4,
            min_cosine: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputReport {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub max_abs: f64,
    pub mean_abs: f64,
    pub max_rel: f64,
    /// Worst (lowest) over samples.
    pub cosine: f64,
    pub cosine_mean: f64,
    /// Worst (lowest) over samples; `null` when outputs are identical (infinite SQNR).
    pub sqnr_db: Option<f64>,
    pub top1_agreement: Option<f64>,
    pub top5_agreement: Option<f64>,
    pub passed: bool,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Located {
    /// First node, in topological order, whose output leaves the tolerance.
    pub node: String,
    pub op_type: String,
    pub value: String,
    pub max_abs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub reference_ms: f64,
    pub candidate_ms: f64,
    /// Time spent comparing (everything but loading and running the models).
    pub compare_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub passed: bool,
    pub samples: usize,
    pub outputs: Vec<OutputReport>,
    pub located: Option<Located>,
    pub timing: Timing,
}

#[derive(Default)]
struct Acc {
    max_abs: f64,
    sum_abs: f64,
    count: u64,
    max_rel: f64,
    cos_min: f64,
    cos_sum: f64,
    sqnr_min: Option<f64>,
    rows: u64,
    top1: u64,
    top5: u64,
    samples: u64,
    failure: Option<String>,
    allclose_fail: bool,
    cos_fail: bool,
    shape: Vec<i64>,
    dtype: Option<DataType>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            cos_min: 1.0,
            ..Acc::default()
        }
    }
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    if t.dtype == DataType::DOUBLE {
        let b = t.to_le_bytes()?;
        return Some(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        );
    }
    if t.dtype.is_float() {
        return t
            .to_f32_vec()
            .map(|v| v.into_iter().map(f64::from).collect());
    }
    t.to_i64_vec()
        .map(|v| v.into_iter().map(|x| x as f64).collect())
}

fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        row[b]
            .partial_cmp(&row[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

/// Folds one sample of one output into the accumulator.
fn accumulate(
    acc: &mut Acc,
    candidate: &Tensor,
    reference: &Tensor,
    tol: &Tolerance,
    classes: bool,
) {
    acc.samples += 1;
    acc.dtype.get_or_insert(reference.dtype);
    if acc.shape.is_empty() {
        acc.shape = reference.dims.clone();
    }
    if candidate.dtype != reference.dtype {
        acc.failure.get_or_insert(format!(
            "dtype {} vs reference {}",
            candidate.dtype, reference.dtype
        ));
        return;
    }
    if candidate.dims != reference.dims {
        acc.failure.get_or_insert(format!(
            "shape {:?} vs reference {:?}",
            candidate.dims, reference.dims
        ));
        return;
    }
    let exact = !reference.dtype.is_float();
    if reference.dtype == DataType::STRING {
        if !candidate.same_values(reference) {
            acc.failure.get_or_insert("string values differ".into());
        }
        return;
    }
    let (Some(a), Some(b)) = (as_f64(candidate), as_f64(reference)) else {
        acc.failure
            .get_or_insert(format!("cannot compare {} values", reference.dtype));
        return;
    };
    let (mut dot, mut na, mut nb, mut noise) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(&b) {
        let both_nan = x.is_nan() && y.is_nan();
        let d = if both_nan || x == y {
            0.0
        } else {
            (x - y).abs()
        };
        if d.is_nan() {
            acc.allclose_fail = true;
            acc.max_abs = f64::NAN;
            continue;
        }
        acc.max_abs = acc.max_abs.max(d);
        acc.sum_abs += d;
        acc.count += 1;
        if y.abs() > 1e-6 {
            acc.max_rel = acc.max_rel.max(d / y.abs());
        }
        let ok = d == 0.0 || (!exact && d <= tol.atol + tol.rtol * y.abs());
        if !ok {
            acc.allclose_fail = true;
        }
        if !both_nan {
            dot += x * y;
            na += x * x;
            nb += y * y;
            noise += d * d;
        }
    }
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
    };
    acc.cos_min = acc.cos_min.min(cos);
    acc.cos_sum += cos;
    if let Some(min) = tol.min_cosine {
        if cos < min || exact && noise > 0.0 {
            acc.cos_fail = true;
        }
    }
    if noise > 0.0 {
        let s = 10.0 * (nb / noise).log10();
        acc.sqnr_min = Some(acc.sqnr_min.map_or(s, |m: f64| m.min(s)));
    }
    if classes && reference.dims.len() == 2 && reference.dims[1] >= 2 {
        let c = reference.dims[1] as usize;
        for (ra, rb) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
            acc.rows += 1;
            let want = top_k(rb, 1)[0];
            let got = top_k(ra, 5);
            acc.top1 += (got[0] == want) as u64;
            acc.top5 += got.contains(&want) as u64;
        }
    }
}

fn finish(name: &str, acc: Acc, tol: &Tolerance) -> OutputReport {
    let failed_values = if tol.min_cosine.is_some() {
        acc.cos_fail
    } else {
        acc.allclose_fail
    };
    let mut failure = acc.failure;
    if failure.is_none() && failed_values {
        failure = Some(match tol.min_cosine {
            Some(c) => format!("cosine {:.6} below {c}", acc.cos_min),
            None => format!(
                "max_abs {:.3e} outside atol {} + rtol {}·|ref|",
                acc.max_abs, tol.atol, tol.rtol
            ),
        });
    }
    OutputReport {
        name: name.to_string(),
        dtype: acc.dtype.map(|d| d.to_string()).unwrap_or_default(),
        shape: acc.shape,
        max_abs: acc.max_abs,
        mean_abs: if acc.count > 0 {
            acc.sum_abs / acc.count as f64
        } else {
            0.0
        },
        max_rel: acc.max_rel,
        cosine: acc.cos_min,
        cosine_mean: if acc.samples > 0 {
            acc.cos_sum / acc.samples as f64
        } else {
            1.0
        },
        sqnr_db: acc.sqnr_min,
        top1_agreement: (acc.rows > 0).then(|| acc.top1 as f64 / acc.rows as f64),
        top5_agreement: (acc.rows > 0).then(|| acc.top5 as f64 / acc.rows as f64),
        passed: failure.is_none(),
        failure,
    }
}

/// Whether an output counts as class scores: rank 2 with at least two columns, or named.
fn is_classes(name: &str, t: &Tensor, named: &[String]) -> bool {
    if !named.is_empty() {
        return named.iter().any(|n| n == name);
    }
    t.dims.len() == 2 && t.dims[1] >= 2 && t.dtype.is_float()
}

fn output_names(m: &Model) -> Vec<String> {
    m.graph
        .outputs
        .iter()
        .map(|o| m.graph.value(o.value).name.clone())
        .collect()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reference model: {0}")]
    Reference(RunError),
    #[error("candidate model: {0}")]
    Candidate(RunError),
    #[error("{0}")]
    Other(String),
}

/// Options beyond the tolerance.
#[derive(Clone, Debug, Default)]
pub struct CompareOptions {
    /// Outputs to treat as class scores (default: every `[N, C]` float output).
    pub classes: Vec<String>,
    /// On failure, find the first diverging node by exposing shared intermediate values.
    pub locate: bool,
}

/// Runs both models on every sample and compares outputs by name (by position when the names
/// differ but the counts agree).
pub fn compare_models(
    reference: &Model,
    candidate: &Model,
    samples: &[Sample],
    tol: &Tolerance,
    opts: &CompareOptions,
) -> Result<Report, VerifyError> {
    let first = samples
        .first()
        .ok_or_else(|| VerifyError::Other("no samples".into()))?;
    let t0 = Instant::now();
    let r = Runner::from_model(reference, &first.inputs).map_err(VerifyError::Reference)?;
    let mut reference_ms = ms(t0);
    let t0 = Instant::now();
    let c = Runner::from_model(candidate, &first.inputs).map_err(VerifyError::Candidate)?;
    let mut candidate_ms = ms(t0);
    let rnames = output_names(reference);
    let cnames = output_names(candidate);
    // Candidate output index for each reference output.
    let mapping: Vec<Option<usize>> = if rnames.iter().all(|n| cnames.contains(n)) {
        rnames
            .iter()
            .map(|n| cnames.iter().position(|c| c == n))
            .collect()
    } else if rnames.len() == cnames.len() {
        (0..rnames.len()).map(Some).collect()
    } else {
        rnames
            .iter()
            .map(|n| cnames.iter().position(|c| c == n))
            .collect()
    };
    let mut accs: Vec<Acc> = rnames.iter().map(|_| Acc::new()).collect();
    let mut compare_ms = 0.0;
    let mut failing_sample = None;
    for (k, s) in samples.iter().enumerate() {
        let t0 = Instant::now();
        let want = r.run(&s.inputs).map_err(VerifyError::Reference)?;
        reference_ms += ms(t0);
        let t0 = Instant::now();
        let got = c.run(&s.inputs).map_err(VerifyError::Candidate)?;
        candidate_ms += ms(t0);
        let t0 = Instant::now();
        for (i, name) in rnames.iter().enumerate() {
            match mapping[i] {
                Some(j) => {
                    let classes = is_classes(name, &want[i], &opts.classes);
                    let before =
                        accs[i].allclose_fail || accs[i].cos_fail || accs[i].failure.is_some();
                    accumulate(&mut accs[i], &got[j], &want[i], tol, classes);
                    let after =
                        accs[i].allclose_fail || accs[i].cos_fail || accs[i].failure.is_some();
                    if after && !before && failing_sample.is_none() {
                        failing_sample = Some(k);
                    }
                }
                None => {
                    accs[i]
                        .failure
                        .get_or_insert(format!("the candidate has no output '{name}'"));
                }
            }
        }
        compare_ms += ms(t0);
    }
    let t0 = Instant::now();
    let outputs: Vec<OutputReport> = rnames
        .iter()
        .zip(accs)
        .map(|(n, a)| finish(n, a, tol))
        .collect();
    compare_ms += ms(t0);
    let passed = outputs.iter().all(|o| o.passed);
    let located = match (passed, opts.locate, failing_sample) {
        (false, true, Some(k)) => locate(reference, candidate, &samples[k], tol)?,
        _ => None,
    };
    Ok(Report {
        passed,
        samples: samples.len(),
        outputs,
        located,
        timing: Timing {
            reference_ms,
            candidate_ms,
            compare_ms,
        },
    })
}

/// Runs one model and compares with the expected outputs stored in the samples.
pub fn compare_expected(
    model: &Model,
    samples: &[Sample],
    tol: &Tolerance,
    opts: &CompareOptions,
) -> Result<Report, VerifyError> {
    let first = samples
        .first()
        .ok_or_else(|| VerifyError::Other("no samples".into()))?;
    let names = output_names(model);
    if samples.iter().all(|s| s.expected.is_empty()) {
        return Err(VerifyError::Other(
            "the samples hold no expected outputs (output_K.pb, or arrays named after outputs); give a second model to compare with".into(),
        ));
    }
    let t0 = Instant::now();
    let c = Runner::from_model(model, &first.inputs).map_err(VerifyError::Candidate)?;
    let mut candidate_ms = ms(t0);
    let mut accs: Vec<Acc> = names.iter().map(|_| Acc::new()).collect();
    let mut compare_ms = 0.0;
    for s in samples {
        let t0 = Instant::now();
        let got = c.run(&s.inputs).map_err(VerifyError::Candidate)?;
        candidate_ms += ms(t0);
        let t0 = Instant::now();
        for (i, name) in names.iter().enumerate() {
            if let Some(want) = s.expected.get(name) {
                let classes = is_classes(name, want, &opts.classes);
                accumulate(&mut accs[i], &got[i], want, tol, classes);
            }
        }
        compare_ms += ms(t0);
    }
    let outputs: Vec<OutputReport> = names
        .iter()
        .zip(accs)
        .filter(|(_, a)| a.samples > 0)
        .map(|(n, a)| finish(n, a, tol))
        .collect();
    Ok(Report {
        passed: outputs.iter().all(|o| o.passed),
        samples: samples.len(),
        outputs,
        located: None,
        timing: Timing {
            reference_ms: 0.0,
            candidate_ms,
            compare_ms,
        },
    })
}

/// Exposes every operator output that exists under the same name in both models as an extra graph
/// output, runs both on the sample, and returns the first (in the reference's topological order)
/// whose values leave the tolerance.
fn locate(
    reference: &Model,
    candidate: &Model,
    sample: &Sample,
    tol: &Tolerance,
) -> Result<Option<Located>, VerifyError> {
    let cand_names: std::collections::HashSet<&str> = candidate
        .graph
        .ops()
        .flat_map(|(_, n, _)| n.outputs.iter().map(|v| v.name.as_str()))
        .filter(|n| !n.is_empty())
        .collect();
    let order = reference
        .graph
        .topo_order()
        .map_err(|e| VerifyError::Other(e.to_string()))?;
    let mut shared = Vec::new();
    for id in order {
        let n = reference.graph.node(id);
        if !matches!(n.kind, NodeKind::Op(_)) {
            continue;
        }
        for (k, v) in n.outputs.iter().enumerate() {
            if cand_names.contains(v.name.as_str())
                && !reference.graph.is_graph_output(crate::ir::ValueId {
                    node: id,
                    output: k,
                })
            {
                shared.push((
                    v.name.clone(),
                    n.display_name().to_string(),
                    n.op_type().to_string(),
                ));
            }
        }
    }
    if shared.is_empty() {
        return Ok(None);
    }
    let expose = |m: &Model| -> Model {
        let mut m = m.clone();
        m.graph.outputs.clear();
        for (name, _, _) in &shared {
            if let Some(v) = m.graph.find_value(name) {
                m.graph.outputs.push(GraphOutput {
                    value: v,
                    ty: None,
                    doc_string: String::new(),
                    metadata_props: vec![],
                });
            }
        }
        m
    };
    let (r, c) = (expose(reference), expose(candidate));
    let want = Runner::from_model(&r, &sample.inputs)
        .and_then(|x| x.run(&sample.inputs))
        .map_err(VerifyError::Reference)?;
    let got = Runner::from_model(&c, &sample.inputs)
        .and_then(|x| x.run(&sample.inputs))
        .map_err(VerifyError::Candidate)?;
    for (k, (name, node, op)) in shared.iter().enumerate() {
        let mut acc = Acc::new();
        accumulate(&mut acc, &got[k], &want[k], tol, false);
        let rep = finish(name, acc, tol);
        if !rep.passed {
            return Ok(Some(Located {
                node: node.clone(),
                op_type: op.clone(),
                value: name.clone(),
                max_abs: rep.max_abs,
            }));
        }
    }
    Ok(None)
}

/// The aligned terminal table.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let w = report
        .outputs
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        o,
        "{:w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>6}  result",
        "output", "max_abs", "mean_abs", "max_rel", "cosine", "sqnr_db", "top1"
    )
    .unwrap();
    for x in &report.outputs {
        let sq = x
            .sqnr_db
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "inf".into());
        let t1 = x
            .top1_agreement
            .map(|t| format!("{:.3}", t))
            .unwrap_or_else(|| "-".into());
        let res = if x.passed {
            "ok".to_string()
        } else {
            format!("FAIL: {}", x.failure.clone().unwrap_or_default())
        };
        writeln!(
            o,
            "{:w$}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>10.7}  {:>9}  {:>6}  {res}",
            x.name, x.max_abs, x.mean_abs, x.max_rel, x.cosine, sq, t1
        )
        .unwrap();
    }
    writeln!(
        o,
        "{} over {} sample(s); tract: reference {:.1} ms, candidate {:.1} ms; comparing {:.2} ms",
        if report.passed { "PASSED" } else { "FAILED" },
        report.samples,
        report.timing.reference_ms,
        report.timing.candidate_ms,
        report.timing.compare_ms
    )
    .unwrap();
    if let Some(l) = &report.located {
        writeln!(
            o,
            "first divergence: node '{}' ({}) output '{}', max_abs {:.3e}",
            l.node, l.op_type, l.value, l.max_abs
        )
        .unwrap();
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: &[f32], b: &[f32], tol: &Tolerance) -> OutputReport {
        let mut acc = Acc::new();
        let n = a.len() as i64;
        accumulate(
            &mut acc,
            &Tensor::from_f32(vec![n], a),
            &Tensor::from_f32(vec![n], b),
            tol,
            false,
        );
        finish("y", acc, tol)
    }

    #[test]
    fn nan_and_inf_equal_themselves() {
        let r = run(
            &[f32::NAN, f32::INFINITY, 1.0],
            &[f32::NAN, f32::INFINITY, 1.0],
            &Tolerance::default(),
        );
        assert!(r.passed, "{:?}", r.failure);
        let r = run(&[f32::NAN, 1.0], &[0.0, 1.0], &Tolerance::default());
        assert!(!r.passed);
    }

    #[test]
    fn allclose_and_cosine_rules() {
        let tol = Tolerance {
            atol: 1e-3,
            rtol: 0.0,
            min_cosine: None,
        };
        assert!(run(&[1.0005, 2.0], &[1.0, 2.0], &tol).passed);
        let r = run(&[1.01, 2.0], &[1.0, 2.0], &tol);
        assert!(!r.passed);
        assert!((r.max_abs - 0.01).abs() < 1e-6);
        let cos = Tolerance {
            min_cosine: Some(0.99),
            ..tol
        };
        assert!(run(&[1.01, 2.0], &[1.0, 2.0], &cos).passed);
        assert!(!run(&[-1.0, 2.0], &[1.0, 2.0], &cos).passed);
    }

    #[test]
    fn top_k_agreement() {
        let mut acc = Acc::new();
        let a = Tensor::from_f32(vec![2, 3], &[0.1, 0.9, 0.0, 0.5, 0.2, 0.3]);
        let b = Tensor::from_f32(vec![2, 3], &[0.1, 0.8, 0.0, 0.2, 0.5, 0.3]);
        accumulate(&mut acc, &a, &b, &Tolerance::default(), true);
        let r = finish("y", acc, &Tolerance::default());
        assert_eq!(r.top1_agreement, Some(0.5));
        assert_eq!(r.top5_agreement, Some(1.0));
    }
}
