//! `onnxopt quantize` end to end: QDQ models run in tract close to the float model, calibration
//! tables round-trip, old opsets fall back or are refused with a clear message.

mod common;
use common::{fixture, run, text};

use std::path::Path;

/// Cosine of the quantized model's outputs against the float model in tract (via `verify`).
fn cosine(float: &Path, q: &Path, extra: &[&str]) -> f64 {
    let mut args = vec![
        "verify",
        float.to_str().unwrap(),
        q.to_str().unwrap(),
        "--min-cosine",
        "0",
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["cosine"].as_f64().unwrap())
        .fold(1.0, f64::min)
}

fn ops_of(path: &Path) -> serde_json::Value {
    let o = run(&["inspect", "--json", path.to_str().unwrap()]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["ops"].clone()
}

#[test]
fn cnn_quantizes_small_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let report = dir.path().join("r.json");
    let f = fixture("cnn.onnx");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--calibration",
        fixture("cnn_samples.npz").to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("quantized 7 node(s)"), "{stdout}");
    assert!(stdout.contains("lowest SQNR"), "{stdout}");
    // int8 weights: the file is under 0.3x the float one.
    assert!((out.metadata().unwrap().len() as f64) < 0.3 * f.metadata().unwrap().len() as f64);
    let ops = ops_of(&out);
    assert!(
        ops["QuantizeLinear"].as_u64().unwrap() > 0
            && ops["DequantizeLinear"].as_u64().unwrap() > 0
    );
    assert!(cosine(&f, &out, &["--random", "4", "--seed", "3"]) > 0.999);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(r["per_channel"], true);
    assert!(r["activations"][0]["sqnr_db"].as_f64().unwrap() > 20.0);
}

#[test]
fn calibration_table_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("cnn.onnx");
    let calib = fixture("cnn_samples.npz");
    let (a, b, table) = (
        dir.path().join("a.onnx"),
        dir.path().join("b.onnx"),
        dir.path().join("t.json"),
    );
    for method in ["minmax", "percentile", "entropy"] {
        let o = run(&[
            "quantize",
            f.to_str().unwrap(),
            "-o",
            a.to_str().unwrap(),
            "--calibration",
            calib.to_str().unwrap(),
            "--method",
            method,
            "--save-table",
            table.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{method}: {:?}", text(&o));
        let o = run(&[
            "quantize",
            f.to_str().unwrap(),
            "-o",
            b.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{method}: {:?}", text(&o));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{method}: same table, same bytes"
        );
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
        assert!(t["ranges"].as_object().unwrap().len() >= 8);
    }
}

#[test]
fn mlp_and_transformer_quantize_and_keep_softmax_float() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp.q.onnx");
    let f = fixture("mlp.onnx");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "8",
        "--input-shape",
        "x=4,64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(
        cosine(
            &f,
            &out,
            &["--input-shape", "x=4,64", "--random", "3", "--seed", "5"]
        ) > 0.99
    );

    let out = dir.path().join("t.q.onnx");
    let f = fixture("transformer.onnx");
    let report = dir.path().join("r.json");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "8",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(cosine(&f, &out, &["--random", "3", "--seed", "5"]) > 0.99);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let skipped = r["skipped"].to_string();
    assert!(
        skipped.contains("qk") && skipped.contains("attn_v"),
        "activation×activation MatMuls stay float: {skipped}"
    );
    // No QDQ touches the Softmax (tract mis-evaluates DQ→Softmax→Q→DQ).
    let q = onnxopt::import::load(&out).unwrap();
    let g = &q.graph;
    let (sid, sm) = g.nodes().find(|(_, n)| n.op_type() == "Softmax").unwrap();
    let x = sm.inputs()[0].unwrap();
    assert_ne!(g.node(x.node).op_type(), "DequantizeLinear");
    let y = onnxopt::ir::ValueId {
        node: sid,
        output: 0,
    };
    assert!(g
        .uses(y)
        .iter()
        .all(|(c, _)| g.node(*c).op_type() != "QuantizeLinear"));
}

#[test]
fn old_opsets_fall_back_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q11.onnx");
    let f = fixture("cnn_opset11.onnx");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "4",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("per tensor"), "{stderr}");
    assert!(cosine(&f, &out, &["--random", "2"]) > 0.99);
    let f9 = fixture("opset9.onnx");
    let o = run(&[
        "quantize",
        f9.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("opset 10 or newer"), "{:?}", text(&o));
    let o = run(&[
        "quantize",
        f9.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--calibration"), "{:?}", text(&o));
}

#[test]
fn dynamic_mode_on_the_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.dyn.onnx");
    let f = fixture("transformer.onnx");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dynamic",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("quantized 4 node(s)"), "{stdout}");
    let ops = ops_of(&out);
    assert_eq!(ops["MatMulInteger"], 4, "{ops}");
    assert_eq!(
        ops["DynamicQuantizeLinear"], 2,
        "q/k/v share one (their input is shared): {ops}"
    );
    assert!(cosine(&f, &out, &["--random", "3", "--seed", "7"]) > 0.99);
    // No calibration flags with --dynamic.
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dynamic",
        "--table",
        "t.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
