//! `onnxopt verify` and `onnxopt bench` end to end, plus the library comparison API.

mod common;
use common::{fixture, run, text};

use ndarray::{ArrayD, IxDyn};
use onnxopt::onnx;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Output;

fn assert_bad(o: &Output, needle: &str) {
    let (_, err) = text(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

fn cnn_proto() -> onnx::ModelProto {
    onnx::ModelProto::decode(std::fs::read(fixture("cnn.onnx")).unwrap().as_slice()).unwrap()
}

fn write(dir: &Path, name: &str, m: &onnx::ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn init<'a>(m: &'a mut onnx::ModelProto, name: &str) -> &'a mut onnx::TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap()
}

#[test]
fn identical_models_pass_with_zero_error() {
    let f = fixture("cnn.onnx");
    let o = run(&[
        "verify",
        f.to_str().unwrap(),
        f.to_str().unwrap(),
        "--json",
        "-",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["samples"], 3);
    let out = &v["outputs"][0];
    for key in [
        "name",
        "shape",
        "max_abs",
        "mean_abs",
        "max_rel",
        "cosine",
        "sqnr_db",
        "top1_agreement",
        "passed",
    ] {
        assert!(out.get(key).is_some(), "missing {key}");
    }
    assert_eq!(out["max_abs"], 0.0);
    assert_eq!(out["top1_agreement"], 1.0);
    assert_eq!(out["shape"], serde_json::json!([1, 10]));
}

#[test]
fn perturbed_weight_fails_and_locate_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = cnn_proto();
    let w = init(&mut m, "block1b.w");
    let mut raw = w.raw_data.clone().unwrap().to_vec();
    let v = f32::from_le_bytes(raw[0..4].try_into().unwrap()) + 3.0;
    raw[0..4].copy_from_slice(&v.to_le_bytes());
    w.raw_data = Some(raw.into());
    let cand = write(dir.path(), "perturbed.onnx", &m);
    let json = dir.path().join("r.json");
    let o = run(&[
        "verify",
        fixture("cnn.onnx").to_str().unwrap(),
        cand.to_str().unwrap(),
        "--locate",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains("first divergence: node 'block1b/Conv' (Conv)"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["located"]["node"], "block1b/Conv");
    // A loose cosine budget accepts the same change.
    let o = run(&[
        "verify",
        fixture("cnn.onnx").to_str().unwrap(),
        cand.to_str().unwrap(),
        "--min-cosine",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn onnxruntime_expected_outputs_pass() {
    let m = fixture("cnn.onnx");
    for inputs in [
        fixture("cnn_test_data"),
        fixture("cnn_test_data/test_data_set_0"),
        fixture("cnn_samples.npz"),
    ] {
        let o = run(&[
            "verify",
            m.to_str().unwrap(),
            "--inputs",
            inputs.to_str().unwrap(),
            "--json",
            "-",
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{} {:?}",
            inputs.display(),
            text(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["outputs"][0]["max_abs"].as_f64().unwrap() < 1e-5);
    }
    let o = run(&[
        "verify",
        m.to_str().unwrap(),
        "--inputs",
        fixture("cnn_samples.npz").to_str().unwrap(),
        "--json",
        "-",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 4, "leading axis holds 4 samples");
}

#[test]
fn shape_mismatch_fails_with_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = cnn_proto();
    for (name, keep) in [("fc.w", 5 * 64), ("fc.b", 5)] {
        let t = init(&mut m, name);
        t.raw_data = Some(t.raw_data.as_ref().unwrap().slice(0..keep * 4));
        t.dims[0] = 5;
    }
    let g = m.graph.as_mut().unwrap();
    if let Some(onnx::type_proto::Value::TensorType(tt)) =
        g.output[0].r#type.as_mut().unwrap().value.as_mut()
    {
        tt.shape.as_mut().unwrap().dim[1].value =
            Some(onnx::tensor_shape_proto::dimension::Value::DimValue(5));
    }
    let cand = write(dir.path(), "five.onnx", &m);
    let o = run(&[
        "verify",
        fixture("cnn.onnx").to_str().unwrap(),
        cand.to_str().unwrap(),
    ]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("shape [1, 5] vs reference [1, 10]"), "{out}");
}

#[test]
fn dtype_mismatch_fails_with_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = cnn_proto();
    let g = m.graph.as_mut().unwrap();
    let gemm = g
        .node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some("Gemm"))
        .unwrap();
    gemm.output[0] = "logits_f32".into();
    g.node.push(onnx::NodeProto {
        input: vec!["logits_f32".into()],
        output: vec!["logits".into()],
        op_type: Some("Cast".into()),
        name: Some("to_double".into()),
        attribute: vec![onnx::AttributeProto {
            name: Some("to".into()),
            r#type: Some(2),
            i: Some(11),
            ..Default::default()
        }],
        ..Default::default()
    });
    if let Some(onnx::type_proto::Value::TensorType(tt)) =
        g.output[0].r#type.as_mut().unwrap().value.as_mut()
    {
        tt.elem_type = Some(11);
    }
    let cand = write(dir.path(), "double.onnx", &m);
    let o = run(&[
        "verify",
        fixture("cnn.onnx").to_str().unwrap(),
        cand.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("dtype double vs reference float"), "{out}");
}

#[test]
fn model_tract_cannot_run_names_op_and_node() {
    let f = fixture("loop.onnx");
    let o = run(&["verify", f.to_str().unwrap(), f.to_str().unwrap()]);
    assert_bad(&o, "op Loop in ONNX node 'counter_loop'");
}

fn npz(dir: &Path, name: &str, arrays: Vec<(&str, ArrayD<f32>)>) -> PathBuf {
    let p = dir.join(name);
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&p).unwrap());
    for (k, a) in arrays {
        w.add_array(k, &a).unwrap();
    }
    w.finish().unwrap();
    p
}

#[test]
fn input_format_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let m = fixture("cnn.onnx");
    let m = m.to_str().unwrap();
    let good = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 32, 32]));
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            npz(
                dir.path(),
                "unknown.npz",
                vec![("input", good.clone()), ("bogus", good.clone())],
            ),
            "input 'bogus'",
        ),
        (
            npz(
                dir.path(),
                "rank.npz",
                vec![("input", ArrayD::zeros(IxDyn(&[3, 32, 32])))],
            ),
            "input 'input': expected rank 4",
        ),
        (
            npz(
                dir.path(),
                "size.npz",
                vec![("input", ArrayD::zeros(IxDyn(&[1, 3, 16, 32])))],
            ),
            "input 'input': dim 2 must be 32",
        ),
        (
            npz(
                dir.path(),
                "missing.npz",
                vec![("logits", ArrayD::zeros(IxDyn(&[1, 10])))],
            ),
            "input 'input': no array",
        ),
    ];
    for (path, needle) in cases {
        let o = run(&["verify", m, m, "--inputs", path.to_str().unwrap()]);
        assert_bad(&o, needle);
    }
    // Wrong dtype: int64 data for a float input.
    let p = dir.path().join("dtype.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&p).unwrap());
    w.add_array("input", &ArrayD::<i64>::zeros(IxDyn(&[1, 3, 32, 32])))
        .unwrap();
    w.finish().unwrap();
    assert_bad(
        &run(&["verify", m, m, "--inputs", p.to_str().unwrap()]),
        "input 'input': expected float data",
    );
    // A folder of NAME.npy.
    let folder = dir.path().join("npys");
    std::fs::create_dir(&folder).unwrap();
    ndarray_npy::write_npy(folder.join("input.npy"), &good).unwrap();
    let o = run(&["verify", m, m, "--inputs", folder.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // Symbolic dims need --input-shape for random data; then it runs.
    let mlp = fixture("mlp.onnx");
    let mlp = mlp.to_str().unwrap();
    assert_bad(
        &run(&["verify", mlp, mlp]),
        "dim 'batch' is symbolic; fix it with --input-shape x=",
    );
    let o = run(&["verify", mlp, mlp, "--input-shape", "x=4,64"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_bad(
        &run(&["verify", mlp, mlp, "--input-shape", "x=4,65"]),
        "the model fixes it to 64",
    );
    assert_bad(
        &run(&["verify", mlp, mlp, "--input-shape", "y=4,64"]),
        "not a model input",
    );
    assert_bad(
        &run(&["verify", mlp, mlp, "--input-shape", "x=4,a"]),
        "--input-shape 'x=4,a'",
    );
    assert_bad(&run(&["verify", m, "--random", "1"]), "no expected outputs");
    assert_bad(
        &run(&["verify", m, m, "--inputs", "/nonexistent.npz"]),
        "/nonexistent.npz",
    );
}

#[test]
fn random_samples_are_reproducible() {
    let f = fixture("mlp.onnx");
    let model = onnxopt::import::load(&f).unwrap();
    let args = onnxopt::cli::SampleArgs {
        random: Some(2),
        seed: 5,
        input_shapes: vec!["x=2,64".into()],
        ..Default::default()
    };
    let a = onnxopt::cli::samples(&model, &args, 3).unwrap();
    let b = onnxopt::cli::samples(&model, &args, 3).unwrap();
    assert_eq!(a.len(), 2);
    assert!(a[1].inputs[0].same_values(&b[1].inputs[0]));
}

#[test]
fn library_api_compares_in_memory_models() {
    use onnxopt::verify::{compare_models, CompareOptions, Tolerance};
    let model = onnxopt::import::load(&fixture("transformer.onnx")).unwrap();
    let args = onnxopt::cli::SampleArgs {
        random: Some(2),
        ..Default::default()
    };
    let samples = onnxopt::cli::samples(&model, &args, 2).unwrap();
    let r = compare_models(
        &model,
        &model.clone(),
        &samples,
        &Tolerance::default(),
        &CompareOptions::default(),
    )
    .unwrap();
    assert!(r.passed);
    assert_eq!(
        r.outputs[0].sqnr_db, None,
        "identical outputs have infinite SQNR"
    );
    assert_eq!(
        r.outputs[0].top1_agreement, None,
        "[1,16,32] is not a class-score output"
    );
}

#[test]
fn bench_reports_ratio() {
    let f = fixture("cnn.onnx");
    let o = run(&[
        "bench",
        f.to_str().unwrap(),
        f.to_str().unwrap(),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    assert_eq!(v["models"][0]["runs"], 5);
    let ratio = v["ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio.is_finite());
    let o = run(&["bench", f.to_str().unwrap(), "--runs", "0"]);
    assert_eq!(o.status.code(), Some(0));
}
