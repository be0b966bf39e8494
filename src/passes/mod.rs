//! Graph passes: the [`Pass`] trait, the one registry table [`PASSES`], named pipelines, and the
//! [`PassManager`] that runs steps and fixpoint groups, validates between passes and records
//! statistics.
//!
//! A pass either rewrites a construct completely or leaves it untouched and logs why
//! ([`PassContext::skip`]); `Err` is reserved for a model that is broken.

pub mod common_subexpression;
pub mod dead_code;
pub mod dedupe_initializers;
pub mod fold_constants;
pub mod fuse_batch_norm;
pub mod fuse_bias;
pub mod fuse_hard_swish;
pub mod fuse_pad;
pub mod fuse_reshapes;
pub mod fuse_scale;
pub mod fuse_slices;
pub mod fuse_transposes;
pub mod identity;
pub mod insert_qdq;
pub mod prune_channels;
pub mod util;

use crate::ir::{validate, Graph, Model};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{0}")]
    Broken(String),
    // `cause`, not `source`: the message already includes it, and a `source` would make `{:#}`
    // print it twice.
    #[error("pass {pass} failed after [{after}]: {cause}")]
    Failed {
        pass: String,
        after: String,
        cause: Box<PassError>,
    },
    #[error("pass {pass} left an invalid graph (after [{after}]): {cause}")]
    Invalid {
        pass: String,
        after: String,
        cause: validate::ValidateError,
    },
    #[error("unknown pass '{0}'; `onnxopt passes` lists them")]
    Unknown(String),
}

/// Whether a pass changed the model.
pub type Changed = bool;

/// What passes share: user settings, and the log of rewrites declined.
#[derive(Default, Debug)]
pub struct PassContext {
    /// `--input-shape` values: fix symbolic input dims for shape inference and folding.
    pub input_shapes: Vec<(String, Vec<i64>)>,
    /// `(pass, message)` for every construct a pass declined, so users learn why.
    pub skipped: Vec<(String, String)>,
    /// What `insert-qdq` needs: calibration samples or a table, and the policy.
    pub quant: Option<crate::quant::QuantSetup>,
    /// What `prune-channels` needs (taken when it runs, so it runs once).
    pub prune: Option<(crate::prune::PruneOptions, Vec<crate::inputs::Sample>)>,
    current: &'static str,
    facts: Option<std::sync::Arc<std::collections::HashMap<String, crate::analysis::shapes::Fact>>>,
}

impl PassContext {
    pub fn new(input_shapes: Vec<(String, Vec<i64>)>) -> PassContext {
        PassContext {
            input_shapes,
            ..PassContext::default()
        }
    }

    /// Static shapes and dtypes of the main graph by value name, computed once and reused: lossless
    /// rewrites keep every surviving name's value (and so its shape) unchanged, so the facts stay
    /// true; values created since are simply absent until the next round refreshes them.
    pub fn facts(
        &mut self,
        model: &Model,
    ) -> std::sync::Arc<std::collections::HashMap<String, crate::analysis::shapes::Fact>> {
        if self.facts.is_none() {
            let f = crate::analysis::shapes::infer(model, &self.input_shapes).unwrap_or_default();
            self.facts = Some(std::sync::Arc::new(f));
        }
        self.facts.clone().unwrap()
    }

    /// Forget cached facts (new values appeared).
    pub fn refresh_facts(&mut self) {
        self.facts = None;
    }

    /// Records a declined rewrite.
    pub fn skip(&mut self, message: impl Into<String>) {
        self.skipped
            .push((self.current.to_string(), message.into()));
    }
}

pub trait Pass {
    /// Stable kebab-case id used by the CLI, reports and logs.
    fn name(&self) -> &'static str;
    fn run(&self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError>;
}

/// One registry entry.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub make: fn() -> Box<dyn Pass>,
    /// Part of the lossless pipeline; false for passes that change outputs on purpose and need
    /// data (`insert-qdq`), which run only when named.
    pub lossless: bool,
}

/// Every pass, in the order the lossless pipeline runs them.
pub static PASSES: &[PassInfo] = &[
    PassInfo {
        name: "fold-constants",
        summary: "evaluate constant regions (incl. static shape computations) in tract, with a size guard",
        make: || Box::new(fold_constants::FoldConstants),
        lossless: true,
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "remove Identity, inference Dropout and no-op Cast/Reshape/Transpose/Pad/Expand/Concat/Split/Slice",
        make: || Box::new(identity::EliminateIdentity),
        lossless: true,
    },
    PassInfo {
        name: "fuse-batch-norm",
        summary: "fold BatchNormalization into a preceding Conv, ConvTranspose or Gemm with constant weights",
        make: || Box::new(fuse_batch_norm::FuseBatchNorm),
        lossless: true,
    },
    PassInfo {
        name: "fuse-hard-swish",
        summary: "x·clip(x+3, 0, 6)/6 → HardSwish (opset ≥ 14) or x·HardSigmoid(x)",
        make: || Box::new(fuse_hard_swish::FuseHardSwish),
        lossless: true,
    },
    PassInfo {
        name: "fuse-bias",
        summary: "fold a per-channel constant Add into Conv bias; MatMul + Add into Gemm",
        make: || Box::new(fuse_bias::FuseBias),
        lossless: true,
    },
    PassInfo {
        name: "fuse-scale",
        summary: "fold a scalar or per-channel constant Mul into Conv/Gemm weights and bias",
        make: || Box::new(fuse_scale::FuseScale),
        lossless: true,
    },
    PassInfo {
        name: "fuse-pad",
        summary: "fold a zero constant Pad on spatial axes into the following Conv's pads",
        make: || Box::new(fuse_pad::FusePad),
        lossless: true,
    },
    PassInfo {
        name: "fuse-transposes",
        summary: "merge consecutive Transposes; drop ones that cancel",
        make: || Box::new(fuse_transposes::FuseTransposes),
        lossless: true,
    },
    PassInfo {
        name: "fuse-reshapes",
        summary: "merge Reshape/Flatten chains; x.view(x.size(0), -1) becomes Flatten",
        make: || Box::new(fuse_reshapes::FuseReshapes),
        lossless: true,
    },
    PassInfo {
        name: "fuse-slices",
        summary: "merge a Slice of a Slice on other axes into one Slice",
        make: || Box::new(fuse_slices::FuseSlices),
        lossless: true,
    },
    PassInfo {
        name: "eliminate-common-subexpression",
        summary: "merge nodes with the same op, attributes and inputs",
        make: || Box::new(common_subexpression::EliminateCommonSubexpression),
        lossless: true,
    },
    PassInfo {
        name: "dedupe-initializers",
        summary: "merge initializers with identical dtype, shape and bytes",
        make: || Box::new(dedupe_initializers::DedupeInitializers),
        lossless: true,
    },
    PassInfo {
        name: "eliminate-dead-code",
        summary: "remove nodes and initializers no output depends on (graph inputs stay)",
        make: || Box::new(dead_code::EliminateDeadCode),
        lossless: true,
    },
    PassInfo {
        name: "prune-channels",
        summary: "structured channel pruning (--prune R; see `onnxopt prune`)",
        make: || Box::new(prune_channels::PruneChannels),
        lossless: false,
    },
    PassInfo {
        name: "insert-qdq",
        summary: "int8 QDQ quantization (needs --calibration or --table; see `onnxopt quantize`)",
        make: || Box::new(insert_qdq::InsertQdq),
        lossless: false,
    },
];

pub fn find(name: &str) -> Result<&'static PassInfo, PassError> {
    PASSES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PassError::Unknown(name.to_string()))
}

/// A pipeline step.
pub enum Step {
    One(&'static str),
    /// Run the group until no pass in it changes anything (at most `max_rounds` rounds).
    Fixpoint {
        passes: Vec<&'static str>,
        max_rounds: usize,
    },
}

pub mod pipelines {
    use super::Step;

    /// Rounds before the lossless fixpoint gives up; each round strictly shrinks the graph, so real
    /// models settle in 2–4.
    pub const MAX_ROUNDS: usize = 8;

    /// The whole lossless pipeline, to a fixed point.
    pub fn lossless() -> Vec<Step> {
        vec![Step::Fixpoint {
            passes: super::PASSES
                .iter()
                .filter(|p| p.lossless)
                .map(|p| p.name)
                .collect(),
            max_rounds: MAX_ROUNDS,
        }]
    }

    /// The given passes, in the given order, to a fixed point.
    pub fn of(names: Vec<&'static str>) -> Vec<Step> {
        vec![Step::Fixpoint {
            passes: names,
            max_rounds: MAX_ROUNDS,
        }]
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PassStats {
    pub name: String,
    pub runs: usize,
    pub changed: usize,
    pub nodes_removed: i64,
    pub bytes_delta: i64,
    pub ms: f64,
}

/// Node count including subgraphs and parameter bytes: what the statistics track.
pub fn size_of(m: &Model) -> (i64, i64) {
    let mut bytes = 0i64;
    m.graph.visit_graphs(&mut |g: &Graph| {
        for (_, n) in g.nodes() {
            match &n.kind {
                crate::ir::NodeKind::Initializer(crate::ir::Const::Dense(t)) => {
                    bytes += t.byte_size() as i64
                }
                crate::ir::NodeKind::Initializer(crate::ir::Const::Sparse(s)) => {
                    bytes += s.values.byte_size() as i64
                }
                _ => {}
            }
            if let Some(op) = n.op() {
                if op.op_type == "Constant" {
                    if let Some(crate::ir::AttrValue::Tensor(t)) =
                        op.attr("value").map(|a| &a.value)
                    {
                        bytes += t.byte_size() as i64;
                    }
                }
            }
        }
    });
    (m.graph.op_count_total() as i64, bytes)
}

pub struct PassManager {
    pub steps: Vec<Step>,
    /// Validate the IR after every pass (always on in tests).
    pub validate_each: bool,
    /// Pass names in the order they ran, with whether each changed the model (for bisection).
    pub trace: Vec<(&'static str, bool)>,
    pub stats: Vec<PassStats>,
}

impl PassManager {
    pub fn new(steps: Vec<Step>) -> PassManager {
        PassManager {
            steps,
            validate_each: cfg!(test),
            trace: Vec::new(),
            stats: Vec::new(),
        }
    }

    fn run_one(
        &mut self,
        name: &'static str,
        model: &mut Model,
        cx: &mut PassContext,
    ) -> Result<Changed, PassError> {
        let pass = (find(name)?.make)();
        let (n0, b0) = size_of(model);
        let t0 = Instant::now();
        cx.current = pass.name();
        let after = || {
            let mut seen: Vec<&str> = Vec::new();
            for (n, _) in &self.trace {
                if !seen.contains(n) {
                    seen.push(n);
                }
            }
            seen.join(", ")
        };
        let changed = pass.run(model, cx).map_err(|e| PassError::Failed {
            pass: name.to_string(),
            after: after(),
            cause: Box::new(e),
        })?;
        if self.validate_each || changed && cfg!(debug_assertions) {
            validate::validate(model).map_err(|cause| PassError::Invalid {
                pass: name.to_string(),
                after: after(),
                cause,
            })?;
        }
        let (n1, b1) = size_of(model);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let s = match self.stats.iter_mut().find(|s| s.name == name) {
            Some(s) => s,
            None => {
                self.stats.push(PassStats {
                    name: name.to_string(),
                    ..PassStats::default()
                });
                self.stats.last_mut().unwrap()
            }
        };
        s.runs += 1;
        s.changed += changed as usize;
        s.nodes_removed += n0 - n1;
        s.bytes_delta += b1 - b0;
        s.ms += ms;
        self.trace.push((name, changed));
        Ok(changed)
    }

    /// Runs every step. Returns whether anything changed.
    pub fn run(&mut self, model: &mut Model, cx: &mut PassContext) -> Result<Changed, PassError> {
        let steps = std::mem::take(&mut self.steps);
        let mut any = false;
        for step in &steps {
            match step {
                Step::One(name) => any |= self.run_one(name, model, cx)?,
                Step::Fixpoint { passes, max_rounds } => {
                    for r in 0..*max_rounds {
                        if r > 0 {
                            cx.refresh_facts();
                        }
                        let mut round = false;
                        for name in passes {
                            round |= self.run_one(name, model, cx)?;
                        }
                        any |= round;
                        if !round {
                            break;
                        }
                    }
                }
            }
        }
        self.steps = steps;
        Ok(any)
    }
}

/// Replays the first `k` applications of a trace (for bisection): the model after them.
pub fn replay(
    original: &Model,
    trace: &[(&'static str, bool)],
    k: usize,
    input_shapes: &[(String, Vec<i64>)],
) -> Result<Model, PassError> {
    let mut m = original.clone();
    let mut cx = PassContext::new(input_shapes.to_vec());
    for (name, _) in &trace[..k] {
        let pass = (find(name)?.make)();
        cx.current = pass.name();
        pass.run(&mut m, &mut cx)?;
    }
    Ok(m)
}
