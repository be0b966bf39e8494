//! The graph model every stage works on.
//!
//! A [`Graph`] wraps a private `petgraph::StableDiGraph`; nothing outside this folder names petgraph.
//! Nodes are graph inputs, initializers (constant nodes holding `Arc<Tensor>`), captures (values of an
//! enclosing scope used by a subgraph) and operators. A value is a node output ([`ValueId`]); its name
//! and type live on the producing node. Each node's ordered `inputs: Vec<Option<ValueId>>` is the only
//! source of truth for input order; petgraph edges are derived from it (plus the implicit uses of
//! subgraph captures) and kept in step by the verbs below, never edited directly.

pub mod attr;
pub mod dump;
pub mod tensor;
pub mod types;
pub mod validate;

pub use attr::{AttrValue, Attribute};
pub use tensor::{DataType, Placement, SparseTensor, Tensor, TensorData};
pub use types::{Dim, ShapeDim, Type, TypeKind};

use bytes::Bytes;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A node of a [`Graph`]. `StableGraph` reuses the slots of removed nodes, so do not hold a `NodeId`
/// across removals you do not control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub node: NodeId,
    pub output: usize,
}

/// Name, type and documentation of a value (`ValueInfoProto` without the proto).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Value {
    /// Empty for an omitted optional output.
    pub name: String,
    pub ty: Option<Type>,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
}

impl Value {
    pub fn named(name: impl Into<String>) -> Value {
        Value {
            name: name.into(),
            ..Value::default()
        }
    }
}

/// A constant payload: a dense or a sparse initializer.
#[derive(Clone, Debug)]
pub enum Const {
    Dense(Arc<Tensor>),
    Sparse(Arc<SparseTensor>),
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A graph input. `default` is set when an initializer of the same name exists: the value can be
    /// overridden at run time, so it is an input and never folded.
    Input {
        default: Option<Arc<Tensor>>,
    },
    /// An initializer: a weight, foldable.
    Initializer(Const),
    /// A value of an enclosing graph read by name inside a subgraph. Its output carries the outer
    /// name; the node owning the subgraph records the outer value as an implicit use.
    Capture,
    Op(Op),
}

#[derive(Clone, Debug, Default)]
pub struct Op {
    /// `""` is the default ONNX domain (`ai.onnx`).
    pub domain: String,
    pub op_type: String,
    pub overload: String,
    pub attributes: Vec<Attribute>,
    /// `NodeProto.device_configurations`, kept as encoded protobuf messages.
    pub device_configurations: Vec<Bytes>,
}

impl Op {
    pub fn new(op_type: impl Into<String>) -> Op {
        Op {
            op_type: op_type.into(),
            ..Op::default()
        }
    }

    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// `ai.onnx` and `""` are the same domain.
    pub fn is_default_domain(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    inputs: Vec<Option<ValueId>>,
    implicit: Vec<ValueId>,
    pub outputs: Vec<Value>,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
}

impl Node {
    pub fn new(
        name: impl Into<String>,
        kind: NodeKind,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Value>,
    ) -> Node {
        Node {
            name: name.into(),
            kind,
            inputs,
            implicit: Vec::new(),
            outputs,
            doc_string: String::new(),
            metadata_props: Vec::new(),
        }
    }

    /// Ordered input slots; `None` is an omitted optional input (ONNX `""`).
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }

    /// Outer values read by this node's subgraphs.
    pub fn implicit_inputs(&self) -> &[ValueId] {
        &self.implicit
    }

    pub fn op(&self) -> Option<&Op> {
        if let NodeKind::Op(op) = &self.kind {
            Some(op)
        } else {
            None
        }
    }

    pub fn op_mut(&mut self) -> Option<&mut Op> {
        if let NodeKind::Op(op) = &mut self.kind {
            Some(op)
        } else {
            None
        }
    }

    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Op(op) => &op.op_type,
            NodeKind::Input { .. } => "<input>",
            NodeKind::Initializer(_) => "<initializer>",
            NodeKind::Capture => "<capture>",
        }
    }

    /// Name to show users: the node name, else its first output's name.
    pub fn display_name(&self) -> &str {
        if !self.name.is_empty() {
            &self.name
        } else {
            self.outputs.first().map(|v| v.name.as_str()).unwrap_or("")
        }
    }

    /// Subgraphs held in this node's attributes.
    pub fn subgraphs(&self) -> impl Iterator<Item = &Graph> {
        self.op()
            .into_iter()
            .flat_map(|op| op.attributes.iter().flat_map(|a| a.graphs()))
    }
}

/// How a value is used by the node an edge points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Slot { output: usize, input: usize },
    Implicit { output: usize },
}

/// A graph output: a value plus the type and doc the graph declares for it.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub value: ValueId,
    pub ty: Option<Type>,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("node '{0}' is still used and cannot be removed")]
    StillUsed(String),
    #[error("cycle through node '{0}'")]
    Cycle(String),
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Use>,
    pub name: String,
    pub doc_string: String,
    /// Input nodes in interface order.
    inputs: Vec<NodeId>,
    pub outputs: Vec<GraphOutput>,
    /// `value_info` entries naming no value of this graph, kept verbatim.
    pub extra_value_info: Vec<Value>,
    /// `GraphProto.quantization_annotation`, kept as encoded protobuf messages.
    pub quantization_annotation: Vec<Bytes>,
    pub metadata_props: Vec<(String, String)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// An empty graph with room for `nodes` nodes and `edges` uses.
    pub fn with_capacity(name: impl Into<String>, nodes: usize, edges: usize) -> Graph {
        Graph {
            g: StableDiGraph::with_capacity(nodes, edges),
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node; edges are derived from its inputs. Panics on a `ValueId` of another graph only
    /// in the sense that petgraph does (an out-of-range index) — callers pass ids of this graph.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        let is_input = matches!(node.kind, NodeKind::Input { .. });
        let inputs = node.inputs.clone();
        let implicit = node.implicit.clone();
        let id = NodeId(self.g.add_node(node));
        for (slot, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.g.add_edge(
                    v.node.0,
                    id.0,
                    Use::Slot {
                        output: v.output,
                        input: slot,
                    },
                );
            }
        }
        for v in implicit {
            self.g
                .add_edge(v.node.0, id.0, Use::Implicit { output: v.output });
        }
        if is_input {
            self.inputs.push(id);
        }
        id
    }

    /// Removes a node that nothing uses any more.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node, GraphError> {
        let node = &self.g[id.0];
        let used_by_outputs = self.outputs.iter().any(|o| o.value.node == id);
        if self
            .g
            .edges_directed(id.0, Direction::Outgoing)
            .next()
            .is_some()
            || used_by_outputs
        {
            return Err(GraphError::StillUsed(node.display_name().to_string()));
        }
        self.inputs.retain(|&i| i != id);
        Ok(self.g.remove_node(id.0).expect("node id of this graph"))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// Mutable access to everything but the inputs (use [`Graph::set_input`] for those).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.g[v.node.0].outputs[v.output]
    }

    pub fn value_mut(&mut self, v: ValueId) -> &mut Value {
        &mut self.g[v.node.0].outputs[v.output]
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Node ids in index order (import order for a freshly imported graph).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.g.node_indices().map(move |i| (NodeId(i), &self.g[i]))
    }

    /// Operator nodes only.
    pub fn ops(&self) -> impl Iterator<Item = (NodeId, &Node, &Op)> + '_ {
        self.nodes()
            .filter_map(|(id, n)| n.op().map(|op| (id, n, op)))
    }

    /// Graph inputs in interface order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Reorders the graph inputs; `order` must be a permutation of the current inputs.
    pub fn set_input_order(&mut self, order: Vec<NodeId>) {
        let mut a = order.clone();
        let mut b = self.inputs.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "set_input_order needs a permutation of the inputs");
        self.inputs = order;
    }

    /// Replaces one input slot and its edge.
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        let old = self.g[node.0].inputs.get(slot).copied().flatten();
        if let Some(old) = old {
            let edge = self
                .g
                .edges_directed(node.0, Direction::Incoming)
                .find(|e| {
                    e.source() == old.node.0
                        && *e.weight()
                            == Use::Slot {
                                output: old.output,
                                input: slot,
                            }
                })
                .map(|e| e.id());
            if let Some(e) = edge {
                self.g.remove_edge(e);
            }
        }
        let n = &mut self.g[node.0];
        if n.inputs.len() <= slot {
            n.inputs.resize(slot + 1, None);
        }
        n.inputs[slot] = value;
        if let Some(v) = value {
            self.g.add_edge(
                v.node.0,
                node.0,
                Use::Slot {
                    output: v.output,
                    input: slot,
                },
            );
        }
    }

    /// Sets all input slots at once.
    pub fn set_inputs(&mut self, node: NodeId, inputs: Vec<Option<ValueId>>) {
        let old: Vec<_> = self
            .g
            .edges_directed(node.0, Direction::Incoming)
            .filter(|e| matches!(e.weight(), Use::Slot { .. }))
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for (slot, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.g.add_edge(
                    v.node.0,
                    node.0,
                    Use::Slot {
                        output: v.output,
                        input: slot,
                    },
                );
            }
        }
        self.g[node.0].inputs = inputs;
    }

    /// Sets the outer values a node's subgraphs read.
    pub fn set_implicit_inputs(&mut self, node: NodeId, values: Vec<ValueId>) {
        let old: Vec<_> = self
            .g
            .edges_directed(node.0, Direction::Incoming)
            .filter(|e| matches!(e.weight(), Use::Implicit { .. }))
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for v in &values {
            self.g
                .add_edge(v.node.0, node.0, Use::Implicit { output: v.output });
        }
        self.g[node.0].implicit = values;
    }

    /// Every `(consumer, input slot)` reading `value`; implicit subgraph uses have slot `None`.
    pub fn uses(&self, value: ValueId) -> Vec<(NodeId, Option<usize>)> {
        let mut uses: Vec<_> = self
            .g
            .edges_directed(value.node.0, Direction::Outgoing)
            .filter_map(|e| match *e.weight() {
                Use::Slot { output, input } if output == value.output => {
                    Some((NodeId(e.target()), Some(input)))
                }
                Use::Implicit { output } if output == value.output => {
                    Some((NodeId(e.target()), None))
                }
                _ => None,
            })
            .collect();
        uses.sort();
        uses
    }

    /// Whether a value is listed among the graph outputs.
    pub fn is_graph_output(&self, value: ValueId) -> bool {
        self.outputs.iter().any(|o| o.value == value)
    }

    /// Redirects every use of `from` to `to`. Graph outputs are redirected only with
    /// `include_graph_outputs` (renaming an output changes the model's interface); returns how many
    /// uses moved, or `false` in `.1` when a graph output was left in place.
    pub fn replace_all_uses(
        &mut self,
        from: ValueId,
        to: ValueId,
        include_graph_outputs: bool,
    ) -> (usize, bool) {
        let mut moved = 0;
        for (node, slot) in self.uses(from) {
            match slot {
                Some(slot) => self.set_input(node, slot, Some(to)),
                None => {
                    let implicit: Vec<_> = self.g[node.0]
                        .implicit
                        .iter()
                        .map(|&v| if v == from { to } else { v })
                        .collect();
                    self.set_implicit_inputs(node, implicit);
                }
            }
            moved += 1;
        }
        let mut outputs_ok = true;
        for o in &mut self.outputs {
            if o.value == from {
                if include_graph_outputs {
                    o.value = to;
                    moved += 1;
                } else {
                    outputs_ok = false;
                }
            }
        }
        (moved, outputs_ok)
    }

    /// The node producing the value named `name`, if any (linear scan).
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.nodes().find_map(|(id, n)| {
            n.outputs
                .iter()
                .position(|v| v.name == name)
                .map(|output| ValueId { node: id, output })
        })
    }

    pub fn producer(&self, value: ValueId) -> &Node {
        self.node(value.node)
    }

    /// The tensor behind a value, when it is a dense initializer or a `Constant` op's `value`.
    /// Graph inputs with a default are not constants.
    pub fn constant(&self, value: ValueId) -> Option<&Tensor> {
        match &self.node(value.node).kind {
            NodeKind::Initializer(Const::Dense(t)) => Some(t),
            NodeKind::Op(op) if op.op_type == "Constant" && op.is_default_domain() => {
                match &op.attr("value")?.value {
                    AttrValue::Tensor(t) => Some(t),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Nodes in a topological order: among ready nodes the lowest index goes first, so a graph that
    /// was already sorted keeps its order and the result is deterministic.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, GraphError> {
        let mut indegree: Vec<usize> = vec![0; self.g.node_bound()];
        let mut ready = BinaryHeap::new();
        for i in self.g.node_indices() {
            let d = self.g.edges_directed(i, Direction::Incoming).count();
            if d == 0 {
                ready.push(Reverse(i));
            }
            indegree[i.index()] = d;
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(NodeId(i));
            for e in self.g.edges_directed(i, Direction::Outgoing) {
                let d = &mut indegree[e.target().index()];
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != self.g.node_count() {
            let stuck = self
                .g
                .node_indices()
                .find(|i| indegree[i.index()] > 0)
                .map(|i| self.g[i].display_name().to_string())
                .unwrap_or_default();
            return Err(GraphError::Cycle(stuck));
        }
        Ok(order)
    }

    /// Number of operator nodes here and in all nested subgraphs.
    pub fn op_count_total(&self) -> usize {
        self.ops()
            .map(|(_, n, _)| 1 + n.subgraphs().map(|g| g.op_count_total()).sum::<usize>())
            .sum()
    }

    /// Calls `f` on this graph and every nested subgraph, depth first.
    pub fn visit_graphs<'a>(&'a self, f: &mut dyn FnMut(&'a Graph)) {
        f(self);
        for (_, n) in self.nodes() {
            for g in n.subgraphs() {
                g.visit_graphs(f);
            }
        }
    }
}

/// A model-local function (`FunctionProto`). Its body is a [`Graph`] whose inputs carry no types.
#[derive(Clone, Debug, Default)]
pub struct Function {
    pub name: String,
    pub domain: String,
    pub overload: String,
    pub attributes: Vec<String>,
    pub attribute_protos: Vec<Attribute>,
    pub opset_imports: Vec<(String, i64)>,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    pub body: Graph,
}

/// A whole model: the main graph plus everything `ModelProto` carries around it.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub ir_version: i64,
    /// `(domain, version)` in file order; `""` is the default domain.
    pub opset_imports: Vec<(String, i64)>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    pub graph: Graph,
    pub functions: Vec<Function>,
    /// `ModelProto.training_info`, kept as encoded protobuf messages.
    pub training_info: Vec<Bytes>,
    /// `ModelProto.configuration`, kept as encoded protobuf messages.
    pub configuration: Vec<Bytes>,
}

impl Model {
    /// The imported version of a domain (`""` and `ai.onnx` are the same).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| {
            if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }
        };
        let want = norm(domain);
        self.opset_imports
            .iter()
            .find(|(d, _)| norm(d) == want)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Graph, NodeId, NodeId, NodeId) {
        let mut g = Graph::new("g");
        let x = g.add_node(Node::new(
            "",
            NodeKind::Input { default: None },
            vec![],
            vec![Value::named("x")],
        ));
        let xv = ValueId { node: x, output: 0 };
        let a = g.add_node(Node::new(
            "a",
            NodeKind::Op(Op::new("Relu")),
            vec![Some(xv)],
            vec![Value::named("a")],
        ));
        let av = ValueId { node: a, output: 0 };
        let b = g.add_node(Node::new(
            "b",
            NodeKind::Op(Op::new("Add")),
            vec![Some(av), Some(xv)],
            vec![Value::named("b")],
        ));
        g.outputs.push(GraphOutput {
            value: ValueId { node: b, output: 0 },
            ty: None,
            doc_string: String::new(),
            metadata_props: vec![],
        });
        (g, x, a, b)
    }

    #[test]
    fn uses_follow_slots() {
        let (g, x, a, b) = tiny();
        let xv = ValueId { node: x, output: 0 };
        assert_eq!(g.uses(xv), {
            let mut u = vec![(a, Some(0)), (b, Some(1))];
            u.sort();
            u
        });
        assert_eq!(g.topo_order().unwrap(), vec![x, a, b]);
    }

    #[test]
    fn replace_and_remove() {
        let (mut g, x, a, b) = tiny();
        let (xv, av) = (
            ValueId { node: x, output: 0 },
            ValueId { node: a, output: 0 },
        );
        assert!(g.remove_node(a).is_err(), "a is still used");
        let (moved, _) = g.replace_all_uses(av, xv, false);
        assert_eq!(moved, 1);
        assert_eq!(g.node(b).inputs(), &[Some(xv), Some(xv)]);
        g.remove_node(a).unwrap();
        assert_eq!(g.topo_order().unwrap(), vec![x, b]);
    }

    #[test]
    fn graph_outputs_move_only_when_asked() {
        let (mut g, x, _, b) = tiny();
        let (xv, bv) = (
            ValueId { node: x, output: 0 },
            ValueId { node: b, output: 0 },
        );
        let (_, ok) = g.replace_all_uses(bv, xv, false);
        assert!(!ok);
        assert_eq!(g.outputs[0].value, bv);
        g.replace_all_uses(bv, xv, true);
        assert_eq!(g.outputs[0].value, xv);
    }

    #[test]
    fn cycle_is_found() {
        let (mut g, _, a, b) = tiny();
        g.set_input(a, 0, Some(ValueId { node: b, output: 0 }));
        assert!(matches!(g.topo_order(), Err(GraphError::Cycle(_))));
    }
}
