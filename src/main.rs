//! The `onnxopt` command line: parse flags, call the library, print. No logic lives here.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use onnxopt::{cli, export::DataPolicy};
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[command(after_help = "Examples:\n  onnxopt inspect model.onnx\n  onnxopt inspect model.onnx --json > stats.json")]
    Inspect {
        /// The ONNX model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load and save a model without changing it: re-serialize, move weights to or from external data.
    #[command(after_help = "Examples:\n  onnxopt convert model.onnx -o copy.onnx\n  onnxopt convert model.onnx -o split.onnx --external-data --size-threshold 4096\n  onnxopt convert split.onnx -o whole.onnx --inline-data")]
    Convert(ConvertArgs),
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
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", cli::render_stats(&model, &stats));
            }
        }
        Command::Convert(a) => {
            cli::refuse_overwrite(&a.model, &a.output, a.in_place)?;
            let (m, _) = cli::load(&a.model)?;
            let policy = if a.inline_data {
                DataPolicy::Inline
            } else if a.external_data {
                DataPolicy::External { threshold: a.size_threshold }
            } else {
                DataPolicy::Keep
            };
            let saved = onnxopt::export::save(&m, &a.output, policy)
                .with_context(|| format!("writing '{}'", a.output.display()))?;
            if saved.forced_external {
                eprintln!("note: the model is over the 2 GiB protobuf limit; weights were written as external data");
            }
            match &saved.data_file {
                Some((p, n)) => println!(
                    "wrote {} ({} bytes) and {} ({} bytes)",
                    a.output.display(),
                    saved.model_bytes,
                    p.display(),
                    n
                ),
                None => println!("wrote {} ({} bytes)", a.output.display(), saved.model_bytes),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
