//! [`ir::Model`] → `ModelProto` bytes, deterministically: nodes in topological order (ties broken by
//! node index, so an imported graph keeps its order), initializers in node order, names as stored.
//!
//! Tensor placement: by default a tensor goes back where it came from (inline or external data).
//! [`DataPolicy::External`] moves every initializer of at least `threshold` bytes to external data;
//! [`DataPolicy::Inline`] brings everything inline. A model whose protobuf would pass the 2 GiB
//! protobuf limit is written with external data automatically (unless inline was demanded, which is
//! then an error). External data goes to one file, `<model file name>.data`, beside the model; the
//! data file and then the model are written to temporary files and renamed into place, so a failed
//! write leaves no partial output and a model is never written over a file it was mapped from.

use crate::ir::{
    self, AttrValue, Attribute, Const, Dim, Graph, Model, NodeKind, Placement, SparseTensor,
    Tensor, TensorData, Type, TypeKind, Value,
};
use crate::onnx;
use bytes::Bytes;
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Protobuf messages cannot exceed 2 GiB - 1 bytes (signed 32-bit sizes in every implementation).
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// Threshold used when external data is forced by size: onnx's own default for
/// `convert_model_to_external_data`, so small tensors (shapes, scalars) stay inline and readable.
pub const DEFAULT_EXTERNAL_THRESHOLD: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DataPolicy {
    /// Every tensor where it was read from.
    #[default]
    Keep,
    /// Initializers of at least `threshold` bytes go to external data.
    External { threshold: usize },
    /// Everything inline.
    Inline,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("graph '{graph}': {source}")]
    Graph {
        graph: String,
        source: ir::GraphError,
    },
    #[error("the model needs {size} bytes of protobuf, over the 2 GiB limit; drop --inline-data to write external data")]
    TooLarge { size: u64 },
    #[error("cannot write '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a file in '{dir}': {source}")]
    CreateIn {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("tensor '{0}' holds strings and cannot be written as external data")]
    StringExternal(String),
}

/// Tensor bytes headed for the external-data file, with their offsets.
#[derive(Default)]
pub struct DataFile {
    /// Location written into `external_data`, relative to the model's folder.
    pub location: String,
    pub segments: Vec<(u64, Bytes)>,
    pub len: u64,
}

impl DataFile {
    fn push(&mut self, bytes: Bytes) -> (u64, u64) {
        // Large tensors start on a page boundary so runtimes can map them directly.
        let align = if bytes.len() >= 64 * 1024 { 4096 } else { 64 };
        let offset = self.len.div_ceil(align) * align;
        let len = bytes.len() as u64;
        self.len = offset + len;
        self.segments.push((offset, bytes));
        (offset, len)
    }

    /// Writes the segments, zero-filling the alignment gaps.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut pos = 0u64;
        let zeros = [0u8; 4096];
        for (offset, bytes) in &self.segments {
            while pos < *offset {
                let n = ((*offset - pos) as usize).min(zeros.len());
                w.write_all(&zeros[..n])?;
                pos += n as u64;
            }
            w.write_all(bytes)?;
            pos += bytes.len() as u64;
        }
        Ok(())
    }
}

struct Cx<'a> {
    policy: DataPolicy,
    data: &'a mut DataFile,
    ir_version: i64,
}

/// Builds the `ModelProto`. External tensors are appended to `data`.
pub fn to_proto(
    model: &Model,
    policy: DataPolicy,
    data: &mut DataFile,
) -> Result<onnx::ModelProto, ExportError> {
    let mut cx = Cx {
        policy,
        data,
        ir_version: model.ir_version,
    };
    let graph = cx.graph(&model.graph)?;
    let functions = model
        .functions
        .iter()
        .map(|f| cx.function(f))
        .collect::<Result<_, _>>()?;
    Ok(onnx::ModelProto {
        ir_version: Some(model.ir_version),
        opset_import: opsets(&model.opset_imports),
        producer_name: some(&model.producer_name),
        producer_version: some(&model.producer_version),
        domain: some(&model.domain),
        model_version: if model.model_version != 0 {
            Some(model.model_version)
        } else {
            None
        },
        doc_string: some(&model.doc_string),
        graph: Some(graph),
        metadata_props: props(&model.metadata_props),
        training_info: model
            .training_info
            .iter()
            .map(|b| onnx::TrainingInfoProto::decode(b.clone()).expect("kept from a decoded model"))
            .collect(),
        functions,
        configuration: model
            .configuration
            .iter()
            .map(|b| {
                onnx::DeviceConfigurationProto::decode(b.clone())
                    .expect("kept from a decoded model")
            })
            .collect(),
    })
}

/// Serialises a model to bytes with every tensor inline (for running it in memory, e.g. in tract).
pub fn to_bytes_inline(model: &Model) -> Result<Vec<u8>, ExportError> {
    let mut data = DataFile::default();
    let proto = to_proto(model, DataPolicy::Inline, &mut data)?;
    let size = proto.encoded_len() as u64;
    if size > PROTOBUF_LIMIT {
        return Err(ExportError::TooLarge { size });
    }
    Ok(proto.encode_to_vec())
}

/// Bytes for shape inference only: float initializers of at least 1 KiB become graph inputs with
/// their exact type instead of data, so an analyser sees every shape without parsing the weights.
/// Integer initializers (shapes, axes, indices) stay, since shape computations read their values.
pub fn to_bytes_for_shapes(model: &Model) -> Result<Vec<u8>, ExportError> {
    let mut data = DataFile::default();
    let mut proto = to_proto(model, DataPolicy::Inline, &mut data)?;
    if let Some(g) = proto.graph.as_mut() {
        let mut kept = Vec::with_capacity(g.initializer.len());
        let declared: std::collections::HashSet<String> =
            g.input.iter().filter_map(|i| i.name.clone()).collect();
        for t in std::mem::take(&mut g.initializer) {
            let dt = ir::DataType(t.data_type.unwrap_or(0));
            let bytes = t.raw_data.as_ref().map(|b| b.len()).unwrap_or(0)
                + t.float_data.len() * 4
                + t.double_data.len() * 8;
            let name = t.name.clone().unwrap_or_default();
            if dt.is_float() && bytes >= 1024 && !declared.contains(&name) {
                g.input
                    .push(value_info(&name, &Some(Type::tensor(dt, &t.dims)), "", &[]));
            } else {
                kept.push(t);
            }
        }
        g.initializer = kept;
    }
    Ok(proto.encode_to_vec())
}

/// What [`save`] wrote.
#[derive(Debug, Clone)]
pub struct Saved {
    pub model_bytes: u64,
    /// The external-data file and its size, if one was written.
    pub data_file: Option<(PathBuf, u64)>,
    /// External data was chosen because the model would pass the protobuf limit.
    pub forced_external: bool,
}

/// Writes `model` to `path` (and `<path>.data` when tensors go external), atomically.
pub fn save(model: &Model, path: &Path, policy: DataPolicy) -> Result<Saved, ExportError> {
    save_with_limit(model, path, policy, PROTOBUF_LIMIT)
}

/// [`save`] with the protobuf size limit as a parameter, so the automatic switch to external data
/// can be tested without writing 2 GiB.
fn save_with_limit(
    model: &Model,
    path: &Path,
    policy: DataPolicy,
    limit: u64,
) -> Result<Saved, ExportError> {
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".into());
    let location = format!("{file_name}.data");
    let mut data = DataFile {
        location: location.clone(),
        ..DataFile::default()
    };
    let mut proto = to_proto(model, policy, &mut data)?;
    let mut forced_external = false;
    if proto.encoded_len() as u64 > limit {
        if policy == DataPolicy::Inline {
            return Err(ExportError::TooLarge {
                size: proto.encoded_len() as u64,
            });
        }
        data = DataFile {
            location: location.clone(),
            ..DataFile::default()
        };
        proto = to_proto(
            model,
            DataPolicy::External {
                threshold: DEFAULT_EXTERNAL_THRESHOLD,
            },
            &mut data,
        )?;
        forced_external = true;
        if proto.encoded_len() as u64 > limit {
            return Err(ExportError::TooLarge {
                size: proto.encoded_len() as u64,
            });
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ExportError::Io { path: p, source }
    };
    let data_file = if data.segments.is_empty() {
        None
    } else {
        let data_path = dir.join(&location);
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).map_err(|source| ExportError::CreateIn {
                dir: dir.clone(),
                source: plain(source),
            })?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            data.write_to(&mut w).map_err(io(&data_path))?;
            w.flush().map_err(io(&data_path))?;
        }
        tmp.persist(&data_path).map_err(|e| ExportError::Io {
            path: data_path.clone(),
            source: e.error,
        })?;
        Some((data_path, data.len))
    };
    let bytes = proto.encode_to_vec();
    let mut tmp =
        tempfile::NamedTempFile::new_in(&dir).map_err(|source| ExportError::CreateIn {
            dir: dir.clone(),
            source: plain(source),
        })?;
    tmp.write_all(&bytes).map_err(io(path))?;
    tmp.persist(path).map_err(|e| ExportError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(Saved {
        model_bytes: bytes.len() as u64,
        data_file,
        forced_external,
    })
}

/// tempfile decorates errors with the random temp path; the user only needs the cause.
fn plain(e: std::io::Error) -> std::io::Error {
    std::io::Error::from(e.kind())
}

fn some(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn opsets(v: &[(String, i64)]) -> Vec<onnx::OperatorSetIdProto> {
    v.iter()
        .map(|(d, ver)| onnx::OperatorSetIdProto {
            domain: Some(d.clone()),
            version: Some(*ver),
        })
        .collect()
}

fn props(v: &[(String, String)]) -> Vec<onnx::StringStringEntryProto> {
    v.iter()
        .map(|(k, val)| onnx::StringStringEntryProto {
            key: Some(k.clone()),
            value: Some(val.clone()),
        })
        .collect()
}

fn value_info(
    name: &str,
    ty: &Option<Type>,
    doc: &str,
    meta: &[(String, String)],
) -> onnx::ValueInfoProto {
    onnx::ValueInfoProto {
        name: Some(name.to_string()),
        r#type: ty.as_ref().map(type_proto),
        doc_string: some(doc),
        metadata_props: props(meta),
    }
}

fn shape_proto(dims: &Option<Vec<ir::ShapeDim>>) -> Option<onnx::TensorShapeProto> {
    use onnx::tensor_shape_proto::{dimension::Value as D, Dimension};
    dims.as_ref().map(|dims| onnx::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: some(&d.denotation),
                value: match &d.dim {
                    Dim::Fixed(v) => Some(D::DimValue(*v)),
                    Dim::Symbol(s) => Some(D::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
            })
            .collect(),
    })
}

pub(crate) fn type_proto(t: &Type) -> onnx::TypeProto {
    use onnx::type_proto::{self as tp, Value as V};
    let value = match &t.kind {
        TypeKind::Tensor { elem, shape } => Some(V::TensorType(tp::Tensor {
            elem_type: Some(elem.0),
            shape: shape_proto(shape),
        })),
        TypeKind::SparseTensor { elem, shape } => Some(V::SparseTensorType(tp::SparseTensor {
            elem_type: Some(elem.0),
            shape: shape_proto(shape),
        })),
        TypeKind::Sequence(e) => Some(V::SequenceType(Box::new(tp::Sequence {
            elem_type: e.as_ref().map(|e| Box::new(type_proto(e))),
        }))),
        TypeKind::Map { key, value } => Some(V::MapType(Box::new(tp::Map {
            key_type: Some(key.0),
            value_type: value.as_ref().map(|e| Box::new(type_proto(e))),
        }))),
        TypeKind::Optional(e) => Some(V::OptionalType(Box::new(tp::Optional {
            elem_type: e.as_ref().map(|e| Box::new(type_proto(e))),
        }))),
        TypeKind::Opaque { domain, name } => Some(V::OpaqueType(tp::Opaque {
            domain: some(domain),
            name: some(name),
        })),
        TypeKind::Unset => None,
    };
    onnx::TypeProto {
        value,
        denotation: some(&t.denotation),
    }
}

impl Cx<'_> {
    fn graph(&mut self, g: &Graph) -> Result<onnx::GraphProto, ExportError> {
        let order = g.topo_order().map_err(|source| ExportError::Graph {
            graph: g.name.clone(),
            source,
        })?;
        let mut gp = onnx::GraphProto {
            name: some(&g.name),
            doc_string: some(&g.doc_string),
            metadata_props: props(&g.metadata_props),
            quantization_annotation: g
                .quantization_annotation
                .iter()
                .map(|b| {
                    onnx::TensorAnnotation::decode(b.clone()).expect("kept from a decoded model")
                })
                .collect(),
            ..Default::default()
        };
        for &i in g.inputs() {
            let v = &g.node(i).outputs[0];
            gp.input
                .push(value_info(&v.name, &v.ty, &v.doc_string, &v.metadata_props));
        }
        // Initializers (and overridable input defaults) in node index order.
        for (_, n) in g.nodes() {
            // Op nodes may have no outputs at all (found by fuzzing); only constants need a name.
            let Some(name) = n.outputs.first().map(|o| &o.name) else {
                continue;
            };
            match &n.kind {
                NodeKind::Input { default: Some(t) } => {
                    gp.initializer.push(self.tensor(t, name, true)?)
                }
                NodeKind::Initializer(Const::Dense(t)) => {
                    gp.initializer.push(self.tensor(t, name, true)?);
                    if self.ir_version < 4 {
                        // IR < 4 requires every initializer to be listed among the inputs too.
                        let ty = Some(Type::tensor(t.dtype, &t.dims));
                        gp.input.push(value_info(name, &ty, "", &[]));
                    }
                }
                NodeKind::Initializer(Const::Sparse(s)) => {
                    gp.sparse_initializer.push(self.sparse(s, name)?)
                }
                _ => {}
            }
        }
        for &id in &order {
            let n = g.node(id);
            if let NodeKind::Op(op) = &n.kind {
                let mut inputs: Vec<String> = n
                    .inputs()
                    .iter()
                    .map(|v| v.map(|v| g.value(v).name.clone()).unwrap_or_default())
                    .collect();
                while inputs.last().is_some_and(String::is_empty) {
                    inputs.pop();
                }
                gp.node.push(onnx::NodeProto {
                    input: inputs,
                    output: n.outputs.iter().map(|v| v.name.clone()).collect(),
                    name: some(&n.name),
                    op_type: Some(op.op_type.clone()),
                    domain: some(&op.domain),
                    overload: some(&op.overload),
                    attribute: op
                        .attributes
                        .iter()
                        .map(|a| self.attribute(a))
                        .collect::<Result<_, _>>()?,
                    doc_string: some(&n.doc_string),
                    metadata_props: props(&n.metadata_props),
                    device_configurations: op
                        .device_configurations
                        .iter()
                        .map(|b| {
                            onnx::NodeDeviceConfigurationProto::decode(b.clone())
                                .expect("kept from a decoded model")
                        })
                        .collect(),
                });
            }
        }
        for o in &g.outputs {
            gp.output.push(value_info(
                &g.value(o.value).name,
                &o.ty,
                &o.doc_string,
                &o.metadata_props,
            ));
        }
        for &id in &order {
            let n = g.node(id);
            if matches!(n.kind, NodeKind::Input { .. }) {
                continue;
            }
            for v in &n.outputs {
                if !v.name.is_empty()
                    && (v.ty.is_some() || !v.doc_string.is_empty() || !v.metadata_props.is_empty())
                {
                    gp.value_info.push(value_info(
                        &v.name,
                        &v.ty,
                        &v.doc_string,
                        &v.metadata_props,
                    ));
                }
            }
        }
        for v in &g.extra_value_info {
            let Value {
                name,
                ty,
                doc_string,
                metadata_props,
            } = v;
            gp.value_info
                .push(value_info(name, ty, doc_string, metadata_props));
        }
        Ok(gp)
    }

    fn function(&mut self, f: &ir::Function) -> Result<onnx::FunctionProto, ExportError> {
        let body = self.graph(&f.body)?;
        Ok(onnx::FunctionProto {
            name: some(&f.name),
            input: body
                .input
                .iter()
                .map(|v| v.name.clone().unwrap_or_default())
                .collect(),
            output: body
                .output
                .iter()
                .map(|v| v.name.clone().unwrap_or_default())
                .collect(),
            attribute: f.attributes.clone(),
            attribute_proto: f
                .attribute_protos
                .iter()
                .map(|a| self.attribute(a))
                .collect::<Result<_, _>>()?,
            node: body.node,
            doc_string: some(&f.doc_string),
            opset_import: opsets(&f.opset_imports),
            domain: some(&f.domain),
            overload: some(&f.overload),
            value_info: body.value_info,
            metadata_props: props(&f.metadata_props),
        })
    }

    fn attribute(&mut self, a: &Attribute) -> Result<onnx::AttributeProto, ExportError> {
        use onnx::attribute_proto::AttributeType as T;
        let mut ap = onnx::AttributeProto {
            name: Some(a.name.clone()),
            ref_attr_name: a.ref_attr_name.clone(),
            doc_string: some(&a.doc_string),
            ..Default::default()
        };
        let ty = match &a.value {
            AttrValue::Float(f) => {
                ap.f = Some(*f);
                T::Float
            }
            AttrValue::Int(i) => {
                ap.i = Some(*i);
                T::Int
            }
            AttrValue::String(s) => {
                ap.s = Some(s.clone());
                T::String
            }
            AttrValue::Tensor(t) => {
                ap.t = Some(self.tensor(t, &t.name, false)?);
                T::Tensor
            }
            AttrValue::Graph(g) => {
                ap.g = Some(self.graph(g)?);
                T::Graph
            }
            AttrValue::SparseTensor(s) => {
                ap.sparse_tensor = Some(self.sparse(s, &s.values.name)?);
                T::SparseTensor
            }
            AttrValue::Type(t) => {
                ap.tp = Some(type_proto(t));
                T::TypeProto
            }
            AttrValue::Floats(v) => {
                ap.floats = v.clone();
                T::Floats
            }
            AttrValue::Ints(v) => {
                ap.ints = v.clone();
                T::Ints
            }
            AttrValue::Strings(v) => {
                ap.strings = v.clone();
                T::Strings
            }
            AttrValue::Tensors(v) => {
                ap.tensors = v
                    .iter()
                    .map(|t| self.tensor(t, &t.name, false))
                    .collect::<Result<_, _>>()?;
                T::Tensors
            }
            AttrValue::Graphs(v) => {
                ap.graphs = v.iter().map(|g| self.graph(g)).collect::<Result<_, _>>()?;
                T::Graphs
            }
            AttrValue::SparseTensors(v) => {
                ap.sparse_tensors = v
                    .iter()
                    .map(|s| self.sparse(s, &s.values.name))
                    .collect::<Result<_, _>>()?;
                T::SparseTensors
            }
            AttrValue::Types(v) => {
                ap.type_protos = v.iter().map(type_proto).collect();
                T::TypeProtos
            }
            AttrValue::None => T::Undefined,
        };
        let declared = if a.declared_type != 0 {
            a.declared_type
        } else {
            ty as i32
        };
        ap.r#type = if declared != 0 { Some(declared) } else { None };
        Ok(ap)
    }

    fn sparse(
        &mut self,
        s: &SparseTensor,
        name: &str,
    ) -> Result<onnx::SparseTensorProto, ExportError> {
        Ok(onnx::SparseTensorProto {
            values: Some(self.tensor(&s.values, name, false)?),
            indices: Some(self.tensor(&s.indices, &s.indices.name, false)?),
            dims: s.dims.clone(),
        })
    }

    /// `initializer` is true for graph initializers: only those move to external data on request.
    fn tensor(
        &mut self,
        t: &Tensor,
        name: &str,
        initializer: bool,
    ) -> Result<onnx::TensorProto, ExportError> {
        let mut tp = onnx::TensorProto {
            dims: t.dims.clone(),
            data_type: Some(t.dtype.0),
            name: some(name),
            doc_string: some(&t.doc_string),
            metadata_props: props(&t.metadata_props),
            segment: t.segment.as_ref().map(|b| {
                onnx::tensor_proto::Segment::decode(b.clone()).expect("kept from a decoded model")
            }),
            ..Default::default()
        };
        let is_string = matches!(t.data, TensorData::Strings(_));
        let external = match self.policy {
            DataPolicy::Inline => false,
            DataPolicy::Keep => t.placement == Placement::External,
            DataPolicy::External { threshold } => {
                t.placement == Placement::External
                    || (initializer && !is_string && t.byte_size() >= threshold)
            }
        };
        if external {
            let bytes = t
                .to_le_bytes()
                .ok_or_else(|| ExportError::StringExternal(name.to_string()))?;
            let (offset, length) = self.data.push(bytes);
            tp.data_location = Some(onnx::tensor_proto::DataLocation::External as i32);
            tp.external_data = props(&[
                ("location".into(), self.data.location.clone()),
                ("offset".into(), offset.to_string()),
                ("length".into(), length.to_string()),
            ]);
            return Ok(tp);
        }
        match &t.data {
            TensorData::Raw(b) => tp.raw_data = Some(b.clone()),
            TensorData::Floats(v) => tp.float_data = v.clone(),
            TensorData::Int32s(v) => tp.int32_data = v.clone(),
            TensorData::Int64s(v) => tp.int64_data = v.clone(),
            TensorData::Doubles(v) => tp.double_data = v.clone(),
            TensorData::Uint64s(v) => tp.uint64_data = v.clone(),
            TensorData::Strings(v) => tp.string_data = v.clone(),
        }
        Ok(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Graph, GraphOutput, Node, NodeKind, Op, Value, ValueId};
    use std::sync::Arc;

    fn model_with_weight(n: usize) -> Model {
        let mut g = Graph::new("g");
        let w = Tensor::from_f32(vec![n as i64], &vec![0.5; n]);
        let wid = g.add_node(Node::new(
            "",
            NodeKind::Initializer(Const::Dense(Arc::new(w))),
            vec![],
            vec![Value::named("w")],
        ));
        let r = g.add_node(Node::new(
            "relu",
            NodeKind::Op(Op::new("Relu")),
            vec![Some(ValueId {
                node: wid,
                output: 0,
            })],
            vec![Value::named("y")],
        ));
        g.outputs.push(GraphOutput {
            value: ValueId { node: r, output: 0 },
            ty: None,
            doc_string: String::new(),
            metadata_props: vec![],
        });
        Model {
            ir_version: 8,
            opset_imports: vec![(String::new(), 17)],
            graph: g,
            ..Model::default()
        }
    }

    #[test]
    fn over_the_limit_goes_external_automatically() {
        let dir = tempfile::tempdir().unwrap();
        let m = model_with_weight(10_000);
        let out = dir.path().join("m.onnx");
        let saved = save_with_limit(&m, &out, DataPolicy::Keep, 20_000).unwrap();
        assert!(saved.forced_external);
        let (data, len) = saved.data_file.unwrap();
        assert_eq!(len, 40_000);
        assert_eq!(data.file_name().unwrap(), "m.onnx.data");
        assert!(saved.model_bytes < 1_000);
        let back = crate::import::load(&out).unwrap();
        let w = back.graph.find_value("w").unwrap();
        assert_eq!(
            back.graph.constant(w).unwrap().to_f32_vec().unwrap(),
            vec![0.5; 10_000]
        );
        // Demanding inline data over the limit is an error, and nothing is written.
        let out2 = dir.path().join("inline.onnx");
        let e = save_with_limit(&m, &out2, DataPolicy::Inline, 20_000).unwrap_err();
        assert!(e.to_string().contains("2 GiB"), "{e}");
        assert!(!out2.exists());
    }
}
