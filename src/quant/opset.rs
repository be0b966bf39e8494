//! Raising a model's default-domain opset to 13, the first with per-axis DequantizeLinear, when
//! doing so changes the meaning of nothing in it.
//!
//! Each op of the default domain is listed with the oldest opset from which its definition, for
//! inference, reads the same as in opset 13: later versions only widened types, allowed negative
//! axes or added attributes whose defaults keep the old behaviour. An op absent from the table, or
//! imported at an older opset than listed (Softmax before 13 flattened to 2-D; Squeeze, Unsqueeze,
//! Split and ReduceSum took `axes` as an attribute; Clip and Pad took attributes before 11), blocks
//! the upgrade. Ops of other domains are untouched by it.

use crate::ir::Model;

/// `(op, oldest opset whose semantics equal opset 13's)`, from the operator changelog.
const SAME_SINCE: &[(&str, i64)] = &[
    ("Abs", 6),
    ("Acos", 7),
    ("Acosh", 9),
    ("Add", 7),
    ("And", 7),
    ("ArgMax", 1),
    ("ArgMin", 1),
    ("Asin", 7),
    ("Asinh", 9),
    ("Atan", 7),
    ("Atanh", 9),
    ("AveragePool", 10),
    ("BatchNormalization", 9),
    ("Cast", 9),
    ("Ceil", 6),
    ("Clip", 11),
    ("Concat", 4),
    ("Constant", 1),
    ("ConstantOfShape", 9),
    ("Conv", 1),
    ("ConvInteger", 10),
    ("ConvTranspose", 11),
    ("Cos", 7),
    ("Cosh", 9),
    ("CumSum", 11),
    ("DepthToSpace", 1),
    ("DequantizeLinear", 10),
    ("Div", 7),
    ("Dropout", 12),
    ("Einsum", 12),
    ("Elu", 6),
    ("Equal", 7),
    ("Erf", 9),
    ("Exp", 6),
    ("Expand", 8),
    ("Flatten", 1),
    ("Floor", 6),
    ("Gather", 1),
    ("GatherElements", 11),
    ("GatherND", 11),
    ("Gemm", 7),
    ("GlobalAveragePool", 1),
    ("GlobalMaxPool", 1),
    ("Greater", 7),
    ("HardSigmoid", 6),
    ("Identity", 1),
    ("InstanceNormalization", 6),
    ("IsInf", 10),
    ("IsNaN", 9),
    ("LRN", 1),
    ("LeakyRelu", 6),
    ("Less", 7),
    ("Log", 6),
    ("MatMul", 1),
    ("MatMulInteger", 10),
    ("Max", 8),
    ("MaxPool", 10),
    ("Mean", 8),
    ("Min", 8),
    ("Mod", 10),
    ("Mul", 7),
    ("Neg", 6),
    ("NonMaxSuppression", 10),
    ("NonZero", 9),
    ("Not", 1),
    ("OneHot", 11),
    ("Or", 7),
    ("PRelu", 9),
    ("Pad", 11),
    ("Pow", 7),
    ("QLinearConv", 10),
    ("QLinearMatMul", 10),
    ("QuantizeLinear", 10),
    ("Range", 11),
    ("Reciprocal", 6),
    ("ReduceL1", 1),
    ("ReduceL2", 1),
    ("ReduceLogSumExp", 1),
    ("ReduceMax", 1),
    ("ReduceMean", 1),
    ("ReduceMin", 1),
    ("ReduceProd", 1),
    ("ReduceSumSquare", 1),
    ("Relu", 6),
    ("Reshape", 5),
    ("Resize", 11),
    ("Round", 11),
    ("ScatterElements", 11),
    ("ScatterND", 11),
    ("Selu", 6),
    ("Shape", 1),
    ("Sigmoid", 6),
    ("Sign", 9),
    ("Sin", 7),
    ("Sinh", 9),
    ("Size", 1),
    ("Slice", 10),
    ("SpaceToDepth", 1),
    ("Sqrt", 6),
    ("Sub", 7),
    ("Sum", 8),
    ("Tan", 7),
    ("Tanh", 6),
    ("Tile", 6),
    ("TopK", 11),
    ("Transpose", 1),
    ("Where", 9),
    ("Xor", 7),
];

/// IR version that opset 13 requires.
const IR_FOR_OPSET_13: i64 = 7;

/// Raises the default-domain opset to 13, or says which ops prevent it (nothing is changed then).
pub fn upgrade_to_13(model: &mut Model) -> Result<i64, String> {
    let from = model.opset("").unwrap_or(1);
    if from >= 13 {
        return Ok(from);
    }
    if !model.functions.is_empty() {
        return Err("the model has local functions".into());
    }
    let mut blocking = std::collections::BTreeSet::new();
    model.graph.visit_graphs(&mut |g| {
        for (_, _, op) in g.ops() {
            if !op.is_default_domain() {
                continue;
            }
            let ok = SAME_SINCE
                .iter()
                .any(|&(name, since)| name == op.op_type && from >= since);
            if !ok {
                blocking.insert(op.op_type.clone());
            }
        }
    });
    if !blocking.is_empty() {
        let list: Vec<String> = blocking.into_iter().collect();
        return Err(format!(
            "{} changed meaning between opset {from} and 13",
            list.join(", ")
        ));
    }
    for (domain, version) in model.opset_imports.iter_mut() {
        if domain.is_empty() || domain == "ai.onnx" {
            *version = 13;
        }
    }
    model.ir_version = model.ir_version.max(IR_FOR_OPSET_13);
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        // Keeps the table greppable and catches a duplicated row with two versions.
        assert!(SAME_SINCE.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
