//! The flat index: every vector in one contiguous, cache-line-aligned arena, searched by an
//! exact SIMD scan.
//!
//! Also the ground truth other indexes are tested against. Vectors of cosine collections are
//! stored normalised, so cosine distance is `1 − dot`. Slots are dense: a deletion moves the
//! last slot into the hole.
//!
//! Checkpoint payload (kind version 1), after the 64-byte container header:
//! ```text
//! u64 n, 56 zero bytes          (so the next slab is 64-byte aligned in the file)
//! n × dim × f32   vectors, slot order
//! n × u32         internal ids, slot order
//! n × [u8; 16]    uuids, slot order
//! ```

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use roaring::RoaringBitmap;
use uuid::Uuid;

use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::stored::StoredVectors;
use super::{DerivedIndex, IndexSearch, SearchKnobs, TopK, VectorIndexRead};
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId, Metric, Seq};

const KIND_VERSION: u16 = 1;
const FILE_NAME: &str = "flat.qvi";
/// Scans of at least this many floats are split across threads.
const PARALLEL_SCAN_FLOATS: usize = 1 << 21;
/// Batch searches compare this many bytes of vectors (about an L2 cache's worth) with every
/// query of a group before moving on.
const SCAN_BLOCK_BYTES: usize = 256 << 10;
/// Queries answered together by one scan of the vectors.
const QUERY_GROUP: usize = 16;
/// A filtered search looks its matches up one by one when they are fewer than one in this many
/// vectors (a lookup costs a hash probe and a cache miss); otherwise it scans everything.
const LOOKUP_SCAN_RATIO: u64 = 8;

/// Exact brute-force vector index.
pub struct FlatIndex {
    dim: usize,
    metric: Metric,
    distance: MetricDistance,
    config_fingerprint: u64,
    stored: StoredVectors,
    watermark: Seq,
}

impl FlatIndex {
    /// An empty index for a collection of this configuration; `instance` identifies the
    /// collection (see [`CollectionConfig::index_fingerprint`]).
    pub fn new(config: &CollectionConfig, instance: u64) -> Self {
        FlatIndex {
            dim: config.dim,
            metric: config.metric,
            distance: MetricDistance::new(config.metric),
            config_fingerprint: config.index_fingerprint(instance),
            stored: StoredVectors::new(config.dim),
            watermark: 0,
        }
    }

    fn header(&self) -> FileHeader {
        FileHeader {
            kind: IndexFileKind::Flat,
            kind_version: KIND_VERSION,
            dim: self.dim as u32,
            metric: self.metric,
            config_fingerprint: self.config_fingerprint,
            watermark: self.watermark,
        }
    }

    fn upsert(&mut self, id: InternalId, uuid: Uuid, vector: &[f32]) -> Result<()> {
        let stored = match self.distance.prepare(vector) {
            Some(v) if v.len() == self.dim => v,
            _ => {
                return Err(Error::Internal(format!(
                    "flat index got an unusable vector for document {uuid}"
                )))
            }
        };
        match self.stored.slots.slot(id) {
            Some(slot) => {
                self.stored.vectors.set(slot, &stored);
                self.stored.slots.set_uuid(slot, uuid);
            }
            None => {
                self.stored.push(id, uuid, &stored);
            }
        }
        Ok(())
    }

    /// Removes `id` by moving the last slot into its place.
    fn remove(&mut self, id: InternalId) {
        let Some(slot) = self.stored.slots.slot(id) else {
            return;
        };
        self.stored.slots.vacate(slot);
        self.stored.slots.swap_remove(slot);
        self.stored.vectors.swap_remove(slot);
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }
}

impl FlatIndex {
    /// The `k` nearest of the documents passing `keep`, by a scan of every slot (split across
    /// threads for large collections).
    fn scan_all(&self, query: &[f32], k: usize, keep: impl Fn(InternalId) -> bool + Sync) -> TopK {
        let n = self.stored.vectors.len();
        if n * self.dim < PARALLEL_SCAN_FLOATS {
            let mut top = TopK::new(k);
            self.stored
                .scan_where(query, 0..n, &self.distance, &mut top, keep);
            return top;
        }
        let chunk = (PARALLEL_SCAN_FLOATS / self.dim).max(1);
        (0..n.div_ceil(chunk))
            .into_par_iter()
            .map(|c| {
                let mut top = TopK::new(k);
                let range = c * chunk..((c + 1) * chunk).min(n);
                self.stored
                    .scan_where(query, range, &self.distance, &mut top, &keep);
                top
            })
            .reduce(
                || TopK::new(k),
                |mut a, b| {
                    a.merge(b);
                    a
                },
            )
    }
}

impl VectorIndexRead for FlatIndex {
    fn search(&self, query: &[f32], k: usize, _knobs: &SearchKnobs) -> IndexSearch {
        let Some(query) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "flat_exact",
                ..IndexSearch::default()
            };
        };
        IndexSearch {
            strategy: "flat_exact",
            neighbors: self.scan_all(&query, k, |_| true).into_sorted(),
            examined: self.stored.vectors.len(),
            exhaustive: true,
            disk: None,
        }
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        _knobs: &SearchKnobs,
        allowed: &RoaringBitmap,
    ) -> IndexSearch {
        let Some(query) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "flat_exact_filtered",
                ..IndexSearch::default()
            };
        };
        // Few matches: look each one up; many: one pass over the arena, in memory order.
        let (top, examined) =
            if allowed.len() * LOOKUP_SCAN_RATIO < self.stored.vectors.len() as u64 {
                let top = self
                    .stored
                    .scan_ids(&query, allowed, k, &self.distance, |id| {
                        self.stored.slots.slot(id)
                    });
                (top, allowed.len() as usize)
            } else {
                let top = self.scan_all(&query, k, |id| allowed.contains(id));
                (top, self.stored.vectors.len())
            };
        IndexSearch {
            strategy: "flat_exact_filtered",
            neighbors: top.into_sorted(),
            examined,
            exhaustive: true,
            disk: None,
        }
    }

    /// Scans the vectors once per group of queries instead of once per query: a block of
    /// vectors is loaded into cache and compared with every query of the group before moving on.
    fn search_many(
        &self,
        queries: &[&[f32]],
        ks: &[usize],
        _knobs: &[SearchKnobs],
    ) -> Vec<IndexSearch> {
        let prepared: Vec<Option<Vec<f32>>> =
            queries.iter().map(|q| self.distance.prepare(q)).collect();
        let n = self.stored.vectors.len();
        let block = (SCAN_BLOCK_BYTES / (self.dim * 4)).max(1);
        let groups: Vec<(usize, usize)> = (0..queries.len())
            .step_by(QUERY_GROUP)
            .map(|start| (start, (start + QUERY_GROUP).min(queries.len())))
            .collect();
        groups
            .into_par_iter()
            .flat_map_iter(|(start, end)| {
                let mut tops: Vec<TopK> = ks[start..end].iter().map(|&k| TopK::new(k)).collect();
                for first in (0..n).step_by(block) {
                    let range = first..(first + block).min(n);
                    for (q, top) in prepared[start..end].iter().zip(&mut tops) {
                        if let Some(q) = q {
                            self.stored.scan_into(q, range.clone(), &self.distance, top);
                        }
                    }
                }
                tops.into_iter().map(move |top| IndexSearch {
                    strategy: "flat_exact",
                    neighbors: top.into_sorted(),
                    examined: n,
                    exhaustive: true,
                    disk: None,
                })
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.stored.slots.live()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        self.stored.vector_of(id)
    }

    fn memory_bytes(&self) -> usize {
        self.stored.memory_bytes()
    }

    fn document_id(&self, id: InternalId) -> Option<Uuid> {
        self.stored.document_id(id)
    }
}

impl DerivedIndex for FlatIndex {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()> {
        match doc {
            Some(doc) => self.upsert(change.id, doc.id, doc.vector)?,
            None => self.remove(change.id),
        }
        self.watermark = self.watermark.max(change.seq);
        Ok(())
    }

    fn watermark(&self) -> Seq {
        self.watermark
    }

    fn reset(&mut self, watermark: Seq) {
        self.stored.clear();
        self.watermark = watermark;
    }

    fn checkpoint(&self, dir: &IndexDir) -> Result<Seq> {
        let mut out = FileWriter::create(dir, FILE_NAME, self.header())?;
        let mut head = [0u8; 64];
        head[..8].copy_from_slice(&(self.stored.vectors.len() as u64).to_le_bytes());
        out.write(&head)?;
        self.stored.write(&mut out)?;
        out.finish()?;
        Ok(self.watermark)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool> {
        let Some(mut input) = FileReader::open(&Self::path(dir), &self.header())? else {
            return Ok(false);
        };
        let n = input.read_u64()?;
        let mut reserved = [0u8; 56];
        input.read(&mut reserved)?;
        if reserved != [0u8; 56] {
            return Err(input.corrupted("reserved bytes are not zero"));
        }
        let n = usize::try_from(n).map_err(|_| input.corrupted("absurd vector count"))?;
        // The payload's exact size is known: check it before allocating for `n` vectors.
        let per_vector = self.dim as u64 * 4 + 4 + 16;
        if (n as u64).checked_mul(per_vector) != Some(input.remaining()) {
            return Err(input.corrupted("payload size does not match its vector count"));
        }
        let stored = StoredVectors::read(&mut input, n, self.dim)?;
        if stored.slots.live() != n {
            return Err(input.corrupted("a flat index has no vacant slots"));
        }
        let header = input.finish()?;
        self.stored = stored;
        self.watermark = header.watermark;
        Ok(true)
    }

    fn reserve(&mut self, additional: usize) {
        self.stored.reserve(additional);
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        self.stored.slots.sorted_ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChangeOp;
    use serde_json::Map;

    fn apply(index: &mut FlatIndex, seq: Seq, id: InternalId, vector: Option<&[f32]>) {
        let meta = Map::new();
        let uuid = Uuid::from_u128(u128::from(id) + 1000);
        let view = vector.map(|v| DocView {
            id: uuid,
            vector: v,
            metadata: &meta,
            text: None,
        });
        let op = if vector.is_some() {
            ChangeOp::Upsert
        } else {
            ChangeOp::Delete
        };
        index.apply(&Change { seq, op, id }, view).unwrap();
    }

    #[test]
    fn upsert_delete_and_search() {
        let mut index = FlatIndex::new(&CollectionConfig::new(2, Metric::L2), 1);
        apply(&mut index, 1, 0, Some(&[0.0, 0.0]));
        apply(&mut index, 2, 1, Some(&[1.0, 0.0]));
        apply(&mut index, 3, 2, Some(&[5.0, 5.0]));
        apply(&mut index, 4, 0, None);
        apply(&mut index, 5, 1, Some(&[0.5, 0.0]));
        assert_eq!(index.watermark(), 5);
        assert_eq!(index.internal_ids(), vec![1, 2]);
        let hits = index
            .search(&[0.0, 0.0], 10, &SearchKnobs::default())
            .neighbors;
        assert_eq!(hits.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(hits[0].distance, 0.25);
    }

    #[test]
    fn checkpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectionConfig::new(3, Metric::Cosine);
        let mut index = FlatIndex::new(&config, 1);
        for i in 0..50u32 {
            apply(
                &mut index,
                u64::from(i) + 1,
                i,
                Some(&[i as f32 + 1.0, 1.0, -2.0]),
            );
        }
        apply(&mut index, 51, 7, None);
        index
            .checkpoint(&crate::index::io::IndexDir::os(dir.path().to_path_buf()))
            .unwrap();
        let mut loaded = FlatIndex::new(&config, 1);
        assert!(loaded.load_checkpoint(dir.path()).unwrap());
        assert_eq!(loaded.watermark(), 51);
        assert_eq!(loaded.internal_ids(), index.internal_ids());
        let q = [1.0, 2.0, 3.0];
        assert_eq!(
            loaded.search(&q, 5, &SearchKnobs::default()).neighbors,
            index.search(&q, 5, &SearchKnobs::default()).neighbors
        );
        let other = CollectionConfig::new(3, Metric::L2);
        assert!(FlatIndex::new(&other, 1)
            .load_checkpoint(dir.path())
            .is_err());
        assert!(
            FlatIndex::new(&config, 2)
                .load_checkpoint(dir.path())
                .is_err(),
            "another collection's file"
        );
    }
}
