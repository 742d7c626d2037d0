//! What every in-RAM vector index holds besides its own structure: the vectors by slot and the
//! slot ↔ document maps, with the exact scan, lookups and persistence they share.

use std::ops::Range;

use roaring::RoaringBitmap;
use uuid::Uuid;

use super::file::{self, FileReader, FileWriter};
use super::slots::SlotIds;
use super::{IndexSearch, Neighbor, TopK};
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId};
use crate::vectors::{Element, VectorArena};

/// What a committed change means for an index's stored vectors (see
/// [`StoredVectors::classify`]).
pub enum StoredChange {
    /// Nothing to do: metadata or text changed (the slot's UUID was refreshed), or a document
    /// the index does not hold was deleted.
    Unchanged,
    /// A document the index does not hold, with its vector prepared for the metric.
    Insert(Vec<f32>),
    /// A new vector for the document held in `slot`.
    Replace {
        /// The slot of the old version.
        slot: usize,
        /// The new vector, prepared for the metric.
        vector: Vec<f32>,
    },
    /// The document held in this slot was deleted.
    Delete(usize),
}

/// Where each slot of a [`StoredVectors::live_copy`] came from in the original.
pub struct SlotOrigins {
    /// Slots of the original below this were looked at.
    seen: usize,
    /// For each slot of the copy, the slot of the original it copies.
    sources: Vec<usize>,
}

impl SlotOrigins {
    /// Number of slots of the copy.
    #[cfg(test)]
    pub(crate) fn copied(&self) -> usize {
        self.sources.len()
    }

    /// Brings `copy` up to date with the changes `original` received since it was copied (or
    /// last caught up): copies of slots vacated since are vacated (a document replaced since
    /// has its new version among the added slots), and slots added since are appended. Returns
    /// the appended slots of the copy.
    pub fn catch_up<E: Element>(
        &mut self,
        copy: &mut StoredVectors<E>,
        original: &StoredVectors<E>,
    ) -> Range<usize> {
        for (copy_slot, &slot) in self.sources.iter().enumerate() {
            if original.slots.id(slot).is_none() {
                copy.slots.vacate(copy_slot);
            }
        }
        let first_added = copy.slots.slots();
        for slot in self.seen..original.slots.slots() {
            if let Some(id) = original.slots.id(slot) {
                copy.push_copy(id, original.slots.uuid(slot), &original.vectors, slot);
                self.sources.push(slot);
            }
        }
        self.seen = original.slots.slots();
        first_added..copy.slots.slots()
    }
}

/// Vectors by slot (prepared for the metric) and the documents they belong to.
#[derive(Clone)]
pub struct StoredVectors<E: Element = f32> {
    /// The vectors, cache-line aligned.
    pub vectors: VectorArena<E>,
    /// Slot ↔ document maps; a vacant slot is a deleted document.
    pub slots: SlotIds,
}

impl<E: Element> StoredVectors<E> {
    /// Empty storage for `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        StoredVectors {
            vectors: VectorArena::new(dim),
            slots: SlotIds::default(),
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.vectors.clear();
        self.slots = SlotIds::default();
    }

    /// Makes room for `additional` more vectors.
    pub fn reserve(&mut self, additional: usize) {
        self.vectors.reserve_slots(self.vectors.len() + additional);
        self.slots.reserve(additional);
    }

    /// Appends `vector` for document `id` and returns its slot.
    pub fn push(&mut self, id: InternalId, uuid: Uuid, vector: &[f32]) -> usize {
        self.slots.push(id, uuid);
        self.vectors.push(vector)
    }

    /// Appends a copy of the vector in `slot` of `from` for document `id`; returns the new slot.
    pub fn push_copy(
        &mut self,
        id: InternalId,
        uuid: Uuid,
        from: &VectorArena<E>,
        slot: usize,
    ) -> usize {
        self.slots.push(id, uuid);
        self.vectors.push_stored(from.get(slot))
    }

    /// A copy of the live slots, renumbered (vacant slots, and old versions a later slot of the
    /// same document supersedes, are left out), and where each came from: the start of a
    /// rebuild in the background, which [`SlotOrigins::catch_up`] later brings up to date.
    pub fn live_copy(&self) -> (StoredVectors<E>, SlotOrigins) {
        let mut copy = StoredVectors::new(self.vectors.dim());
        copy.reserve(self.slots.live());
        let mut sources = Vec::with_capacity(self.slots.live());
        for slot in 0..self.slots.slots() {
            let current = self
                .slots
                .id(slot)
                .filter(|&id| self.slots.slot(id) == Some(slot));
            if let Some(id) = current {
                copy.push_copy(id, self.slots.uuid(slot), &self.vectors, slot);
                sources.push(slot);
            }
        }
        let origins = SlotOrigins {
            seen: self.slots.slots(),
            sources,
        };
        (copy, origins)
    }

    /// Classifies a change for an index holding these vectors: `doc` is the document after it
    /// (`None` if deleted). A vector that cannot be prepared (wrong length, zero under cosine)
    /// is an internal error: the write path validated it.
    pub fn classify(
        &mut self,
        distance: &MetricDistance,
        change: &Change,
        doc: Option<DocView<'_>>,
    ) -> Result<StoredChange> {
        let current = self.slots.slot(change.id);
        let Some(doc) = doc else {
            return Ok(current.map_or(StoredChange::Unchanged, StoredChange::Delete));
        };
        let dim = self.vectors.dim();
        let vector = distance
            .prepare(doc.vector)
            .filter(|v| v.len() == dim)
            .ok_or_else(|| Error::Internal(format!("unusable vector for document {}", doc.id)))?;
        Ok(match current {
            Some(slot) if self.vectors.holds(slot, &vector) => {
                self.slots.set_uuid(slot, doc.id);
                StoredChange::Unchanged
            }
            Some(slot) => StoredChange::Replace { slot, vector },
            None => StoredChange::Insert(vector),
        })
    }

    /// The `k` nearest occupied slots of `range` to the prepared query `q`.
    pub fn scan(
        &self,
        q: &[f32],
        range: Range<usize>,
        k: usize,
        distance: &MetricDistance,
    ) -> TopK {
        let mut top = TopK::new(k);
        self.scan_into(q, range, distance, &mut top);
        top
    }

    /// Offers every occupied slot of `range` to `top`.
    pub fn scan_into(
        &self,
        q: &[f32],
        range: Range<usize>,
        distance: &MetricDistance,
        top: &mut TopK,
    ) {
        self.scan_where(q, range, distance, top, |_| true);
    }

    /// Offers every occupied slot of `range` whose document passes `keep` to `top`.
    pub fn scan_where(
        &self,
        q: &[f32],
        range: Range<usize>,
        distance: &MetricDistance,
        top: &mut TopK,
        keep: impl Fn(InternalId) -> bool,
    ) {
        for slot in range {
            match self.slots.id(slot) {
                Some(id) if keep(id) => self.offer(q, slot, id, distance, top),
                _ => {}
            }
        }
    }

    /// The `k` nearest of documents `ids`, each looked up with `slot_of` (which may hide some).
    pub fn scan_ids(
        &self,
        q: &[f32],
        ids: &RoaringBitmap,
        k: usize,
        distance: &MetricDistance,
        slot_of: impl Fn(InternalId) -> Option<usize>,
    ) -> TopK {
        let mut top = TopK::new(k);
        for id in ids {
            if let Some(slot) = slot_of(id) {
                self.offer(q, slot, id, distance, &mut top);
            }
        }
        top
    }

    /// An exact answer among documents `ids` (every one scanned), each looked up with
    /// `slot_of`, reported as served by `strategy`.
    pub fn exact_among(
        &self,
        q: &[f32],
        ids: &RoaringBitmap,
        k: usize,
        distance: &MetricDistance,
        strategy: &'static str,
        slot_of: impl Fn(InternalId) -> Option<usize>,
    ) -> IndexSearch {
        IndexSearch {
            strategy,
            neighbors: self.scan_ids(q, ids, k, distance, slot_of).into_sorted(),
            examined: ids.len() as usize,
            exhaustive: true,
            disk: None,
        }
    }

    #[inline]
    fn offer(
        &self,
        q: &[f32],
        slot: usize,
        id: InternalId,
        distance: &MetricDistance,
        top: &mut TopK,
    ) {
        let d = E::distance(distance, q, self.vectors.get(slot));
        if d.total_cmp(&top.threshold()).is_le() {
            top.push(Neighbor {
                id,
                uuid: self.slots.uuid(slot),
                distance: d,
            });
        }
    }

    /// The stored vector of document `id`.
    pub fn vector_of(&self, id: InternalId) -> Option<Vec<f32>> {
        self.slots
            .slot(id)
            .map(|slot| E::widen(self.vectors.get(slot)).into_owned())
    }

    /// The public id stored for document `id`.
    pub fn document_id(&self, id: InternalId) -> Option<Uuid> {
        self.slots.slot(id).map(|slot| self.slots.uuid(slot))
    }

    /// Approximate bytes of memory held.
    pub fn memory_bytes(&self) -> usize {
        self.vectors.memory_bytes() + self.slots.memory_bytes()
    }

    /// Writes the vectors, then the maps.
    pub fn write(&self, out: &mut FileWriter) -> Result<()> {
        file::write_arena(out, &self.vectors)?;
        self.slots.write(out)
    }

    /// Reads `n` slots of `dim`-dimensional vectors written by [`StoredVectors::write`].
    pub fn read(input: &mut FileReader, n: usize, dim: usize) -> Result<Self> {
        let vectors = file::read_arena(input, n, dim)?;
        let slots = SlotIds::read(input, n)?;
        Ok(StoredVectors { vectors, slots })
    }
}
