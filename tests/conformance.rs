//! ONNX backend node-suite conformance (the `onnx==1.17.0` wheel's `onnx/backend/test/data/node`).
//!
//! One named test per case. Each case must survive `import → export → import` with an equal IR and
//! byte-identical re-export. Where tract can run the original model and match the suite's expected
//! outputs (rtol 1e-3, atol 1e-7: the suite's own defaults), the exported model must match them too.
//! Cases tract itself cannot run are listed with the reason in `tests/tract_unsupported.txt`; a case
//! tract fails that is not listed, or a listed case that now passes, fails the test so the list stays
//! true. Set `ONNXOPT_WRITE_ALLOWLIST=1` to rewrite the list from a full run.
//!
//! The suite is found through `ONNX_NODE_SUITE`, else in `.cache/venv` (made by `.ci/run`). Without
//! it the test says so loudly and is ignored.

use bytes::Bytes;
use libtest_mimic::{Arguments, Failed, Trial};
use onnxopt::ir::{dump::dump_model, Model, TypeKind};
use onnxopt::verify::{allclose, compare_expected, CompareOptions, Runner, Tolerance};
use onnxopt::{export, import};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;

fn suite_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ONNX_NODE_SUITE") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/lib");
    for entry in std::fs::read_dir(venv).ok()?.flatten() {
        let p = entry
            .path()
            .join("site-packages/onnx/backend/test/data/node");
        if p.is_dir() {
            return Some(p);
        }
    }
    None
}

fn allowlist_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tract_unsupported.txt")
}

fn read_allowlist() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(allowlist_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(" # ") {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect()
}

enum Outcome {
    Passed,
    /// tract cannot run the original model (reason).
    TractUnsupported(String),
}

fn only_tensors(m: &Model) -> bool {
    let g = &m.graph;
    let input_ok = g.inputs().iter().all(|&i| {
        matches!(
            g.node(i).outputs[0].ty.as_ref().map(|t| &t.kind),
            Some(TypeKind::Tensor { .. })
        )
    });
    let output_ok = g.outputs.iter().all(|o| {
        matches!(
            o.ty.as_ref().map(|t| &t.kind),
            Some(TypeKind::Tensor { .. })
        )
    });
    input_ok && output_ok
}

fn run_case(dir: &Path) -> Result<Outcome, String> {
    let model_path = dir.join("model.onnx");
    let original_bytes = std::fs::read(&model_path).map_err(|e| e.to_string())?;
    let model = import::load(&model_path).map_err(|e| format!("import failed: {e:#}"))?;

    // Round trip: equal IR, byte-identical second export.
    let exported = export::to_bytes_inline(&model).map_err(|e| format!("export failed: {e:#}"))?;
    let again = import::from_bytes(Bytes::from(exported.clone()), None)
        .map_err(|e| format!("re-import failed: {e:#}"))?;
    let (d1, d2) = (dump_model(&model), dump_model(&again));
    if d1 != d2 {
        let line = d1.lines().zip(d2.lines()).find(|(a, b)| a != b);
        return Err(format!("IR changed by the round trip: {line:?}"));
    }
    let exported2 = export::to_bytes_inline(&again).map_err(|e| format!("export failed: {e:#}"))?;
    if exported != exported2 {
        return Err("second export is not byte-identical".into());
    }

    // Every case, runnable in tract or not, must optimize without error into a valid model.
    let opts = onnxopt::optimize::OptimizeOptions {
        validate_each: true,
        ..Default::default()
    };
    let (optimized, _, _) = onnxopt::optimize::run_passes(&model, &opts)
        .map_err(|e| format!("optimize failed: {e:#}"))?;
    let reexported = export::to_bytes_inline(&optimized)
        .map_err(|e| format!("export of optimized model failed: {e:#}"))?;
    import::from_bytes(Bytes::from(reexported), None)
        .map_err(|e| format!("optimized model does not re-import: {e:#}"))?;

    if !only_tensors(&model) {
        return Ok(Outcome::TractUnsupported(
            "sequence/optional/map inputs or outputs".into(),
        ));
    }
    // Samples through the same loader `onnxopt verify --inputs` uses.
    let specs = onnxopt::inputs::specs(&model, &[]).map_err(|e| format!("input specs: {e}"))?;
    let outputs: Vec<(String, onnxopt::ir::DataType)> = model
        .graph
        .outputs
        .iter()
        .map(|o| {
            (
                model.graph.value(o.value).name.clone(),
                o.ty.as_ref()
                    .and_then(|t| t.as_tensor())
                    .map(|t| t.0)
                    .unwrap(),
            )
        })
        .collect();
    let samples = match onnxopt::inputs::load(dir, &specs, &outputs) {
        Ok(s) => s,
        // A few cases store bfloat16 inputs as uint16 arrays; our loader insists on the declared type.
        Err(e) => {
            return Ok(Outcome::TractUnsupported(format!(
                "test data does not match the declared inputs: {e}"
            )))
        }
    };
    let tol = Tolerance {
        atol: ATOL,
        rtol: RTOL,
        min_cosine: None,
    };
    for sample in &samples {
        let expected: Vec<&onnxopt::ir::Tensor> = outputs
            .iter()
            .filter_map(|(n, _)| sample.expected.get(n))
            .collect();
        // The original model first: if tract cannot run it or gets it wrong, that is tract's limit.
        let original = Runner::from_bytes(&original_bytes, &sample.inputs)
            .and_then(|r| r.run(&sample.inputs))
            .map_err(|e| e.to_string())
            .and_then(|outs| {
                if outs.len() != expected.len() {
                    return Err(format!(
                        "{} outputs, expected {}",
                        outs.len(),
                        expected.len()
                    ));
                }
                outs.iter()
                    .zip(&expected)
                    .enumerate()
                    .try_for_each(|(k, (a, e))| {
                        allclose(a, e, ATOL, RTOL).map_err(|m| format!("output {k}: {m}"))
                    })
            });
        if let Err(reason) = original {
            return Ok(Outcome::TractUnsupported(reason));
        }
    }
    // The optimized model must still match, and optimizing it again must change nothing.
    let report = compare_expected(&optimized, &samples, &tol, &CompareOptions::default())
        .map_err(|e| format!("optimized model fails in tract where the original runs: {e}"))?;
    if !report.passed {
        let bad: Vec<String> = report
            .outputs
            .iter()
            .filter(|o| !o.passed)
            .map(|o| format!("{}: {:?}", o.name, o.failure))
            .collect();
        return Err(format!(
            "optimized model differs from expected: {}",
            bad.join("; ")
        ));
    }
    let (again, pm, _) = onnxopt::optimize::run_passes(&optimized, &opts)
        .map_err(|e| format!("re-optimize failed: {e:#}"))?;
    if let Some((pass, _)) = pm.trace.iter().find(|(_, changed)| *changed) {
        return Err(format!(
            "not idempotent: {pass} changed the optimized model"
        ));
    }
    let _ = again;
    // Our model, through the verify API.
    let report = compare_expected(&model, &samples, &tol, &CompareOptions::default())
        .map_err(|e| format!("exported model fails in tract where the original runs: {e}"))?;
    if !report.passed {
        let bad: Vec<String> = report
            .outputs
            .iter()
            .filter(|o| !o.passed)
            .map(|o| format!("{}: {:?}", o.name, o.failure))
            .collect();
        return Err(format!(
            "exported model differs from expected where the original matched: {}",
            bad.join("; ")
        ));
    }
    Ok(Outcome::Passed)
}

fn main() {
    let args = Arguments::from_args();
    let Some(suite) = suite_dir() else {
        eprintln!(
            "\n*** conformance: ONNX node suite not found: set ONNX_NODE_SUITE or run .ci/run (it installs onnx==1.17.0 into .cache/venv). SKIPPED. ***\n"
        );
        let trial = Trial::test("node_suite_missing", || Ok(())).with_ignored_flag(true);
        libtest_mimic::run(&args, vec![trial]).exit();
    };
    let allow = std::sync::Arc::new(read_allowlist());
    let write = std::env::var("ONNXOPT_WRITE_ALLOWLIST").is_ok();
    let found: std::sync::Arc<Mutex<BTreeMap<String, String>>> = Default::default();
    let tally: std::sync::Arc<Mutex<[usize; 3]>> = Default::default();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&suite)
        .expect("read suite dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    let trials: Vec<Trial> = cases
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let (allow, found, tally) = (allow.clone(), found.clone(), tally.clone());
            Trial::test(name.clone(), move || {
                let outcome = std::panic::catch_unwind(|| run_case(&dir))
                    .unwrap_or_else(|_| Err("panicked (in onnxopt or tract)".into()));
                let mut t = tally.lock().unwrap();
                match outcome {
                    Ok(Outcome::Passed) => {
                        t[0] += 1;
                        if allow.contains_key(&name) && !write {
                            return Err(Failed::from("tract now runs this case: remove it from tests/tract_unsupported.txt"));
                        }
                        Ok(())
                    }
                    Ok(Outcome::TractUnsupported(reason)) => {
                        t[1] += 1;
                        let reason: String = reason.chars().take(160).collect();
                        found.lock().unwrap().insert(name.clone(), reason.replace('\n', " "));
                        if !allow.contains_key(&name) && !write {
                            return Err(Failed::from(format!(
                                "tract cannot run the original ({reason}); list it in tests/tract_unsupported.txt"
                            )));
                        }
                        Ok(())
                    }
                    Err(e) => {
                        t[2] += 1;
                        Err(Failed::from(e))
                    }
                }
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let t = *tally.lock().unwrap();
    eprintln!(
        "\nconformance tally: {} passed in tract, {} tract-unsupported (round trip still checked), {} failed",
        t[0], t[1], t[2]
    );
    if write {
        let mut text = String::from(
            "# ONNX node-suite cases (onnx 1.17.0) that tract 0.23 cannot run or gets wrong on the ORIGINAL\n# model, with tract's reason. Regenerate: ONNXOPT_WRITE_ALLOWLIST=1 cargo test --test conformance\n",
        );
        for (k, v) in found.lock().unwrap().iter() {
            text.push_str(&format!("{k} # {v}\n"));
        }
        std::fs::write(allowlist_path(), text).expect("write allow-list");
        eprintln!("wrote {}", allowlist_path().display());
    }
    conclusion.exit();
}
