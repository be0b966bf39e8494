//! Property test: random CNNs (plain Conv-BN-Relu blocks, residual blocks, two-branch concats,
//! depthwise-separable blocks, a Gemm head) pruned at random ratios, roundings and criteria always
//! give valid models that import/export cleanly and run in tract with the original output shape.

use onnxopt::inputs::SplitMix;
use onnxopt::ir::{
    AttrValue, Attribute, DataType, Graph, GraphOutput, Model, Node, NodeKind, Op, Tensor, Type,
    Value, ValueId,
};
use onnxopt::passes::util;
use onnxopt::prune::{prune, Criterion, PruneOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Block {
    Plain(i64),
    Residual,
    Concat(i64, i64),
    Depthwise,
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

fn build(blocks: &[Block], seed: u64) -> Model {
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
        }
    }
    let p = b.op("GlobalAveragePool", vec![x], vec![]);
    let f = b.op(
        "Flatten",
        vec![p],
        vec![Attribute::new("axis", AttrValue::Int(1))],
    );
    let w = b.init("fc_w", vec![5, c], 0.3, 0.0);
    let bias = b.init("fc_b", vec![5], 0.1, 0.0);
    let y = b.op(
        "Gemm",
        vec![f, w, bias],
        vec![Attribute::new("transB", AttrValue::Int(1))],
    );
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

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        (4i64..24).prop_map(Block::Plain),
        Just(Block::Residual),
        (2i64..12, 2i64..12).prop_map(|(p, q)| Block::Concat(p, q)),
        Just(Block::Depthwise),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_cnns_prune_into_valid_models(
        blocks in prop::collection::vec(block(), 1..6),
        seed in any::<u64>(),
        ratio in 0.0f64..0.95,
        round_to in prop::sample::select(vec![1usize, 2, 4]),
        criterion in prop::sample::select(vec![Criterion::L1, Criterion::L2, Criterion::BnScale]),
        global in any::<bool>(),
    ) {
        let m = build(&blocks, seed);
        onnxopt::ir::validate::validate(&m).unwrap();
        let opts = PruneOptions { ratio, criterion, global, round_to, ..Default::default() };
        let (p, report) = prune(&m, &opts, &[]).map_err(|e| TestCaseError::fail(e))?;
        onnxopt::ir::validate::validate(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Lossless cleanup after pruning keeps it valid too.
        let (p, _, _) = onnxopt::optimize::run_passes(&p, &Default::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = onnxopt::export::to_bytes_inline(&p).unwrap();
        let back = onnxopt::import::from_bytes(bytes.into(), None)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let x = Tensor::from_f32(vec![1, 3, 8, 8], &[0.5; 192]);
        let runner = onnxopt::verify::Runner::from_model(&back, std::slice::from_ref(&x))
            .map_err(|e| TestCaseError::fail(format!("{e} after removing {}", report.channels_removed)))?;
        let out = runner.run(&[x]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&out[0].dims, &vec![1i64, 5]);
        if ratio >= 0.5 && round_to == 1 && !global {
            prop_assert!(report.channels_removed > 0, "ratio {} removed nothing", ratio);
        }
    }
}
