//! Node attributes, kept generically so unknown ops and attributes round-trip losslessly.

use super::tensor::{SparseTensor, Tensor};
use super::types::Type;
use super::Graph;
use bytes::Bytes;

#[derive(Clone, Debug)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(Bytes),
    Tensor(Tensor),
    Graph(Box<Graph>),
    SparseTensor(SparseTensor),
    Type(Type),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Bytes>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
    SparseTensors(Vec<SparseTensor>),
    Types(Vec<Type>),
    /// No value: only legal with `ref_attr_name` inside a function body, or an empty list whose
    /// kind is given by `declared_type`.
    None,
}

#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
    /// `AttributeProto.type` as written, kept so empty lists keep their kind.
    pub declared_type: i32,
    /// Inside a function body: the caller's attribute this one refers to.
    pub ref_attr_name: Option<String>,
    pub doc_string: String,
}

impl Attribute {
    pub fn new(name: impl Into<String>, value: AttrValue) -> Attribute {
        Attribute {
            name: name.into(),
            value,
            declared_type: 0,
            ref_attr_name: None,
            doc_string: String::new(),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        if let AttrValue::Int(v) = self.value {
            Some(v)
        } else {
            None
        }
    }

    pub fn as_ints(&self) -> Option<&[i64]> {
        if let AttrValue::Ints(v) = &self.value {
            Some(v)
        } else {
            None
        }
    }

    /// Subgraphs held by this attribute.
    pub fn graphs(&self) -> impl Iterator<Item = &Graph> {
        let (one, many): (Option<&Graph>, &[Graph]) = match &self.value {
            AttrValue::Graph(g) => (Some(g), &[]),
            AttrValue::Graphs(gs) => (None, gs),
            _ => (None, &[]),
        };
        one.into_iter().chain(many.iter())
    }

    pub fn graphs_mut(&mut self) -> Vec<&mut Graph> {
        match &mut self.value {
            AttrValue::Graph(g) => vec![g.as_mut()],
            AttrValue::Graphs(gs) => gs.iter_mut().collect(),
            _ => vec![],
        }
    }
}
