//! `eliminate-dead-code`: removes operator nodes and initializers that no graph output depends on,
//! in the main graph and every subgraph; then drops subgraph captures nothing reads, so the outer
//! values they kept alive can go too.
//!
//! Graph inputs are the model's interface and always stay, even when unused; so do initializers
//! that are also graph inputs (they are overridable defaults of those inputs).

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::Model;

pub struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate-dead-code"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        util::each_graph_of(model, &mut |g| Ok(util::remove_dead(g) > 0))
    }
}
