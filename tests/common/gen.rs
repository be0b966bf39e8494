//! A generator of random valid CNNs over the ops the passes, pruning and quantization touch, for
//! the property tests.

use onnxopt::inputs::SplitMix;
use onnxopt::ir::{
    AttrValue, Attribute, DataType, Graph, GraphOutput, Model, Node, NodeKind, Op, Tensor, Type,
    Value, ValueId,
};
use onnxopt::passes::util;

/// One block of a generated CNN.
#[derive(Clone, Debug)]
pub enum Block {
    /// Conv 3×3 → BN → Relu to this many channels.
    Plain(i64),
    /// Conv-BN-Relu, Conv-BN, Add with the input, Relu.
    Residual,
    /// A 1×1 and a 3×3 branch concatenated on channels.
    Concat(i64, i64),
    /// Depthwise 3×3 then pointwise.
    Depthwise,
    /// Grouped 3×3 conv (2 groups when the channel count is even) then pointwise.
    Grouped,
    /// Transpose to NHWC and back (fuse-transposes cancels them).
    TransposePair,
    /// Reshape to [N, C, H·W] with a shape computed by Shape → Gather → Unsqueeze → Concat, then
    /// back with a constant shape (fold-constants, fuse-reshapes).
    ShapeReshape,
    /// Identity, then a scalar Mul and a per-channel Add (eliminate-identity, fuse-scale,
    /// fuse-bias when they follow a conv).
    Affine,
}

struct Builder {
    g: Graph,
    rng: SplitMix,
    n: usize,
}

impl Builder {
    fn name(&mut self, base: &str) -> String {
        self.n += 1;
        format!("{base}_{}", self.n)
    }

    fn init(&mut self, base: &str, dims: Vec<i64>, scale: f64, offset: f64) -> ValueId {
        let count: i64 = dims.iter().product();
        let v: Vec<f32> = (0..count)
            .map(|_| (offset + scale * (self.rng.next_f64() * 2.0 - 1.0)) as f32)
            .collect();
        let name = self.name(base);
        util::add_initializer(&mut self.g, &name, Tensor::from_f32(dims, &v))
    }

    fn int64(&mut self, base: &str, dims: Vec<i64>, v: &[i64]) -> ValueId {
        let name = self.name(base);
        util::add_initializer(&mut self.g, &name, Tensor::from_i64(dims, v))
    }

    fn op(&mut self, op: &str, inputs: Vec<ValueId>, attrs: Vec<Attribute>) -> ValueId {
        let mut o = Op::new(op);
        o.attributes = attrs;
        let name = self.name(op);
        let out = self.name(&format!("{op}_out"));
        let id = self.g.add_node(Node::new(
            name,
            NodeKind::Op(o),
            inputs.into_iter().map(Some).collect(),
            vec![Value::named(out)],
        ));
        ValueId {
            node: id,
            output: 0,
        }
    }

    fn conv(&mut self, x: ValueId, cin: i64, cout: i64, k: i64, group: i64) -> ValueId {
        let scale = (2.0 / ((cin / group) * k * k) as f64).sqrt();
        let w = self.init("w", vec![cout, cin / group, k, k], scale, 0.0);
        let b = self.init("b", vec![cout], 0.1, 0.0);
        let attrs = vec![
            Attribute::new("kernel_shape", AttrValue::Ints(vec![k, k])),
            Attribute::new("pads", AttrValue::Ints(vec![k / 2; 4])),
            Attribute::new("group", AttrValue::Int(group)),
        ];
        self.op("Conv", vec![x, w, b], attrs)
    }

    fn bn(&mut self, x: ValueId, c: i64) -> ValueId {
        let gamma = self.init("gamma", vec![c], 0.5, 1.0);
        let beta = self.init("beta", vec![c], 0.1, 0.0);
        let mean = self.init("mean", vec![c], 0.1, 0.0);
        let var = self.init("var", vec![c], 0.4, 1.0);
        self.op(
            "BatchNormalization",
            vec![x, gamma, beta, mean, var],
            vec![],
        )
    }

    fn cbr(&mut self, x: ValueId, cin: i64, cout: i64, k: i64, group: i64) -> ValueId {
        let y = self.conv(x, cin, cout, k, group);
        let y = self.bn(y, cout);
        self.op("Relu", vec![y], vec![])
    }
}

/// A CNN on a `[1, 3, 8, 8]` input named `input`: a stem, the blocks, then GlobalAveragePool →
/// Flatten → (MatMul + Add when `matmul_head`, else Gemm) to 5 outputs.
pub fn build(blocks: &[Block], seed: u64, matmul_head: bool) -> Model {
    let mut b = Builder {
        g: Graph::new("random_cnn"),
        rng: SplitMix::new(seed),
        n: 0,
    };
    let mut input = Value::named("input".to_string());
    input.ty = Some(Type::tensor(DataType::FLOAT, &[1, 3, 8, 8]));
    let x = b.g.add_node(Node::new(
        "",
        NodeKind::Input { default: None },
        vec![],
        vec![input],
    ));
    let mut x = ValueId { node: x, output: 0 };
    let mut c = 8;
    x = b.cbr(x, 3, c, 3, 1);
    for blk in blocks {
        match *blk {
            Block::Plain(cout) => {
                x = b.cbr(x, c, cout, 3, 1);
                c = cout;
            }
            Block::Residual => {
                let y = b.cbr(x, c, c, 3, 1);
                let y = b.conv(y, c, c, 3, 1);
                let y = b.bn(y, c);
                let s = b.op("Add", vec![x, y], vec![]);
                x = b.op("Relu", vec![s], vec![]);
            }
            Block::Concat(p, q) => {
                let y1 = b.cbr(x, c, p, 1, 1);
                let y2 = b.cbr(x, c, q, 3, 1);
                x = b.op(
                    "Concat",
                    vec![y1, y2],
                    vec![Attribute::new("axis", AttrValue::Int(1))],
                );
                c = p + q;
            }
            Block::Depthwise => {
                let d = b.cbr(x, c, c, 3, c);
                x = b.cbr(d, c, c, 1, 1);
            }
            Block::Grouped => {
                let groups = if c % 2 == 0 { 2 } else { 1 };
                let d = b.cbr(x, c, c, 3, groups);
                x = b.cbr(d, c, c, 1, 1);
            }
            Block::TransposePair => {
                let t = b.op(
                    "Transpose",
                    vec![x],
                    vec![Attribute::new("perm", AttrValue::Ints(vec![0, 2, 3, 1]))],
                );
                x = b.op(
                    "Transpose",
                    vec![t],
                    vec![Attribute::new("perm", AttrValue::Ints(vec![0, 3, 1, 2]))],
                );
            }
            Block::ShapeReshape => {
                let shape = b.op("Shape", vec![x], vec![]);
                let idx = b.int64("idx", vec![1], &[1]);
                let ch = b.op(
                    "Gather",
                    vec![shape, idx],
                    vec![Attribute::new("axis", AttrValue::Int(0))],
                );
                let one = b.int64("one", vec![1], &[1]);
                let minus = b.int64("minus_one", vec![1], &[-1]);
                let target = b.op(
                    "Concat",
                    vec![one, ch, minus],
                    vec![Attribute::new("axis", AttrValue::Int(0))],
                );
                let flat = b.op("Reshape", vec![x, target], vec![]);
                let back = b.int64("back", vec![4], &[1, c, 8, 8]);
                x = b.op("Reshape", vec![flat, back], vec![]);
            }
            Block::Affine => {
                let i = b.op("Identity", vec![x], vec![]);
                let k = b.init("k", vec![], 0.2, 1.0);
                let m = b.op("Mul", vec![i, k], vec![]);
                let bias = b.init("shift", vec![c, 1, 1], 0.1, 0.0);
                x = b.op("Add", vec![m, bias], vec![]);
            }
        }
    }
    let p = b.op("GlobalAveragePool", vec![x], vec![]);
    let f = b.op(
        "Flatten",
        vec![p],
        vec![Attribute::new("axis", AttrValue::Int(1))],
    );
    let y = if matmul_head {
        let w = b.init("fc_w", vec![c, 5], 0.3, 0.0);
        let bias = b.init("fc_b", vec![5], 0.1, 0.0);
        let mm = b.op("MatMul", vec![f, w], vec![]);
        b.op("Add", vec![mm, bias], vec![])
    } else {
        let w = b.init("fc_w", vec![5, c], 0.3, 0.0);
        let bias = b.init("fc_b", vec![5], 0.1, 0.0);
        b.op(
            "Gemm",
            vec![f, w, bias],
            vec![Attribute::new("transB", AttrValue::Int(1))],
        )
    };
    b.g.outputs.push(GraphOutput {
        value: y,
        ty: Some(Type::tensor(DataType::FLOAT, &[1, 5])),
        doc_string: String::new(),
        metadata_props: vec![],
    });
    Model {
        ir_version: 8,
        opset_imports: vec![(String::new(), 13)],
        graph: b.g,
        ..Default::default()
    }
}
