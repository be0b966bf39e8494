//! Load and save throughput next to a bare prost decode/encode of the same bytes.
//!
//! Model: the largest `.onnx` in `.cache/models` (real models, see fixtures/fetch_real_models.py),
//! else the largest fixture. `ONNXOPT_BENCH_MODEL=path` picks another. Run: `cargo bench --bench io`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onnxopt::{export, import, onnx};
use prost::Message;
use std::path::{Path, PathBuf};

fn pick_model() -> PathBuf {
    if let Ok(p) = std::env::var("ONNXOPT_BENCH_MODEL") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join(".cache/models"), root.join("fixtures")] {
        let best = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .max_by_key(|p| p.metadata().map(|m| m.len()).unwrap_or(0));
        if let Some(p) = best {
            return p;
        }
    }
    panic!("no model to benchmark");
}

fn io(c: &mut Criterion) {
    let path = pick_model();
    let bytes = Bytes::from(std::fs::read(&path).unwrap());
    let base = path.parent().unwrap().to_path_buf();
    eprintln!(
        "benchmark model: {} ({} bytes)",
        path.display(),
        bytes.len()
    );
    let mut g = c.benchmark_group("io");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(20);

    g.bench_function("prost_decode", |b| {
        b.iter(|| onnx::ModelProto::decode(bytes.clone()).unwrap())
    });
    g.bench_function("onnxopt_load", |b| {
        b.iter(|| import::from_bytes(bytes.clone(), Some(&base)).unwrap())
    });

    let proto = onnx::ModelProto::decode(bytes.clone()).unwrap();
    let model = import::from_bytes(bytes.clone(), Some(&base)).unwrap();
    g.bench_function("prost_encode", |b| b.iter(|| proto.encode_to_vec()));
    g.bench_function("onnxopt_save", |b| {
        b.iter(|| export::to_bytes_inline(&model).unwrap())
    });
    g.finish();
}

criterion_group!(benches, io);
criterion_main!(benches);
