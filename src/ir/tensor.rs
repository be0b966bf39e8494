//! Tensors as the IR holds them: the storage form they were read in (raw bytes or one of
//! TensorProto's typed fields) is kept, and values are decoded only when someone asks.
//!
//! Payloads are `bytes::Bytes`, so a tensor read from a memory-mapped file or external-data file is a
//! slice of the map, not a copy.

use bytes::Bytes;
use std::fmt;

/// ONNX element types, numbered as `TensorProto.DataType` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataType(pub i32);

impl DataType {
    pub const UNDEFINED: DataType = DataType(0);
    pub const FLOAT: DataType = DataType(1);
    pub const UINT8: DataType = DataType(2);
    pub const INT8: DataType = DataType(3);
    pub const UINT16: DataType = DataType(4);
    pub const INT16: DataType = DataType(5);
    pub const INT32: DataType = DataType(6);
    pub const INT64: DataType = DataType(7);
    pub const STRING: DataType = DataType(8);
    pub const BOOL: DataType = DataType(9);
    pub const FLOAT16: DataType = DataType(10);
    pub const DOUBLE: DataType = DataType(11);
    pub const UINT32: DataType = DataType(12);
    pub const UINT64: DataType = DataType(13);
    pub const COMPLEX64: DataType = DataType(14);
    pub const COMPLEX128: DataType = DataType(15);
    pub const BFLOAT16: DataType = DataType(16);
    pub const FLOAT8E4M3FN: DataType = DataType(17);
    pub const FLOAT8E4M3FNUZ: DataType = DataType(18);
    pub const FLOAT8E5M2: DataType = DataType(19);
    pub const FLOAT8E5M2FNUZ: DataType = DataType(20);
    pub const UINT4: DataType = DataType(21);
    pub const INT4: DataType = DataType(22);
    pub const FLOAT4E2M1: DataType = DataType(23);
    pub const FLOAT8E8M0: DataType = DataType(24);
    pub const UINT2: DataType = DataType(25);
    pub const INT2: DataType = DataType(26);
    pub const FLOAT6E2M3: DataType = DataType(27);
    pub const FLOAT6E3M2: DataType = DataType(28);

    /// Name as the ONNX spec spells it (`tensor(float)` uses the lower-case form).
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "undefined",
            1 => "float",
            2 => "uint8",
            3 => "int8",
            4 => "uint16",
            5 => "int16",
            6 => "int32",
            7 => "int64",
            8 => "string",
            9 => "bool",
            10 => "float16",
            11 => "double",
            12 => "uint32",
            13 => "uint64",
            14 => "complex64",
            15 => "complex128",
            16 => "bfloat16",
            17 => "float8e4m3fn",
            18 => "float8e4m3fnuz",
            19 => "float8e5m2",
            20 => "float8e5m2fnuz",
            21 => "uint4",
            22 => "int4",
            23 => "float4e2m1",
            24 => "float8e8m0",
            25 => "uint2",
            26 => "int2",
            27 => "float6e2m3",
            28 => "float6e3m2",
            _ => "unknown",
        }
    }

    pub fn is_known(self) -> bool {
        (1..=28).contains(&self.0)
    }

    /// Storage size of one element in bits (packed sub-byte types included); `None` for strings and
    /// unknown types.
    pub fn bits(self) -> Option<usize> {
        Some(match self.0 {
            1 | 6 | 12 => 32,
            2 | 3 | 9 | 17..=20 | 24 => 8,
            4 | 5 | 10 | 16 => 16,
            7 | 11 | 13 | 14 => 64,
            15 => 128,
            21 | 22 | 23 => 4,
            25 | 26 => 2,
            27 | 28 => 6,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self.0, 1 | 10 | 11 | 16 | 17..=20 | 23 | 24 | 27 | 28)
    }

    /// Which typed `TensorProto` field holds values of this type when `raw_data` is not used.
    pub fn typed_field(self) -> Option<TypedField> {
        Some(match self.0 {
            1 | 14 => TypedField::Float,
            2..=6 | 9 | 10 | 16..=28 => TypedField::Int32,
            7 => TypedField::Int64,
            8 => TypedField::String,
            11 | 15 => TypedField::Double,
            12 | 13 => TypedField::Uint64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            f.write_str(self.name())
        } else {
            write!(f, "dtype#{}", self.0)
        }
    }
}

/// The typed `TensorProto` fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypedField {
    Float,
    Int32,
    Int64,
    String,
    Double,
    Uint64,
}

/// Tensor payload, in the storage form it was read in.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Little-endian packed bytes (`raw_data`, or an external-data range).
    Raw(Bytes),
    Floats(Vec<f32>),
    Int32s(Vec<i32>),
    Int64s(Vec<i64>),
    Doubles(Vec<f64>),
    Uint64s(Vec<u64>),
    Strings(Vec<Bytes>),
}

/// Where the tensor's bytes should live when the model is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Placement {
    #[default]
    Inline,
    /// Read from, and by default written back to, an external-data file.
    External,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DataType,
    pub dims: Vec<i64>,
    pub data: TensorData,
    pub placement: Placement,
    pub doc_string: String,
    /// The tensor's own name inside the proto. For initializers it equals the value name; for
    /// attribute tensors it is whatever the file said (often empty).
    pub name: String,
    pub metadata_props: Vec<(String, String)>,
    /// `TensorProto.segment`, kept as encoded protobuf bytes (the IR does not interpret it).
    pub segment: Option<Bytes>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor '{name}' has unsupported data type {dtype}")]
    UnknownType { name: String, dtype: i32 },
    #[error("tensor '{name}' has a negative dimension in {dims:?}")]
    NegativeDim { name: String, dims: Vec<i64> },
    #[error(
        "tensor '{name}' of type {dtype} and shape {dims:?} needs {expected} {unit}, found {found}"
    )]
    SizeMismatch {
        name: String,
        dtype: DataType,
        dims: Vec<i64>,
        expected: usize,
        found: usize,
        unit: &'static str,
    },
    #[error("tensor '{name}' stores {dtype} values in the wrong field ({field})")]
    WrongField {
        name: String,
        dtype: DataType,
        field: &'static str,
    },
}

impl Tensor {
    /// A dense inline tensor from little-endian bytes.
    pub fn from_raw(dtype: DataType, dims: Vec<i64>, raw: impl Into<Bytes>) -> Tensor {
        Tensor {
            dtype,
            dims,
            data: TensorData::Raw(raw.into()),
            placement: Placement::Inline,
            doc_string: String::new(),
            name: String::new(),
            metadata_props: Vec::new(),
            segment: None,
        }
    }

    pub fn from_f32(dims: Vec<i64>, values: &[f32]) -> Tensor {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(DataType::FLOAT, dims, raw)
    }

    pub fn from_i64(dims: Vec<i64>, values: &[i64]) -> Tensor {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_raw(DataType::INT64, dims, raw)
    }

    /// Number of elements, or `None` when the product overflows.
    pub fn element_count(&self) -> Option<usize> {
        element_count(&self.dims)
    }

    /// Bytes the payload occupies when packed little-endian (`raw_data` form); strings count their
    /// lengths.
    pub fn byte_size(&self) -> usize {
        if let TensorData::Strings(s) = &self.data {
            return s.iter().map(|b| b.len()).sum();
        }
        match (self.element_count(), self.dtype.bits()) {
            (Some(n), Some(bits)) => (n * bits).div_ceil(8),
            _ => 0,
        }
    }

    /// Checks that the payload agrees with dtype and dims, so later decoding cannot go out of bounds.
    pub fn check(&self) -> Result<(), TensorError> {
        let name = || self.name.clone();
        if self.dims.iter().any(|&d| d < 0) {
            return Err(TensorError::NegativeDim {
                name: name(),
                dims: self.dims.clone(),
            });
        }
        if !self.dtype.is_known() {
            return Err(TensorError::UnknownType {
                name: name(),
                dtype: self.dtype.0,
            });
        }
        let n = self
            .element_count()
            .ok_or_else(|| TensorError::SizeMismatch {
                name: name(),
                dtype: self.dtype,
                dims: self.dims.clone(),
                expected: usize::MAX,
                found: 0,
                unit: "elements",
            })?;
        let mismatch = |expected, found, unit| TensorError::SizeMismatch {
            name: name(),
            dtype: self.dtype,
            dims: self.dims.clone(),
            expected,
            found,
            unit,
        };
        let field_ok = |f: TypedField, label: &'static str| {
            if self.dtype.typed_field() == Some(f) {
                Ok(())
            } else {
                Err(TensorError::WrongField {
                    name: name(),
                    dtype: self.dtype,
                    field: label,
                })
            }
        };
        // Complex types store two numbers per element; sub-byte types pack several per int32.
        let per_elem = if matches!(self.dtype, DataType::COMPLEX64 | DataType::COMPLEX128) {
            2
        } else {
            1
        };
        match &self.data {
            TensorData::Raw(b) => {
                if self.dtype == DataType::STRING {
                    return Err(TensorError::WrongField {
                        name: name(),
                        dtype: self.dtype,
                        field: "raw_data",
                    });
                }
                let expected = self.byte_size();
                if b.len() != expected {
                    return Err(mismatch(expected, b.len(), "bytes"));
                }
            }
            TensorData::Floats(v) => {
                field_ok(TypedField::Float, "float_data")?;
                if v.len() != n * per_elem {
                    return Err(mismatch(n * per_elem, v.len(), "float_data values"));
                }
            }
            TensorData::Int32s(v) => {
                field_ok(TypedField::Int32, "int32_data")?;
                let bits = self.dtype.bits().unwrap_or(32);
                // 4- and 2-bit types pack one byte per int32; 6-bit floats keep one element per int32.
                let expected = if bits < 8 && bits != 6 {
                    (n * bits).div_ceil(8)
                } else {
                    n
                };
                if v.len() != expected {
                    return Err(mismatch(expected, v.len(), "int32_data values"));
                }
            }
            TensorData::Int64s(v) => {
                field_ok(TypedField::Int64, "int64_data")?;
                if v.len() != n {
                    return Err(mismatch(n, v.len(), "int64_data values"));
                }
            }
            TensorData::Doubles(v) => {
                field_ok(TypedField::Double, "double_data")?;
                if v.len() != n * per_elem {
                    return Err(mismatch(n * per_elem, v.len(), "double_data values"));
                }
            }
            TensorData::Uint64s(v) => {
                field_ok(TypedField::Uint64, "uint64_data")?;
                if v.len() != n {
                    return Err(mismatch(n, v.len(), "uint64_data values"));
                }
            }
            TensorData::Strings(v) => {
                field_ok(TypedField::String, "string_data")?;
                if v.len() != n {
                    return Err(mismatch(n, v.len(), "strings"));
                }
            }
        }
        Ok(())
    }

    /// The payload as little-endian packed bytes, whatever field it was stored in. `None` for
    /// strings. Sub-byte types stored in `int32_data` hold one packed byte per int32.
    pub fn to_le_bytes(&self) -> Option<Bytes> {
        let bits = self.dtype.bits()?;
        Some(match &self.data {
            TensorData::Raw(b) => b.clone(),
            TensorData::Floats(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
            TensorData::Doubles(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
            TensorData::Int64s(v) => v
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
            TensorData::Uint64s(v) => {
                if bits == 32 {
                    v.iter()
                        .flat_map(|&x| (x as u32).to_le_bytes())
                        .collect::<Vec<_>>()
                        .into()
                } else {
                    v.iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<_>>()
                        .into()
                }
            }
            TensorData::Int32s(v) if bits == 6 => {
                // LSB-first 6-bit stream, as raw_data packs it.
                let mut out = vec![0u8; (v.len() * 6).div_ceil(8)];
                for (i, &x) in v.iter().enumerate() {
                    let (bit, val) = (i * 6, (x as u32 & 0x3F) as u16);
                    let word = val << (bit % 8);
                    out[bit / 8] |= word as u8;
                    if bit % 8 > 2 {
                        out[bit / 8 + 1] |= (word >> 8) as u8;
                    }
                }
                out.into()
            }
            TensorData::Int32s(v) => {
                let mut out = Vec::with_capacity(v.len() * bits.div_ceil(8));
                for &x in v {
                    match bits {
                        32 => out.extend_from_slice(&x.to_le_bytes()),
                        16 => out.extend_from_slice(&(x as u16).to_le_bytes()),
                        _ => out.push(x as u8),
                    }
                }
                out.into()
            }
            TensorData::Strings(_) => return None,
        })
    }

    /// Values as f32 (float, float16, bfloat16, double and integer types); `None` otherwise.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        if let TensorData::Floats(v) = &self.data {
            if self.dtype == DataType::FLOAT {
                return Some(v.clone());
            }
        }
        let b = self.to_le_bytes()?;
        Some(match self.dtype {
            DataType::FLOAT => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::DOUBLE => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            DataType::FLOAT16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DataType::BFLOAT16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => self.to_i64_vec()?.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// Values as i64 for integer and bool types; `None` otherwise.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        if let TensorData::Int64s(v) = &self.data {
            return Some(v.clone());
        }
        let b = self.to_le_bytes()?;
        let n = self.element_count()?;
        Some(match self.dtype {
            DataType::INT64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::UINT64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::INT32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::UINT32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            DataType::INT16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::UINT16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DataType::INT8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DataType::UINT8 | DataType::BOOL => b.iter().map(|&x| x as i64).collect(),
            DataType::INT4 | DataType::UINT4 => (0..n)
                .map(|i| {
                    let nib = (b[i / 2] >> ((i % 2) * 4)) & 0xF;
                    if self.dtype == DataType::INT4 {
                        ((nib << 4) as i8 >> 4) as i64
                    } else {
                        nib as i64
                    }
                })
                .collect(),
            _ => return None,
        })
    }

    /// Same values regardless of storage form (what IR equality means for tensors).
    pub fn same_values(&self, other: &Tensor) -> bool {
        if self.dtype != other.dtype || self.dims != other.dims {
            return false;
        }
        match (&self.data, &other.data) {
            (TensorData::Strings(a), TensorData::Strings(b)) => a == b,
            _ => self.to_le_bytes() == other.to_le_bytes(),
        }
    }
}

pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// `SparseTensorProto`: values `[NNZ]` with indices `[NNZ]` (linear) or `[NNZ, rank]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseTensor {
    pub values: Tensor,
    pub indices: Tensor,
    pub dims: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_raw_forms_agree() {
        let raw = Tensor::from_f32(vec![2], &[1.5, -2.0]);
        let mut typed = raw.clone();
        typed.data = TensorData::Floats(vec![1.5, -2.0]);
        assert!(raw.same_values(&typed));
        typed.data = TensorData::Floats(vec![1.5, -2.5]);
        assert!(!raw.same_values(&typed));
    }

    #[test]
    fn int4_unpacks_sign() {
        // 0x9F: low nibble 0xF = -1, high nibble 0x9 = -7
        let t = Tensor::from_raw(DataType::INT4, vec![3], vec![0x9Fu8, 0x07]);
        t.check().unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![-1, -7, 7]);
    }

    #[test]
    fn size_mismatch_is_reported() {
        let t = Tensor::from_raw(DataType::FLOAT, vec![3], vec![0u8; 8]);
        let e = t.check().unwrap_err().to_string();
        assert!(e.contains("needs 12 bytes, found 8"), "{e}");
        let mut t = Tensor::from_raw(DataType::FLOAT, vec![1], vec![0u8; 4]);
        t.data = TensorData::Int64s(vec![1]);
        assert!(t.check().is_err());
    }

    #[test]
    fn float16_and_bfloat16_decode() {
        let h = half::f16::from_f32(0.5).to_le_bytes();
        let t = Tensor::from_raw(DataType::FLOAT16, vec![1], h.to_vec());
        assert_eq!(t.to_f32_vec().unwrap(), vec![0.5]);
        let mut t = Tensor::from_raw(DataType::BFLOAT16, vec![1], vec![]);
        t.data = TensorData::Int32s(vec![half::bf16::from_f32(2.0).to_bits() as i32]);
        t.check().unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![2.0]);
    }
}
