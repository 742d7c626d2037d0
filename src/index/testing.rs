//! Helpers of the indexes' unit tests: documents as a naive model, fed to an index change by
//! change.

use std::collections::BTreeMap;

use super::{DerivedIndex, IndexSearch};
use crate::types::{Change, ChangeOp, DocView, InternalId, Seq};

/// The documents a test expects an index to hold: internal id → vector.
pub type Model = BTreeMap<InternalId, Vec<f32>>;

/// A `dim`-dimensional vector with components in [-5, 5), determined by `seed`.
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = crate::rng::SplitMix(seed);
    (0..dim)
        .map(|_| (rng.next_f64() * 10.0 - 5.0) as f32)
        .collect()
}

/// Applies `changes` (`Some` upserts, `None` deletes) to `index` and to `model`, one
/// `DerivedIndex::apply` each, numbered from `seq` on; finishes and publishes nothing.
pub fn apply_changes<I: DerivedIndex + ?Sized>(
    index: &mut I,
    model: &mut Model,
    seq: &mut Seq,
    changes: &[(InternalId, Option<Vec<f32>>)],
) {
    let meta = serde_json::Map::new();
    for (id, vector) in changes {
        *seq += 1;
        let op = if vector.is_some() {
            ChangeOp::Upsert
        } else {
            ChangeOp::Delete
        };
        let view = vector.as_ref().map(|v| DocView {
            id: uuid::Uuid::from_u128(u128::from(*id) + 1),
            vector: v,
            metadata: &meta,
            text: None,
        });
        let change = Change {
            seq: *seq,
            op,
            id: *id,
        };
        index.apply(&change, view).unwrap();
        match vector {
            Some(v) => model.insert(*id, v.clone()),
            None => model.remove(id),
        };
    }
}

/// The ids of the `k` documents of `model` nearest to `q` by squared L2 (ties by id).
pub fn nearest_in_model(model: &Model, q: &[f32], k: usize) -> Vec<InternalId> {
    let mut exact: Vec<(f32, InternalId)> = model
        .iter()
        .map(|(id, v)| (crate::distance::l2_squared(q, v), *id))
        .collect();
    exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    exact.into_iter().take(k).map(|(_, id)| id).collect()
}

/// The internal ids an index search found, in order.
pub fn found_ids(search: &IndexSearch) -> Vec<InternalId> {
    search.neighbors.iter().map(|n| n.id).collect()
}
