//! `prune-channels`: structured channel pruning as a pass, for `optimize --passes
//! prune-channels,…`. Runs [`crate::prune::prune`] once with the options and samples in
//! [`PassContext::prune`] (taken, so a fixpoint round does not prune again). Not in the lossless
//! pipeline: it changes outputs on purpose. Main graph only.

use super::{Pass, PassContext, PassError};
use crate::ir::Model;

pub struct PruneChannels;

impl Pass for PruneChannels {
    fn name(&self) -> &'static str {
        "prune-channels"
    }

    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<bool, PassError> {
        let Some((opts, samples)) = cx.prune.take() else {
            return Ok(false); // already ran in this pipeline, or nothing configured
        };
        let (pruned, report) =
            crate::prune::prune(model, &opts, &samples).map_err(PassError::Broken)?;
        for n in &report.notes {
            cx.skipped.push(("prune-channels".into(), n.clone()));
        }
        for g in report.groups.iter().filter(|g| g.frozen.is_some()) {
            cx.skipped.push((
                "prune-channels".into(),
                format!(
                    "{}: {}",
                    g.members.join(", "),
                    g.frozen.clone().unwrap_or_default()
                ),
            ));
        }
        if report.channels_removed == 0 {
            return Ok(false);
        }
        *model = pruned;
        Ok(true)
    }
}
