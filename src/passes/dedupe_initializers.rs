//! `dedupe-initializers`: initializers with the same dtype, shape and bytes become one; every use
//! of the duplicates moves to the first (in node order). Declines initializers that are graph
//! outputs (their names are interface) and graph-input defaults (they can be overridden). Only the
//! main graph: subgraph initializers are few and local.

use super::{Changed, Pass, PassContext, PassError};
use crate::ir::{dump::tensor_hash, Const, Model, NodeKind, ValueId};
use std::collections::HashMap;

pub struct DedupeInitializers;

impl Pass for DedupeInitializers {
    fn name(&self) -> &'static str {
        "dedupe-initializers"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let g = &mut model.graph;
        // Bucket by dtype and shape first; only tensors that share a bucket get hashed.
        let mut buckets: HashMap<(i32, Vec<i64>), Vec<ValueId>> = HashMap::new();
        for (id, n) in g.nodes() {
            let NodeKind::Initializer(Const::Dense(t)) = &n.kind else {
                continue;
            };
            let v = ValueId {
                node: id,
                output: 0,
            };
            if !g.is_graph_output(v) {
                buckets
                    .entry((t.dtype.0, t.dims.clone()))
                    .or_default()
                    .push(v);
            }
        }
        let mut candidates: Vec<ValueId> = buckets
            .into_values()
            .filter(|b| b.len() > 1)
            .flatten()
            .collect();
        candidates.sort();
        // Within a bucket, a cheap fingerprint (the first and last 64 bytes) narrows the field; equal
        // fingerprints are then compared in full.
        let mut first: HashMap<(i32, Vec<i64>, u64), Vec<ValueId>> = HashMap::new();
        let mut merges = Vec::new();
        for v in candidates {
            let t = g.constant(v).expect("dense initializer");
            let fp = match t.to_le_bytes() {
                Some(b) if b.len() > 128 => {
                    let mut edge = crate::ir::Tensor::from_raw(
                        t.dtype,
                        vec![],
                        [&b[..64], &b[b.len() - 64..]].concat(),
                    );
                    edge.dims = vec![];
                    tensor_hash(&edge)
                }
                _ => tensor_hash(t),
            };
            let key = (t.dtype.0, t.dims.clone(), fp);
            let seen = first.entry(key).or_default();
            // A hash match is confirmed byte for byte before merging.
            match seen
                .iter()
                .find(|&&s| g.constant(s).is_some_and(|st| st.same_values(t)))
            {
                Some(&keep) => merges.push((v, keep)),
                None => seen.push(v),
            }
        }
        let changed = !merges.is_empty();
        for (dup, keep) in merges {
            if g.uses(dup).iter().any(|(_, slot)| slot.is_none()) {
                // Read by name from a subgraph: renaming would break the capture.
                continue;
            }
            g.replace_all_uses(dup, keep, false);
            let _ = g.remove_node(dup.node);
        }
        Ok(changed)
    }
}
