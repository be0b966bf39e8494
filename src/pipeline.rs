//! The one-command pipeline: lossless clean-up → prune (with compensation) → clean-up → quantize →
//! clean-up → verify against the original, under an optional accuracy budget, with a report.
//!
//! A [`Config`] (TOML, or built from the `optimize` flags) lists the steps as named passes with
//! parameters. [`run`] executes them; when the outputs break the [`MaxError`] budget it measures
//! each layer's sensitivity on the eval samples — each quantized layer quantized alone, each pruned
//! group pruned alone — and, most harmful first, keeps layers in float / restores a group's
//! channels, re-running the pipeline after each decision until the budget holds. If even the
//! float, unpruned model (clean-up only) misses the budget, that is reported and nothing is
//! written. Every decision lands in the [`PipelineReport`].

use crate::inputs::Sample;
use crate::ir::Model;
use crate::prune::{self, Criterion, PruneOptions, PruneReport};
use crate::quant::{self, calib::Method, params::ActType, QuantOptions, QuantReport};
use crate::verify::compare::{OutputReport, Report};
use crate::verify::{compare_models, CompareOptions, Tolerance};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Version tag of the report's JSON schema (documented in the README).
pub const REPORT_SCHEMA: &str = "onnxopt-report/1";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    /// The budget cannot be met even by the clean-up alone.
    #[error("{0}")]
    Impossible(String),
}

fn failed(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Failed(e.to_string())
}

// ---- configuration -----------------------------------------------------------------------------

/// Everything the pipeline flags say, as one document (`--config`, `--print-config`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `NAME=DIMS`, as `--input-shape`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_shapes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<PathBuf>,
    /// Seeded random calibration samples (for trying things out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval: Vec<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    /// `cosine=0.99`, `top1=0.99`, `sqnr=30` or `max-abs=0.01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error: Option<String>,
    #[serde(rename = "pass", default)]
    pub passes: Vec<PassConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum PassConfig {
    /// The lossless pipeline.
    Cleanup,
    PruneChannels(PruneConfig),
    InsertQdq(QuantConfig),
    DynamicQuantize(DynamicConfig),
}

fn yes() -> bool {
    true
}
fn default_ratio() -> f64 {
    0.3
}
fn default_criterion() -> String {
    "l1".into()
}
fn default_max_layer_ratio() -> f64 {
    0.9
}
fn one() -> usize {
    1
}
fn default_method() -> String {
    "minmax".into()
}
fn default_percentile() -> f64 {
    99.99
}
fn default_activations() -> String {
    "uint8".into()
}
fn default_min_conv_macs() -> i64 {
    quant::MIN_CONV_MACS_PER_OUTPUT
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    #[serde(default = "default_criterion")]
    pub criterion: String,
    #[serde(default)]
    pub global: bool,
    #[serde(default = "default_max_layer_ratio")]
    pub max_layer_ratio: f64,
    #[serde(default = "one")]
    pub round_to: usize,
    /// `NAME=R` overrides.
    #[serde(default)]
    pub layer: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "yes")]
    pub compensation: bool,
    #[serde(default)]
    pub refit: bool,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            ratio: default_ratio(),
            criterion: default_criterion(),
            global: false,
            max_layer_ratio: default_max_layer_ratio(),
            round_to: 1,
            layer: vec![],
            exclude: vec![],
            compensation: true,
            refit: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    #[serde(default = "default_activations")]
    pub activations: String,
    #[serde(default)]
    pub symmetric: bool,
    #[serde(default)]
    pub per_tensor: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_nodes: Vec<String>,
    #[serde(default)]
    pub exclude_ops: Vec<String>,
    #[serde(default = "default_min_conv_macs")]
    pub min_conv_macs: i64,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            method: default_method(),
            percentile: default_percentile(),
            activations: default_activations(),
            symmetric: false,
            per_tensor: false,
            ops: None,
            exclude_nodes: vec![],
            exclude_ops: vec![],
            min_conv_macs: default_min_conv_macs(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    #[serde(default)]
    pub exclude_nodes: Vec<String>,
}

impl Config {
    /// The standard pipeline: clean-up, then (optionally) prune and clean-up, then (optionally)
    /// quantize and clean-up.
    pub fn standard(prune: Option<PruneConfig>, quantize: Option<PassConfig>) -> Config {
        let mut passes = vec![PassConfig::Cleanup];
        if let Some(p) = prune {
            passes.push(PassConfig::PruneChannels(p));
            passes.push(PassConfig::Cleanup);
        }
        if let Some(q) = quantize {
            passes.push(q);
            passes.push(PassConfig::Cleanup);
        }
        Config {
            passes,
            ..Default::default()
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn from_toml(text: &str) -> Result<Config, PipelineError> {
        toml::from_str(text).map_err(|e| PipelineError::Usage(format!("config: {}", e.message())))
    }

    pub fn max_error(&self) -> Result<Option<MaxError>, PipelineError> {
        self.max_error.as_deref().map(MaxError::parse).transpose()
    }

    fn needs_calibration(&self) -> bool {
        self.passes.iter().any(|p| match p {
            PassConfig::InsertQdq(_) => true,
            PassConfig::PruneChannels(c) => {
                c.refit
                    || c.criterion
                        .parse::<Criterion>()
                        .is_ok_and(|c| c.needs_data())
            }
            _ => false,
        })
    }
}

// ---- budget ------------------------------------------------------------------------------------

/// An accuracy budget on the outputs, judged on the worst output and sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "metric", content = "bound", rename_all = "kebab-case")]
pub enum MaxError {
    /// Lowest cosine similarity to the original's outputs, at least this.
    Cosine(f64),
    /// Top-1 agreement with the original, at least this.
    Top1(f64),
    /// Lowest SQNR in dB, at least this.
    Sqnr(f64),
    /// Largest absolute difference, at most this.
    MaxAbs(f64),
}

impl std::fmt::Display for MaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxError::Cosine(b) => write!(f, "cosine={b}"),
            MaxError::Top1(b) => write!(f, "top1={b}"),
            MaxError::Sqnr(b) => write!(f, "sqnr={b}"),
            MaxError::MaxAbs(b) => write!(f, "max-abs={b}"),
        }
    }
}

impl MaxError {
    /// A metric value as people read it.
    pub fn show(&self, v: f64) -> String {
        match self {
            MaxError::Cosine(_) | MaxError::Top1(_) => format!("{v:.6}"),
            MaxError::Sqnr(_) => format!("{v:.1} dB"),
            MaxError::MaxAbs(_) => format!("{v:.3e}"),
        }
    }

    pub fn parse(s: &str) -> Result<MaxError, PipelineError> {
        let bad = || {
            PipelineError::Usage(format!(
                "--max-error '{s}': want cosine=C, top1=F, sqnr=DB or max-abs=X"
            ))
        };
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        let v: f64 = v.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        Ok(match k.trim() {
            "cosine" => MaxError::Cosine(v),
            "top1" => MaxError::Top1(v),
            "sqnr" => MaxError::Sqnr(v),
            "max-abs" | "max_abs" => MaxError::MaxAbs(v),
            _ => return Err(bad()),
        })
    }

    /// The metric's value for a comparison (worst output).
    pub fn value(&self, r: &Report) -> Result<f64, PipelineError> {
        let outs = &r.outputs;
        Ok(match self {
            MaxError::Cosine(_) => outs.iter().map(|o| o.cosine).fold(1.0, f64::min),
            MaxError::Top1(_) => {
                let v: Vec<f64> = outs.iter().filter_map(|o| o.top1_agreement).collect();
                if v.is_empty() {
                    return Err(PipelineError::Usage(
                        "--max-error top1 needs outputs of class scores (rank ≥ 2)".into(),
                    ));
                }
                v.into_iter().fold(1.0, f64::min)
            }
            MaxError::Sqnr(_) => outs
                .iter()
                .map(|o| o.sqnr_db.unwrap_or(f64::INFINITY))
                .fold(f64::INFINITY, f64::min),
            MaxError::MaxAbs(_) => outs.iter().map(|o| o.max_abs).fold(0.0, f64::max),
        })
    }

    pub fn holds(&self, value: f64) -> bool {
        match *self {
            MaxError::Cosine(b) | MaxError::Top1(b) | MaxError::Sqnr(b) => value >= b,
            MaxError::MaxAbs(b) => value <= b,
        }
    }

    /// Larger is worse.
    pub fn harm(&self, value: f64) -> f64 {
        match self {
            MaxError::Cosine(_) | MaxError::Top1(_) => 1.0 - value,
            MaxError::Sqnr(_) => -value,
            MaxError::MaxAbs(_) => value,
        }
    }
}

// ---- report ------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Default)]
pub struct ModelStats {
    pub nodes: i64,
    pub params: u64,
    /// Bytes of initializers and constants.
    pub bytes: i64,
    /// Multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul, when every shape is known.
    pub macs: Option<u64>,
}

impl ModelStats {
    pub fn of(m: &Model) -> ModelStats {
        let (nodes, bytes) = crate::passes::size_of(m);
        ModelStats {
            nodes,
            params: crate::analysis::stats::stats_params(m),
            bytes,
            macs: crate::analysis::stats::stats(m, vec![]).macs,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub ms: f64,
    pub nodes_before: i64,
    pub nodes_after: i64,
    pub params_before: u64,
    pub params_after: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    /// `quantize` (this layer quantized alone) or `prune` (this group pruned alone).
    pub kind: String,
    pub layer: String,
    /// The budget's metric with only this change.
    pub metric: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub kind: String,
    pub layer: String,
    /// `keep-float` or `restore-channels`.
    pub action: String,
    /// The budget's metric after this decision.
    pub metric_after: f64,
    /// Undone afterwards: the budget held without it once later decisions were in.
    pub reverted: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BudgetReport {
    pub spec: MaxError,
    pub met: bool,
    /// The metric before any decision.
    pub metric_initial: f64,
    pub metric_final: f64,
    pub decisions: Vec<Decision>,
    pub float_layers: Vec<String>,
    pub restored_groups: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Where the eval samples came from.
    pub eval_source: String,
    pub samples: usize,
    pub outputs: Vec<OutputReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyReport {
    pub tract_before_ms: f64,
    pub tract_after_ms: f64,
    pub note: Option<String>,
}

/// The whole account of a run (`--report FILE.json`; keys documented in the README).
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub schema: &'static str,
    pub model: String,
    pub input: ModelStats,
    pub output: ModelStats,
    pub steps: Vec<StepRecord>,
    pub pruning: Option<PruneReport>,
    pub quantization: Option<QuantReport>,
    pub sensitivity: Vec<Sensitivity>,
    pub budget: Option<BudgetReport>,
    pub verification: Option<Verification>,
    pub latency: Option<LatencyReport>,
    pub notes: Vec<String>,
}

// ---- progress ----------------------------------------------------------------------------------

/// Where the pipeline tells what it is doing (progress bars, `-v` logs). The library stays free of
/// terminal code; the CLI implements this.
pub trait Progress {
    fn start(&self, _what: &str, _total: u64) {}
    fn inc(&self) {}
    fn finish(&self) {}
    fn log(&self, _msg: &str) {}
}

pub struct Silent;
impl Progress for Silent {}

// ---- running -----------------------------------------------------------------------------------

/// Samples the pipeline works with.
pub struct Data {
    pub calibration: Vec<Sample>,
    pub eval: Vec<Sample>,
    pub eval_source: String,
}

/// Layer-level exceptions the budget search makes.
#[derive(Clone, Debug, Default)]
struct Exceptions {
    float_layers: Vec<String>,
    restored_groups: Vec<String>,
}

struct StepsResult {
    model: Model,
    steps: Vec<StepRecord>,
    pruning: Option<PruneReport>,
    quantization: Option<QuantReport>,
    before_prune: Option<(Model, PruneOptions)>,
    before_quant: Option<(Model, quant::calib::CalibrationTable, QuantOptions)>,
}

/// The options a prune config describes; bad ratios or `NAME=R` overrides are usage errors.
pub fn prune_options(c: &PruneConfig) -> Result<PruneOptions, PipelineError> {
    let layer_ratios = c
        .layer
        .iter()
        .map(|l| {
            let (n, r) = l
                .rsplit_once('=')
                .ok_or_else(|| PipelineError::Usage(format!("layer '{l}': want NAME=RATIO")))?;
            let r: f64 = r
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| PipelineError::Usage(format!("layer '{l}': ratio not in [0, 1]")))?;
            Ok((n.to_string(), r))
        })
        .collect::<Result<Vec<_>, PipelineError>>()?;
    if !(0.0..=1.0).contains(&c.ratio) || !(0.0..=1.0).contains(&c.max_layer_ratio) {
        return Err(PipelineError::Usage(
            "prune ratio and max-layer-ratio must be in [0, 1]".into(),
        ));
    }
    Ok(PruneOptions {
        ratio: c.ratio,
        criterion: c.criterion.parse().map_err(PipelineError::Usage)?,
        global: c.global,
        max_layer_ratio: c.max_layer_ratio,
        round_to: c.round_to.max(1),
        layer_ratios,
        exclude: c.exclude.clone(),
        compensation: c.compensation,
        refit: c.refit,
    })
}

fn quant_options(c: &QuantConfig) -> Result<(QuantOptions, Method), PipelineError> {
    let method = match c.method.as_str() {
        "minmax" => Method::MinMax,
        "percentile" => Method::Percentile(c.percentile),
        "entropy" => Method::Entropy,
        m => {
            return Err(PipelineError::Usage(format!(
                "unknown calibration method '{m}'"
            )))
        }
    };
    let activations = match c.activations.as_str() {
        "uint8" => ActType::U8,
        "int8" => ActType::I8,
        a => {
            return Err(PipelineError::Usage(format!(
                "unknown activation type '{a}'"
            )))
        }
    };
    let mut o = QuantOptions {
        activations,
        symmetric: c.symmetric,
        per_channel: !c.per_tensor,
        exclude_nodes: c.exclude_nodes.clone(),
        exclude_ops: c.exclude_ops.clone(),
        min_conv_macs_per_output: c.min_conv_macs,
        ..QuantOptions::default()
    };
    if let Some(ops) = &c.ops {
        o.ops = ops.clone();
    }
    Ok((o, method))
}

/// Checks the config before any work: options parse, calibration present when needed.
pub fn check_config(cfg: &Config, have_calibration: bool) -> Result<(), PipelineError> {
    for p in &cfg.passes {
        match p {
            PassConfig::PruneChannels(c) => {
                prune_options(c)?;
            }
            PassConfig::InsertQdq(c) => {
                quant_options(c)?;
            }
            _ => {}
        }
    }
    cfg.max_error()?;
    if cfg.needs_calibration() && !have_calibration {
        return Err(PipelineError::Usage(
            "this pipeline needs calibration samples: give --calibration PATH (or --random N)"
                .into(),
        ));
    }
    Ok(())
}

fn record(name: &str, before: &Model, after: &Model, t0: Instant) -> StepRecord {
    StepRecord {
        name: name.into(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
        nodes_before: crate::passes::size_of(before).0,
        nodes_after: crate::passes::size_of(after).0,
        params_before: crate::analysis::stats::stats_params(before),
        params_after: crate::analysis::stats::stats_params(after),
    }
}

fn run_steps(
    original: &Model,
    cfg: &Config,
    data: &Data,
    ex: &Exceptions,
    input_shapes: &[(String, Vec<i64>)],
    progress: &dyn Progress,
) -> Result<StepsResult, PipelineError> {
    let mut m = original.clone();
    let mut out = StepsResult {
        model: original.clone(),
        steps: vec![],
        pruning: None,
        quantization: None,
        before_prune: None,
        before_quant: None,
    };
    for p in &cfg.passes {
        let t0 = Instant::now();
        let before = m.clone();
        match p {
            PassConfig::Cleanup => {
                let opts = crate::optimize::OptimizeOptions {
                    input_shapes: input_shapes.to_vec(),
                    ..Default::default()
                };
                let (next, _, _) = crate::optimize::run_passes(&m, &opts).map_err(failed)?;
                m = next;
                out.steps.push(record("cleanup", &before, &m, t0));
            }
            PassConfig::PruneChannels(c) => {
                let mut opts = prune_options(c)?;
                for g in &ex.restored_groups {
                    opts.layer_ratios.retain(|(n, _)| n != g);
                    opts.layer_ratios.push((g.clone(), 0.0));
                }
                out.before_prune = Some((m.clone(), opts.clone()));
                let (next, report) = prune::prune(&m, &opts, &data.calibration).map_err(failed)?;
                m = next;
                out.pruning = Some(report);
                out.steps.push(record("prune-channels", &before, &m, t0));
            }
            PassConfig::InsertQdq(c) => {
                let (mut opts, method) = quant_options(c)?;
                opts.exclude_nodes.extend(ex.float_layers.iter().cloned());
                progress.start("calibration", data.calibration.len() as u64);
                let table = quant::calibrate(
                    &m,
                    data.calibration.iter().cloned().inspect(|_| progress.inc()),
                    method,
                    &opts,
                )
                .map_err(|e| failed(format!("calibration in tract failed: {e}")))?;
                progress.finish();
                out.before_quant = Some((m.clone(), table.clone(), opts.clone()));
                let (next, report) = quant::insert_qdq(&m, &table, &opts).map_err(failed)?;
                m = next;
                out.quantization = Some(report);
                out.steps.push(record("insert-qdq", &before, &m, t0));
            }
            PassConfig::DynamicQuantize(c) => {
                let mut opts = QuantOptions {
                    exclude_nodes: c.exclude_nodes.clone(),
                    ..QuantOptions::default()
                };
                opts.exclude_nodes.extend(ex.float_layers.iter().cloned());
                let (next, report) = quant::dynamic(&m, &opts).map_err(failed)?;
                m = next;
                out.quantization = Some(report);
                out.steps.push(record("dynamic-quantize", &before, &m, t0));
            }
        }
        if let Some(last) = out.steps.last() {
            progress.log(&format!(
                "{}: nodes {} -> {}, parameters {} -> {} ({:.0} ms)",
                last.name,
                last.nodes_before,
                last.nodes_after,
                last.params_before,
                last.params_after,
                last.ms
            ));
        }
    }
    out.model = m;
    Ok(out)
}

fn compare(original: &Model, candidate: &Model, eval: &[Sample]) -> Result<Report, PipelineError> {
    compare_models(
        original,
        candidate,
        eval,
        &Tolerance {
            atol: 0.0,
            rtol: 0.0,
            min_cosine: Some(0.0),
        },
        &CompareOptions::default(),
    )
    .map_err(|e| failed(format!("verifying in tract: {e}")))
}

/// What [`run`] returns: the model to write (unless the budget was impossible) and the report.
pub struct Outcome {
    pub model: Model,
    pub report: PipelineReport,
}

/// Runs the pipeline (see the module doc).
pub fn run(
    original: &Model,
    cfg: &Config,
    data: &Data,
    bench_runs: usize,
    progress: &dyn Progress,
) -> Result<Outcome, PipelineError> {
    let shapes = cfg
        .input_shapes
        .iter()
        .map(|s| crate::inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PipelineError::Usage(e.to_string()))?;
    let budget = cfg.max_error()?;
    let mut ex = Exceptions::default();
    let mut res = run_steps(original, cfg, data, &ex, &shapes, progress)?;
    let mut notes = Vec::new();
    let mut sensitivity = Vec::new();
    let mut budget_report = None;
    let evaluate = |m: &Model| -> Result<Report, PipelineError> {
        progress.start("verification", 1);
        let r = compare(original, m, &data.eval);
        progress.finish();
        r
    };
    let mut verified = if data.eval.is_empty() {
        None
    } else {
        Some(evaluate(&res.model)?)
    };
    if let (Some(spec), Some(first)) = (budget, verified.clone()) {
        let initial = spec.value(&first)?;
        let mut current = initial;
        let mut decisions = Vec::new();
        if !spec.holds(initial) {
            // Is the budget reachable at all? Clean-up alone (float, nothing pruned).
            let float_cfg = Config {
                passes: vec![PassConfig::Cleanup],
                ..cfg.clone()
            };
            let float = run_steps(original, &float_cfg, data, &ex, &shapes, progress)?;
            let float_value = spec.value(&evaluate(&float.model)?)?;
            if !spec.holds(float_value) {
                return Err(PipelineError::Impossible(format!(
                    "the budget {spec} cannot be met even with every layer in float and nothing \
                     pruned: the clean-up alone gives {}",
                    spec.show(float_value)
                )));
            }
            sensitivity = measure_sensitivity(original, &res, &spec, data, &shapes, progress)?;
            let mut ranked = sensitivity.clone();
            ranked.sort_by(|a, b| spec.harm(b.metric).total_cmp(&spec.harm(a.metric)));
            progress.start("budget search", ranked.len() as u64);
            for s in ranked {
                progress.inc();
                if s.kind == "quantize" {
                    ex.float_layers.push(s.layer.clone());
                } else {
                    ex.restored_groups.push(s.layer.clone());
                }
                res = run_steps(original, cfg, data, &ex, &shapes, progress)?;
                let r = evaluate(&res.model)?;
                current = spec.value(&r)?;
                decisions.push(Decision {
                    kind: s.kind.clone(),
                    layer: s.layer.clone(),
                    action: if s.kind == "quantize" {
                        "keep-float".into()
                    } else {
                        "restore-channels".into()
                    },
                    metric_after: current,
                    reverted: false,
                });
                progress.log(&format!(
                    "budget: {} {} -> metric {}",
                    if s.kind == "quantize" {
                        "kept in float"
                    } else {
                        "restored"
                    },
                    s.layer,
                    spec.show(current)
                ));
                verified = Some(r);
                if spec.holds(current) {
                    break;
                }
            }
            progress.finish();
            // As few exceptions as possible: undo each one, latest first, that the budget can do
            // without now that the others are in.
            if spec.holds(current) && decisions.len() > 1 {
                progress.start("minimizing", decisions.len() as u64 - 1);
                for i in (0..decisions.len() - 1).rev() {
                    progress.inc();
                    let d = decisions[i].clone();
                    let mut trial = ex.clone();
                    if d.kind == "quantize" {
                        trial.float_layers.retain(|l| l != &d.layer);
                    } else {
                        trial.restored_groups.retain(|l| l != &d.layer);
                    }
                    let r = run_steps(original, cfg, data, &trial, &shapes, progress)?;
                    let rep = evaluate(&r.model)?;
                    let v = spec.value(&rep)?;
                    if spec.holds(v) {
                        ex = trial;
                        res = r;
                        current = v;
                        verified = Some(rep);
                        decisions[i].reverted = true;
                        progress.log(&format!("budget: undid {} ({})", d.layer, spec.show(v)));
                    }
                }
                progress.finish();
            }
        }
        budget_report = Some(BudgetReport {
            spec,
            met: spec.holds(current),
            metric_initial: initial,
            metric_final: current,
            decisions,
            float_layers: ex.float_layers.clone(),
            restored_groups: ex.restored_groups.clone(),
        });
    } else if budget.is_some() {
        notes.push("no eval samples: the budget was not checked".into());
    }
    // SQNR of every quantized tensor against its float value on the eval samples.
    if let (Some(q), Some((float, _, _))) = (res.quantization.as_mut(), &res.before_quant) {
        if !data.eval.is_empty() {
            if let Err(e) = quant::measure_sqnr(float, &res.model, q, &data.eval) {
                notes.push(format!("per-tensor SQNR not measured: {e}"));
            }
        }
    }
    let latency = if bench_runs > 0 {
        let inputs = data
            .eval
            .first()
            .or(data.calibration.first())
            .map(|s| s.inputs.clone());
        match inputs {
            Some(inputs) => {
                match crate::verify::bench::bench(&[original, &res.model], &inputs, bench_runs, 1)
                {
                    Ok(b) => Some(LatencyReport {
                        tract_before_ms: b.models[0].median_ms,
                        tract_after_ms: b.models[1].median_ms,
                        note: res.quantization.as_ref().filter(|q| !q.quantized_nodes.is_empty()).map(|_| {
                            "tract runs int8 QDQ models correctly but with generic kernels, not \
                             the fused int8 kernels of deployment runtimes (onnxruntime, \
                             TensorRT): measure int8 speed there"
                                .to_string()
                        }),
                    }),
                    Err(e) => {
                        notes.push(format!("latency not measured: {e}"));
                        None
                    }
                }
            }
            None => None,
        }
    } else {
        None
    };
    let report = PipelineReport {
        schema: REPORT_SCHEMA,
        model: String::new(),
        input: ModelStats::of(original),
        output: ModelStats::of(&res.model),
        steps: res.steps.clone(),
        pruning: res.pruning.clone(),
        quantization: res.quantization.clone(),
        sensitivity,
        budget: budget_report,
        verification: verified.map(|r| Verification {
            eval_source: data.eval_source.clone(),
            samples: r.samples,
            outputs: r.outputs,
        }),
        latency,
        notes,
    };
    Ok(Outcome {
        model: res.model,
        report,
    })
}

/// Each quantized layer quantized alone (on the model as the quantize step received it), each
/// pruned group pruned alone (float): the budget's metric against the original.
fn measure_sensitivity(
    original: &Model,
    res: &StepsResult,
    spec: &MaxError,
    data: &Data,
    shapes: &[(String, Vec<i64>)],
    progress: &dyn Progress,
) -> Result<Vec<Sensitivity>, PipelineError> {
    let mut out = Vec::new();
    let quantized: Vec<String> = res
        .quantization
        .as_ref()
        .map(|q| q.quantized_nodes.clone())
        .unwrap_or_default();
    let pruned: Vec<String> = res
        .pruning
        .as_ref()
        .map(|p| {
            p.groups
                .iter()
                .filter(|g| g.kept < g.channels && g.frozen.is_none())
                .filter_map(|g| g.members.first().cloned())
                .collect()
        })
        .unwrap_or_default();
    progress.start(
        "sensitivity",
        (quantized.len() * res.before_quant.is_some() as usize
            + pruned.len() * res.before_prune.is_some() as usize) as u64,
    );
    if let Some((m, table, opts)) = &res.before_quant {
        for layer in &quantized {
            progress.inc();
            let o = QuantOptions {
                only_nodes: vec![layer.clone()],
                ..opts.clone()
            };
            let (q, _) = quant::insert_qdq(m, table, &o).map_err(failed)?;
            let v = spec.value(&compare(original, &q, &data.eval)?)?;
            out.push(Sensitivity {
                kind: "quantize".into(),
                layer: layer.clone(),
                metric: v,
            });
        }
    }
    if let Some((m, opts)) = &res.before_prune {
        for layer in &pruned {
            progress.inc();
            let ratio = opts
                .layer_ratios
                .iter()
                .find(|(n, _)| n == layer)
                .map(|x| x.1)
                .unwrap_or(opts.ratio);
            let o = PruneOptions {
                ratio: 0.0,
                global: false,
                layer_ratios: vec![(layer.clone(), ratio)],
                ..opts.clone()
            };
            let (p, _) = prune::prune(m, &o, &data.calibration).map_err(failed)?;
            let _ = shapes;
            let v = spec.value(&compare(original, &p, &data.eval)?)?;
            out.push(Sensitivity {
                kind: "prune".into(),
                layer: layer.clone(),
                metric: v,
            });
        }
    }
    progress.finish();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_judge() {
        assert_eq!(
            MaxError::parse("cosine=0.99").unwrap(),
            MaxError::Cosine(0.99)
        );
        assert_eq!(
            MaxError::parse("max-abs=0.5").unwrap(),
            MaxError::MaxAbs(0.5)
        );
        assert!(MaxError::parse("cosine").is_err());
        assert!(MaxError::parse("psnr=3").is_err());
        assert!(MaxError::Cosine(0.99).holds(0.995) && !MaxError::Cosine(0.99).holds(0.98));
        assert!(MaxError::MaxAbs(0.1).holds(0.05) && !MaxError::MaxAbs(0.1).holds(0.2));
        assert!(MaxError::Sqnr(30.0).harm(20.0) > MaxError::Sqnr(30.0).harm(40.0));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let mut c = Config::standard(
            Some(PruneConfig {
                ratio: 0.25,
                layer: vec!["conv1=0.5".into()],
                ..Default::default()
            }),
            Some(PassConfig::InsertQdq(QuantConfig::default())),
        );
        c.calibration = vec!["calib.npz".into()];
        c.max_error = Some("cosine=0.99".into());
        let text = c.to_toml();
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        let bad = Config::from_toml("[[pass]]\nname = \"prune-channels\"\nratoi = 0.3\n");
        assert!(bad.is_err(), "a misspelt key is an error");
    }
}
