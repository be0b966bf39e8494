//! Value types (`TypeProto`) in IR form: tensors with optional, possibly symbolic shapes, and the
//! container types (sequence, map, optional, sparse tensor, opaque) kept so they round-trip.

use super::tensor::DataType;
use std::fmt;

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(i64),
    /// A named symbolic dimension such as `batch`.
    Symbol(String),
    /// Dimension present but neither value nor name given.
    Unknown,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShapeDim {
    pub dim: Dim,
    pub denotation: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// `shape: None` means rank unknown.
    Tensor {
        elem: DataType,
        shape: Option<Vec<ShapeDim>>,
    },
    SparseTensor {
        elem: DataType,
        shape: Option<Vec<ShapeDim>>,
    },
    Sequence(Option<Box<Type>>),
    Map {
        key: DataType,
        value: Option<Box<Type>>,
    },
    Optional(Option<Box<Type>>),
    Opaque {
        domain: String,
        name: String,
    },
    /// `TypeProto` with no value set.
    Unset,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    pub kind: TypeKind,
    pub denotation: String,
}

impl Type {
    pub fn tensor(elem: DataType, dims: &[i64]) -> Type {
        Type {
            kind: TypeKind::Tensor {
                elem,
                shape: Some(
                    dims.iter()
                        .map(|&d| ShapeDim {
                            dim: Dim::Fixed(d),
                            denotation: String::new(),
                        })
                        .collect(),
                ),
            },
            denotation: String::new(),
        }
    }

    /// Element type and shape of a tensor type.
    pub fn as_tensor(&self) -> Option<(DataType, Option<&[ShapeDim]>)> {
        match &self.kind {
            TypeKind::Tensor { elem, shape } => Some((*elem, shape.as_deref())),
            _ => None,
        }
    }

    /// All dims, when the type is a tensor with every dim fixed.
    pub fn fixed_dims(&self) -> Option<Vec<i64>> {
        let (_, shape) = self.as_tensor()?;
        shape?
            .iter()
            .map(|d| {
                if let Dim::Fixed(v) = d.dim {
                    Some(v)
                } else {
                    None
                }
            })
            .collect()
    }
}

fn fmt_shape(f: &mut fmt::Formatter<'_>, shape: &Option<Vec<ShapeDim>>) -> fmt::Result {
    match shape {
        None => f.write_str("[?..]"),
        Some(dims) => {
            f.write_str("[")?;
            for (i, d) in dims.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                match &d.dim {
                    Dim::Fixed(v) => write!(f, "{v}")?,
                    Dim::Symbol(s) => f.write_str(s)?,
                    Dim::Unknown => f.write_str("?")?,
                }
            }
            f.write_str("]")
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TypeKind::Tensor { elem, shape } => {
                write!(f, "{elem}")?;
                fmt_shape(f, shape)
            }
            TypeKind::SparseTensor { elem, shape } => {
                write!(f, "sparse {elem}")?;
                fmt_shape(f, shape)
            }
            TypeKind::Sequence(t) => match t {
                Some(t) => write!(f, "seq({t})"),
                None => f.write_str("seq(?)"),
            },
            TypeKind::Map { key, value } => match value {
                Some(v) => write!(f, "map({key},{v})"),
                None => write!(f, "map({key},?)"),
            },
            TypeKind::Optional(t) => match t {
                Some(t) => write!(f, "optional({t})"),
                None => f.write_str("optional(?)"),
            },
            TypeKind::Opaque { domain, name } => write!(f, "opaque({domain}.{name})"),
            TypeKind::Unset => f.write_str("?"),
        }
    }
}
