//! The `onnxopt` command line: parse flags, call the library, print. No logic lives here.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use onnxopt::{cli, export::DataPolicy};
use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` that ignores a closed stdout (`onnxopt inspect m.onnx | head`), instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

macro_rules! outp {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "onnxopt",
    version,
    about = "Optimize ONNX models: lossless clean-up, pruning and int8 quantization, verified in tract",
    after_help = "Examples:\n  onnxopt inspect model.onnx\n  onnxopt inspect model.onnx --json\n  onnxopt convert model.onnx -o out.onnx --external-data\n  onnxopt convert big.onnx -o inline.onnx --inline-data\n\nExit codes: 0 success, 2 bad input or usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a model: interface, opsets, node and op counts, parameters, MACs.
    #[command(
        after_help = "Examples:\n  onnxopt inspect model.onnx\n  onnxopt inspect model.onnx --json > stats.json"
    )]
    Inspect {
        /// The ONNX model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load and save a model without changing it: re-serialize, move weights to or from external data.
    #[command(
        after_help = "Examples:\n  onnxopt convert model.onnx -o copy.onnx\n  onnxopt convert model.onnx -o split.onnx --external-data --size-threshold 4096\n  onnxopt convert split.onnx -o whole.onnx --inline-data"
    )]
    Convert(ConvertArgs),
    /// Run two models in tract on the same samples and compare every output (or one model against
    /// the expected outputs stored with the samples). Exit 0 within tolerance, 1 outside, 2 bad input.
    #[command(
        after_help = "Examples:\n  onnxopt verify model.onnx optimized.onnx\n  onnxopt verify model.onnx optimized.onnx --inputs calib.npz --min-cosine 0.999 --json report.json\n  onnxopt verify model.onnx --inputs test_data_set_0\n  onnxopt verify a.onnx b.onnx --random 8 --seed 1 --input-shape x=1,3,224,224 --locate"
    )]
    Verify(VerifyArgs),
    /// Measure tract latency (median, min, max); with two models, alternate runs and print the ratio.
    #[command(
        after_help = "Examples:\n  onnxopt bench model.onnx --runs 50\n  onnxopt bench model.onnx optimized.onnx --input-shape x=1,3,224,224 --json"
    )]
    Bench(BenchArgs),
    /// Lossless optimization: the pass pipeline to a fixed point, then a check in tract against the
    /// original (exit 1 and nothing written when outputs moved, naming the pass that broke them).
    #[command(
        after_help = "Examples:\n  onnxopt optimize model.onnx -o model.opt.onnx\n  onnxopt optimize model.onnx -o out.onnx --input-shape x=1,3,224,224 --stats\n  onnxopt optimize model.onnx -o out.onnx --skip fuse-bias --report report.json\n  onnxopt optimize model.onnx -o out.onnx --passes fold-constants,eliminate-dead-code --no-check"
    )]
    Optimize(OptimizeArgs),
    /// Int8 post-training quantization (QDQ): lossless clean-up, calibration in tract, per-channel
    /// int8 weights, uint8 activations, then an accuracy report against the float model.
    #[command(
        after_help = "Examples:\n  onnxopt quantize model.onnx -o model.int8.onnx --calibration calib.npz\n  onnxopt quantize model.onnx -o q.onnx --calibration calib/ --method percentile --percentile 99.99 --eval eval.npz\n  onnxopt quantize model.onnx -o q.onnx --calibration calib.npz --save-table table.json\n  onnxopt quantize model.onnx -o q.onnx --table table.json --exclude-nodes head/Conv"
    )]
    Quantize(QuantizeArgs),
    /// Structured channel pruning: find coupled channel groups, score channels, remove the least
    /// important, slice the tensors, then run the lossless clean-up and report what it cost.
    #[command(
        after_help = "Examples:\n  onnxopt prune model.onnx -o small.onnx --ratio 0.3\n  onnxopt prune model.onnx -o small.onnx --ratio 0.3 --criterion activation-mean --calibration calib.npz --eval eval.npz\n  onnxopt prune model.onnx -o small.onnx --ratio 0.5 --global --max-layer-ratio 0.7 --round-to 8 --exclude head/Conv"
    )]
    Prune(PruneArgs),
    /// List every pass with its summary.
    Passes,
}

#[derive(Args)]
struct PruneArgs {
    model: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Fraction of each group's channels to remove (0 changes nothing).
    #[arg(long, default_value_t = 0.3)]
    ratio: f64,
    /// Channel importance: l1, l2, bn-scale, activation-mean or activation-entropy.
    #[arg(long, default_value = "l1", value_parser = ["l1", "l2", "bn-scale", "activation-mean", "activation-entropy"])]
    criterion: String,
    /// Samples for data-driven criteria and bias compensation (same formats as verify --inputs).
    #[arg(long, value_name = "PATH")]
    calibration: Vec<PathBuf>,
    /// Use N seeded random samples as calibration data (for trying things out).
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shape: Vec<String>,
    /// Rank channels across all groups instead of per group.
    #[arg(long)]
    global: bool,
    /// With --global: the most any one group may lose.
    #[arg(long, default_value_t = 0.9)]
    max_layer_ratio: f64,
    /// Keep channel counts multiples of K.
    #[arg(long, default_value_t = 1, value_name = "K")]
    round_to: usize,
    /// Per-layer ratio, by producer node name: NAME=R. Repeatable.
    #[arg(long, value_name = "NAME=R")]
    layer: Vec<String>,
    /// Never prune the group of this producer node. Repeatable.
    #[arg(long, value_name = "NODE")]
    exclude: Vec<String>,
    /// Do not fold the mean of removed channels into the next layer's bias.
    #[arg(long)]
    no_compensation: bool,
    /// Refit the weights of 1x1 convs and Gemm/MatMul layers that lost input channels by least
    /// squares on the calibration samples (others are compensated).
    #[arg(long)]
    refit: bool,
    /// Held-out samples: report verify metrics of the pruned model against the original.
    #[arg(long, value_name = "PATH")]
    eval: Vec<PathBuf>,
    /// Write the pruning report (JSON).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[arg(long)]
    in_place: bool,
}

#[derive(Args)]
struct QuantizeArgs {
    model: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Calibration samples (same formats as verify --inputs). Repeatable.
    #[arg(long, value_name = "PATH")]
    calibration: Vec<PathBuf>,
    /// Calibrate on N seeded random samples instead (only for trying things out: real data
    /// calibrates far better).
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shape: Vec<String>,
    /// Range method: minmax, percentile or entropy.
    #[arg(long, default_value = "minmax", value_parser = ["minmax", "percentile", "entropy"])]
    method: String,
    /// Percentile for --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Activation type: uint8 (default, fastest on x86) or int8.
    #[arg(long, default_value = "uint8", value_parser = ["uint8", "int8"])]
    activations: String,
    /// Symmetric activation ranges.
    #[arg(long)]
    symmetric: bool,
    /// Per-tensor instead of per-channel weights.
    #[arg(long)]
    per_tensor: bool,
    /// Ops to quantize, comma-separated (default Conv,Gemm,MatMul).
    #[arg(long, value_delimiter = ',')]
    ops: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',')]
    exclude_nodes: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    exclude_ops: Vec<String>,
    /// Keep a Conv in float when each output element takes fewer multiply-adds than this
    /// (C_in/group x kernel size): depthwise and RGB first-layer convs are slower in int8 once the
    /// Q/DQ around them is paid. 0 quantizes every Conv.
    #[arg(long, value_name = "N", default_value_t = onnxopt::quant::MIN_CONV_MACS_PER_OUTPUT)]
    min_conv_macs: i64,
    /// Keep the weights of those small float Convs in float32 (default: float16 + Cast, which
    /// runtimes fold at load; half the bytes).
    #[arg(long)]
    no_f16_weights: bool,
    /// Save the calibration table (JSON).
    #[arg(long, value_name = "FILE", conflicts_with = "table")]
    save_table: Option<PathBuf>,
    /// Reuse a saved calibration table instead of calibrating.
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// Dynamic quantization of MatMuls (int8 weights, activations quantized at run time): no
    /// calibration; the accuracy report uses --eval, else 4 seeded random samples.
    #[arg(long, conflicts_with_all = ["table", "save_table", "calibration"])]
    dynamic: bool,
    /// Held-out samples for the accuracy report (default: the calibration samples).
    #[arg(long, value_name = "PATH")]
    eval: Vec<PathBuf>,
    /// Write the quantization report (JSON).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[arg(long)]
    in_place: bool,
}

#[derive(Args)]
struct OptimizeArgs {
    model: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    /// Run only these passes, comma-separated, in this order.
    #[arg(long, value_delimiter = ',', conflicts_with = "skip")]
    passes: Option<Vec<String>>,
    /// Leave these passes out, comma-separated.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    #[command(flatten)]
    samples: SampleFlags,
    /// Check on N seeded random samples (used when no --inputs are given).
    #[arg(long, value_name = "N", default_value_t = 3)]
    check: usize,
    /// Skip the equivalence check.
    #[arg(long)]
    no_check: bool,
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Write the optimization report (JSON).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print per-pass statistics.
    #[arg(long)]
    stats: bool,
    /// Write the output even when the check fails.
    #[arg(long)]
    force: bool,
    /// Validate the IR after every pass.
    #[arg(long)]
    validate_each: bool,
    /// Calibration samples for the `insert-qdq` and `prune-channels` passes (same formats as
    /// --inputs). Repeatable.
    #[arg(long, value_name = "PATH")]
    calibration: Vec<PathBuf>,
    /// Prune R of each channel group (pipeline: clean-up → prune → clean-up …); with --passes,
    /// the ratio of the `prune-channels` pass (default 0.3).
    #[arg(long, value_name = "R")]
    prune: Option<f64>,
    /// Quantize after pruning: int8 (static QDQ, needs --calibration) or dynamic.
    #[arg(long, value_name = "MODE", value_parser = ["int8", "dynamic"], conflicts_with = "passes")]
    quantize: Option<String>,
    /// Held-out samples for the final verification and the budget (default: the last quarter of
    /// the calibration samples, held out of calibration).
    #[arg(long, value_name = "PATH", conflicts_with = "passes")]
    eval: Vec<PathBuf>,
    /// Accuracy budget on the outputs: cosine=C, top1=F, sqnr=DB or max-abs=X. Layers are kept
    /// in float / unpruned, most harmful first, until it holds.
    #[arg(long, value_name = "SPEC", conflicts_with = "passes")]
    max_error: Option<String>,
    /// Run the pipeline described by a TOML file (see --print-config).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["passes", "quantize", "prune", "max_error"])]
    config: Option<PathBuf>,
    /// Print the TOML config equivalent to the flags given, and exit.
    #[arg(long)]
    print_config: bool,
    /// Write the report as a self-contained HTML page.
    #[arg(long, value_name = "FILE", conflicts_with = "passes")]
    html: Option<PathBuf>,
    /// Timed tract runs of the original and the result for the report (0: skip).
    #[arg(long, value_name = "N", default_value_t = 5)]
    bench_runs: usize,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
    /// Log each pipeline step.
    #[arg(short, long)]
    verbose: bool,
    /// Channel importance for `prune-channels` (see `onnxopt prune --help`).
    #[arg(long, default_value = "l1", value_parser = ["l1", "l2", "bn-scale", "activation-mean", "activation-entropy"])]
    criterion: String,
    /// A calibration table saved by `quantize --save-table`, for the `insert-qdq` pass.
    #[arg(long, value_name = "FILE", conflicts_with = "calibration")]
    table: Option<PathBuf>,
    /// Pass the check when every output's cosine to the original is at least this (instead of
    /// --atol/--rtol); default 0.99 when `insert-qdq` runs.
    #[arg(long, value_name = "C")]
    min_cosine: Option<f64>,
    /// Allow OUT to be the input file itself.
    #[arg(long)]
    in_place: bool,
}

#[derive(Args)]
struct SampleFlags {
    /// Sample inputs: .npz, .npy, a folder of NAME.npy, an ONNX test-data folder (input_K.pb), or a
    /// folder of test_data_set_* folders. Repeatable.
    #[arg(long = "inputs", value_name = "PATH")]
    inputs: Vec<PathBuf>,
    /// Add N seeded random samples from the declared shapes (the default when no --inputs is given).
    #[arg(long, value_name = "N")]
    random: Option<usize>,
    /// Seed for --random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fix an input's shape, e.g. x=1,3,224,224 (needed for symbolic dims with --random). Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shape: Vec<String>,
    /// Range of random float inputs, LO,HI (default -1,1).
    #[arg(long, value_name = "LO,HI", value_parser = cli::parse_range::<f64>)]
    float_range: Option<(f64, f64)>,
    /// Range of random integer inputs such as token ids, LO,HI with HI excluded (default 0,10).
    #[arg(long, value_name = "LO,HI", value_parser = cli::parse_range::<i64>)]
    int_range: Option<(i64, i64)>,
}

impl SampleFlags {
    fn args(&self) -> cli::SampleArgs {
        cli::SampleArgs {
            inputs: self.inputs.clone(),
            random: self.random,
            seed: self.seed,
            input_shapes: self.input_shape.clone(),
            float_range: self.float_range,
            int_range: self.int_range,
        }
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// The reference model.
    reference: PathBuf,
    /// The model to check against the reference; omit to compare REFERENCE with the expected
    /// outputs stored beside the inputs.
    candidate: Option<PathBuf>,
    #[command(flatten)]
    samples: SampleFlags,
    /// Absolute tolerance: |a-b| <= atol + rtol*|b|.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Pass when every output's cosine similarity is at least C (instead of atol/rtol).
    #[arg(long, value_name = "C")]
    min_cosine: Option<f64>,
    /// Treat this output as class scores (top-1/top-5 agreement). Repeatable.
    #[arg(long, value_name = "OUTPUT")]
    classes: Vec<String>,
    /// Write the report as JSON to FILE, or to stdout with -.
    #[arg(long, value_name = "FILE|-")]
    json: Option<String>,
    /// On failure, name the first node whose output leaves the tolerance.
    #[arg(long)]
    locate: bool,
}

#[derive(Args)]
struct BenchArgs {
    model: PathBuf,
    /// A second model to compare with.
    other: Option<PathBuf>,
    #[command(flatten)]
    samples: SampleFlags,
    /// Timed runs per model.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed warm-up runs per model.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConvertArgs {
    /// The ONNX model file.
    model: PathBuf,
    /// Where to write the result; external data goes to `<OUT>.data` beside it.
    #[arg(short, long)]
    output: PathBuf,
    /// Write initializers of at least --size-threshold bytes to external data.
    #[arg(long, conflicts_with = "inline_data")]
    external_data: bool,
    /// Size threshold in bytes for --external-data.
    #[arg(long, requires = "external_data", default_value_t = onnxopt::export::DEFAULT_EXTERNAL_THRESHOLD)]
    size_threshold: usize,
    /// Bring every tensor inline (fails if the model would pass the 2 GiB protobuf limit).
    #[arg(long)]
    inline_data: bool,
    /// Allow OUT to be the input file itself.
    #[arg(long)]
    in_place: bool,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line: the whole context chain, newlines folded.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("onnxopt: error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Cli) -> Result<ExitCode> {
    match args.command {
        Command::Inspect { model, json } => {
            let (m, files) = cli::load(&model)?;
            let stats = onnxopt::analysis::stats::stats(&m, files);
            if json {
                out!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                outp!("{}", cli::render_stats(&model, &stats));
            }
        }
        Command::Convert(a) => {
            cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
            let (m, _) = cli::load(&a.model)?;
            let policy = if a.inline_data {
                DataPolicy::Inline
            } else if a.external_data {
                DataPolicy::External {
                    threshold: a.size_threshold,
                }
            } else {
                DataPolicy::Keep
            };
            let saved = onnxopt::export::save(&m, &a.output, policy)
                .with_context(|| format!("writing '{}'", a.output.display()))?;
            if saved.forced_external {
                eprintln!("note: the model is over the 2 GiB protobuf limit; weights were written as external data");
            }
            match &saved.data_file {
                Some((p, n)) => out!(
                    "wrote {} ({} bytes) and {} ({} bytes)",
                    a.output.display(),
                    saved.model_bytes,
                    p.display(),
                    n
                ),
                None => out!("wrote {} ({} bytes)", a.output.display(), saved.model_bytes),
            }
        }
        Command::Verify(a) => return verify(a),
        Command::Optimize(a) => return optimize(a),
        Command::Quantize(a) => return quantize(a),
        Command::Prune(a) => return prune(a),
        Command::Passes => {
            let w = onnxopt::passes::PASSES
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(0);
            for p in onnxopt::passes::PASSES {
                out!("{:w$}  {}", p.name, p.summary);
            }
        }
        Command::Bench(a) => {
            let (m, _) = cli::load(&a.model)?;
            let other = a
                .other
                .as_ref()
                .map(|p| cli::load(p).map(|x| x.0))
                .transpose()?;
            let samples = cli::samples(&m, &a.samples.args(), 1)?;
            let mut models = vec![&m];
            if let Some(o) = &other {
                models.push(o);
            }
            let r = onnxopt::verify::bench::bench(&models, &samples[0].inputs, a.runs, a.warmup)?;
            if a.json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let names: Vec<String> = std::iter::once(&a.model)
                    .chain(a.other.iter())
                    .map(|p| p.display().to_string())
                    .collect();
                let w = names.iter().map(|n| n.len()).max().unwrap_or(5);
                out!(
                    "{:w$}  {:>10}  {:>10}  {:>10}  runs",
                    "model",
                    "median ms",
                    "min ms",
                    "max ms"
                );
                for (n, l) in names.iter().zip(&r.models) {
                    out!(
                        "{n:w$}  {:>10.3}  {:>10.3}  {:>10.3}  {}",
                        l.median_ms,
                        l.min_ms,
                        l.max_ms,
                        l.runs
                    );
                }
                if let Some(ratio) = r.ratio {
                    out!("ratio (second / first median): {ratio:.3}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    use onnxopt::verify::{
        compare::render, compare_expected, compare_models, CompareOptions, Tolerance,
    };
    let (reference, _) = cli::load(&a.reference)?;
    let candidate = a
        .candidate
        .as_ref()
        .map(|p| cli::load(p).map(|x| x.0))
        .transpose()?;
    let samples = cli::samples(&reference, &a.samples.args(), 3)?;
    let tol = Tolerance {
        atol: a.atol,
        rtol: a.rtol,
        min_cosine: a.min_cosine,
    };
    let opts = CompareOptions {
        classes: a.classes.clone(),
        locate: a.locate,
    };
    let report = match &candidate {
        Some(c) => compare_models(&reference, c, &samples, &tol, &opts)?,
        None => compare_expected(&reference, &samples, &tol, &opts)?,
    };
    match a.json.as_deref() {
        Some("-") => out!("{}", serde_json::to_string_pretty(&report)?),
        Some(f) => {
            std::fs::write(f, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing '{f}'"))?;
            outp!("{}", render(&report));
        }
        None => outp!("{}", render(&report)),
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn optimize(a: OptimizeArgs) -> Result<ExitCode> {
    let pipeline_mode = a.passes.is_none()
        && (a.prune.is_some()
            || a.quantize.is_some()
            || a.config.is_some()
            || a.max_error.is_some()
            || a.html.is_some()
            || a.print_config
            || !a.eval.is_empty());
    if pipeline_mode {
        return optimize_pipeline(a);
    }
    optimize_passes(a)
}

/// `optimize` with --prune / --quantize / --max-error / --config / --html: the verified pipeline.
fn optimize_pipeline(a: OptimizeArgs) -> Result<ExitCode> {
    use onnxopt::pipeline::{self, Config, PassConfig, PipelineError, PruneConfig, QuantConfig};
    let cfg = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading '{}'", p.display()))?;
            Config::from_toml(&text)?
        }
        None => {
            let prune = a.prune.map(|ratio| PruneConfig {
                ratio,
                criterion: a.criterion.clone(),
                ..Default::default()
            });
            let quantize = match a.quantize.as_deref() {
                Some("int8") => Some(PassConfig::InsertQdq(QuantConfig::default())),
                Some(_) => Some(PassConfig::DynamicQuantize(Default::default())),
                None => None,
            };
            let mut c = Config::standard(prune, quantize);
            c.input_shapes = a.samples.input_shape.clone();
            c.calibration = a.calibration.clone();
            c.random = a.samples.random;
            c.eval = a.eval.clone();
            c.seed = a.samples.seed;
            c.max_error = a.max_error.clone();
            c
        }
    };
    if a.print_config {
        outp!("{}", cfg.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
    let (mut original, _) = cli::load(&a.model)?;
    let shapes = cfg
        .input_shapes
        .iter()
        .map(|s| onnxopt::inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    onnxopt::optimize::fix_input_shapes(&mut original, &shapes);
    let data = cli::pipeline_data(&original, &cfg)?;
    pipeline::check_config(&cfg, !data.calibration.is_empty())?;
    let progress = cli::Bars::new(a.quiet, a.verbose);
    let outcome = match pipeline::run(&original, &cfg, &data, a.bench_runs, &progress) {
        Err(PipelineError::Impossible(m)) => {
            eprintln!("onnxopt: {m}; nothing written");
            return Ok(ExitCode::from(1));
        }
        other => other?,
    };
    let mut report = outcome.report;
    report.model = a.model.display().to_string();
    out!("{}", cli::render_pipeline(&report));
    let budget_missed = report.budget.as_ref().is_some_and(|b| !b.met);
    if let Some(p) = &a.report {
        cli::write_atomic(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    if let Some(p) = &a.html {
        cli::write_atomic(p, onnxopt::report_html::render(&report).as_bytes())?;
    }
    if budget_missed {
        eprintln!(
            "onnxopt: the accuracy budget is not met even after every exception; nothing written"
        );
        return Ok(ExitCode::from(1));
    }
    let saved = onnxopt::export::save(&outcome.model, &a.output, DataPolicy::Keep)
        .with_context(|| format!("writing '{}'", a.output.display()))?;
    out!("wrote {} ({} bytes)", a.output.display(), saved.model_bytes);
    Ok(ExitCode::SUCCESS)
}

fn optimize_passes(a: OptimizeArgs) -> Result<ExitCode> {
    use onnxopt::optimize::{check, run_passes, OptimizeOptions};
    use onnxopt::verify::Tolerance;
    cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
    let (original, external_files) = cli::load(&a.model)?;
    let input_shapes = a
        .samples
        .input_shape
        .iter()
        .map(|s| onnxopt::inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    let quantizes = a
        .passes
        .as_ref()
        .is_some_and(|p| p.iter().any(|n| n == "insert-qdq"));
    let quant = if quantizes {
        let table = match &a.table {
            Some(p) => Some(cli::read_table(p)?),
            None => None,
        };
        let samples = if a.calibration.is_empty() {
            Vec::new()
        } else {
            let sargs = cli::SampleArgs {
                inputs: a.calibration.clone(),
                input_shapes: a.samples.input_shape.clone(),
                ..Default::default()
            };
            cli::samples(&original, &sargs, 0)?
        };
        Some(onnxopt::quant::QuantSetup {
            samples,
            table,
            method: onnxopt::quant::calib::Method::MinMax,
            opts: Default::default(),
        })
    } else {
        None
    };
    let prunes = a
        .passes
        .as_ref()
        .is_some_and(|p| p.iter().any(|n| n == "prune-channels"));
    let prune = if prunes {
        if !(0.0..=1.0).contains(&a.prune.unwrap_or(0.3)) {
            anyhow::bail!("--prune must be in [0, 1]");
        }
        let criterion: onnxopt::prune::Criterion =
            a.criterion.parse().map_err(anyhow::Error::msg)?;
        let samples = if a.calibration.is_empty() {
            Vec::new()
        } else {
            let sargs = cli::SampleArgs {
                inputs: a.calibration.clone(),
                input_shapes: a.samples.input_shape.clone(),
                ..Default::default()
            };
            cli::samples(&original, &sargs, 0)?
        };
        let opts = onnxopt::prune::PruneOptions {
            ratio: a.prune.unwrap_or(0.3),
            criterion,
            ..Default::default()
        };
        Some((opts, samples))
    } else {
        None
    };
    let opts = OptimizeOptions {
        passes: a.passes.clone(),
        skip: a.skip.clone(),
        input_shapes: input_shapes.clone(),
        validate_each: a.validate_each,
        quant,
        prune,
    };
    let (optimized, pm, mut report) = run_passes(&original, &opts)?;
    let mut passed = true;
    if !a.no_check {
        let mut sargs = a.samples.args();
        if sargs.random.is_none() && sargs.inputs.is_empty() {
            sargs.random = Some(a.check);
        }
        let samples = cli::samples(&original, &sargs, a.check)
            .context("the equivalence check needs samples (or pass --no-check)")?;
        // Pruning without retraining moves outputs by design: report, do not fail, unless a
        // bound is given.
        let min_cosine = a
            .min_cosine
            .or(prunes.then_some(0.0))
            .or(quantizes.then_some(0.99));
        let tol = Tolerance {
            atol: a.atol,
            rtol: a.rtol,
            min_cosine,
        };
        let (r, culprit) = check(&original, &optimized, &pm, &samples, &tol, &input_shapes)
            .context(
                "cannot check the optimized model in tract (pass --no-check to skip the check)",
            )?;
        passed = r.passed;
        if !passed {
            for o in r.outputs.iter().filter(|o| !o.passed) {
                eprintln!(
                    "check failed: output '{}': {}",
                    o.name,
                    o.failure.clone().unwrap_or_default()
                );
            }
            if let Some(c) = &culprit {
                eprintln!("check failed: pass '{c}' is the first to change the outputs (skip it with --skip {c})");
            }
        }
        report.check = Some(r);
        report.culprit = culprit;
    }
    out!(
        "nodes {} -> {}   parameters {} -> {}   parameter bytes {} -> {}   ({:.1} ms)",
        report.before.nodes,
        report.after.nodes,
        report.before.params,
        report.after.params,
        cli::human_bytes(report.before.param_bytes as u64),
        cli::human_bytes(report.after.param_bytes as u64),
        report.optimize_ms
    );
    if !a.stats {
        let changed: Vec<String> = report
            .passes
            .iter()
            .filter(|s| s.changed > 0)
            .map(|s| {
                format!(
                    "{} ({} nodes, {:+} bytes)",
                    s.name, -s.nodes_removed, s.bytes_delta
                )
            })
            .collect();
        if !changed.is_empty() {
            out!(
                "passes that changed the model: {} (--stats for the full table)",
                changed.join(", ")
            );
        }
    }
    if a.stats {
        out!(
            "{:32} {:>5} {:>8} {:>8} {:>12} {:>9}",
            "pass",
            "runs",
            "changed",
            "removed",
            "bytes delta",
            "ms"
        );
        for s in &report.passes {
            out!(
                "{:32} {:>5} {:>8} {:>8} {:>12} {:>9.2}",
                s.name,
                s.runs,
                s.changed,
                s.nodes_removed,
                s.bytes_delta,
                s.ms
            );
        }
        for (p, why) in report.declined.iter().take(20) {
            out!("declined by {p}: {why}");
        }
        if report.declined.len() > 20 {
            out!(
                "... {} more declined rewrites (see --report)",
                report.declined.len() - 20
            );
        }
    }
    if let Some(c) = &report.check {
        if c.passed {
            let worst = c.outputs.iter().map(|o| o.max_abs).fold(0.0f64, f64::max);
            out!(
                "check: {} sample(s), outputs within tolerance (max_abs {worst:.3e})",
                c.samples
            );
        }
    }
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing '{}'", path.display()))?;
    }
    if !passed && !a.force {
        eprintln!("nothing written (use --force to write anyway)");
        return Ok(ExitCode::from(1));
    }
    // A model that came with external data keeps its weights external.
    let policy = if cli::has_external_data(&original) {
        DataPolicy::External {
            threshold: onnxopt::export::DEFAULT_EXTERNAL_THRESHOLD,
        }
    } else {
        DataPolicy::Keep
    };
    let saved = onnxopt::export::save(&optimized, &a.output, policy)
        .with_context(|| format!("writing '{}'", a.output.display()))?;
    let input_bytes = cli::model_bytes(&a.model, &external_files);
    let output_bytes = saved.model_bytes + saved.data_file.as_ref().map(|d| d.1).unwrap_or(0);
    out!(
        "wrote {} ({output_bytes} bytes; input {input_bytes} bytes)",
        a.output.display()
    );
    if output_bytes > input_bytes {
        eprintln!(
            "note: the output is {} bytes larger than the input (names and small shape constants of rewritten nodes)",
            output_bytes - input_bytes
        );
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prune(a: PruneArgs) -> Result<ExitCode> {
    use onnxopt::prune;
    use onnxopt::verify::{compare::render, compare_models, CompareOptions, Tolerance};
    cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
    let (mut original, _) = cli::load(&a.model)?;
    let input_shapes = a
        .input_shape
        .iter()
        .map(|s| onnxopt::inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    onnxopt::optimize::fix_input_shapes(&mut original, &input_shapes);
    let criterion: prune::Criterion = a.criterion.parse().map_err(anyhow::Error::msg)?;
    let sample_args = |paths: &[PathBuf], random: Option<usize>| cli::SampleArgs {
        inputs: paths.to_vec(),
        random,
        seed: a.seed,
        input_shapes: a.input_shape.clone(),
        ..Default::default()
    };
    let calibration = if a.calibration.is_empty() && a.random.is_none() {
        if criterion.needs_data() {
            anyhow::bail!(
                "--criterion {} needs --calibration PATH (or --random N)",
                a.criterion
            );
        }
        Vec::new()
    } else {
        cli::samples(&original, &sample_args(&a.calibration, a.random), 0)?
    };
    let opts = onnxopt::pipeline::prune_options(&onnxopt::pipeline::PruneConfig {
        ratio: a.ratio,
        criterion: a.criterion.clone(),
        global: a.global,
        max_layer_ratio: a.max_layer_ratio,
        round_to: a.round_to,
        layer: a.layer.clone(),
        exclude: a.exclude.clone(),
        compensation: !a.no_compensation,
        refit: a.refit,
    })?;
    let (pruned, report) = prune::prune(&original, &opts, &calibration)
        .map_err(|e| anyhow::anyhow!("pruning failed: {e}"))?;
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    let oopts = onnxopt::optimize::OptimizeOptions {
        input_shapes: input_shapes.clone(),
        ..Default::default()
    };
    let (base, _, _) = onnxopt::optimize::run_passes(&original, &oopts)?;
    let (out, _, _) = onnxopt::optimize::run_passes(&pruned, &oopts)?;
    let sb = onnxopt::analysis::stats::stats(&base, vec![]);
    let sa = onnxopt::analysis::stats::stats(&out, vec![]);
    let (pb, pa) = (
        onnxopt::analysis::stats::stats_params(&base),
        onnxopt::analysis::stats::stats_params(&out),
    );
    let pct = |b: u64, a: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * (b as f64 - a as f64) / b as f64
        }
    };
    out!("parameters {} -> {} (-{:.1}%)", pb, pa, pct(pb, pa));
    match (sb.macs, sa.macs) {
        (Some(b), Some(x)) => out!("MACs       {b} -> {x} (-{:.1}%)", pct(b, x)),
        _ => out!("MACs       unknown (give --input-shape for symbolic inputs)"),
    }
    out!(
        "{:<40} {:>8} {:>15} {:>22}",
        "group (producers)",
        "members",
        "kept/total",
        "importance range"
    );
    for grp in report.groups.iter().filter(|g| g.frozen.is_none()) {
        let mut label = grp.members.join(", ");
        if label.len() > 40 {
            label.truncate(37);
            label.push_str("...");
        }
        out!(
            "{:<40} {:>8} {:>15} {:>22}",
            label,
            grp.members.len(),
            format!("{}/{}", grp.kept, grp.channels),
            format!("{:.3}..{:.3}", grp.importance.0, grp.importance.1)
        );
    }
    let frozen: Vec<_> = report
        .groups
        .iter()
        .filter(|g| g.frozen.is_some())
        .collect();
    if !frozen.is_empty() {
        out!("frozen groups (not pruned):");
        for grp in frozen {
            out!(
                "  {}: {}",
                grp.members.join(", "),
                grp.frozen.clone().unwrap_or_default()
            );
        }
    }
    out!(
        "removed {} channel(s); compensated {} consumer(s); refit {}",
        report.channels_removed,
        report.compensated_consumers,
        report.refit_layers.len()
    );
    if !a.eval.is_empty() {
        let eval = cli::samples(&original, &sample_args(&a.eval, None), 0)?;
        let r = compare_models(
            &original,
            &out,
            &eval,
            &Tolerance {
                atol: 0.0,
                rtol: 0.0,
                min_cosine: Some(0.0),
            },
            &CompareOptions::default(),
        )
        .context("evaluating the pruned model in tract")?;
        out!("pruned vs original on {} eval sample(s):", eval.len());
        outp!("{}", render(&r));
    }
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing '{}'", p.display()))?;
    }
    let saved = onnxopt::export::save(&out, &a.output, DataPolicy::Keep)
        .with_context(|| format!("writing '{}'", a.output.display()))?;
    out!("wrote {} ({} bytes)", a.output.display(), saved.model_bytes);
    Ok(ExitCode::SUCCESS)
}

/// Samples of a random-only calibration stream reused for the accuracy report: enough for a
/// stable cosine, few enough that memory stays flat when calibrating on hundreds.
const EVAL_FROM_RANDOM: usize = 8;

fn quantize(a: QuantizeArgs) -> Result<ExitCode> {
    use onnxopt::quant::{self, calib::Method, params::ActType, QuantOptions};
    use onnxopt::verify::{compare::render, compare_models, CompareOptions, Tolerance};
    cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
    let (mut original, _) = cli::load(&a.model)?;
    let input_shapes = a
        .input_shape
        .iter()
        .map(|s| onnxopt::inputs::parse_shape_flag(s))
        .collect::<Result<Vec<_>, _>>()?;
    onnxopt::optimize::fix_input_shapes(&mut original, &input_shapes);
    let oopts = onnxopt::optimize::OptimizeOptions {
        input_shapes: input_shapes.clone(),
        ..Default::default()
    };
    let (float, _, _) = onnxopt::optimize::run_passes(&original, &oopts)?;
    let mut opts = QuantOptions {
        activations: if a.activations == "int8" {
            ActType::I8
        } else {
            ActType::U8
        },
        symmetric: a.symmetric,
        per_channel: !a.per_tensor,
        exclude_nodes: a.exclude_nodes.clone(),
        exclude_ops: a.exclude_ops.clone(),
        min_conv_macs_per_output: a.min_conv_macs,
        f16_small_conv_weights: !a.no_f16_weights,
        ..QuantOptions::default()
    };
    if let Some(ops) = &a.ops {
        opts.ops = ops.clone();
    }
    let sample_args = |paths: &[PathBuf], random: Option<usize>| cli::SampleArgs {
        inputs: paths.to_vec(),
        random,
        seed: a.seed,
        input_shapes: a.input_shape.clone(),
        ..Default::default()
    };
    // Random-only calibration is streamed (one sample in memory whatever N is); files are read.
    let random_only = !a.dynamic && a.calibration.is_empty() && a.table.is_none();
    if !a.dynamic && a.calibration.is_empty() && a.random.is_none() && a.table.is_none() {
        anyhow::bail!("give --calibration PATH (or --table FILE, or --random N to try things out)");
    }
    let calibration = if a.calibration.is_empty() {
        Vec::new()
    } else {
        cli::samples(&original, &sample_args(&a.calibration, a.random), 0)?
    };
    let table = match &a.table {
        _ if a.dynamic => Default::default(),
        Some(p) => cli::read_table(p)?,
        None => {
            let method = match a.method.as_str() {
                "percentile" => Method::Percentile(a.percentile),
                "entropy" => Method::Entropy,
                _ => Method::MinMax,
            };
            let calibrated = if random_only {
                let stream = cli::random_stream(&original, &sample_args(&[], a.random), 8)?;
                quant::calibrate(&float, stream, method, &opts)
            } else {
                quant::calibrate(&float, calibration.iter().cloned(), method, &opts)
            };
            calibrated.context("calibration in tract failed")?
        }
    };
    if let Some(p) = &a.save_table {
        std::fs::write(p, serde_json::to_string_pretty(&table)?)
            .with_context(|| format!("writing '{}'", p.display()))?;
    }
    let (q, mut report) = if a.dynamic {
        quant::dynamic(&float, &opts)?
    } else {
        quant::insert_qdq(&float, &table, &opts)?
    };
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    let eval = if !a.eval.is_empty() {
        cli::samples(&original, &sample_args(&a.eval, None), 0)?
    } else if a.dynamic {
        cli::samples(&original, &sample_args(&[], Some(a.random.unwrap_or(4))), 4)?
    } else if random_only {
        // The first (at most 8) of the same seeded stream.
        cli::random_stream(&original, &sample_args(&[], a.random), 8)?
            .take(EVAL_FROM_RANDOM)
            .collect()
    } else {
        calibration
    };
    if !eval.is_empty() {
        let r = compare_models(
            &original,
            &q,
            &eval,
            &Tolerance {
                atol: 0.0,
                rtol: 0.0,
                min_cosine: Some(0.0),
            },
            &CompareOptions::default(),
        )
        .context("evaluating the quantized model in tract")?;
        let kind = if !a.eval.is_empty() {
            "eval"
        } else if a.dynamic {
            "random"
        } else {
            "calibration"
        };
        out!(
            "accuracy vs the float model on {} {kind} sample(s):",
            eval.len()
        );
        outp!("{}", render(&r));
        let worst = quant::measure_sqnr(&float, &q, &mut report, &eval).unwrap_or_default();
        if !worst.is_empty() {
            out!("lowest SQNR (dB) of quantized tensors:");
            for (name, db) in worst.iter().take(5) {
                out!("  {db:>7.1}  {name}");
            }
        }
    }
    out!(
        "quantized {} node(s), kept {} in float",
        report.quantized_nodes.len(),
        report.skipped.len()
    );
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing '{}'", p.display()))?;
    }
    let saved = onnxopt::export::save(&q, &a.output, DataPolicy::Keep)
        .with_context(|| format!("writing '{}'", a.output.display()))?;
    let before = std::fs::metadata(&a.model).map(|m| m.len()).unwrap_or(0);
    out!(
        "wrote {} ({} bytes; float input {} bytes)",
        a.output.display(),
        saved.model_bytes,
        before
    );
    Ok(ExitCode::SUCCESS)
}
