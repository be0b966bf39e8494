//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs the `onnxopt` binary built for these tests.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxopt"))
        .args(args)
        .output()
        .expect("run onnxopt")
}

/// `(stdout, stderr)` as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub mod gen;
