//! Integrity checks: does every derived index agree with the store?
//!
//! For each collection, under its writer lock (so the store snapshot and the index describe the
//! same state): the index holds exactly the store's internal ids, each with the stored vector;
//! its watermark equals the last logged change; its checkpoint file, if any, validates (magic,
//! version, configuration, checksum) and can be replayed from the change log.

use serde::Serialize;

use crate::collection::Collection;
use crate::config::VectorPrecision;
use crate::distance;
use crate::error::{Error, Result};
use crate::index::DerivedIndex;
use crate::types::Metric;

/// At most this many offending ids are listed per problem.
const MAX_LISTED: usize = 10;

/// The result of checking one index of one collection.
#[derive(Clone, Debug, Serialize)]
pub struct IndexCheck {
    /// Collection name.
    pub collection: String,
    /// Index name.
    pub index: String,
    /// Documents in the store.
    pub store_count: u64,
    /// Vectors in the index.
    pub index_count: usize,
    /// Last change logged in the store.
    pub last_seq: u64,
    /// Last change the index reflects.
    pub watermark: u64,
    /// State of the checkpoint file: `"ok"`, `"none"` or the validation error.
    pub checkpoint: String,
    /// Every disagreement found; empty when the index is sound.
    pub problems: Vec<String>,
}

impl IndexCheck {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The result of checking one or more collections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// One entry per index checked.
    pub indexes: Vec<IndexCheck>,
}

impl CheckReport {
    /// True when every index is sound.
    pub fn ok(&self) -> bool {
        self.indexes.iter().all(IndexCheck::ok)
    }
}

/// Checks the payload indexes of `collection` (when it declares any) against the store: rows
/// against the documents' metadata, bitmaps against the rows.
pub fn check_payload(collection: &Collection) -> Result<Option<IndexCheck>> {
    if collection.config().payload_fields.is_empty() {
        return Ok(None);
    }
    collection.with_consistent_view(|_, reader, _| {
        let (live, problems) = collection.verify_payload(reader)?;
        let last_seq = reader.last_seq()?;
        Ok(Some(IndexCheck {
            collection: collection.name().to_string(),
            index: "payload".to_string(),
            store_count: reader.count()?,
            index_count: live as usize,
            last_seq,
            // Rows are written in the documents' transactions: always current.
            watermark: last_seq,
            checkpoint: "none (rows live in the store)".to_string(),
            problems,
        }))
    })
}

/// Checks the keyword index of `collection` (when it has one) against the store: it holds
/// exactly the documents that have a text, its files validate, and it reflects the last change.
pub fn check_keyword(collection: &Collection) -> Result<Option<IndexCheck>> {
    collection
        .with_keyword_view(|index, reader| {
            let mut with_text = Vec::new();
            reader.for_each_document(|id, doc| {
                if doc.text.is_some() {
                    with_text.push(id);
                }
                Ok(())
            })?;
            with_text.sort_unstable();
            let held = index.internal_ids();
            let mut problems = id_set_problems(&with_text, &held);
            problems.extend(index.verify());
            let last_seq = reader.last_seq()?;
            problems.extend(watermark_problem(index.watermark(), last_seq));
            Ok(IndexCheck {
                collection: collection.name().to_string(),
                index: index.name().to_string(),
                store_count: with_text.len() as u64,
                index_count: held.len(),
                last_seq,
                watermark: index.watermark(),
                checkpoint: "tantivy commit (validated)".to_string(),
                problems,
            })
        })
        .transpose()
}

/// The problem of an index whose watermark is not the last logged change, if it is not.
fn watermark_problem(watermark: u64, last_seq: u64) -> Option<String> {
    (watermark != last_seq).then(|| {
        format!("index watermark {watermark} differs from the last logged change {last_seq}")
    })
}

/// Problems of an index that should hold exactly `expected` (sorted) but holds `held` (sorted).
fn id_set_problems(expected: &[u32], held: &[u32]) -> Vec<String> {
    let mut problems = Vec::new();
    let missing = sorted_difference(expected, held);
    let extra = sorted_difference(held, expected);
    if !missing.is_empty() {
        problems.push(format!(
            "{} documents missing from the index, e.g. internal ids {:?}",
            missing.len(),
            &missing[..missing.len().min(MAX_LISTED)]
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "{} ids in the index are not in the store, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(MAX_LISTED)]
        ));
    }
    if held.windows(2).any(|w| w[0] == w[1]) {
        problems.push("the index holds some documents twice".into());
    }
    problems
}

/// Checks the vector index of `collection` against the store.
pub fn check_collection(collection: &Collection) -> Result<IndexCheck> {
    let config = collection.config().clone();
    collection.with_consistent_view(|index, reader, dir| {
        let store_pairs = reader.id_pairs()?;
        let index_ids = index.internal_ids();
        let store_ids: Vec<u32> = store_pairs.iter().map(|&(id, _)| id).collect();
        let mut problems = id_set_problems(&store_ids, &index_ids);
        let mut wrong_vectors = Vec::new();
        // Half floats: the rounding of a component normalised on another CPU's kernels can land
        // one half-float step away (2⁻¹⁰ relative, or the smallest subnormal).
        let half = config.index.precision() == VectorPrecision::F16;
        let tolerance = |b: f32| {
            if half {
                b.abs() / 1024.0 + 6e-8
            } else {
                1e-6 * b.abs().max(1.0)
            }
        };
        reader.for_each_document(|id, doc| {
            let mut expected = doc.vector;
            if config.metric == Metric::Cosine {
                distance::normalize(&mut expected);
            }
            if half {
                for x in &mut expected {
                    *x = distance::f16::from_f32(*x).to_f32();
                }
            }
            if let Some(held) = index.vector(id) {
                let close = held.len() == expected.len()
                    && held
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| (a - b).abs() <= tolerance(*b));
                if !close {
                    wrong_vectors.push(doc.id);
                }
            }
            Ok(())
        })?;
        if !wrong_vectors.is_empty() {
            problems.push(format!(
                "{} documents have a different vector in the index, e.g. {:?}",
                wrong_vectors.len(),
                &wrong_vectors[..wrong_vectors.len().min(MAX_LISTED)]
            ));
        }
        problems.extend(index.verify());
        let last_seq = reader.last_seq()?;
        problems.extend(watermark_problem(index.watermark(), last_seq));
        let mut scratch = collection.new_vector_index();
        let checkpoint = match scratch.load_checkpoint(dir) {
            Ok(false) => "none".to_string(),
            Ok(true) if scratch.watermark() < reader.trimmed_through()? => {
                problems.push(format!(
                    "checkpoint watermark {} is older than the trimmed change log",
                    scratch.watermark()
                ));
                "stale".to_string()
            }
            Ok(true) => "ok".to_string(),
            Err(Error::Corrupted { file, detail }) => {
                problems.push(format!(
                    "checkpoint {} is corrupted: {detail}",
                    file.display()
                ));
                detail
            }
            Err(other) => return Err(other),
        };
        Ok(IndexCheck {
            collection: collection.name().to_string(),
            index: index.name().to_string(),
            store_count: store_ids.len() as u64,
            index_count: index.len(),
            last_seq,
            watermark: index.watermark(),
            checkpoint,
            problems,
        })
    })
}

/// Elements of sorted `a` that are not in sorted `b`.
fn sorted_difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_difference_matches_a_set_difference() {
        assert_eq!(sorted_difference(&[1, 2, 3, 5], &[2, 5, 6]), vec![1, 3]);
        assert_eq!(sorted_difference(&[], &[1]), Vec::<u32>::new());
        assert_eq!(sorted_difference(&[4], &[]), vec![4]);
    }
}
