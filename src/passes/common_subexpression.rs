//! `eliminate-common-subexpression`: two operator nodes with the same domain, op type, attributes
//! and input values compute the same outputs; the later one's uses move to the earlier one.
//!
//! Declines non-deterministic ops (Random*, Multinomial, Bernoulli), nodes holding subgraphs, and
//! nodes whose outputs are graph outputs or are read by name from a subgraph. Runs in every graph.

use super::{util, Changed, Pass, PassContext, PassError};
use crate::ir::{dump::attr_key, Graph, Model, NodeId, ValueId};
use std::collections::HashMap;

pub struct EliminateCommonSubexpression;

/// Ops whose outputs differ between two evaluations.
pub const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

fn run_graph(g: &mut Graph) -> bool {
    let Ok(order) = g.topo_order() else {
        return false;
    };
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    let mut changed = false;
    for id in order {
        if !g.contains(id) {
            continue;
        }
        let n = g.node(id);
        let Some(op) = n.op() else { continue };
        if NONDETERMINISTIC.contains(&op.op_type.as_str()) || n.subgraphs().next().is_some() {
            continue;
        }
        let inputs: Vec<String> = n
            .inputs()
            .iter()
            .map(|v| {
                v.map(|v| format!("{}:{}", v.node.index(), v.output))
                    .unwrap_or_default()
            })
            .collect();
        let attrs: Vec<String> = op.attributes.iter().map(attr_key).collect();
        let key = format!(
            "{}|{}|{}|{}|{}",
            op.domain,
            op.op_type,
            n.outputs.len(),
            inputs.join(","),
            attrs.join(";")
        );
        match seen.get(&key) {
            None => {
                seen.insert(key, id);
            }
            Some(&keep) => {
                let outs = n.outputs.len();
                let movable = (0..outs).all(|k| {
                    let v = ValueId {
                        node: id,
                        output: k,
                    };
                    !g.is_graph_output(v) && g.uses(v).iter().all(|(_, slot)| slot.is_some())
                });
                if !movable {
                    continue;
                }
                for k in 0..outs {
                    g.replace_all_uses(
                        ValueId {
                            node: id,
                            output: k,
                        },
                        ValueId {
                            node: keep,
                            output: k,
                        },
                        false,
                    );
                }
                let _ = g.remove_node(id);
                changed = true;
            }
        }
    }
    changed
}

impl Pass for EliminateCommonSubexpression {
    fn name(&self) -> &'static str {
        "eliminate-common-subexpression"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        util::each_graph_of(model, &mut |g| Ok(run_graph(g)))
    }
}
