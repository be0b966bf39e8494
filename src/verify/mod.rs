//! Running models in tract and comparing outputs.
//!
//! Models go to tract as in-memory bytes with every tensor inline (no temp files). Inputs are IR
//! tensors; the input facts are fixed from them before optimisation so symbolic dims resolve.

pub mod bench;
pub mod compare;

pub use compare::{compare_expected, compare_models, CompareOptions, Report, Tolerance};

use crate::export;
use crate::ir::{self, DataType, Model, Tensor};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue,
    Tensor as TTensor, TypedModel, TypedRunnableModel,
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract cannot run the model: {0}")]
    Unsupported(String),
    #[error("tract failed while running: {0}")]
    Run(String),
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("{0}")]
    Export(#[from] export::ExportError),
    #[error("tract failed internally ({0}); the model is probably malformed")]
    Panicked(String),
}

thread_local! {
    static IN_TRACT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` (tract work) so that a panic inside tract — it has a few on malformed models — becomes
/// `RunError::Panicked` instead of tearing the process down. While inside, the panic hook records
/// the message instead of printing it, so the CLI still prints one error line.
pub fn guard<T>(f: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TRACT.with(|t| t.get()) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = msg);
            } else {
                previous(info);
            }
        }));
    });
    let was = IN_TRACT.with(|t| t.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_TRACT.with(|t| t.set(was));
    match result {
        Ok(r) => r,
        Err(_) => Err(RunError::Panicked(
            PANIC_MESSAGE.with(|m| std::mem::take(&mut *m.borrow_mut())),
        )),
    }
}

/// The tract element type for an ONNX one, where tract has one.
pub fn tract_dtype(dt: DataType) -> Option<DatumType> {
    Some(match dt {
        DataType::FLOAT => DatumType::F32,
        DataType::DOUBLE => DatumType::F64,
        DataType::FLOAT16 => DatumType::F16,
        DataType::INT8 => DatumType::I8,
        DataType::INT16 => DatumType::I16,
        DataType::INT32 => DatumType::I32,
        DataType::INT64 => DatumType::I64,
        DataType::UINT8 => DatumType::U8,
        DataType::UINT16 => DatumType::U16,
        DataType::UINT32 => DatumType::U32,
        DataType::UINT64 => DatumType::U64,
        DataType::BOOL => DatumType::Bool,
        DataType::STRING => DatumType::String,
        _ => return None,
    })
}

pub fn onnx_dtype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::FLOAT,
        DatumType::F64 => DataType::DOUBLE,
        DatumType::F16 => DataType::FLOAT16,
        DatumType::I8 | DatumType::QI8(_) => DataType::INT8,
        DatumType::I16 => DataType::INT16,
        DatumType::I32 | DatumType::QI32(_) => DataType::INT32,
        DatumType::I64 => DataType::INT64,
        DatumType::U8 | DatumType::QU8(_) => DataType::UINT8,
        DatumType::U16 => DataType::UINT16,
        DatumType::U32 => DataType::UINT32,
        DatumType::U64 => DataType::UINT64,
        DatumType::Bool => DataType::BOOL,
        DatumType::String => DataType::STRING,
        _ => return None,
    })
}

/// IR tensor → tract tensor.
pub fn to_tract(t: &Tensor) -> Result<TTensor, String> {
    let dt = tract_dtype(t.dtype).ok_or_else(|| format!("tract has no {} tensors", t.dtype))?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if let ir::TensorData::Strings(s) = &t.data {
        let v: Vec<String> = s
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let arr = tract_onnx::prelude::tract_ndarray::Array::from_shape_vec(shape, v)
            .map_err(|e| e.to_string())?;
        return Ok(arr.into_dyn().into());
    }
    let bytes = t.to_le_bytes().ok_or("no byte form")?;
    if t.dtype == DataType::BOOL && bytes.iter().any(|&b| b > 1) {
        // tract's bool is Rust's bool: only 0 and 1 are valid bit patterns.
        let norm: Vec<u8> = bytes.iter().map(|&b| (b != 0) as u8).collect();
        return unsafe { TTensor::from_raw_dt(dt, &shape, &norm) }.map_err(|e| format!("{e:#}"));
    }
    // SAFETY: every listed dtype is plain data of the byte size `check()` verified.
    unsafe { TTensor::from_raw_dt(dt, &shape, &bytes) }.map_err(|e| format!("{e:#}"))
}

/// tract tensor → IR tensor.
pub fn from_tract(t: &TTensor) -> Result<Tensor, String> {
    if t.datum_type() == DatumType::TDim {
        // Shape computations come out as symbolic-dim tensors; once run they are plain integers.
        let t = t.cast_to::<i64>().map_err(|e| format!("{e:#}"))?;
        return from_tract(&t);
    }
    let dt = onnx_dtype(t.datum_type())
        .ok_or_else(|| format!("no ONNX type for tract {:?}", t.datum_type()))?;
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    if dt == DataType::STRING {
        let view = t.try_as_plain_ram().map_err(|e| format!("{e:#}"))?;
        let s = view.as_slice::<String>().map_err(|e| format!("{e:#}"))?;
        let mut out = Tensor::from_raw(dt, dims, Vec::new());
        out.data = ir::TensorData::Strings(
            s.iter()
                .map(|x| bytes::Bytes::from(x.clone().into_bytes()))
                .collect(),
        );
        return Ok(out);
    }
    Ok(Tensor::from_raw(dt, dims, t.as_bytes().to_vec()))
}

/// A model loaded in tract, optimised for fixed input shapes.
pub struct Runner {
    plan: std::sync::Arc<TypedRunnableModel>,
    pub output_names: Vec<String>,
}

/// Where tract reads a model from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Bytes(&'a [u8]),
    /// A file, with external data beside it.
    Path(&'a std::path::Path),
}

impl Runner {
    /// Loads serialised ONNX bytes (inline tensors). Input facts are first fixed from `inputs`; if
    /// tract then cannot reconcile them with shapes declared inside the model (a `value_info` naming
    /// a symbolic batch, say), it is retried with the model's own, symbolic, input facts.
    pub fn from_bytes(bytes: &[u8], inputs: &[Tensor]) -> Result<Runner, RunError> {
        Runner::from_source(Source::Bytes(bytes), inputs)
    }

    fn from_source(src: Source, inputs: &[Tensor]) -> Result<Runner, RunError> {
        match Runner::load(src, Some(inputs)) {
            Err(RunError::Unsupported(first)) => {
                Runner::load(src, None).map_err(|_| RunError::Unsupported(first))
            }
            other => other,
        }
    }

    fn load(src: Source, inputs: Option<&[Tensor]>) -> Result<Runner, RunError> {
        guard(|| Runner::load_unguarded(src, inputs))
    }

    fn load_unguarded(src: Source, inputs: Option<&[Tensor]>) -> Result<Runner, RunError> {
        let onnx = tract_onnx::onnx();
        let mut model = match src {
            Source::Bytes(bytes) => onnx.model_for_read(&mut &bytes[..]),
            Source::Path(path) => onnx.model_for_path(path),
        }
        .map_err(|e| RunError::Load(first_line(&e)))?;
        for (i, t) in inputs.unwrap_or_default().iter().enumerate() {
            let dt = tract_dtype(t.dtype).ok_or_else(|| RunError::Input {
                name: format!("#{i}"),
                message: format!("tract has no {} tensors", t.dtype),
            })?;
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, shape))
                .map_err(|e| RunError::Input {
                    name: format!("#{i}"),
                    message: first_line(&e),
                })?;
        }
        let typed: TypedModel = model
            .into_optimized()
            .map_err(|e| RunError::Unsupported(first_line(&e)))?;
        let output_names = typed
            .output_outlets()
            .map_err(|e| RunError::Unsupported(first_line(&e)))?
            .iter()
            .map(|o| {
                typed
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| typed.node(o.node).name.clone())
            })
            .collect();
        let plan = typed
            .into_runnable()
            .map_err(|e| RunError::Unsupported(first_line(&e)))?;
        Ok(Runner { plan, output_names })
    }

    /// Loads an IR model. When tract rejects a node, the error names it as the ONNX file does:
    /// op type and node name.
    pub fn from_model(model: &Model, inputs: &[Tensor]) -> Result<Runner, RunError> {
        sane_for_tract(model)?;
        // Declared types may name the inputs' symbols (`N,16,112,112`, in value_info too) that
        // the concrete inputs now fix: bind them, or tract fails to unify a symbol with a number.
        let bound;
        let model = if inputs.is_empty() || model.graph.inputs().len() != inputs.len() {
            model
        } else {
            let shapes: Vec<(String, Vec<i64>)> = model
                .graph
                .inputs()
                .iter()
                .zip(inputs)
                .map(|(&i, t)| (model.graph.node(i).outputs[0].name.clone(), t.dims.clone()))
                .collect();
            let mut m = model.clone();
            crate::optimize::fix_input_shapes(&mut m, &shapes);
            bound = m;
            &bound
        };
        let bytes = match export::to_bytes_inline(model) {
            // Over protobuf's 2 GiB: hand tract a file with external data instead.
            Err(export::ExportError::TooLarge { .. }) => {
                let dir = tempfile::tempdir().map_err(|e| RunError::Load(e.to_string()))?;
                let path = dir.path().join("model.onnx");
                export::save(
                    model,
                    &path,
                    export::DataPolicy::External { threshold: 1024 },
                )?;
                let r = Runner::from_source(Source::Path(&path), inputs);
                return r.map_err(|e| match e {
                    RunError::Unsupported(m) => RunError::Unsupported(name_onnx_node(model, &m)),
                    RunError::Load(m) => RunError::Load(name_onnx_node(model, &m)),
                    other => other,
                });
            }
            other => other?,
        };
        Runner::from_bytes(&bytes, inputs).map_err(|e| match e {
            RunError::Unsupported(m) => RunError::Unsupported(name_onnx_node(model, &m)),
            RunError::Load(m) => RunError::Load(name_onnx_node(model, &m)),
            other => other,
        })
    }

    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        guard(|| self.run_unguarded(inputs))
    }

    fn run_unguarded(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let tv = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                to_tract(t)
                    .map(|t| t.into_tvalue())
                    .map_err(|message| RunError::Input {
                        name: format!("#{i}"),
                        message,
                    })
            })
            .collect::<Result<_, _>>()?;
        let out = self
            .plan
            .run(tv)
            .map_err(|e| RunError::Run(first_line(&e)))?;
        out.iter()
            .map(|t| from_tract(t).map_err(RunError::Run))
            .collect()
    }
}

/// Largest |axis| accepted before a model goes to tract: ONNX models stay far below rank 64, and
/// tract's shape rules loop over `0..axis`, so a corrupt axis of 2^40 would hang the analysis.
pub const MAX_AXIS: i64 = 64;

/// Refuses models tract would choke on instead of erroring: absurd `axis`/`axes`/`perm` values.
pub fn sane_for_tract(model: &Model) -> Result<(), RunError> {
    let mut bad = None;
    model.graph.visit_graphs(&mut |g| {
        for (_, n, op) in g.ops() {
            for a in &op.attributes {
                let out_of_range = match (a.name.as_str(), &a.value) {
                    ("axis", ir::AttrValue::Int(v)) => v.abs() > MAX_AXIS,
                    ("axes" | "perm", ir::AttrValue::Ints(v)) => {
                        v.iter().any(|x| x.abs() > MAX_AXIS)
                    }
                    _ => false,
                };
                // tract's LayerNormalization rules loop over `0..rank+axis` taken as unsigned: an
                // axis below -rank never ends (found by fuzzing). Needs the input's rank.
                let layer_norm_axis = op.op_type == "LayerNormalization"
                    && matches!((a.name.as_str(), &a.value), ("axis", ir::AttrValue::Int(v)) if *v < -1 && {
                        let rank = n
                            .inputs()
                            .first()
                            .copied()
                            .flatten()
                            .and_then(|x| g.value(x).ty.as_ref())
                            .and_then(|t| t.as_tensor())
                            .and_then(|(_, s)| s.map(|s| s.len() as i64));
                        rank.is_none_or(|r| r + *v < 0)
                    });
                let out_of_range = out_of_range || layer_norm_axis;
                if out_of_range && bad.is_none() {
                    bad = Some(format!(
                        "node '{}' ({}) has {} out of range",
                        n.display_name(),
                        op.op_type,
                        a.name
                    ));
                }
            }
        }
    });
    match bad {
        Some(m) => Err(RunError::Load(m)),
        None => Ok(()),
    }
}

/// tract reports `node #12 "label"` with its own numbering; prefix the ONNX op type and node name
/// that the label belongs to, when one matches.
fn name_onnx_node(model: &Model, message: &str) -> String {
    let label = message.split('"').nth(1).unwrap_or("");
    if label.is_empty() {
        return message.to_string();
    }
    let mut found = None;
    model.graph.visit_graphs(&mut |g| {
        for (_, n, _) in g.ops() {
            if found.is_none() && (n.name == label || n.outputs.iter().any(|v| v.name == label)) {
                found = Some((n.op_type().to_string(), n.display_name().to_string()));
            }
        }
    });
    match found {
        Some((op, name)) => {
            format!("op {op} in ONNX node '{name}' is not supported by tract ({message})")
        }
        None => message.to_string(),
    }
}

/// The whole error chain on one line.
fn first_line(e: &impl std::fmt::Display) -> String {
    format!("{e:#}").lines().next().unwrap_or("").to_string()
}

/// numpy-style `allclose` (`|a−b| ≤ atol + rtol·|b|`, NaN equal to NaN) on float tensors; exact
/// equality on the others. `Err` describes the first difference.
pub fn allclose(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> Result<(), String> {
    if actual.dtype != expected.dtype {
        return Err(format!(
            "dtype {} != expected {}",
            actual.dtype, expected.dtype
        ));
    }
    if actual.dims != expected.dims {
        return Err(format!(
            "shape {:?} != expected {:?}",
            actual.dims, expected.dims
        ));
    }
    if actual.dtype.is_float() {
        let (a, b) = (
            actual.to_f32_vec().ok_or("undecodable")?,
            expected.to_f32_vec().ok_or("undecodable")?,
        );
        for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
            let (x, y) = (x as f64, y as f64);
            let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs();
            if !ok {
                return Err(format!("element {i}: {x} vs expected {y}"));
            }
        }
        return Ok(());
    }
    if actual.same_values(expected) {
        Ok(())
    } else {
        Err("values differ".into())
    }
}
