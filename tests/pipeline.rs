//! `optimize` as the one verified pipeline: budgets met or refused, config file and flags
//! equivalent to the byte, the report's documented keys, the HTML page in headless Chromium.

mod common;
use common::{fixture, run, text};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The cnn fixture: 16 seeded random calibration samples, onnxruntime's 4 samples as eval.
fn cnn_args(out: &Path) -> Vec<String> {
    [
        "optimize",
        s(&fixture("cnn.onnx")),
        "-o",
        s(out),
        "--random",
        "16",
        "--seed",
        "1",
        "--eval",
        s(&fixture("cnn_samples.npz")),
        "--bench-runs",
        "0",
        "--quiet",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn run_s(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    run(&refs)
}

/// Worst output cosine of `b` against `a` on the eval samples, via `verify`.
fn cosine_on_eval(a: &Path, b: &Path) -> f64 {
    let o = run(&[
        "verify",
        s(a),
        s(b),
        "--inputs",
        s(&fixture("cnn_samples.npz")),
        "--min-cosine",
        "0",
        "--json",
        "-",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("verify json");
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["cosine"].as_f64().unwrap())
        .fold(1.0, f64::min)
}

#[test]
fn budget_is_met_and_verify_agrees() {
    let dir = tempfile::tempdir().unwrap();
    for (budget, bound) in [("cosine=0.999", 0.999), ("cosine=0.9999", 0.9999)] {
        let out = dir.path().join("o.onnx");
        let report = dir.path().join("r.json");
        let mut args = cnn_args(&out);
        args.extend(
            [
                "--prune",
                "0.3",
                "--quantize",
                "int8",
                "--max-error",
                budget,
                "--report",
                s(&report),
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        let o = run_s(&args);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{budget}: {stdout}{stderr}");
        assert!(stdout.contains(": met"), "{stdout}");
        // The written model satisfies the budget when checked independently.
        let c = cosine_on_eval(&fixture("cnn.onnx"), &out);
        assert!(c >= bound, "{budget}: verify says {c}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(r["budget"]["met"], true);
        assert!(r["budget"]["metric_final"].as_f64().unwrap() >= bound);
    }
}

#[test]
fn impossible_budget_exits_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let mut args = cnn_args(&out);
    args.extend(
        ["--quantize", "int8", "--max-error", "max-abs=0"]
            .iter()
            .map(|x| x.to_string()),
    );
    let o = run_s(&args);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot be met even with every layer in float"),
        "{stderr}"
    );
    assert!(!out.exists());
    // A malformed budget is a usage error.
    let mut args = cnn_args(&out);
    args.extend(["--max-error", "psnr=3"].iter().map(|x| x.to_string()));
    assert_eq!(run_s(&args).status.code(), Some(2));
}

#[test]
fn config_file_and_flags_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    let flags = [
        "--prune",
        "0.25",
        "--quantize",
        "int8",
        "--max-error",
        "cosine=0.99",
    ];
    let mut args = cnn_args(&a);
    args.extend(flags.iter().map(|x| x.to_string()));
    let o = run_s(&args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let mut pargs = args.clone();
    pargs.push("--print-config".into());
    let o = run_s(&pargs);
    let toml = String::from_utf8(o.stdout).unwrap();
    assert!(toml.contains("name = \"prune-channels\""), "{toml}");
    assert!(toml.contains("ratio = 0.25") && toml.contains("max_error = \"cosine=0.99\""));
    let cfg = dir.path().join("pipeline.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let o = run(&[
        "optimize",
        s(&fixture("cnn.onnx")),
        "-o",
        s(&b),
        "--config",
        s(&cfg),
        "--bench-runs",
        "0",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A misspelt key in the config is reported, not ignored.
    std::fs::write(&cfg, toml.replace("ratio = 0.25", "ratoi = 0.25")).unwrap();
    let o = run(&[
        "optimize",
        s(&fixture("cnn.onnx")),
        "-o",
        s(&b),
        "--config",
        s(&cfg),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("ratoi"), "{:?}", text(&o));
}

/// The keys the README documents for `--report`.
#[test]
fn report_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let report = dir.path().join("r.json");
    let mut args = cnn_args(&out);
    args.retain(|a| a != "0" && a != "--bench-runs");
    args.extend(
        [
            "--bench-runs",
            "2",
            "--prune",
            "0.3",
            "--quantize",
            "int8",
            "--max-error",
            "cosine=0.9999",
            "--report",
            s(&report),
        ]
        .iter()
        .map(|x| x.to_string()),
    );
    let o = run_s(&args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["schema"], "onnxopt-report/1");
    for k in [
        "model",
        "input",
        "output",
        "steps",
        "pruning",
        "quantization",
        "sensitivity",
        "budget",
        "verification",
        "latency",
        "notes",
    ] {
        assert!(r.get(k).is_some(), "missing key {k}");
    }
    for k in ["nodes", "params", "bytes", "macs"] {
        assert!(
            r["input"].get(k).is_some() && r["output"].get(k).is_some(),
            "{k}"
        );
    }
    // The clean-up after quantization keeps the weights int8 (DequantizeLinear is never folded).
    assert!(
        r["output"]["bytes"].as_i64().unwrap() * 3 < r["input"]["bytes"].as_i64().unwrap(),
        "{} vs {}",
        r["output"]["bytes"],
        r["input"]["bytes"]
    );
    for k in [
        "name",
        "ms",
        "nodes_before",
        "nodes_after",
        "params_before",
        "params_after",
    ] {
        assert!(r["steps"][0].get(k).is_some(), "steps[].{k}");
    }
    for k in ["groups", "channels_removed", "compensated_consumers"] {
        assert!(r["pruning"].get(k).is_some(), "pruning.{k}");
    }
    for k in ["members", "channels", "kept", "importance", "frozen"] {
        assert!(r["pruning"]["groups"][0].get(k).is_some(), "groups[].{k}");
    }
    for k in ["quantized_nodes", "skipped", "activations", "per_channel"] {
        assert!(r["quantization"].get(k).is_some(), "quantization.{k}");
    }
    for k in [
        "spec",
        "met",
        "metric_initial",
        "metric_final",
        "decisions",
        "float_layers",
        "restored_groups",
    ] {
        assert!(r["budget"].get(k).is_some(), "budget.{k}");
    }
    assert!(!r["sensitivity"].as_array().unwrap().is_empty());
    for k in ["kind", "layer", "metric"] {
        assert!(r["sensitivity"][0].get(k).is_some(), "sensitivity[].{k}");
    }
    for k in ["eval_source", "samples", "outputs"] {
        assert!(r["verification"].get(k).is_some(), "verification.{k}");
    }
    assert!(r["verification"]["eval_source"]
        .as_str()
        .unwrap()
        .contains("--eval"));
    for k in ["tract_before_ms", "tract_after_ms", "note"] {
        assert!(r["latency"].get(k).is_some(), "latency.{k}");
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from(c))
        })
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let html = dir.path().join("r.html");
    let mut args = cnn_args(&out);
    args.extend(
        [
            "--prune",
            "0.3",
            "--quantize",
            "int8",
            "--max-error",
            "cosine=0.9999",
            "--html",
            s(&html),
        ]
        .iter()
        .map(|x| x.to_string()),
    );
    let o = run_s(&args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Channels kept per pruning group"));
    assert!(page.contains("SQNR of quantized tensors") && page.contains("Sensitivity"));
    assert!(
        !page.contains("<script") && !page.contains("<link"),
        "no script, no external resources"
    );
    let Some(chrome) = chromium() else {
        eprintln!("SKIPPED: no chromium on PATH (CI installs it); HTML checked as text only");
        return;
    };
    let png = dir.path().join("r.png");
    let url = format!("file://{}", html.display());
    let o = std::process::Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1100,1600",
            &format!("--screenshot={}", png.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(png.metadata().unwrap().len() > 10_000, "a rendered page");
    let o = std::process::Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            &url,
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(
        dom.contains("Accuracy budget") && dom.contains("<rect"),
        "{dom}"
    );
}
