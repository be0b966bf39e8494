//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`, kept in git, crashes included once fixed)
//! through the same entry points the cargo-fuzz targets call, so `cargo test` guards every input
//! fuzzing ever found interesting.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{} panics", p.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
    eprintln!("{target}: {n} corpus inputs replayed");
}

#[test]
fn import_export_corpus() {
    replay("import_export", onnxopt::fuzzing::import_export);
}

#[test]
fn sample_inputs_corpus() {
    replay("sample_inputs", onnxopt::fuzzing::sample_inputs);
}

#[test]
fn optimize_corpus() {
    replay("optimize", onnxopt::fuzzing::optimize);
}
