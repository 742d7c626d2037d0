//! Merges in the background (FreshDiskANN's StreamingMerge, done as a rebuild): a merge builds
//! a new generation on its own thread from a snapshot of the disk part, the delete list and
//! the delta, while writes go on into the live delta and delete list. Installing it reconciles
//! what changed meanwhile: documents of the snapshot deleted or replaced since are deleted in
//! the new generation, and delta documents added since stay in a new delta.

use std::sync::Arc;

use roaring::RoaringBitmap;

use super::build::{self, MergeSource};
use super::disk::DiskGraph;
use super::Delta;
use crate::error::{Error, Result};
use crate::index::job::Job;
use crate::types::InternalId;

/// A merged generation (`disk` is `None` when nothing was live).
pub(super) struct Merged {
    pub disk: Option<Arc<DiskGraph>>,
    pub generation: u64,
}

/// A merge, running or done, and what it started from.
pub(super) struct MergeJob {
    /// The generation it writes.
    pub generation: u64,
    /// The id in each delta slot it took (every slot below `delta_ids.len()`), `None` if
    /// vacant then.
    delta_ids: Vec<Option<InternalId>>,
    /// Disk slots deleted when it started.
    deleted_at_start: RoaringBitmap,
    job: Job<Merged>,
}

impl MergeJob {
    /// Starts building `source` on a new thread.
    pub fn start(source: MergeSource) -> Result<MergeJob> {
        let generation = source.generation;
        let delta_ids = (0..source.delta.slots.slots())
            .map(|slot| source.delta.slots.id(slot))
            .collect();
        let deleted_at_start = source.deleted.clone();
        let job = Job::start("quiver-diskann-merge", move || build::merge(&source))?;
        Ok(MergeJob {
            generation,
            delta_ids,
            deleted_at_start,
            job,
        })
    }

    /// Whether the build has ended (successfully or not).
    pub fn is_done(&self) -> bool {
        self.job.is_done()
    }

    /// The build's error, if it ended with one (taken: the job then holds nothing to install).
    pub fn take_error(&mut self) -> Option<Error> {
        self.job.take_error()
    }

    /// Waits, then installs the new generation into (`disk`, `deleted`, `delta`), carrying over
    /// the changes applied since the job started. Returns the build's error instead if it
    /// failed (the index is then left as it was).
    pub fn install(
        self,
        disk: &mut Option<Arc<DiskGraph>>,
        deleted: &mut RoaringBitmap,
        delta: &mut Delta,
        dim: usize,
    ) -> Result<u64> {
        let merged = self.job.result()?;
        let mut still_deleted = RoaringBitmap::new();
        if let Some(new) = &merged.disk {
            // Disk documents deleted (or replaced) since the snapshot.
            let newly_deleted = &*deleted - &self.deleted_at_start;
            if let Some(old) = disk.as_ref().filter(|_| !newly_deleted.is_empty()) {
                for (id, slot) in old.sorted_ids().iter().zip(old.sorted_slots()) {
                    if newly_deleted.contains(*slot) {
                        still_deleted.extend(new.slot_of(*id));
                    }
                }
            }
            // Delta documents of the snapshot deleted (or replaced) since.
            for (slot, taken) in self.delta_ids.iter().enumerate() {
                if let Some(id) = taken {
                    if delta.stored.slots.id(slot) != Some(*id) {
                        still_deleted.extend(new.slot_of(*id));
                    }
                }
            }
        }
        // Delta documents added since the snapshot stay in the delta.
        let mut kept = Delta::new(dim);
        let stored = &delta.stored;
        for slot in self.delta_ids.len()..stored.slots.slots() {
            if let Some(id) = stored.slots.id(slot) {
                kept.stored
                    .push(id, stored.slots.uuid(slot), stored.vectors.get(slot));
                kept.graph.push();
            }
        }
        *disk = merged.disk;
        *deleted = still_deleted;
        *delta = kept;
        Ok(merged.generation)
    }
}
