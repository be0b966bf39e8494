//! The lossless `optimize` job: run a pass pipeline, then prove the result equivalent to the
//! original in tract on sample inputs. When the check fails, the pass applications are bisected to
//! name the first one that breaks the outputs.

use crate::inputs::Sample;
use crate::ir::Model;
use crate::passes::{self, pipelines, PassContext, PassError, PassManager, PassStats};
use crate::verify::{compare_models, CompareOptions, Report, Tolerance};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct OptimizeOptions {
    /// Run only these passes (in this order, to a fixed point); `None` = the whole lossless pipeline.
    pub passes: Option<Vec<String>>,
    pub skip: Vec<String>,
    pub input_shapes: Vec<(String, Vec<i64>)>,
    pub validate_each: bool,
    /// Calibration data and policy for `insert-qdq`.
    pub quant: Option<crate::quant::QuantSetup>,
    /// Options and samples for `prune-channels`.
    pub prune: Option<(crate::prune::PruneOptions, Vec<crate::inputs::Sample>)>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct ModelSize {
    pub nodes: i64,
    /// Elements in initializers and Constant nodes (subgraphs included).
    pub params: u64,
    pub param_bytes: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OptimizeReport {
    pub before: ModelSize,
    pub after: ModelSize,
    pub passes: Vec<PassStats>,
    /// `(pass, reason)` for every rewrite a pass declined.
    pub declined: Vec<(String, String)>,
    pub optimize_ms: f64,
    pub check: Option<Report>,
    /// When the check failed: the first pass application that breaks the outputs.
    pub culprit: Option<String>,
}

fn size(m: &Model) -> ModelSize {
    let (nodes, param_bytes) = passes::size_of(m);
    let params = crate::analysis::stats::stats_params(m);
    ModelSize {
        nodes,
        params,
        param_bytes,
    }
}

/// The pipeline the options describe.
pub fn pipeline(opts: &OptimizeOptions) -> Result<Vec<passes::Step>, PassError> {
    let names: Vec<&'static str> = match &opts.passes {
        Some(list) => list
            .iter()
            .map(|n| passes::find(n).map(|p| p.name))
            .collect::<Result<_, _>>()?,
        None => passes::PASSES
            .iter()
            .filter(|p| p.lossless)
            .map(|p| p.name)
            .collect(),
    };
    for s in &opts.skip {
        passes::find(s)?;
    }
    let names: Vec<&'static str> = names
        .into_iter()
        .filter(|n| !opts.skip.iter().any(|s| s == n))
        .collect();
    Ok(if opts.passes.is_none() && opts.skip.is_empty() {
        pipelines::lossless()
    } else {
        pipelines::of(names)
    })
}

/// Writes `--input-shape` dims into the declared input types, and binds the symbols they replace
/// (`batch` = 1) in every other declared type, so no `value_info` still says `batch`. Passes may
/// specialise the graph to those dims (folding `Shape`), so the output must say it only accepts them.
pub fn fix_input_shapes(m: &mut Model, shapes: &[(String, Vec<i64>)]) {
    use crate::ir::{Dim, TypeKind};
    let g = &mut m.graph;
    let mut bindings: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for &i in g.inputs().to_vec().iter() {
        let v = &mut g.node_mut(i).outputs[0];
        if let Some((_, dims)) = shapes.iter().find(|(n, _)| *n == v.name) {
            if let Some(TypeKind::Tensor { elem, shape }) = v.ty.as_ref().map(|t| t.kind.clone()) {
                for (d, &fixed) in shape.iter().flatten().zip(dims) {
                    if let Dim::Symbol(s) = &d.dim {
                        bindings.insert(s.clone(), fixed);
                    }
                }
                let denotation =
                    v.ty.as_ref()
                        .map(|t| t.denotation.clone())
                        .unwrap_or_default();
                let mut ty = crate::ir::Type::tensor(elem, dims);
                ty.denotation = denotation;
                v.ty = Some(ty);
            }
        }
    }
    if bindings.is_empty() {
        return;
    }
    let bind = |ty: &mut Option<crate::ir::Type>| {
        if let Some(TypeKind::Tensor {
            shape: Some(dims), ..
        }) = ty.as_mut().map(|t| &mut t.kind)
        {
            for d in dims.iter_mut() {
                if let Dim::Symbol(s) = &d.dim {
                    if let Some(&v) = bindings.get(s) {
                        d.dim = Dim::Fixed(v);
                    }
                }
            }
        }
    };
    let ids: Vec<_> = g.node_ids().collect();
    for id in ids {
        for v in g.node_mut(id).outputs.iter_mut() {
            bind(&mut v.ty);
        }
    }
    for o in g.outputs.iter_mut() {
        bind(&mut o.ty);
    }
    for v in g.extra_value_info.iter_mut() {
        bind(&mut v.ty);
    }
}

/// Runs the passes. Returns the optimized model, the manager (trace and stats) and the report
/// without a check.
pub fn run_passes(
    model: &Model,
    opts: &OptimizeOptions,
) -> Result<(Model, PassManager, OptimizeReport), PassError> {
    let mut m = model.clone();
    fix_input_shapes(&mut m, &opts.input_shapes);
    let mut pm = PassManager::new(pipeline(opts)?);
    pm.validate_each |= opts.validate_each;
    let mut cx = PassContext::new(opts.input_shapes.clone());
    cx.quant = opts.quant.clone();
    cx.prune = opts.prune.clone();
    let t0 = Instant::now();
    pm.run(&mut m, &mut cx)?;
    crate::ir::validate::validate(&m)
        .map_err(|e| PassError::Broken(format!("optimized model is invalid: {e}")))?;
    let report = OptimizeReport {
        before: size(model),
        after: size(&m),
        passes: pm.stats.clone(),
        declined: cx.skipped,
        optimize_ms: t0.elapsed().as_secs_f64() * 1e3,
        check: None,
        culprit: None,
    };
    Ok((m, pm, report))
}

/// Checks `optimized` against `original`; on failure bisects the trace for the culprit.
pub fn check(
    original: &Model,
    optimized: &Model,
    pm: &PassManager,
    samples: &[Sample],
    tol: &Tolerance,
    input_shapes: &[(String, Vec<i64>)],
) -> Result<(Report, Option<String>), crate::verify::compare::VerifyError> {
    let opts = CompareOptions::default();
    let report = compare_models(original, optimized, samples, tol, &opts)?;
    if report.passed {
        return Ok((report, None));
    }
    // Only applications that changed the model matter; find the first whose result fails.
    let trace = &pm.trace;
    let changed: Vec<usize> = (0..trace.len()).filter(|&i| trace[i].1).collect();
    let fails = |k: usize| -> bool {
        match passes::replay(original, trace, changed[k] + 1, input_shapes) {
            Ok(m) => compare_models(original, &m, samples, tol, &opts)
                .map(|r| !r.passed)
                .unwrap_or(true),
            Err(_) => true,
        }
    };
    let (mut lo, mut hi) = (0usize, changed.len().saturating_sub(1));
    if changed.is_empty() {
        return Ok((report, None));
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let culprit = trace[changed[lo]].0.to_string();
    Ok((report, Some(culprit)))
}
