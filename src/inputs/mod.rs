//! Sample inputs for every command that runs a model: `.npz` files, folders of `NAME.npy`, ONNX
//! test-data folders (`input_K.pb` / `output_K.pb`, or several `test_data_set_*`), and seeded random
//! values from the declared shapes. One loader, one set of errors, each naming the input.
//!
//! Symbolic dims are fixed with `--input-shape NAME=1,3,224,224`; a symbolic dim left unset is an
//! error for random inputs (never guessed). Loaded arrays must match every fixed or bound dim.

use crate::ir::{DataType, Dim, Model, Tensor, TypeKind};
use bytes::Bytes;
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("'{path}': {message}")]
    File { path: PathBuf, message: String },
    #[error("--input-shape '{0}': expected NAME=D1,D2,... with non-negative integers")]
    BadShapeFlag(String),
    #[error("--input-shape names '{0}', which is not a model input")]
    UnknownShapeInput(String),
    #[error("no samples: give --inputs PATH or --random N")]
    NoSamples,
}

fn err(name: &str, message: impl Into<String>) -> InputError {
    InputError::Input {
        name: name.to_string(),
        message: message.into(),
    }
}

/// What the model declares for one runtime input, with `--input-shape` applied.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DataType,
    /// `None` when the model declares no shape.
    pub dims: Option<Vec<Dim>>,
}

/// One set of model inputs (in the model's input order) and, when the source has them, the
/// expected outputs by name.
#[derive(Clone, Debug)]
pub struct Sample {
    pub inputs: Vec<Tensor>,
    pub expected: BTreeMap<String, Tensor>,
}

/// Parses `NAME=1,3,224,224`.
pub fn parse_shape_flag(s: &str) -> Result<(String, Vec<i64>), InputError> {
    let (name, dims) = s
        .split_once('=')
        .ok_or_else(|| InputError::BadShapeFlag(s.into()))?;
    let dims = dims
        .split(',')
        .map(|d| d.trim().parse::<i64>().ok().filter(|&v| v >= 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| InputError::BadShapeFlag(s.into()))?;
    if name.is_empty() {
        return Err(InputError::BadShapeFlag(s.into()));
    }
    Ok((name.to_string(), dims))
}

/// The model's runtime inputs, with `shapes` (from `--input-shape`) fixing their dims.
pub fn specs(model: &Model, shapes: &[(String, Vec<i64>)]) -> Result<Vec<InputSpec>, InputError> {
    let g = &model.graph;
    let mut out = Vec::new();
    for &i in g.inputs() {
        let v = &g.node(i).outputs[0];
        let (dtype, dims) = match v.ty.as_ref().map(|t| &t.kind) {
            Some(TypeKind::Tensor { elem, shape }) => (
                *elem,
                shape
                    .as_ref()
                    .map(|s| s.iter().map(|d| d.dim.clone()).collect::<Vec<_>>()),
            ),
            Some(_) => {
                return Err(err(
                    &v.name,
                    format!(
                        "is a {}, only tensor inputs are supported",
                        v.ty.as_ref().unwrap()
                    ),
                ))
            }
            None => return Err(err(&v.name, "has no declared type")),
        };
        let mut spec = InputSpec {
            name: v.name.clone(),
            dtype,
            dims,
        };
        if let Some((_, fixed)) = shapes.iter().find(|(n, _)| *n == v.name) {
            if let Some(declared) = &spec.dims {
                if declared.len() != fixed.len() {
                    return Err(err(
                        &v.name,
                        format!(
                            "--input-shape gives rank {}, the model declares rank {}",
                            fixed.len(),
                            declared.len()
                        ),
                    ));
                }
                for (k, (d, f)) in declared.iter().zip(fixed).enumerate() {
                    if let Dim::Fixed(x) = d {
                        if x != f {
                            return Err(err(
                                &v.name,
                                format!(
                                    "--input-shape sets dim {k} to {f}, the model fixes it to {x}"
                                ),
                            ));
                        }
                    }
                }
            }
            spec.dims = Some(fixed.iter().map(|&d| Dim::Fixed(d)).collect());
        }
        out.push(spec);
    }
    for (n, _) in shapes {
        if !out.iter().any(|s| &s.name == n) {
            return Err(InputError::UnknownShapeInput(n.clone()));
        }
    }
    Ok(out)
}

fn dims_str(d: &[i64]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Checks a tensor against the spec: dtype, rank, fixed dims.
pub fn check_tensor(spec: &InputSpec, t: &Tensor) -> Result<(), InputError> {
    if t.dtype != spec.dtype {
        return Err(err(
            &spec.name,
            format!("expected {} data, got {}", spec.dtype, t.dtype),
        ));
    }
    if let Some(dims) = &spec.dims {
        if dims.len() != t.dims.len() {
            return Err(err(
                &spec.name,
                format!(
                    "expected rank {}, got shape {}",
                    dims.len(),
                    dims_str(&t.dims)
                ),
            ));
        }
        for (k, (d, &v)) in dims.iter().zip(&t.dims).enumerate() {
            if let Dim::Fixed(x) = d {
                if *x != v {
                    return Err(err(
                        &spec.name,
                        format!("dim {k} must be {x}, got shape {}", dims_str(&t.dims)),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A small, fast, reproducible generator (SplitMix64); the same seed gives the same samples on
/// every machine.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranges for random inputs.
#[derive(Clone, Copy, Debug)]
pub struct RandomRanges {
    /// Floats uniform in `[lo, hi)`. Default `[-1, 1)`: the range of normalised images and
    /// embeddings, where most models are exercised in every branch of their activations.
    pub float: (f64, f64),
    /// Integers uniform in `[lo, hi)`. Default `[0, 10)`: valid as token ids and as indices for any
    /// vocabulary or axis of at least 10.
    pub int: (i64, i64),
}

impl Default for RandomRanges {
    fn default() -> Self {
        RandomRanges {
            float: (-1.0, 1.0),
            int: (0, 10),
        }
    }
}

/// `n` seeded random samples from the specs. Every dim must be fixed (by the model or
/// `--input-shape`).
pub fn random(
    specs: &[InputSpec],
    n: usize,
    seed: u64,
    ranges: RandomRanges,
) -> Result<Vec<Sample>, InputError> {
    Ok(RandomSamples::new(specs, n, seed, ranges)?.collect())
}

/// The samples of [`random`], made one at a time, so a consumer that streams them (calibration)
/// holds one sample in memory whatever `n` is.
pub struct RandomSamples {
    inputs: Vec<(DataType, Vec<i64>)>,
    left: usize,
    rng: SplitMix,
    ranges: RandomRanges,
}

impl RandomSamples {
    pub fn new(
        specs: &[InputSpec],
        n: usize,
        seed: u64,
        ranges: RandomRanges,
    ) -> Result<RandomSamples, InputError> {
        let mut inputs = Vec::new();
        for s in specs {
            let dims = s
                .dims
                .as_ref()
                .ok_or_else(|| err(&s.name, "has no declared shape; give --input-shape"))?;
            let mut fixed = Vec::new();
            for d in dims {
                match d {
                    Dim::Fixed(v) => fixed.push(*v),
                    Dim::Symbol(sym) => {
                        return Err(err(
                            &s.name,
                            format!(
                                "dim '{sym}' is symbolic; fix it with --input-shape {}=...",
                                s.name
                            ),
                        ))
                    }
                    Dim::Unknown => {
                        return Err(err(
                            &s.name,
                            format!(
                                "has an unknown dim; fix it with --input-shape {}=...",
                                s.name
                            ),
                        ))
                    }
                }
            }
            if crate::ir::tensor::element_count(&fixed).is_none_or(|c| c > (1 << 30)) {
                return Err(err(
                    &s.name,
                    format!("shape {} is too large for random data", dims_str(&fixed)),
                ));
            }
            let supported = matches!(
                s.dtype,
                DataType::FLOAT | DataType::DOUBLE | DataType::FLOAT16 | DataType::BOOL
            ) || (s.dtype.bits().is_some() && !s.dtype.is_float());
            if !supported {
                return Err(err(&s.name, format!("cannot make random {} data", s.dtype)));
            }
            inputs.push((s.dtype, fixed));
        }
        Ok(RandomSamples {
            inputs,
            left: n,
            rng: SplitMix::new(seed),
            ranges,
        })
    }
}

impl Iterator for RandomSamples {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rng = &mut self.rng;
        let (flo, fhi) = self.ranges.float;
        let (ilo, ihi) = self.ranges.int;
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (dtype, dims) in &self.inputs {
            let count = dims.iter().product::<i64>() as usize;
            let mut float = || flo + (fhi - flo) * rng.next_f64();
            let bytes: Vec<u8> = match *dtype {
                DataType::FLOAT => (0..count)
                    .flat_map(|_| (float() as f32).to_le_bytes())
                    .collect(),
                DataType::DOUBLE => (0..count).flat_map(|_| float().to_le_bytes()).collect(),
                DataType::FLOAT16 => (0..count)
                    .flat_map(|_| half::f16::from_f64(float()).to_le_bytes())
                    .collect(),
                DataType::BOOL => (0..count).map(|_| (rng.next_u64() >> 63) as u8).collect(),
                dt => {
                    let width = (ihi - ilo).max(1) as u64;
                    let bytes_per = dt.bits().unwrap_or(8) / 8;
                    (0..count)
                        .flat_map(|_| {
                            let v = ilo + (rng.next_u64() % width) as i64;
                            v.to_le_bytes()[..bytes_per].to_vec()
                        })
                        .collect()
                }
            };
            inputs.push(Tensor::from_raw(*dtype, dims.clone(), bytes));
        }
        Some(Sample {
            inputs,
            expected: BTreeMap::new(),
        })
    }
}

/// Loads samples from a path: an `.npz` file, an `.npy` file (single-input models), a folder of
/// `NAME.npy`, an ONNX test-data folder, or a folder of `test_data_set_*` folders.
pub fn load(
    path: &Path,
    specs: &[InputSpec],
    outputs: &[(String, DataType)],
) -> Result<Vec<Sample>, InputError> {
    let file_err = |message: String| InputError::File {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
    if meta.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("npz") => load_npz(path, specs, outputs),
            Some("npy") if specs.len() == 1 => {
                let arrays = vec![(
                    specs[0].name.clone(),
                    read_npy_file(path, specs[0].dtype, &specs[0].name)?,
                )];
                from_named_arrays(arrays, specs, outputs)
            }
            Some("npy") => Err(file_err(
                "a single .npy only feeds a single-input model; use an .npz or a folder".into(),
            )),
            _ => Err(file_err("not an .npz or .npy file, nor a folder".into())),
        };
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| file_err(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if !sets.is_empty() {
        let mut all = Vec::new();
        for s in sets {
            all.push(load_pb_dir(&s, specs, outputs)?);
        }
        return Ok(all);
    }
    if path.join("input_0.pb").exists() {
        return Ok(vec![load_pb_dir(path, specs, outputs)?]);
    }
    // A folder of NAME.npy.
    let mut arrays = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| file_err(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    entries.sort();
    if entries.is_empty() {
        return Err(file_err(
            "folder holds no .npy files, input_K.pb files or test_data_set_* folders".into(),
        ));
    }
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let dtype = match specs.iter().find(|s| s.name == name) {
            Some(s) => s.dtype,
            None => match outputs.iter().find(|(n, _)| *n == name) {
                Some((_, dt)) => *dt,
                None => {
                    return Err(err(
                        &name,
                        format!("'{}' names no model input or output", p.display()),
                    ))
                }
            },
        };
        arrays.push((name.clone(), read_npy_file(&p, dtype, &name)?));
    }
    from_named_arrays(arrays, specs, outputs)
}

fn load_pb_dir(
    dir: &Path,
    specs: &[InputSpec],
    outputs: &[(String, DataType)],
) -> Result<Sample, InputError> {
    let read = |p: &Path| -> Result<Tensor, InputError> {
        let bytes = std::fs::read(p).map_err(|e| InputError::File {
            path: p.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::import::tensor_from_bytes(Bytes::from(bytes)).map_err(|e| InputError::File {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    let mut inputs = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let p = dir.join(format!("input_{k}.pb"));
        if !p.exists() {
            return Err(err(&spec.name, format!("missing {}", p.display())));
        }
        let t = read(&p)?;
        check_tensor(spec, &t)?;
        inputs.push(t);
    }
    if dir.join(format!("input_{}.pb", specs.len())).exists() {
        return Err(InputError::File {
            path: dir.to_path_buf(),
            message: format!(
                "holds more input_K.pb files than the model's {} inputs",
                specs.len()
            ),
        });
    }
    let mut expected = BTreeMap::new();
    for (k, (name, _)) in outputs.iter().enumerate() {
        let p = dir.join(format!("output_{k}.pb"));
        if p.exists() {
            expected.insert(name.clone(), read(&p)?);
        }
    }
    Ok(Sample { inputs, expected })
}

fn load_npz(
    path: &Path,
    specs: &[InputSpec],
    outputs: &[(String, DataType)],
) -> Result<Vec<Sample>, InputError> {
    let file_err = |message: String| InputError::File {
        path: path.to_path_buf(),
        message,
    };
    // Every member's header is checked before ndarray-npy parses it (see check_npy_header).
    {
        let f = File::open(path).map_err(|e| file_err(e.to_string()))?;
        let mut zip =
            zip::ZipArchive::new(f).map_err(|e| file_err(format!("not a readable .npz: {e}")))?;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| file_err(format!("not a readable .npz: {e}")))?;
            let name = entry.name().to_string();
            check_npy_header(&mut entry).map_err(|m| file_err(format!("member '{name}': {m}")))?;
        }
    }
    let f = File::open(path).map_err(|e| file_err(e.to_string()))?;
    let mut npz = ndarray_npy::NpzReader::new(f)
        .map_err(|e| file_err(format!("not a readable .npz: {e}")))?;
    let names = npz.names().map_err(|e| file_err(e.to_string()))?;
    let mut arrays = Vec::new();
    for name in names {
        let dtype = match specs.iter().find(|s| s.name == name) {
            Some(s) => s.dtype,
            None => match outputs.iter().find(|(n, _)| *n == name) {
                Some((_, dt)) => *dt,
                None => {
                    return Err(err(
                        &name,
                        format!("key in '{}' names no model input or output", path.display()),
                    ))
                }
            },
        };
        let t = read_typed(&name, dtype, |dt| read_npz_array(&mut npz, &name, dt))?;
        arrays.push((name, t));
    }
    from_named_arrays(arrays, specs, outputs)
}

/// Splits arrays into samples: an array with the input's rank is one sample, one extra leading
/// axis holds N samples.
fn from_named_arrays(
    arrays: Vec<(String, Tensor)>,
    specs: &[InputSpec],
    outputs: &[(String, DataType)],
) -> Result<Vec<Sample>, InputError> {
    let mut per_input: Vec<Vec<Tensor>> = Vec::new();
    for spec in specs {
        let (_, t) = arrays
            .iter()
            .find(|(n, _)| *n == spec.name)
            .ok_or_else(|| err(&spec.name, "no array with this name in the samples"))?;
        per_input.push(split_samples(spec, t)?);
    }
    let n = per_input.first().map(|v| v.len()).unwrap_or(1);
    for (spec, v) in specs.iter().zip(&per_input) {
        if v.len() != n {
            return Err(err(
                &spec.name,
                format!("holds {} samples, '{}' holds {n}", v.len(), specs[0].name),
            ));
        }
    }
    let mut expected_per: Vec<(String, Vec<Tensor>)> = Vec::new();
    for (name, t) in &arrays {
        if outputs.iter().any(|(n, _)| n == name) && !specs.iter().any(|s| &s.name == name) {
            // Expected outputs: one per sample along a leading axis when the count matches.
            let split = if n > 1 && t.dims.first() == Some(&(n as i64)) {
                split_leading(t)
            } else {
                vec![t.clone()]
            };
            expected_per.push((name.clone(), split));
        }
    }
    let mut samples = Vec::with_capacity(n);
    for k in 0..n {
        let inputs = per_input.iter().map(|v| v[k].clone()).collect();
        let mut expected = BTreeMap::new();
        for (name, v) in &expected_per {
            if let Some(t) = v.get(k) {
                expected.insert(name.clone(), t.clone());
            }
        }
        samples.push(Sample { inputs, expected });
    }
    Ok(samples)
}

fn split_leading(t: &Tensor) -> Vec<Tensor> {
    let n = t.dims[0] as usize;
    let bytes = t.to_le_bytes().unwrap_or_default();
    let each = if n == 0 { 0 } else { bytes.len() / n };
    (0..n)
        .map(|k| {
            let mut s = Tensor::from_raw(
                t.dtype,
                t.dims[1..].to_vec(),
                bytes.slice(k * each..(k + 1) * each),
            );
            s.name = t.name.clone();
            s
        })
        .collect()
}

fn split_samples(spec: &InputSpec, t: &Tensor) -> Result<Vec<Tensor>, InputError> {
    if t.dtype != spec.dtype {
        return Err(err(
            &spec.name,
            format!("expected {} data, got {}", spec.dtype, t.dtype),
        ));
    }
    let Some(dims) = &spec.dims else {
        return Ok(vec![t.clone()]);
    };
    if t.dims.len() == dims.len() {
        check_tensor(spec, t)?;
        Ok(vec![t.clone()])
    } else if t.dims.len() == dims.len() + 1 {
        let parts = split_leading(t);
        for p in &parts {
            check_tensor(spec, p)?;
        }
        Ok(parts)
    } else {
        Err(err(
            &spec.name,
            format!(
                "expected rank {} (one sample) or {} (N samples), got shape {}",
                dims.len(),
                dims.len() + 1,
                dims_str(&t.dims)
            ),
        ))
    }
}

fn read_npy_file(path: &Path, dtype: DataType, name: &str) -> Result<Tensor, InputError> {
    read_typed(name, dtype, |dt| {
        let mut f = File::open(path).map_err(|e| e.to_string())?;
        check_npy_header(&mut f)?;
        let f = File::open(path).map_err(|e| e.to_string())?;
        read_dispatch(dt, f)
    })
}

/// Longest .npy header accepted (numpy writes well under 1 KiB for plain arrays).
const MAX_NPY_HEADER: usize = 64 * 1024;

/// Checks an .npy header is the plain `{'descr': …, 'fortran_order': …, 'shape': (…), }` numpy
/// writes before the header parser sees it: fuzzing found that a header of nested braces makes the
/// parser (ndarray-npy's Python-literal grammar) backtrack for minutes.
fn check_npy_header(r: &mut impl std::io::Read) -> Result<(), String> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| "not an .npy array (too short)".to_string())?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if len > MAX_NPY_HEADER {
        return Err(format!(".npy header of {len} bytes"));
    }
    let mut h = vec![0u8; len];
    r.read_exact(&mut h)
        .map_err(|_| ".npy header truncated".to_string())?;
    let count = |c: u8| h.iter().filter(|&&x| x == c).count();
    if count(b'{') != 1 || count(b'}') != 1 || count(b'(') > 1 || count(b')') > 1 || count(b'[') > 0
    {
        return Err("the .npy header is not a plain numpy array header".into());
    }
    Ok(())
}

/// Expands `$rd!(T)` for the Rust element type of each readable ONNX dtype.
macro_rules! by_dtype {
    ($dt:expr, $rd:ident, $what:literal) => {
        match $dt {
            DataType::FLOAT => $rd!(f32),
            DataType::DOUBLE => $rd!(f64),
            DataType::INT8 => $rd!(i8),
            DataType::UINT8 => $rd!(u8),
            DataType::INT16 => $rd!(i16),
            DataType::UINT16 => $rd!(u16),
            DataType::INT32 => $rd!(i32),
            DataType::UINT32 => $rd!(u32),
            DataType::INT64 => $rd!(i64),
            DataType::UINT64 => $rd!(u64),
            DataType::BOOL => $rd!(bool),
            other => Err(format!("{other} arrays cannot be read from {}", $what)),
        }
    };
}

fn read_dispatch(dt: DataType, f: File) -> Result<(Vec<i64>, Vec<u8>), String> {
    use ndarray_npy::ReadNpyExt;
    macro_rules! rd {
        ($t:ty) => {
            ArrayD::<$t>::read_npy(f)
                .map(to_tensor_bytes)
                .map_err(|e| e.to_string())
        };
    }
    by_dtype!(dt, rd, ".npy")
}

fn read_npz_array(
    npz: &mut ndarray_npy::NpzReader<File>,
    name: &str,
    dt: DataType,
) -> Result<(Vec<i64>, Vec<u8>), String> {
    macro_rules! rd {
        ($t:ty) => {
            npz.by_name::<OwnedRepr<$t>, IxDyn>(name)
                .map(to_tensor_bytes)
                .map_err(|e| e.to_string())
        };
    }
    by_dtype!(dt, rd, ".npz")
}

/// Reads with the expected dtype; a dtype mismatch becomes an error naming the input.
fn read_typed(
    name: &str,
    dtype: DataType,
    read: impl FnOnce(DataType) -> Result<(Vec<i64>, Vec<u8>), String>,
) -> Result<Tensor, InputError> {
    match read(dtype) {
        Ok((dims, bytes)) => Ok(Tensor::from_raw(dtype, dims, bytes)),
        Err(e) if e.contains("descriptor") => Err(err(
            name,
            format!("expected {dtype} data, the array holds another type ({e})"),
        )),
        Err(e) => Err(err(name, e)),
    }
}

trait LeBytes {
    fn le(&self, out: &mut Vec<u8>);
}
macro_rules! le_impl {
    ($($t:ty),*) => { $(impl LeBytes for $t { fn le(&self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_le_bytes()) } })* };
}
le_impl!(f32, f64, i8, u8, i16, u16, i32, u32, i64, u64);

impl LeBytes for bool {
    fn le(&self, out: &mut Vec<u8>) {
        out.push(*self as u8)
    }
}

fn to_tensor_bytes<T: LeBytes>(a: ArrayD<T>) -> (Vec<i64>, Vec<u8>) {
    let dims = a.shape().iter().map(|&d| d as i64).collect();
    let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>());
    for v in a.iter() {
        v.le(&mut out);
    }
    (dims, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: Vec<Dim>) -> InputSpec {
        InputSpec {
            name: "x".into(),
            dtype: DataType::FLOAT,
            dims: Some(dims),
        }
    }

    #[test]
    fn random_is_reproducible_and_in_range() {
        let s = [spec(vec![Dim::Fixed(2), Dim::Fixed(3)])];
        let a = random(&s, 2, 7, RandomRanges::default()).unwrap();
        let b = random(&s, 2, 7, RandomRanges::default()).unwrap();
        assert!(a[1].inputs[0].same_values(&b[1].inputs[0]));
        assert!(!a[0].inputs[0].same_values(&a[1].inputs[0]));
        assert!(a[0].inputs[0]
            .to_f32_vec()
            .unwrap()
            .iter()
            .all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn symbolic_dims_must_be_fixed() {
        let s = [spec(vec![Dim::Symbol("batch".into()), Dim::Fixed(3)])];
        let e = random(&s, 1, 0, RandomRanges::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'batch'") && e.contains("--input-shape x="),
            "{e}"
        );
    }

    #[test]
    fn shape_flag_parses() {
        assert_eq!(
            parse_shape_flag("x=1,3,224,224").unwrap(),
            ("x".into(), vec![1, 3, 224, 224])
        );
        assert!(parse_shape_flag("x=1,a").is_err());
        assert!(parse_shape_flag("=1").is_err());
        assert!(parse_shape_flag("x").is_err());
    }

    #[test]
    fn leading_axis_splits_samples() {
        let s = spec(vec![Dim::Fixed(2)]);
        let t = Tensor::from_f32(vec![3, 2], &[1., 2., 3., 4., 5., 6.]);
        let parts = split_samples(&s, &t).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].to_f32_vec().unwrap(), vec![5., 6.]);
        let bad = Tensor::from_f32(vec![3], &[1., 2., 3.]);
        assert!(split_samples(&s, &bad)
            .unwrap_err()
            .to_string()
            .contains("dim 0 must be 2"));
    }
}
