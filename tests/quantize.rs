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
    // The RGB stem (27 MACs per output) and the 1×1 branch (32) stay float, with float16 weights.
    assert!(
        stdout.contains("quantized 5 node(s), kept 2 in float"),
        "{stdout}"
    );
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
    // Every op of this CNN reads the same at opset 11 and 13: raised, per-channel weights.
    assert!(stderr.contains("raised from 11 to 13"), "{stderr}");
    let q = onnxopt::import::load(&out).unwrap();
    assert_eq!(q.opset(""), Some(13));
    assert!(q.ir_version >= 7);
    assert!(q
        .graph
        .nodes()
        .any(|(_, n)| n.op_type() == "DequantizeLinear"
            && onnxopt::passes::util::attr_int(n, "axis", -1) == 0));
    assert!(cosine(&f, &out, &["--random", "2"]) > 0.99);

    // With a Softmax (whose axis meant a 2-D coercion before 13) the opset stays and weights go
    // per tensor.
    let mut m = onnxopt::import::load(&f).unwrap();
    let g = &mut m.graph;
    let logits = g.outputs[0].value;
    let sm = g.add_node(onnxopt::ir::Node::new(
        "probs/Softmax".to_string(),
        onnxopt::ir::NodeKind::Op(onnxopt::ir::Op::new("Softmax")),
        vec![Some(logits)],
        vec![onnxopt::ir::Value::named("probs".to_string())],
    ));
    g.outputs[0].value = onnxopt::ir::ValueId {
        node: sm,
        output: 0,
    };
    let with_softmax = dir.path().join("softmax11.onnx");
    onnxopt::export::save(&m, &with_softmax, onnxopt::export::DataPolicy::Keep).unwrap();
    let o = run(&[
        "quantize",
        with_softmax.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "4",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("Softmax changed meaning") && stderr.contains("per tensor"),
        "{stderr}"
    );
    assert_eq!(onnxopt::import::load(&out).unwrap().opset(""), Some(11));
    assert!(cosine(&with_softmax, &out, &["--random", "2"]) > 0.99);
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

/// Every op of the policy between convs: MaxPool, Resize, ConvTranspose, Concat, Transpose,
/// Reshape, Flatten, Gemm. Pass-through ops share their input's scale and zero point.
#[test]
fn every_policy_op_runs_quantized_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qdq_ops.q.onnx");
    let f = fixture("qdq_ops.onnx");
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "8",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(cosine(&f, &out, &["--random", "4", "--seed", "9"]) > 0.99);
    let q = onnxopt::import::load(&out).unwrap();
    // MaxPool reads the float stem here; see the second run.
    assert_pass_through(&q, &["Resize", "Transpose", "Reshape", "Flatten"]);
    let g = &q.graph;
    let ct = g
        .nodes()
        .find(|(_, n)| n.op_type() == "ConvTranspose")
        .unwrap()
        .1;
    let w = g.node(ct.inputs()[1].unwrap().node);
    assert_eq!(
        w.op_type(),
        "DequantizeLinear",
        "ConvTranspose weight is int8"
    );
    assert_eq!(
        onnxopt::passes::util::attr_int(w, "axis", 0),
        1,
        "per output channel"
    );
    // The stem reads RGB (27 MACs per output): float, weight stored as float16.
    let stem = g.nodes().find(|(_, n)| n.name == "stem/Conv").unwrap().1;
    assert_eq!(g.node(stem.inputs()[1].unwrap().node).op_type(), "Cast");
    // --min-conv-macs 0 quantizes it too.
    let o = run(&[
        "quantize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--random",
        "8",
        "--min-conv-macs",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let q = onnxopt::import::load(&out).unwrap();
    assert!(!q.graph.nodes().any(|(_, n)| n.op_type() == "Cast"));
    assert_pass_through(
        &q,
        &["MaxPool", "Resize", "Transpose", "Reshape", "Flatten"],
    );
    assert!(cosine(&f, &out, &["--random", "4", "--seed", "9"]) > 0.99);
}

/// Asserts that each of `ops` reads a dequantized value and is read by one QuantizeLinear with the
/// same scale.
fn assert_pass_through(q: &onnxopt::ir::Model, ops: &[&str]) {
    let g = &q.graph;
    let scale_of = |n: &onnxopt::ir::Node| {
        g.constant(n.inputs()[1].unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap()
    };
    for &op in ops {
        let (id, n) = g.nodes().find(|(_, n)| n.op_type() == op).unwrap();
        let dq = g.node(n.inputs()[0].unwrap().node);
        assert_eq!(
            dq.op_type(),
            "DequantizeLinear",
            "{op} reads a dequantized value"
        );
        let y = onnxopt::ir::ValueId {
            node: id,
            output: 0,
        };
        let uses = g.uses(y);
        assert_eq!(uses.len(), 1, "{op}");
        let qn = g.node(uses[0].0);
        assert_eq!(qn.op_type(), "QuantizeLinear", "{op}");
        assert_eq!(scale_of(qn), scale_of(dq), "{op} keeps its input's scale");
    }
}

/// `insert-qdq` as a pass of `optimize`: calibrates the model as the passes before it left it, and
/// the check switches to a cosine bound; without data it is a usage error, and the lossless
/// pipeline never runs it.
#[test]
fn insert_qdq_runs_as_an_optimize_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let f = fixture("cnn.onnx");
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "fuse-batch-norm,eliminate-dead-code,insert-qdq",
        "--calibration",
        fixture("cnn_samples.npz").to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("insert-qdq ("), "{stdout}");
    let ops = ops_of(&out);
    assert_eq!(ops["BatchNormalization"], serde_json::Value::Null, "{ops}");
    assert!(ops["DequantizeLinear"].as_u64().unwrap() > 5, "{ops}");
    assert!(cosine(&f, &out, &["--random", "4", "--seed", "3"]) > 0.999);

    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "insert-qdq",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("needs calibration data"),
        "{:?}",
        text(&o)
    );

    let o = run(&["optimize", f.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(ops_of(&out)["QuantizeLinear"], serde_json::Value::Null);
}
