//! The flat index: every vector in one contiguous slab, searched by an exact SIMD scan.
//!
//! Also the ground truth other indexes are tested against. Vectors of cosine collections are
//! stored normalised, so cosine distance is `1 − dot`.
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
use uuid::Uuid;

use super::file::{self, FileHeader, IndexFileKind};
use super::{DerivedIndex, IndexSearch, Neighbor, TopK, VectorIndexRead};
use crate::config::CollectionConfig;
use crate::distance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId, Metric, Seq};
use crate::vectors::VectorArena;

const KIND_VERSION: u16 = 1;
const FILE_NAME: &str = "flat.qvi";
const SLOT_NONE: u32 = u32::MAX;
/// Scans of at least this many floats are split across threads.
const PARALLEL_SCAN_FLOATS: usize = 1 << 21;

/// Exact brute-force vector index.
pub struct FlatIndex {
    dim: usize,
    metric: Metric,
    config_fingerprint: u64,
    /// Vectors by slot, cache-line aligned.
    vectors: VectorArena,
    slot_ids: Vec<InternalId>,
    slot_uuids: Vec<Uuid>,
    /// Internal id → slot, `SLOT_NONE` when absent.
    slot_of: Vec<u32>,
    watermark: Seq,
}

impl FlatIndex {
    /// An empty index for a collection of this configuration; `instance` identifies the
    /// collection (see [`CollectionConfig::index_fingerprint`]).
    pub fn new(config: &CollectionConfig, instance: u64) -> Self {
        FlatIndex {
            dim: config.dim,
            metric: config.metric,
            config_fingerprint: config.index_fingerprint(instance),
            vectors: VectorArena::new(config.dim),
            slot_ids: Vec::new(),
            slot_uuids: Vec::new(),
            slot_of: Vec::new(),
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

    fn slot(&self, id: InternalId) -> Option<usize> {
        match self.slot_of.get(id as usize) {
            Some(&slot) if slot != SLOT_NONE => Some(slot as usize),
            _ => None,
        }
    }

    fn upsert(&mut self, id: InternalId, uuid: Uuid, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim {
            return Err(Error::Internal(format!(
                "flat index got a {}-D vector for a {}-D collection",
                vector.len(),
                self.dim
            )));
        }
        let mut stored = vector.to_vec();
        if self.metric == Metric::Cosine && !distance::normalize(&mut stored) {
            return Err(Error::Internal(format!(
                "document {uuid} has a zero vector under cosine"
            )));
        }
        match self.slot(id) {
            Some(slot) => {
                self.vectors.set(slot, &stored);
                self.slot_uuids[slot] = uuid;
            }
            None => {
                let slot = u32::try_from(self.slot_ids.len())
                    .map_err(|_| Error::Internal("flat index is full".into()))?;
                if self.slot_of.len() <= id as usize {
                    self.slot_of.resize(id as usize + 1, SLOT_NONE);
                }
                self.slot_of[id as usize] = slot;
                self.slot_ids.push(id);
                self.slot_uuids.push(uuid);
                self.vectors.push(&stored);
            }
        }
        Ok(())
    }

    /// Removes `id` by moving the last slot into its place.
    fn remove(&mut self, id: InternalId) {
        let Some(slot) = self.slot(id) else { return };
        let last = self.slot_ids.len() - 1;
        self.vectors.swap_remove(slot);
        if slot != last {
            self.slot_ids[slot] = self.slot_ids[last];
            self.slot_uuids[slot] = self.slot_uuids[last];
            self.slot_of[self.slot_ids[slot] as usize] = slot as u32;
        }
        self.slot_ids.pop();
        self.slot_uuids.pop();
        self.slot_of[id as usize] = SLOT_NONE;
    }

    /// Prepares a query for scanning (normalised for cosine).
    fn prepare_query(&self, query: &[f32]) -> Vec<f32> {
        let mut q = query.to_vec();
        if self.metric == Metric::Cosine {
            distance::normalize(&mut q);
        }
        q
    }

    fn scan(&self, query: &[f32], slots: std::ops::Range<usize>, k: usize) -> TopK {
        let kernels = distance::kernels();
        let mut top = TopK::new(k);
        for slot in slots {
            let v = self.vectors.get(slot);
            let distance = match self.metric {
                Metric::Cosine => 1.0 - (kernels.dot)(query, v),
                Metric::L2 => (kernels.l2_squared)(query, v),
                Metric::Dot => -(kernels.dot)(query, v),
            };
            if distance <= top.threshold() || distance.is_nan() {
                top.push(Neighbor {
                    id: self.slot_ids[slot],
                    uuid: self.slot_uuids[slot],
                    distance,
                });
            }
        }
        top
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }
}

impl VectorIndexRead for FlatIndex {
    fn strategy(&self) -> &'static str {
        "flat_exact"
    }

    fn search(&self, query: &[f32], k: usize) -> IndexSearch {
        let query = self.prepare_query(query);
        let n = self.slot_ids.len();
        let top = if n * self.dim >= PARALLEL_SCAN_FLOATS {
            let chunk = (PARALLEL_SCAN_FLOATS / self.dim).max(1);
            (0..n.div_ceil(chunk))
                .into_par_iter()
                .map(|c| self.scan(&query, c * chunk..((c + 1) * chunk).min(n), k))
                .reduce(
                    || TopK::new(k),
                    |mut a, b| {
                        a.merge(b);
                        a
                    },
                )
        } else {
            self.scan(&query, 0..n, k)
        };
        IndexSearch {
            neighbors: top.into_sorted(),
            examined: n,
            exhaustive: true,
        }
    }

    fn len(&self) -> usize {
        self.slot_ids.len()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        self.slot(id).map(|slot| self.vectors.get(slot).to_vec())
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
        self.vectors.clear();
        self.slot_ids = Vec::new();
        self.slot_uuids = Vec::new();
        self.slot_of = Vec::new();
        self.watermark = watermark;
    }

    fn checkpoint(&self, dir: &Path) -> Result<Seq> {
        let mut head = [0u8; 64];
        head[..8].copy_from_slice(&(self.slot_ids.len() as u64).to_le_bytes());
        let vectors: Vec<u8> = (0..self.vectors.len())
            .flat_map(|slot| self.vectors.get(slot).iter().flat_map(|x| x.to_le_bytes()))
            .collect();
        let ids: Vec<u8> = self.slot_ids.iter().flat_map(|x| x.to_le_bytes()).collect();
        let uuids: Vec<u8> = self.slot_uuids.iter().flat_map(|u| *u.as_bytes()).collect();
        file::write_atomic(
            &Self::path(dir),
            &self.header(),
            &[&head, &vectors, &ids, &uuids],
        )?;
        Ok(self.watermark)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool> {
        let path = Self::path(dir);
        let Some((header, payload)) = file::read_verified(&path, &self.header())? else {
            return Ok(false);
        };
        let bad = |detail: &str| Error::corrupted(&path, detail.to_string());
        if payload.len() < 64 {
            return Err(bad("payload shorter than its count block"));
        }
        let n = u64::from_le_bytes(payload[..8].try_into().map_err(|_| bad("count"))?);
        let per_slot = (self.dim as u64) * 4 + 4 + 16;
        if n.checked_mul(per_slot) != Some(payload.len() as u64 - 64) {
            return Err(bad("payload length does not match its vector count"));
        }
        let n = n as usize;
        let (vectors, rest) = payload[64..].split_at(n * self.dim * 4);
        let (ids, uuids) = rest.split_at(n * 4);
        let mut arena = VectorArena::new(self.dim);
        arena.reserve_slots(n);
        let mut vector = Vec::with_capacity(self.dim);
        for bytes in vectors.chunks_exact(self.dim * 4) {
            vector.clear();
            vector.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            arena.push(&vector);
        }
        let slot_ids: Vec<u32> = ids
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let slot_uuids: Vec<Uuid> = uuids
            .chunks_exact(16)
            .map(|c| Uuid::from_slice(c).map_err(|_| bad("uuid")))
            .collect::<Result<_>>()?;
        let max_id = slot_ids.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut slot_of = vec![SLOT_NONE; max_id];
        for (slot, &id) in slot_ids.iter().enumerate() {
            if id == SLOT_NONE || slot_of[id as usize] != SLOT_NONE {
                return Err(bad("internal id listed twice or invalid"));
            }
            slot_of[id as usize] = slot as u32;
        }
        self.vectors = arena;
        self.slot_ids = slot_ids;
        self.slot_uuids = slot_uuids;
        self.slot_of = slot_of;
        self.watermark = header.watermark;
        Ok(true)
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        let mut ids = self.slot_ids.clone();
        ids.sort_unstable();
        ids
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
        let hits = index.search(&[0.0, 0.0], 10).neighbors;
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
        index.checkpoint(dir.path()).unwrap();
        let mut loaded = FlatIndex::new(&config, 1);
        assert!(loaded.load_checkpoint(dir.path()).unwrap());
        assert_eq!(loaded.watermark(), 51);
        assert_eq!(loaded.internal_ids(), index.internal_ids());
        let q = [1.0, 2.0, 3.0];
        assert_eq!(
            loaded.search(&q, 5).neighbors,
            index.search(&q, 5).neighbors
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
