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
