//! `onnxopt optimize` and `onnxopt passes` end to end.

mod common;
use common::{fixture, run, text};

#[test]
fn optimize_cnn_writes_a_smaller_equivalent_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let report = dir.path().join("r.json");
    let f = fixture("cnn.onnx");
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--stats",
        "--report",
        report.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("nodes 23 -> 17"), "{stdout}");
    assert!(stdout.contains("fuse-batch-norm"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in ["before", "after", "passes", "declined", "check", "culprit"] {
        assert!(v.get(key).is_some(), "report lacks {key}");
    }
    assert_eq!(v["check"]["passed"], true);
    assert!(out.metadata().unwrap().len() < f.metadata().unwrap().len());
    // The written file verifies against the original on fresh samples.
    let o = run(&[
        "verify",
        f.to_str().unwrap(),
        out.to_str().unwrap(),
        "--random",
        "4",
        "--seed",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // Re-optimizing changes nothing.
    let out2 = dir.path().join("o2.onnx");
    let o = run(&[
        "optimize",
        out.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(text(&o).0.contains("nodes 17 -> 17"), "{:?}", text(&o));
}

#[test]
fn failing_check_names_the_culprit_and_writes_nothing() {
    // Zero tolerance: BatchNorm fusion moves float32 outputs by a few ulps, so the check fails and
    // the bisection must blame that pass.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let f = fixture("cnn.onnx");
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--atol",
        "0",
        "--rtol",
        "0",
    ]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pass 'fuse-batch-norm' is the first to change the outputs"),
        "{stderr}"
    );
    assert!(stderr.contains("output 'logits'"), "{stderr}");
    assert!(!out.exists());
    // --force writes anyway (still exit 1); --skip avoids the pass and passes.
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--atol",
        "0",
        "--rtol",
        "0",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.exists());
}

#[test]
fn passes_lists_the_registry() {
    let o = run(&["passes"]);
    let (stdout, _) = text(&o);
    for p in onnxopt::passes::PASSES {
        assert!(
            stdout.contains(p.name) && stdout.contains(p.summary),
            "{stdout}"
        );
    }
}

#[test]
fn optimize_bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let f = fixture("cnn.onnx");
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "no-such-pass",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("unknown pass 'no-such-pass'"),
        "{:?}",
        text(&o)
    );
    let mlp = fixture("mlp.onnx");
    let o = run(&[
        "optimize",
        mlp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--input-shape x="), "{:?}", text(&o));
    let o = run(&[
        "optimize",
        mlp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "x=2,64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let lp = fixture("loop.onnx");
    let o = run(&[
        "optimize",
        lp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--no-check"), "{:?}", text(&o));
    let o = run(&[
        "optimize",
        lp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-check",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn external_data_stays_external() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let o = run(&[
        "optimize",
        fixture("external_data.onnx").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(dir.path().join("o.onnx.data").exists());
}
