//! `fuse-pad`: `Conv(Pad(x, p)) → Conv(x)` with `p` added to the Conv's `pads`, when the Pad is in
//! `constant` mode with value 0 (or absent), its pads are constant, non-negative and zero on the
//! batch and channel axes, and the Conv uses explicit padding (`auto_pad` NOTSET).
//!
//! ONNX Pad lists `[x1_begin, x2_begin, …, x1_end, x2_end, …]` over all axes; Conv's `pads` lists
//! the same for the spatial axes only, so the spatial parts add. Pooling is left alone: MaxPool
//! pads with −∞, not 0, and AveragePool's divisor depends on `count_include_pad`.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{AttrValue, Attribute, Graph, Model, NodeId, ValueId};

pub struct FusePad;

fn try_match(g: &Graph, conv: NodeId, opset: i64) -> Result<(NodeId, ValueId, Vec<i64>), String> {
    let cn = g.node(conv);
    let x = cn.inputs().first().copied().flatten().ok_or("no input")?;
    let pn = g.node(x.node);
    if pn.op().map(|o| o.op_type.as_str()) != Some("Pad") || !pn.op().unwrap().is_default_domain() {
        return Err("input is not a Pad".into());
    }
    if util::single_use(g, x) != Some((conv, 0)) {
        return Err("Pad output is used elsewhere or is a graph output".into());
    }
    let auto_pad = cn.op().and_then(|o| o.attr("auto_pad")).and_then(|a| {
        if let AttrValue::String(s) = &a.value {
            Some(s.clone())
        } else {
            None
        }
    });
    if auto_pad.is_some_and(|s| &s[..] != b"NOTSET") {
        return Err("Conv uses auto_pad".into());
    }
    let mode = pn.op().and_then(|o| o.attr("mode")).and_then(|a| {
        if let AttrValue::String(s) = &a.value {
            Some(s.clone())
        } else {
            None
        }
    });
    if mode.is_some_and(|m| &m[..] != b"constant") {
        return Err("Pad mode is not constant".into());
    }
    let ins = pn.inputs();
    let (pads, value_zero) = if opset < 11 {
        (
            util::attr_ints(pn, "pads").ok_or("no pads")?,
            util::attr_float(pn, "value", 0.0) == 0.0,
        )
    } else {
        let pads =
            util::const_i64(g, ins.get(1).copied().flatten()).ok_or("pads are not constant")?;
        let value_zero = match ins.get(2).copied().flatten() {
            None => true,
            Some(v) => g
                .constant(v)
                .and_then(|t| t.to_f32_vec())
                .is_some_and(|v| v.iter().all(|&x| x == 0.0)),
        };
        if ins.get(3).copied().flatten().is_some() {
            return Err("Pad has explicit axes".into());
        }
        (pads, value_zero)
    };
    if !value_zero {
        return Err("Pad value is not 0".into());
    }
    let rank = pads.len() / 2;
    if rank < 3
        || pads.iter().any(|&p| p < 0)
        || pads[0] != 0
        || pads[1] != 0
        || pads[rank] != 0
        || pads[rank + 1] != 0
    {
        return Err(format!(
            "pads {pads:?} are negative or touch batch/channel axes"
        ));
    }
    let spatial = rank - 2;
    let mut conv_pads = util::attr_ints(cn, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    if conv_pads.len() != 2 * spatial {
        return Err("Conv pads do not match the Pad rank".into());
    }
    for i in 0..spatial {
        conv_pads[i] += pads[2 + i];
        conv_pads[spatial + i] += pads[rank + 2 + i];
    }
    let src = ins.first().copied().flatten().ok_or("Pad has no input")?;
    Ok((x.node, src, conv_pads))
}

impl Pass for FusePad {
    fn name(&self) -> &'static str {
        "fuse-pad"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let opset = model.opset("").unwrap_or(1);
        util::each_graph_of(model, &mut |g| {
            let mut changed = false;
            let convs: Vec<NodeId> = g
                .ops()
                .filter(|(_, _, op)| op.op_type == "Conv" && op.is_default_domain())
                .map(|(id, _, _)| id)
                .collect();
            for conv in convs {
                match try_match(g, conv, opset) {
                    Err(why) => {
                        if why != "input is not a Pad" {
                            cx.skip(format!("Conv '{}': {why}", g.node(conv).display_name()));
                        }
                    }
                    Ok((pad, src, pads)) => {
                        g.set_input(conv, 0, Some(src));
                        if let Some(op) = g.node_mut(conv).op_mut() {
                            op.attributes
                                .retain(|a| a.name != "pads" && a.name != "auto_pad");
                            op.attributes
                                .push(Attribute::new("pads", AttrValue::Ints(pads)));
                        }
                        let _ = g.remove_node(pad);
                        changed = true;
                    }
                }
            }
            Ok(changed)
        })
    }
}
