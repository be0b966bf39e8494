//! A model over 2 GiB (ignored by default: it writes ~6 GiB to a temp dir and takes a minute).
//! `cargo test --release --test big_model -- --ignored`. Peak-memory figures come from
//! `python3 benches/big_model.py target/release/onnxopt` (convert and optimize stay at 1.0x the
//! weights: tensors are slices of the mmap).

mod common;
use common::{run, text};
use onnxopt::ir::{
    DataType, Graph, GraphOutput, Model, Node, NodeKind, Op, Tensor, Type, Value, ValueId,
};

const N: i64 = 4096; // 64 MiB per float weight

fn big(layers: usize) -> Model {
    let mut g = Graph::new("big");
    let mut input = Value::named("x".to_string());
    input.ty = Some(Type::tensor(DataType::FLOAT, &[1, N]));
    let x = g.add_node(Node::new(
        "",
        NodeKind::Input { default: None },
        vec![],
        vec![input],
    ));
    let mut h = ValueId { node: x, output: 0 };
    for i in 0..layers {
        // Distinct per layer, so dedupe cannot merge them.
        let v = ((i as f32) + 1.0) / (N as f32 * layers as f32);
        let raw: Vec<u8> = std::iter::repeat_n(v.to_le_bytes(), (N * N) as usize)
            .flatten()
            .collect();
        let w = onnxopt::passes::util::add_initializer(
            &mut g,
            &format!("w{i}"),
            Tensor::from_raw(DataType::FLOAT, vec![N, N], raw),
        );
        let id = g.add_node(Node::new(
            format!("layer{i}/MatMul"),
            NodeKind::Op(Op::new("MatMul")),
            vec![Some(h), Some(w)],
            vec![Value::named(format!("h{i}"))],
        ));
        h = ValueId {
            node: id,
            output: 0,
        };
    }
    g.outputs.push(GraphOutput {
        value: h,
        ty: Some(Type::tensor(DataType::FLOAT, &[1, N])),
        doc_string: String::new(),
        metadata_props: vec![],
    });
    Model {
        ir_version: 8,
        opset_imports: vec![(String::new(), 13)],
        graph: g,
        ..Default::default()
    }
}

#[test]
#[ignore = "writes ~6 GiB; run with --ignored"]
fn over_2_gib_converts_optimizes_and_runs_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.onnx");
    // 33 × 64 MiB = 2.06 GiB: `save` switches to external data by itself over 2 GiB.
    let saved = onnxopt::export::save(&big(33), &path, onnxopt::export::DataPolicy::Keep).unwrap();
    assert!(dir.path().join("big.onnx.data").exists(), "{saved:?}");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let conv = dir.path().join("conv.onnx");
    let o = run(&["convert", &s(&path), "-o", &s(&conv)]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let opt = dir.path().join("opt.onnx");
    let o = run(&["optimize", &s(&path), "-o", &s(&opt), "--no-check"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // The input is untouched and the output runs in tract, equal to the input's outputs.
    let o = run(&["verify", &s(&path), &s(&opt), "--random", "1"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}
