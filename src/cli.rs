//! Helpers behind the command line that are worth testing: loading with context, refusing to
//! overwrite inputs, rendering reports as text.

use crate::analysis::stats::{Stats, ValueSummary};
use crate::ir::Model;
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::Path;

/// Loads a model, naming the file in any error; returns the external-data files it read.
pub fn load(path: &Path) -> Result<(Model, Vec<String>)> {
    let (m, files) =
        crate::import::load_with_files(path).with_context(|| format!("'{}'", path.display()))?;
    Ok((m, files.iter().map(|p| p.display().to_string()).collect()))
}

/// Errors when `output` is the input file, unless `in_place`.
pub fn refuse_overwrite(input: &Path, output: &Path, in_place: bool) -> Result<()> {
    if in_place {
        return Ok(());
    }
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            bail!(
                "output '{}' is the input model; pass --in-place to overwrite it",
                output.display()
            );
        }
    }
    Ok(())
}

fn shape_str(v: &ValueSummary) -> String {
    match &v.shape {
        None => format!("{}[?]", v.dtype),
        Some(dims) => {
            let d: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    _ => "?".into(),
                })
                .collect();
            format!("{}[{}]", v.dtype, d.join(","))
        }
    }
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn render_stats(path: &Path, s: &Stats) -> String {
    let mut o = String::new();
    let w = &mut o;
    writeln!(w, "model       {}", path.display()).unwrap();
    writeln!(w, "producer    {} {}", s.producer, s.producer_version).unwrap();
    let opsets: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    writeln!(
        w,
        "ir version  {}   opsets: {}",
        s.ir_version,
        opsets.join(", ")
    )
    .unwrap();
    for (label, list) in [("inputs", &s.inputs), ("outputs", &s.outputs)] {
        writeln!(w, "{label}:").unwrap();
        let width = list.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for v in list.iter() {
            writeln!(w, "  {:width$}  {}", v.name, shape_str(v)).unwrap();
        }
    }
    writeln!(
        w,
        "nodes       {} ({} including subgraphs), {} local functions",
        s.nodes, s.nodes_total, s.functions
    )
    .unwrap();
    writeln!(
        w,
        "parameters  {} in {} tensors, {}",
        s.params.count,
        s.params.tensors,
        human_bytes(s.params.bytes)
    )
    .unwrap();
    for (dt, c) in &s.params.by_dtype {
        writeln!(
            w,
            "  {dt:10} {:>12} values  {:>10}",
            c.count,
            human_bytes(c.bytes)
        )
        .unwrap();
    }
    if !s.external_data.is_empty() {
        writeln!(w, "external    {}", s.external_data.join(", ")).unwrap();
    }
    match s.macs {
        Some(m) => writeln!(
            w,
            "MACs        {m} ({:.3} G; {})",
            m as f64 / 1e9,
            s.macs_note
        )
        .unwrap(),
        None => writeln!(w, "MACs        unknown ({})", s.macs_note).unwrap(),
    }
    writeln!(w, "ops:").unwrap();
    let mut ops: Vec<_> = s.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let width = ops.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in ops {
        writeln!(w, "  {k:width$}  {v:>6}").unwrap();
    }
    o
}

/// Where samples come from, as the flags say.
#[derive(Clone, Debug, Default)]
pub struct SampleArgs {
    pub inputs: Vec<std::path::PathBuf>,
    pub random: Option<usize>,
    pub seed: u64,
    pub input_shapes: Vec<String>,
    pub float_range: Option<(f64, f64)>,
    pub int_range: Option<(i64, i64)>,
}

/// Parses `LO,HI`.
pub fn parse_range<T: std::str::FromStr + PartialOrd>(s: &str) -> Result<(T, T), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("'{s}': expected LO,HI"))?;
    let lo = a
        .trim()
        .parse::<T>()
        .map_err(|_| format!("'{a}' is not a number"))?;
    let hi = b
        .trim()
        .parse::<T>()
        .map_err(|_| format!("'{b}' is not a number"))?;
    if !(lo < hi) {
        return Err(format!("'{s}': LO must be below HI"));
    }
    Ok((lo, hi))
}

/// Builds the samples for `model`: from `--inputs` paths, else `--random N` (default `default_n`).
pub fn samples(
    model: &Model,
    args: &SampleArgs,
    default_n: usize,
) -> Result<Vec<crate::inputs::Sample>> {
    use crate::inputs;
    let shapes = args
        .input_shapes
        .iter()
        .map(|s| inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = inputs::specs(model, &shapes)?;
    let outputs: Vec<(String, crate::ir::DataType)> = model
        .graph
        .outputs
        .iter()
        .map(|o| {
            let dt =
                o.ty.as_ref()
                    .and_then(|t| t.as_tensor())
                    .map(|(d, _)| d)
                    .unwrap_or(crate::ir::DataType::FLOAT);
            (model.graph.value(o.value).name.clone(), dt)
        })
        .collect();
    let mut all = Vec::new();
    for p in &args.inputs {
        all.extend(inputs::load(p, &specs, &outputs)?);
    }
    if args.inputs.is_empty() || args.random.is_some() {
        let mut ranges = inputs::RandomRanges::default();
        if let Some(f) = args.float_range {
            ranges.float = f;
        }
        if let Some(i) = args.int_range {
            ranges.int = i;
        }
        all.extend(inputs::random(
            &specs,
            args.random.unwrap_or(default_n),
            args.seed,
            ranges,
        )?);
    }
    if all.is_empty() {
        bail!(inputs::InputError::NoSamples);
    }
    Ok(all)
}

/// `args.random` (else `default_n`) seeded random samples made one at a time: what `samples` would
/// return for random-only args, without holding them all.
pub fn random_stream(
    model: &Model,
    args: &SampleArgs,
    default_n: usize,
) -> Result<crate::inputs::RandomSamples> {
    use crate::inputs;
    let shapes = args
        .input_shapes
        .iter()
        .map(|s| inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = inputs::specs(model, &shapes)?;
    let mut ranges = inputs::RandomRanges::default();
    if let Some(f) = args.float_range {
        ranges.float = f;
    }
    if let Some(i) = args.int_range {
        ranges.int = i;
    }
    let n = args.random.unwrap_or(default_n);
    if n == 0 {
        bail!(inputs::InputError::NoSamples);
    }
    Ok(inputs::RandomSamples::new(&specs, n, args.seed, ranges)?)
}

/// Whether any initializer of the main graph was read from external data.
pub fn has_external_data(m: &Model) -> bool {
    m.graph.nodes().any(|(_, n)| match &n.kind {
        crate::ir::NodeKind::Initializer(crate::ir::Const::Dense(t))
        | crate::ir::NodeKind::Input { default: Some(t) } => {
            t.placement == crate::ir::Placement::External
        }
        _ => false,
    })
}

/// Total size of a model file and the external-data files it was read with.
pub fn model_bytes(path: &Path, external_files: &[String]) -> u64 {
    let dir = path.parent().unwrap_or(Path::new("."));
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(path)
        + external_files
            .iter()
            .map(|f| size(&dir.join(f)))
            .sum::<u64>()
}

/// Reads a calibration table saved by `quantize --save-table`.
pub fn read_table(p: &Path) -> Result<crate::quant::calib::CalibrationTable> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading '{}'", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("'{}' is not a calibration table", p.display()))
}

/// Calibration and eval samples for a pipeline config: `--eval` files, else the last quarter of
/// the calibration samples held out (at least one), else seeded random samples; says which.
pub fn pipeline_data(
    model: &Model,
    cfg: &crate::pipeline::Config,
) -> Result<crate::pipeline::Data> {
    let args = |inputs: &[std::path::PathBuf], random: Option<usize>| SampleArgs {
        inputs: inputs.to_vec(),
        random,
        seed: cfg.seed,
        input_shapes: cfg.input_shapes.clone(),
        ..Default::default()
    };
    let mut calibration = if cfg.calibration.is_empty() && cfg.random.is_none() {
        Vec::new()
    } else {
        samples(model, &args(&cfg.calibration, cfg.random), 0)?
    };
    let (eval, eval_source) = if !cfg.eval.is_empty() {
        let e = samples(model, &args(&cfg.eval, None), 0)?;
        let src = format!(
            "{} sample(s) from --eval {}",
            e.len(),
            cfg.eval
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        (e, src)
    } else if calibration.len() >= 2 {
        let n = calibration.len();
        let k = (n / 4).max(1);
        let e = calibration.split_off(n - k);
        (
            e,
            format!("the last {k} of the {n} calibration samples, held out of calibration (no --eval given)"),
        )
    } else if calibration.len() == 1 {
        (
            calibration.clone(),
            "the only calibration sample (give --eval for a held-out check)".to_string(),
        )
    } else {
        let mut a = args(&[], Some(4));
        a.seed = cfg.seed.wrapping_add(1);
        (
            samples(model, &a, 4)?,
            "4 seeded random samples (no --calibration or --eval given)".to_string(),
        )
    };
    Ok(crate::pipeline::Data {
        calibration,
        eval,
        eval_source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing '{}'", path.display()))?;
    Ok(())
}

/// Progress bars on stderr (hidden when it is not a terminal or with --quiet) and `-v` logs.
pub struct Bars {
    bar: std::cell::RefCell<Option<indicatif::ProgressBar>>,
    hidden: bool,
    verbose: bool,
}

impl Bars {
    pub fn new(quiet: bool, verbose: bool) -> Bars {
        use std::io::IsTerminal;
        Bars {
            bar: std::cell::RefCell::new(None),
            hidden: quiet || !std::io::stderr().is_terminal(),
            verbose,
        }
    }
}

impl crate::pipeline::Progress for Bars {
    fn start(&self, what: &str, total: u64) {
        if self.hidden {
            return;
        }
        let pb = indicatif::ProgressBar::new(total);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {elapsed}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_string());
        if let Some(old) = self.bar.replace(Some(pb)) {
            old.finish_and_clear();
        }
    }

    fn inc(&self) {
        if let Some(pb) = self.bar.borrow().as_ref() {
            pb.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.bar.replace(None) {
            pb.finish_and_clear();
        }
    }

    fn log(&self, msg: &str) {
        if self.verbose {
            match self.bar.borrow().as_ref() {
                Some(pb) => pb.println(msg),
                None => eprintln!("{msg}"),
            }
        }
    }
}

/// The pipeline summary printed on stdout.
pub fn render_pipeline(r: &crate::pipeline::PipelineReport) -> String {
    let mut s = String::new();
    let macs = |m: Option<u64>| m.map(|x| x.to_string()).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        s,
        "nodes {} -> {}   parameters {} -> {}   parameter bytes {} -> {}   MACs {} -> {}",
        r.input.nodes,
        r.output.nodes,
        r.input.params,
        r.output.params,
        human_bytes(r.input.bytes.max(0) as u64),
        human_bytes(r.output.bytes.max(0) as u64),
        macs(r.input.macs),
        macs(r.output.macs)
    );
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|st| {
            format!(
                "{} ({} -> {} nodes)",
                st.name, st.nodes_before, st.nodes_after
            )
        })
        .collect();
    let _ = writeln!(s, "steps: {}", steps.join(", "));
    if let Some(p) = &r.pruning {
        let frozen = p.groups.iter().filter(|g| g.frozen.is_some()).count();
        let _ = writeln!(
            s,
            "pruning: removed {} channel(s) in {} group(s), {} frozen",
            p.channels_removed,
            p.groups.len() - frozen,
            frozen
        );
    }
    if let Some(q) = &r.quantization {
        let _ = writeln!(
            s,
            "quantization: {} node(s) quantized, {} kept in float",
            q.quantized_nodes.len(),
            q.skipped.len()
        );
    }
    if let Some(b) = &r.budget {
        let _ = writeln!(
            s,
            "budget {}: {} (metric {} -> {}; {} layer(s) kept in float, {} group(s) restored)",
            b.spec,
            if b.met { "met" } else { "NOT met" },
            b.spec.show(b.metric_initial),
            b.spec.show(b.metric_final),
            b.float_layers.len(),
            b.restored_groups.len()
        );
    }
    if let Some(v) = &r.verification {
        let _ = writeln!(s, "verification on {}:", v.eval_source);
        for o in &v.outputs {
            let _ = writeln!(
                s,
                "  {:<24} cosine {:.6} (mean {:.6})  max_abs {:.3e}  sqnr {}",
                o.name,
                o.cosine,
                o.cosine_mean,
                o.max_abs,
                o.sqnr_db
                    .map(|d| format!("{d:.1} dB"))
                    .unwrap_or_else(|| "inf".into())
            );
        }
    }
    if let Some(l) = &r.latency {
        let _ = writeln!(
            s,
            "tract latency {:.2} ms -> {:.2} ms",
            l.tract_before_ms, l.tract_after_ms
        );
        if let Some(n) = &l.note {
            let _ = writeln!(s, "  ({n})");
        }
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s.trim_end().to_string()
}
