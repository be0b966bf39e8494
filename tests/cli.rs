//! End-to-end tests of the `onnxopt` binary: `inspect`, `convert`, and every kind of bad input
//! (exit code 2, one line on stderr naming the problem, no output file, no panic).

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onnxopt"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run onnxopt")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 2 and a single stderr line containing `needle`.
fn assert_bad(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected, got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {err}"
    );
}

#[test]
fn inspect_text_names_interface_and_ops() {
    let o = run(&["inspect", fixture("cnn.onnx").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("input  float[1,3,32,32]"), "{out}");
    assert!(out.contains("Conv"), "{out}");
    assert!(out.contains("MACs        8872576"), "{out}");
}

#[test]
fn inspect_json_has_documented_keys() {
    let o = run(&[
        "inspect",
        "--json",
        fixture("if_subgraph.onnx").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "nodes",
        "nodes_total",
        "ops",
        "params",
        "inputs",
        "outputs",
        "opsets",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["nodes_total"], 5, "If branches count in nodes_total");
    assert_eq!(v["ops"]["Mul"], 1);
    assert_eq!(v["opsets"]["ai.onnx"], 13);
    assert_eq!(v["params"]["count"], 7);
}

#[test]
fn inspect_shows_symbolic_dims_and_external_files() {
    let o = run(&["inspect", "--json", fixture("mlp.onnx").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["inputs"][0]["shape"][0], "batch");
    let o = run(&[
        "inspect",
        "--json",
        fixture("external_data.onnx").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["external_data"][0], "external_data.onnx.data");
}

#[test]
fn convert_is_byte_identical_across_runs_and_moves_data() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let b = dir.path().join("b.onnx");
    for out in [&a, &b] {
        let o = run(&[
            "convert",
            fixture("cnn.onnx").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // To external data and back.
    let ext = dir.path().join("ext.onnx");
    let o = run(&[
        "convert",
        a.to_str().unwrap(),
        "-o",
        ext.to_str().unwrap(),
        "--external-data",
        "--size-threshold",
        "1024",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let data = dir.path().join("ext.onnx.data");
    assert!(data.metadata().unwrap().len() > 200_000);
    assert!(
        ext.metadata().unwrap().len() < 20_000,
        "weights left the model file"
    );
    let back = dir.path().join("back.onnx");
    let o = run(&[
        "convert",
        ext.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
        "--inline-data",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&a).unwrap(),
        "inline again gives the same bytes"
    );
}

#[test]
fn convert_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.onnx");
    std::fs::copy(fixture("mlp.onnx"), &m).unwrap();
    let before = std::fs::read(&m).unwrap();
    let o = run(&["convert", m.to_str().unwrap(), "-o", m.to_str().unwrap()]);
    assert_bad(&o, "--in-place");
    assert_eq!(std::fs::read(&m).unwrap(), before);
    let o = run(&[
        "convert",
        m.to_str().unwrap(),
        "-o",
        m.to_str().unwrap(),
        "--in-place",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_flags_exit_2() {
    let o = run(&["convert", fixture("mlp.onnx").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "convert",
        "x.onnx",
        "-o",
        "y.onnx",
        "--inline-data",
        "--external-data",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

// ---- bad input: each one exit 2, one line, no output file -------------------------------------

use onnxopt::onnx;

/// The mlp fixture decoded, to mutate into broken variants.
fn small_model() -> onnx::ModelProto {
    let bytes = std::fs::read(fixture("mlp.onnx")).unwrap();
    onnx::ModelProto::decode(bytes.as_slice()).unwrap()
}

/// Writes `bytes` as `bad.onnx` in a fresh dir, runs convert, and checks the failure.
fn assert_convert_fails(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.onnx");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out.onnx");
    let o = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad(&o, needle);
    assert!(!out.exists(), "no output file on failure");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    let o = run(&["inspect", input.to_str().unwrap()]);
    assert_bad(&o, needle);
}

#[test]
fn empty_file() {
    assert_convert_fails(b"", "empty");
}

#[test]
fn random_bytes() {
    // A fixed pseudo-random sequence (xorshift), so the test is reproducible.
    let mut x: u32 = 0x9E3779B9;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    assert_convert_fails(&bytes, "not an ONNX model");
}

#[test]
fn truncated_model() {
    let bytes = std::fs::read(fixture("cnn.onnx")).unwrap();
    assert_convert_fails(&bytes[..bytes.len() / 2], "not an ONNX model");
}

#[test]
fn json_file() {
    assert_convert_fails(
        br#"{"graph": {"node": []}, "ir_version": 8}"#,
        "not an ONNX model",
    );
}

#[test]
fn directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o = run(&[
        "convert",
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad(&o, "is a directory");
    assert!(!out.exists());
}

#[test]
fn missing_file() {
    let o = run(&["inspect", "/nonexistent/model.onnx"]);
    assert_bad(&o, "cannot read");
}

#[test]
fn undefined_input_name() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[1].input[0] = "no_such_value".into();
    assert_convert_fails(&m.encode_to_vec(), "'no_such_value' is not produced");
}

#[test]
fn cycle() {
    let mut m = small_model();
    // relu1 reads the output of fc3, which (through fc2) depends on relu1.
    m.graph.as_mut().unwrap().node[1].input[0] = "y".into();
    assert_convert_fails(&m.encode_to_vec(), "cycle");
}

#[test]
fn duplicate_output_names() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[2].output[0] = "a1".into();
    assert_convert_fails(&m.encode_to_vec(), "defined twice");
}

#[test]
fn domain_not_imported() {
    let mut m = small_model();
    m.graph.as_mut().unwrap().node[1].domain = Some("com.example".into());
    assert_convert_fails(&m.encode_to_vec(), "domain 'com.example'");
}

#[test]
fn wrong_tensor_size() {
    let mut m = small_model();
    let init = &mut m.graph.as_mut().unwrap().initializer[0];
    init.dims[0] += 1;
    assert_convert_fails(&m.encode_to_vec(), "fc1.w");
}

fn external_model(dir: &Path, data: Option<&[u8]>, location: &str) -> PathBuf {
    let src = fixture("external_data.onnx");
    let dst = dir.join("m.onnx");
    let mut m = onnx::ModelProto::decode(std::fs::read(src).unwrap().as_slice()).unwrap();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                e.value = Some(location.to_string());
            }
        }
    }
    std::fs::write(&dst, m.encode_to_vec()).unwrap();
    if let Some(d) = data {
        std::fs::write(dir.join(location), d).unwrap();
    }
    dst
}

#[test]
fn external_data_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = external_model(dir.path(), None, "weights.bin");
    let out = dir.path().join("out.onnx");
    let o = run(&["convert", m.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_bad(&o, "weights.bin");
    assert!(!out.exists());
}

#[test]
fn external_data_too_short() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("external_data.onnx.data")).unwrap();
    let m = external_model(dir.path(), Some(&full[..full.len() / 2]), "weights.bin");
    let out = dir.path().join("out.onnx");
    let o = run(&["convert", m.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_bad(&o, "too short");
    assert!(!out.exists());
}

#[test]
fn external_data_cannot_escape_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("secret.bin"), vec![0u8; 20000]).unwrap();
    let m = external_model(&inner, None, "../secret.bin");
    let o = run(&["inspect", m.to_str().unwrap()]);
    assert_bad(&o, "inside the model's folder");
    let m = external_model(&inner, None, "/etc/passwd");
    let o = run(&["inspect", m.to_str().unwrap()]);
    assert_bad(&o, "inside the model's folder");
}
