//! `insert-qdq`: int8 quantization as a pass, for `optimize --passes …,insert-qdq`. It calibrates
//! the model as it stands when the pass runs (so value names match after the passes before it) on
//! the samples in [`PassContext::quant`], or reuses a saved table, then inserts QuantizeLinear /
//! DequantizeLinear as [`crate::quant::insert_qdq`] does. Not in the lossless pipeline: it changes
//! outputs on purpose and needs data. Running it again changes nothing (quantized weights are no
//! longer float constants). Main graph only; subgraphs are left in float.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::Model;
use crate::quant;

pub struct InsertQdq;

impl Pass for InsertQdq {
    fn name(&self) -> &'static str {
        "insert-qdq"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let setup = cx.quant.as_ref().ok_or_else(|| {
            PassError::Broken(
                "insert-qdq needs calibration data: give --calibration PATH or --table FILE".into(),
            )
        })?;
        if quant::values_to_calibrate(model, &setup.opts).is_empty() {
            return Ok(false); // nothing (left) to quantize: skip the calibration run
        }
        let table =
            match &setup.table {
                Some(t) => t.clone(),
                None if setup.samples.is_empty() => return Err(PassError::Broken(
                    "insert-qdq needs calibration data: give --calibration PATH or --table FILE"
                        .into(),
                )),
                None => quant::calibrate(
                    model,
                    setup.samples.iter().cloned(),
                    setup.method,
                    &setup.opts,
                )
                .map_err(|e| PassError::Broken(format!("calibration in tract failed: {e}")))?,
            };
        let (q, report) = quant::insert_qdq(model, &table, &setup.opts)
            .map_err(|e| PassError::Broken(e.to_string()))?;
        for n in &report.notes {
            cx.skipped.push(("insert-qdq".into(), n.clone()));
        }
        for (node, why) in &report.skipped {
            cx.skipped
                .push(("insert-qdq".into(), format!("{node}: {why}")));
        }
        if report.quantized_nodes.is_empty() {
            return Ok(false);
        }
        *model = q;
        Ok(true)
    }
}
