//! `ModelProto` bytes → [`ir::Model`].
//!
//! The file is memory-mapped and decoded from a `bytes::Bytes` view of the map, so tensor payloads
//! stay slices of the file. External data is resolved relative to the model's folder and mapped the
//! same way. Names are resolved in two steps (collect every name a graph defines, then wire inputs),
//! so unsorted node lists import fine and cycles are reported by validation, not by a stack overflow.
//! Subgraph names not defined inside the subgraph are looked up in the enclosing scopes and become
//! [`NodeKind::Capture`] nodes plus implicit uses on the node owning the subgraph.

mod external;

use crate::ir::{
    self, AttrValue, Attribute, Const, DataType, Dim, Function, Graph, GraphOutput, Model, Node,
    NodeKind, Op, Placement, ShapeDim, SparseTensor, Tensor, TensorData, Type, TypeKind, Value,
    ValueId,
};
use crate::onnx;
use bytes::Bytes;
use prost::Message;
// FxHash: value names are trusted-enough keys and SipHash was a visible part of load time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use external::ExternalFiles;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("is a directory, not an ONNX model file")]
    IsDirectory(PathBuf),
    #[error("the file is empty, not an ONNX model")]
    Empty(PathBuf),
    #[error("not an ONNX model (protobuf decoding failed: {0}); the file may be truncated or of another format")]
    Decode(String),
    #[error("not an ONNX model: no graph in the ModelProto")]
    NoGraph,
    #[error("not an ONNX model: ir_version is missing or 0")]
    NoIrVersion,
    #[error("{0}")]
    Tensor(#[from] ir::tensor::TensorError),
    #[error("node '{node}' input {slot} '{name}' is not produced by any node, graph input or initializer")]
    UndefinedInput {
        node: String,
        slot: usize,
        name: String,
    },
    #[error(
        "graph '{graph}' output '{name}' is not produced by any node, graph input or initializer"
    )]
    UndefinedOutput { graph: String, name: String },
    #[error("value name '{name}' is defined twice in graph '{graph}'")]
    DuplicateName { graph: String, name: String },
    #[error("external data of tensor '{tensor}': {message}")]
    External { tensor: String, message: String },
    #[error("node '{node}' attribute '{attr}': {message}")]
    Attribute {
        node: String,
        attr: String,
        message: String,
    },
    #[error("sparse initializer '{name}': {message}")]
    Sparse { name: String, message: String },
    #[error("{0}")]
    Validate(#[from] ir::validate::ValidateError),
}

/// Loads, imports and validates a model file.
pub fn load(path: &Path) -> Result<Model, ImportError> {
    load_with_files(path).map(|(m, _)| m)
}

/// [`load`], also returning the external-data files read (relative to the model's folder).
pub fn load_with_files(path: &Path) -> Result<(Model, Vec<PathBuf>), ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(ImportError::IsDirectory(path.to_path_buf()));
    }
    if meta.len() == 0 {
        return Err(ImportError::Empty(path.to_path_buf()));
    }
    let bytes = external::map_file(path).map_err(io)?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    decode_import(bytes, base)
}

fn decode_import(
    bytes: Bytes,
    base_dir: Option<&Path>,
) -> Result<(Model, Vec<PathBuf>), ImportError> {
    if bytes.is_empty() {
        return Err(ImportError::Decode("empty input".into()));
    }
    let proto = onnx::ModelProto::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    let (model, files) = import_proto(proto, base_dir)?;
    ir::validate::validate(&model)?;
    Ok((model, files))
}

/// Imports a model held in memory. `base_dir` is where external data lives; `None` makes any
/// external tensor an error.
pub fn from_bytes(bytes: Bytes, base_dir: Option<&Path>) -> Result<Model, ImportError> {
    decode_import(bytes, base_dir).map(|(m, _)| m)
}

/// Imports a decoded `ModelProto` (no validation).
pub fn from_proto(proto: onnx::ModelProto, base_dir: Option<&Path>) -> Result<Model, ImportError> {
    import_proto(proto, base_dir).map(|(m, _)| m)
}

fn import_proto(
    proto: onnx::ModelProto,
    base_dir: Option<&Path>,
) -> Result<(Model, Vec<PathBuf>), ImportError> {
    let ir_version = proto.ir_version.unwrap_or(0);
    if ir_version <= 0 {
        return Err(ImportError::NoIrVersion);
    }
    let gp = proto.graph.ok_or(ImportError::NoGraph)?;
    let mut cx = Cx {
        ext: ExternalFiles::new(base_dir.map(Path::to_path_buf)),
        ir_version,
    };
    let (graph, captures) = cx.graph(gp, None)?;
    if let Some(name) = captures.into_iter().next() {
        return Err(ImportError::UndefinedInput {
            node: "<main graph>".into(),
            slot: 0,
            name,
        });
    }
    let functions = proto
        .functions
        .into_iter()
        .map(|f| cx.function(f))
        .collect::<Result<_, _>>()?;
    let mut files: Vec<PathBuf> = cx.ext.files().map(Path::to_path_buf).collect();
    files.sort();
    let model = Model {
        ir_version,
        opset_imports: opsets(proto.opset_import),
        producer_name: proto.producer_name.unwrap_or_default(),
        producer_version: proto.producer_version.unwrap_or_default(),
        domain: proto.domain.unwrap_or_default(),
        model_version: proto.model_version.unwrap_or(0),
        doc_string: proto.doc_string.unwrap_or_default(),
        metadata_props: props(proto.metadata_props),
        graph,
        functions,
        training_info: proto
            .training_info
            .iter()
            .map(|t| Bytes::from(t.encode_to_vec()))
            .collect(),
        configuration: proto
            .configuration
            .iter()
            .map(|t| Bytes::from(t.encode_to_vec()))
            .collect(),
    };
    Ok((model, files))
}

fn opsets(v: Vec<onnx::OperatorSetIdProto>) -> Vec<(String, i64)> {
    v.into_iter()
        .map(|o| (o.domain.unwrap_or_default(), o.version.unwrap_or(0)))
        .collect()
}

fn props(v: Vec<onnx::StringStringEntryProto>) -> Vec<(String, String)> {
    v.into_iter()
        .map(|p| (p.key.unwrap_or_default(), p.value.unwrap_or_default()))
        .collect()
}

/// Names visible from enclosing graphs.
struct Scope<'a> {
    names: &'a HashSet<String>,
    parent: Option<&'a Scope<'a>>,
}

impl Scope<'_> {
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name) || self.parent.is_some_and(|p| p.contains(name))
    }
}

struct Cx {
    ext: ExternalFiles,
    ir_version: i64,
}

impl Cx {
    /// Imports a graph; returns it with the outer names it captures (in first-use order).
    fn graph(
        &mut self,
        gp: onnx::GraphProto,
        outer: Option<&Scope>,
    ) -> Result<(Graph, Vec<String>), ImportError> {
        let gname = gp.name.clone().unwrap_or_default();
        let node_count =
            gp.input.len() + gp.initializer.len() + gp.sparse_initializer.len() + gp.node.len();
        let edge_count: usize = gp.node.iter().map(|n| n.input.len()).sum();
        let mut g = Graph::with_capacity(gname.clone(), node_count, edge_count);
        g.doc_string = gp.doc_string.unwrap_or_default();
        g.metadata_props = props(gp.metadata_props);
        g.quantization_annotation = gp
            .quantization_annotation
            .iter()
            .map(|q| Bytes::from(q.encode_to_vec()))
            .collect();

        // Every name this graph defines, so subgraphs can tell outer references from undefined ones.
        // Only needed (and only built) when some node holds a subgraph.
        let mut defined: HashSet<String> = HashSet::default();
        if gp.node.iter().any(|n| {
            n.attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
        }) {
            defined.extend(gp.input.iter().filter_map(|v| v.name.clone()));
            defined.extend(gp.initializer.iter().filter_map(|t| t.name.clone()));
            defined.extend(
                gp.sparse_initializer
                    .iter()
                    .filter_map(|s| s.values.as_ref().and_then(|v| v.name.clone())),
            );
            defined.extend(
                gp.node
                    .iter()
                    .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned()),
            );
        }
        let scope = Scope {
            names: &defined,
            parent: outer,
        };

        let mut by_name: HashMap<String, ValueId> =
            HashMap::with_capacity_and_hasher(node_count * 2, Default::default());
        let define = |g: &Graph, name: &str, v: ValueId, map: &mut HashMap<String, ValueId>| {
            let _ = g;
            if name.is_empty() {
                return Ok(());
            }
            if map.insert(name.to_string(), v).is_some() {
                return Err(ImportError::DuplicateName {
                    graph: gname.clone(),
                    name: name.to_string(),
                });
            }
            Ok(())
        };

        let mut inits: Vec<(String, Tensor)> = Vec::with_capacity(gp.initializer.len());
        for tp in gp.initializer {
            let t = self.tensor(tp)?;
            inits.push((t.name.clone(), t));
        }
        let init_names: HashMap<String, usize> = inits
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let mut init_slots: Vec<Option<Tensor>> = inits.into_iter().map(|(_, t)| Some(t)).collect();

        for vi in gp.input {
            let value = value_info(vi);
            match init_names.get(&value.name) {
                // IR < 4 lists every initializer among the inputs: those are weights.
                Some(_) if self.ir_version < 4 => continue,
                Some(&i) => {
                    // A graph input listed twice under an initializer's name (found by fuzzing).
                    let Some(t) = init_slots[i].take() else {
                        return Err(ImportError::DuplicateName {
                            name: value.name.clone(),
                            graph: gp.name.clone().unwrap_or_default(),
                        });
                    };
                    let name = value.name.clone();
                    let id = g.add_node(Node::new(
                        "",
                        NodeKind::Input {
                            default: Some(Arc::new(t)),
                        },
                        vec![],
                        vec![value],
                    ));
                    define(
                        &g,
                        &name,
                        ValueId {
                            node: id,
                            output: 0,
                        },
                        &mut by_name,
                    )?;
                }
                None => {
                    let name = value.name.clone();
                    let id = g.add_node(Node::new(
                        "",
                        NodeKind::Input { default: None },
                        vec![],
                        vec![value],
                    ));
                    define(
                        &g,
                        &name,
                        ValueId {
                            node: id,
                            output: 0,
                        },
                        &mut by_name,
                    )?;
                }
            }
        }
        for t in init_slots.into_iter().flatten() {
            let name = t.name.clone();
            let id = g.add_node(Node::new(
                "",
                NodeKind::Initializer(Const::Dense(Arc::new(t))),
                vec![],
                vec![Value::named(name.clone())],
            ));
            define(
                &g,
                &name,
                ValueId {
                    node: id,
                    output: 0,
                },
                &mut by_name,
            )?;
        }
        for sp in gp.sparse_initializer {
            let s = self.sparse(sp)?;
            let name = s.values.name.clone();
            let id = g.add_node(Node::new(
                "",
                NodeKind::Initializer(Const::Sparse(Arc::new(s))),
                vec![],
                vec![Value::named(name.clone())],
            ));
            define(
                &g,
                &name,
                ValueId {
                    node: id,
                    output: 0,
                },
                &mut by_name,
            )?;
        }

        // Operators, unwired: inputs are resolved once every name is known.
        let mut pending: Vec<(ir::NodeId, Vec<String>, Vec<String>)> =
            Vec::with_capacity(gp.node.len());
        for np in gp.node {
            let name = np.name.clone().unwrap_or_default();
            let mut sub_captures: Vec<String> = Vec::new();
            let mut attributes = Vec::with_capacity(np.attribute.len());
            for ap in np.attribute {
                attributes.push(self.attribute(ap, &name, Some(&scope), &mut sub_captures)?);
            }
            let op = Op {
                domain: np.domain.unwrap_or_default(),
                op_type: np.op_type.unwrap_or_default(),
                overload: np.overload.unwrap_or_default(),
                attributes,
                device_configurations: np
                    .device_configurations
                    .iter()
                    .map(|d| Bytes::from(d.encode_to_vec()))
                    .collect(),
            };
            let outputs: Vec<Value> = np.output.iter().map(|o| Value::named(o.clone())).collect();
            let mut node = Node::new(name, NodeKind::Op(op), vec![], outputs);
            node.doc_string = np.doc_string.unwrap_or_default();
            node.metadata_props = props(np.metadata_props);
            let id = g.add_node(node);
            for (k, o) in np.output.iter().enumerate() {
                define(
                    &g,
                    o,
                    ValueId {
                        node: id,
                        output: k,
                    },
                    &mut by_name,
                )?;
            }
            pending.push((id, np.input, sub_captures));
        }

        // Outer names read here become capture nodes.
        let mut captures: Vec<String> = Vec::new();
        let mut resolve = |g: &mut Graph,
                           name: &str,
                           by_name: &mut HashMap<String, ValueId>|
         -> Option<ValueId> {
            if let Some(&v) = by_name.get(name) {
                return Some(v);
            }
            if outer.is_some_and(|o| o.contains(name)) {
                let id = g.add_node(Node::new(
                    "",
                    NodeKind::Capture,
                    vec![],
                    vec![Value::named(name)],
                ));
                let v = ValueId {
                    node: id,
                    output: 0,
                };
                by_name.insert(name.to_string(), v);
                captures.push(name.to_string());
                return Some(v);
            }
            None
        };
        for (id, input_names, sub_captures) in pending {
            let mut inputs = Vec::with_capacity(input_names.len());
            for (slot, name) in input_names.iter().enumerate() {
                if name.is_empty() {
                    inputs.push(None);
                    continue;
                }
                match resolve(&mut g, name, &mut by_name) {
                    Some(v) => inputs.push(Some(v)),
                    None => {
                        return Err(ImportError::UndefinedInput {
                            node: g.node(id).display_name().to_string(),
                            slot,
                            name: name.clone(),
                        })
                    }
                }
            }
            // Trailing omitted inputs carry no information; export drops them too.
            while inputs.last().is_some_and(Option::is_none) {
                inputs.pop();
            }
            g.set_inputs(id, inputs);
            if !sub_captures.is_empty() {
                let mut implicit = Vec::with_capacity(sub_captures.len());
                for name in &sub_captures {
                    // Subgraph import only records names its enclosing scopes define.
                    let v = resolve(&mut g, name, &mut by_name).ok_or_else(|| {
                        ImportError::UndefinedInput {
                            node: g.node(id).display_name().to_string(),
                            slot: 0,
                            name: name.clone(),
                        }
                    })?;
                    implicit.push(v);
                }
                g.set_implicit_inputs(id, implicit);
            }
        }

        for vi in gp.output {
            let info = value_info(vi);
            let value = resolve(&mut g, &info.name, &mut by_name).ok_or_else(|| {
                ImportError::UndefinedOutput {
                    graph: gname.clone(),
                    name: info.name.clone(),
                }
            })?;
            g.outputs.push(GraphOutput {
                value,
                ty: info.ty,
                doc_string: info.doc_string,
                metadata_props: info.metadata_props,
            });
        }

        for vi in gp.value_info {
            let info = value_info(vi);
            match by_name.get(&info.name) {
                Some(&v)
                    if !matches!(g.node(v.node).kind, NodeKind::Input { .. })
                        && g.value(v).ty.is_none()
                        && g.value(v).doc_string.is_empty() =>
                {
                    let slot = g.value_mut(v);
                    slot.ty = info.ty;
                    slot.doc_string = info.doc_string;
                    slot.metadata_props = info.metadata_props;
                }
                _ => g.extra_value_info.push(info),
            }
        }
        Ok((g, captures))
    }

    fn function(&mut self, f: onnx::FunctionProto) -> Result<Function, ImportError> {
        let gp = onnx::GraphProto {
            name: f.name.clone(),
            node: f.node,
            input: f
                .input
                .iter()
                .map(|n| onnx::ValueInfoProto {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
            output: f
                .output
                .iter()
                .map(|n| onnx::ValueInfoProto {
                    name: Some(n.clone()),
                    ..Default::default()
                })
                .collect(),
            value_info: f.value_info,
            ..Default::default()
        };
        let fname = f.name.clone().unwrap_or_default();
        let (body, captures) = self.graph(gp, None)?;
        if let Some(name) = captures.into_iter().next() {
            return Err(ImportError::UndefinedInput {
                node: format!("function {fname}"),
                slot: 0,
                name,
            });
        }
        let mut sink = Vec::new();
        let attribute_protos = f
            .attribute_proto
            .into_iter()
            .map(|a| self.attribute(a, &fname, None, &mut sink))
            .collect::<Result<_, _>>()?;
        Ok(Function {
            name: fname,
            domain: f.domain.unwrap_or_default(),
            overload: f.overload.unwrap_or_default(),
            attributes: f.attribute,
            attribute_protos,
            opset_imports: opsets(f.opset_import),
            doc_string: f.doc_string.unwrap_or_default(),
            metadata_props: props(f.metadata_props),
            body,
        })
    }

    fn attribute(
        &mut self,
        ap: onnx::AttributeProto,
        node: &str,
        scope: Option<&Scope>,
        captures: &mut Vec<String>,
    ) -> Result<Attribute, ImportError> {
        use onnx::attribute_proto::AttributeType as T;
        let name = ap.name.clone().unwrap_or_default();
        let err = |message: String| ImportError::Attribute {
            node: node.to_string(),
            attr: name.clone(),
            message,
        };
        let declared = ap.r#type.unwrap_or(0);
        // Old files may omit `type`; infer it from the field that is set.
        let ty = if declared != 0 {
            declared
        } else if ap.f.is_some() {
            T::Float as i32
        } else if ap.i.is_some() {
            T::Int as i32
        } else if ap.s.is_some() {
            T::String as i32
        } else if ap.t.is_some() {
            T::Tensor as i32
        } else if ap.g.is_some() {
            T::Graph as i32
        } else if ap.sparse_tensor.is_some() {
            T::SparseTensor as i32
        } else if ap.tp.is_some() {
            T::TypeProto as i32
        } else if !ap.floats.is_empty() {
            T::Floats as i32
        } else if !ap.ints.is_empty() {
            T::Ints as i32
        } else if !ap.strings.is_empty() {
            T::Strings as i32
        } else if !ap.tensors.is_empty() {
            T::Tensors as i32
        } else if !ap.graphs.is_empty() {
            T::Graphs as i32
        } else if !ap.sparse_tensors.is_empty() {
            T::SparseTensors as i32
        } else if !ap.type_protos.is_empty() {
            T::TypeProtos as i32
        } else {
            0
        };
        let is_ref = ap.ref_attr_name.is_some();
        let missing = |what: &str| -> Result<AttrValue, ImportError> {
            if is_ref {
                Ok(AttrValue::None)
            } else {
                Err(err(format!("declared {what} but no value is set")))
            }
        };
        let value = match T::try_from(ty).unwrap_or(T::Undefined) {
            T::Float => match ap.f {
                Some(f) => AttrValue::Float(f),
                None => missing("FLOAT")?,
            },
            T::Int => match ap.i {
                Some(i) => AttrValue::Int(i),
                None => missing("INT")?,
            },
            T::String => match ap.s {
                Some(s) => AttrValue::String(s),
                None => missing("STRING")?,
            },
            T::Tensor => match ap.t {
                Some(t) => AttrValue::Tensor(self.tensor(t)?),
                None => missing("TENSOR")?,
            },
            T::Graph => match ap.g {
                Some(gp) => {
                    let (sub, caps) = self.graph(gp, scope)?;
                    merge(captures, caps);
                    AttrValue::Graph(Box::new(sub))
                }
                None => missing("GRAPH")?,
            },
            T::SparseTensor => match ap.sparse_tensor {
                Some(s) => AttrValue::SparseTensor(self.sparse(s)?),
                None => missing("SPARSE_TENSOR")?,
            },
            T::TypeProto => match ap.tp {
                Some(t) => AttrValue::Type(type_of(t)),
                None => missing("TYPE_PROTO")?,
            },
            T::Floats => AttrValue::Floats(ap.floats),
            T::Ints => AttrValue::Ints(ap.ints),
            T::Strings => AttrValue::Strings(ap.strings),
            T::Tensors => AttrValue::Tensors(
                ap.tensors
                    .into_iter()
                    .map(|t| self.tensor(t))
                    .collect::<Result<_, _>>()?,
            ),
            T::Graphs => {
                let mut gs = Vec::new();
                for gp in ap.graphs {
                    let (sub, caps) = self.graph(gp, scope)?;
                    merge(captures, caps);
                    gs.push(sub);
                }
                AttrValue::Graphs(gs)
            }
            T::SparseTensors => AttrValue::SparseTensors(
                ap.sparse_tensors
                    .into_iter()
                    .map(|s| self.sparse(s))
                    .collect::<Result<_, _>>()?,
            ),
            T::TypeProtos => AttrValue::Types(ap.type_protos.into_iter().map(type_of).collect()),
            T::Undefined if is_ref => AttrValue::None,
            T::Undefined => return Err(err(format!("unknown attribute type {declared}"))),
        };
        Ok(Attribute {
            name,
            value,
            declared_type: ty,
            ref_attr_name: ap.ref_attr_name,
            doc_string: ap.doc_string.unwrap_or_default(),
        })
    }

    fn tensor(&mut self, tp: onnx::TensorProto) -> Result<Tensor, ImportError> {
        let name = tp.name.clone().unwrap_or_default();
        let dtype = DataType(tp.data_type.unwrap_or(0));
        let external = tp.data_location == Some(onnx::tensor_proto::DataLocation::External as i32);
        let (data, placement) = if external {
            let entries: Vec<(String, String)> = props(tp.external_data);
            let bytes = self.ext.read(&name, &entries)?;
            (TensorData::Raw(bytes), Placement::External)
        } else if let Some(raw) = tp.raw_data {
            (TensorData::Raw(raw), Placement::Inline)
        } else {
            // The typed fields; pick the one that holds data, else the one the dtype calls for.
            let data = if !tp.float_data.is_empty() {
                TensorData::Floats(tp.float_data)
            } else if !tp.int32_data.is_empty() {
                TensorData::Int32s(tp.int32_data)
            } else if !tp.int64_data.is_empty() {
                TensorData::Int64s(tp.int64_data)
            } else if !tp.double_data.is_empty() {
                TensorData::Doubles(tp.double_data)
            } else if !tp.uint64_data.is_empty() {
                TensorData::Uint64s(tp.uint64_data)
            } else if !tp.string_data.is_empty() {
                TensorData::Strings(tp.string_data)
            } else {
                use ir::tensor::TypedField as F;
                match dtype.typed_field() {
                    Some(F::Float) => TensorData::Floats(vec![]),
                    Some(F::Int32) => TensorData::Int32s(vec![]),
                    Some(F::Int64) => TensorData::Int64s(vec![]),
                    Some(F::Double) => TensorData::Doubles(vec![]),
                    Some(F::Uint64) => TensorData::Uint64s(vec![]),
                    Some(F::String) => TensorData::Strings(vec![]),
                    None => TensorData::Raw(Bytes::new()),
                }
            };
            (data, Placement::Inline)
        };
        let t = Tensor {
            dtype,
            dims: tp.dims,
            data,
            placement,
            doc_string: tp.doc_string.unwrap_or_default(),
            name,
            metadata_props: props(tp.metadata_props),
            segment: tp.segment.map(|s| Bytes::from(s.encode_to_vec())),
        };
        t.check()?;
        Ok(t)
    }

    fn sparse(&mut self, sp: onnx::SparseTensorProto) -> Result<SparseTensor, ImportError> {
        let values = sp.values.ok_or_else(|| ImportError::Sparse {
            name: String::new(),
            message: "no values".into(),
        })?;
        let name = values.name.clone().unwrap_or_default();
        let indices = sp.indices.ok_or_else(|| ImportError::Sparse {
            name: name.clone(),
            message: "no indices".into(),
        })?;
        Ok(SparseTensor {
            values: self.tensor(values)?,
            indices: self.tensor(indices)?,
            dims: sp.dims,
        })
    }
}

fn merge(into: &mut Vec<String>, from: Vec<String>) {
    for n in from {
        if !into.contains(&n) {
            into.push(n);
        }
    }
}

fn value_info(vi: onnx::ValueInfoProto) -> Value {
    Value {
        name: vi.name.unwrap_or_default(),
        ty: vi.r#type.map(type_of),
        doc_string: vi.doc_string.unwrap_or_default(),
        metadata_props: props(vi.metadata_props),
    }
}

fn shape_of(s: Option<onnx::TensorShapeProto>) -> Option<Vec<ShapeDim>> {
    use onnx::tensor_shape_proto::dimension::Value as D;
    s.map(|s| {
        s.dim
            .into_iter()
            .map(|d| ShapeDim {
                dim: match d.value {
                    Some(D::DimValue(v)) => Dim::Fixed(v),
                    Some(D::DimParam(p)) => Dim::Symbol(p),
                    None => Dim::Unknown,
                },
                denotation: d.denotation.unwrap_or_default(),
            })
            .collect()
    })
}

pub(crate) fn type_of(t: onnx::TypeProto) -> Type {
    use onnx::type_proto::Value as V;
    let kind = match t.value {
        Some(V::TensorType(tt)) => TypeKind::Tensor {
            elem: DataType(tt.elem_type.unwrap_or(0)),
            shape: shape_of(tt.shape),
        },
        Some(V::SparseTensorType(tt)) => TypeKind::SparseTensor {
            elem: DataType(tt.elem_type.unwrap_or(0)),
            shape: shape_of(tt.shape),
        },
        Some(V::SequenceType(s)) => TypeKind::Sequence(s.elem_type.map(|e| Box::new(type_of(*e)))),
        Some(V::MapType(m)) => TypeKind::Map {
            key: DataType(m.key_type.unwrap_or(0)),
            value: m.value_type.map(|e| Box::new(type_of(*e))),
        },
        Some(V::OptionalType(o)) => TypeKind::Optional(o.elem_type.map(|e| Box::new(type_of(*e)))),
        Some(V::OpaqueType(o)) => TypeKind::Opaque {
            domain: o.domain.unwrap_or_default(),
            name: o.name.unwrap_or_default(),
        },
        None => TypeKind::Unset,
    };
    Type {
        kind,
        denotation: t.denotation.unwrap_or_default(),
    }
}

/// Decodes a serialized `TensorProto` (an ONNX test-data `input_K.pb`); external data is refused.
pub fn tensor_from_bytes(bytes: Bytes) -> Result<Tensor, ImportError> {
    let tp = onnx::TensorProto::decode(bytes)
        .map_err(|e| ImportError::Decode(format!("TensorProto: {e}")))?;
    let mut cx = Cx {
        ext: ExternalFiles::new(None),
        ir_version: i64::MAX,
    };
    cx.tensor(tp)
}
