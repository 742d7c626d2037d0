//! IVF-PQ (Jégou et al. 2011): a k-means coarse quantiser splits the vectors into `nlist`
//! inverted lists; each vector is stored in its nearest list as a product-quantised code of its
//! residual (`m` bytes); a query scans the `nprobe` nearest lists with per-query ADC lookup
//! tables, then re-ranks the best `k × refine` candidates with the full vectors.
//!
//! Lifecycle under the sync protocol:
//! - **Untrained** while the collection holds fewer than [`MIN_TRAINING_VECTORS`] (or
//!   `39 × nlist`) vectors: searches scan every vector exactly.
//! - **Training** starts by itself in the batch that crosses that size, in the background: a
//!   job copies the live vectors, runs k-means on a sample of at most `256 × nlist` of them,
//!   trains a product quantiser on the residuals of that sample, and assigns and encodes every
//!   vector. The write returns at once and searches stay exact until the next `publish` after
//!   the job ends (after a write, or at a checkpoint) installs it, carrying over what changed
//!   meanwhile. [`DerivedIndex::train`] (`quiver collection train`) trains at once instead.
//!   `nlist` defaults to `4·√n` at training time, `m` to the largest divisor of the dimension
//!   ≤ `dim / 8`.
//! - **Afterwards** inserts are encoded into their nearest list when their batch finishes
//!   (until then they are scanned exactly, so searches stay complete); deletes vacate their slot
//!   (a tombstone the scan skips).
//! - **Retraining rule**: when the live vectors reach [`RETRAIN_GROWTH`]× the number the
//!   quantisers were trained on (the data has drifted from the sample), everything is retrained
//!   and re-encoded; when more than [`COMPACT_VACANT_FRACTION`] of the slots are tombstones,
//!   the lists and vectors are compacted with the same quantisers. Both run in the background
//!   like the first training, while the current lists keep serving (new vectors are encoded
//!   with the current quantisers meanwhile).
//!
//! The index keeps the full vectors too (exact search before training, re-ranking, retraining).
//!
//! Checkpoint payload (kind version 2), after the container header; the big arrays are slabs
//! at 64-byte aligned file offsets (the vectors at offset 128), list `l`'s entries at the sum of
//! the lengths before it:
//! ```text
//! 64-byte head: u64 slots, u64 trained (0|1), u64 nlist, u64 m, u64 trained_on, u64 indexed
//! the stored vectors and slot maps (as every in-RAM index writes them)
//! if trained: nlist × dim f32 centroids, m × 256 × (dim/m) f32 codebooks,
//!             nlist × u64 list lengths,
//!             zero padding, every list's slots (u32) list after list,
//!             zero padding, every list's codes (m bytes each) list after list
//! ```
//! Version 1 (slots and codes interleaved per list) is refused as corrupt and rebuilt from
//! the store, like any unreadable derived index.

mod search;
mod trained;

use std::path::{Path, PathBuf};
use std::time::Instant;

use parking_lot::Mutex;
use uuid::Uuid;

use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::job::{Job, RetryAfterFailure};
use super::kmeans::{self, KMeansParams};
use super::pq::ProductQuantizer;
use super::stored::{SlotOrigins, StoredChange, StoredVectors};
use super::DerivedIndex;
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId, Metric, Seq};
use trained::{Encoded, InvList, Trained};

const KIND_VERSION: u16 = 2;
const FILE_NAME: &str = "ivfpq.qvi";
/// The index trains once it holds this many vectors (and `39 × nlist` when `nlist` is given).
pub const MIN_TRAINING_VECTORS: usize = 10_000;
/// Fewest vectors a manual training accepts (the product quantiser has 256 centroids).
pub const MIN_MANUAL_TRAINING_VECTORS: usize = 256;
/// k-means trains on at most this many sample vectors per list.
const SAMPLES_PER_LIST: usize = 256;
/// The product quantiser trains on at most this many residuals.
const PQ_TRAINING_SAMPLES: usize = 65_536;
/// Training never copies more than this many vectors.
const MAX_TRAINING_SAMPLES: usize = 131_072;
/// Retrain when the live vectors reach this multiple of the number trained on.
pub const RETRAIN_GROWTH: usize = 4;
/// Compact when more than this fraction of the slots are tombstones.
pub const COMPACT_VACANT_FRACTION: f64 = 0.2;
/// Installing a background rebuild encodes the vectors added since its copy under the write
/// lock when there are at most this many; more are encoded by a background catch-up job first.
const ENCODE_UNDER_LOCK: usize = 1024;
/// Seed of the training runs (training is deterministic for the same vectors).
const TRAINING_SEED: u64 = 0x1f_5eed;

/// The collection's IVF-PQ parameters (`None`: chosen at training time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IvfPqParams {
    /// Inverted lists (`4·√n` when `None`).
    pub nlist: Option<usize>,
    /// Sub-quantisers, bytes per code (the largest divisor of `dim` ≤ `dim / 8` when `None`).
    pub pq_m: Option<usize>,
}

/// What `finish_batch` prepares for `publish` to install.
enum Prepared {
    /// New slots encoded; slots up to `indexed` are then in the lists.
    Append {
        entries: Vec<Encoded>,
        indexed: usize,
    },
    /// A (re)trained or compacted index.
    Replace(Box<(StoredVectors, Trained)>),
    /// An untrained index's vectors without their vacant slots.
    Compact(StoredVectors),
}

/// A (re)training or compaction running in the background.
struct Rebuild {
    /// Where each slot of the rebuilt storage comes from in the current one.
    origins: SlotOrigins,
    job: Job<(StoredVectors, Trained)>,
}

/// What training and encoding need, owned, so that a background job can run them.
#[derive(Clone, Copy)]
struct Builder {
    dim: usize,
    metric: Metric,
    params: IvfPqParams,
}

impl Builder {
    /// Trains coarse centroids and a product quantiser on a sample of `stored`.
    fn train_quantisers(&self, stored: &StoredVectors) -> Result<(Vec<f32>, ProductQuantizer)> {
        let n = stored.slots.slots();
        let nlist = self
            .params
            .nlist
            .unwrap_or_else(|| auto_nlist(n))
            .min(n)
            .max(1);
        let m = self.params.pq_m.unwrap_or_else(|| default_pq_m(self.dim));
        let wanted = (SAMPLES_PER_LIST * nlist).max(PQ_TRAINING_SAMPLES);
        let sample = sample_rows(stored, wanted.min(MAX_TRAINING_SAMPLES), self.dim);
        let coarse_sample = every_nth_row(&sample, self.dim, SAMPLES_PER_LIST * nlist);
        let centroids = kmeans::train(
            &coarse_sample,
            self.dim,
            &KMeansParams::new(nlist, TRAINING_SEED),
        )?;
        let pq_sample = every_nth_row(&sample, self.dim, PQ_TRAINING_SAMPLES);
        let assigned = kmeans::assign(&pq_sample, self.dim, &centroids);
        let mut residuals = pq_sample;
        for (row, &list) in residuals.chunks_exact_mut(self.dim).zip(&assigned) {
            let c = &centroids[list as usize * self.dim..(list as usize + 1) * self.dim];
            row.iter_mut().zip(c).for_each(|(x, c)| *x -= c);
        }
        let pq = ProductQuantizer::train(&residuals, self.dim, m, TRAINING_SEED)?;
        Ok((centroids, pq))
    }

    /// `stored` (without vacant slots) with every vector in its list: the quantisers `reuse`d
    /// (centroids, quantiser, vectors trained on), or trained on `stored`.
    fn build(
        &self,
        stored: StoredVectors,
        reuse: Option<(Vec<f32>, ProductQuantizer, usize)>,
    ) -> Result<(StoredVectors, Trained)> {
        let n = stored.slots.slots();
        let (centroids, pq, trained_on) = match reuse {
            Some(quantisers) => quantisers,
            None => {
                let (centroids, pq) = self.train_quantisers(&stored)?;
                (centroids, pq, n)
            }
        };
        let lists = vec![InvList::default(); centroids.len() / self.dim];
        let mut trained = Trained::new(&centroids, pq, lists, (trained_on, 0), self.metric);
        let entries = trained.encode_slots(&stored, 0..n);
        trained.append(entries, n);
        Ok((stored, trained))
    }
}

/// The IVF-PQ index of a collection.
pub struct IvfPqIndex {
    dim: usize,
    metric: Metric,
    distance: MetricDistance,
    config_fingerprint: u64,
    params: IvfPqParams,
    stored: StoredVectors,
    trained: Option<Trained>,
    prepared: Mutex<Option<Prepared>>,
    /// A training, retraining or compaction running in the background, or waiting for
    /// `publish` to install it.
    rebuild: Mutex<Option<Rebuild>>,
    /// Holds rebuilds back for a while after one failed.
    retry: RetryAfterFailure,
    watermark: Seq,
}

/// `nlist` for `n` vectors when the collection does not fix it: `4·√n`, at least 1, at most
/// `n / 39` (k-means wants ~39 points per centroid).
fn auto_nlist(n: usize) -> usize {
    let by_sqrt = (4.0 * (n as f64).sqrt()).round() as usize;
    by_sqrt.min(n / 39).max(1)
}

/// The largest divisor of `dim` that is at most `max(1, dim / 8)`.
pub fn default_pq_m(dim: usize) -> usize {
    let cap = (dim / 8).max(1);
    (1..=cap)
        .rev()
        .find(|&m| dim.is_multiple_of(m))
        .unwrap_or(1)
}

impl IvfPqIndex {
    /// An empty, untrained index for a collection of this configuration.
    pub fn new(config: &CollectionConfig, params: IvfPqParams, instance: u64) -> Self {
        IvfPqIndex {
            dim: config.dim,
            metric: config.metric,
            distance: MetricDistance::new(config.metric),
            config_fingerprint: config.index_fingerprint(instance),
            params,
            stored: StoredVectors::new(config.dim),
            trained: None,
            prepared: Mutex::new(None),
            rebuild: Mutex::new(None),
            retry: RetryAfterFailure::default(),
            watermark: 0,
        }
    }

    fn header(&self) -> FileHeader {
        FileHeader {
            kind: IndexFileKind::IvfPq,
            kind_version: KIND_VERSION,
            dim: self.dim as u32,
            metric: self.metric,
            config_fingerprint: self.config_fingerprint,
            watermark: self.watermark,
        }
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Whether the quantisers are trained.
    pub fn is_trained(&self) -> bool {
        self.trained.is_some()
    }

    /// Vectors the index holds before it trains by itself.
    fn training_threshold(&self) -> usize {
        self.params.nlist.map_or(MIN_TRAINING_VECTORS, |nlist| {
            MIN_TRAINING_VECTORS.max(39 * nlist)
        })
    }

    /// What training and encoding need, owned, for a job in the background.
    fn builder(&self) -> Builder {
        Builder {
            dim: self.dim,
            metric: self.metric,
            params: self.params,
        }
    }

    /// Whether a (re)training or compaction runs in the background (or waits to be installed).
    /// A probe: `true` while the slot is held.
    fn rebuilding(&self) -> bool {
        self.rebuild.try_lock().is_none_or(|r| r.is_some())
    }

    /// Whether a background rebuild has ended and waits to be installed (a probe: `false`
    /// while the slot is held).
    fn rebuild_done(&self) -> bool {
        self.rebuild
            .try_lock()
            .is_some_and(|r| r.as_ref().is_some_and(|r| r.job.is_done()))
    }

    /// Starts rebuilding the index in the background from a copy of the live vectors:
    /// retraining the quantisers (`retrain`, or never trained) or reusing them (a compaction).
    /// A failure to start is logged and holds rebuilds back ([`RetryAfterFailure`]).
    fn start_rebuild(&self, retrain: bool) {
        let live = self.stored.slots.live();
        log::info!(
            "IVF-PQ: {} in the background over {live} vectors",
            if retrain { "training" } else { "compacting" }
        );
        let (stored, origins) = self.stored.live_copy();
        let reuse = self
            .trained
            .as_ref()
            .filter(|_| !retrain)
            .map(|t| (t.centroids(), t.pq.clone(), t.trained_on));
        let builder = self.builder();
        match Job::start_pooled("quiver-ivfpq-training", move || {
            builder.build(stored, reuse)
        }) {
            Ok(job) => *self.rebuild.lock() = Some(Rebuild { origins, job }),
            Err(e) => {
                log::warn!("could not start an IVF-PQ rebuild: {e}");
                self.retry.failed(Instant::now());
            }
        }
    }

    /// Starts the background rebuild the index calls for, unless one runs: the first training
    /// (at the training size), a retraining (grown [`RETRAIN_GROWTH`]×), or a compaction of a
    /// trained index (tombstones past [`COMPACT_VACANT_FRACTION`]) — not within a while of a
    /// failed one. Returns whether it started one.
    fn start_due_rebuild(&self) -> bool {
        if self.rebuilding() || !self.retry.allows(Instant::now()) {
            return false;
        }
        let live = self.stored.slots.live();
        let retrain = match &self.trained {
            None if live >= self.training_threshold() => true,
            Some(t) if live >= RETRAIN_GROWTH * t.trained_on.max(1) => true,
            Some(_) if self.compaction_due() => false,
            _ => return false,
        };
        self.start_rebuild(retrain);
        true
    }

    /// Whether tombstones passed [`COMPACT_VACANT_FRACTION`] of the slots.
    fn compaction_due(&self) -> bool {
        let slots = self.stored.slots.slots();
        (slots - self.stored.slots.live()) as f64 > COMPACT_VACANT_FRACTION * slots as f64
    }

    /// What the batch just applied calls for: starting a training, retraining or compaction in
    /// the background, compacting an untrained index, or encoding the new slots.
    fn prepare(&self) -> Result<Option<Prepared>> {
        let started = self.start_due_rebuild();
        let Some(trained) = &self.trained else {
            // A running rebuild covers the vectors it copied and catches up with the others
            // when it is installed: nothing may renumber the slots meanwhile.
            if !started && !self.rebuilding() && self.compaction_due() {
                return Ok(Some(Prepared::Compact(self.stored.live_copy().0)));
            }
            return Ok(None);
        };
        // Meanwhile new vectors are encoded with the current quantisers.
        let slots = self.stored.slots.slots();
        if trained.indexed >= slots {
            return Ok(None);
        }
        Ok(Some(Prepared::Append {
            entries: trained.encode_slots(&self.stored, trained.indexed..slots),
            indexed: slots,
        }))
    }

    /// Installs a finished background rebuild, carrying over the changes applied since its
    /// copy: copies of vectors deleted or replaced since are vacated, vectors added since are
    /// appended and encoded. When more than [`ENCODE_UNDER_LOCK`] were added, they are encoded
    /// by a background catch-up job instead (returned, to be installed the same way once it
    /// ends), so the write lock is never held for long. A failed rebuild is logged and
    /// dropped: the index goes on as it was, and a later batch starts another once
    /// [`RetryAfterFailure`] allows (1 s after the first failure, doubling up to 5 min).
    fn install_rebuild(&mut self, rebuild: Rebuild) -> Option<Rebuild> {
        let Rebuild { mut origins, job } = rebuild;
        let (mut stored, mut trained) = match job.result() {
            Ok(rebuilt) => rebuilt,
            Err(e) => {
                log::warn!("IVF-PQ training failed, keeping the current index: {e}");
                self.retry.failed(Instant::now());
                return None;
            }
        };
        let added = origins.catch_up(&mut stored, &self.stored);
        let many = added.len() > ENCODE_UNDER_LOCK;
        let encode_added = move |stored: &StoredVectors, trained: &mut Trained| {
            let entries = trained.encode_slots(stored, added.clone());
            trained.append(entries, added.end);
        };
        if many {
            let catch_up = Job::start_pooled("quiver-ivfpq-catch-up", move || {
                encode_added(&stored, &mut trained);
                Ok((stored, trained))
            });
            return match catch_up {
                Ok(job) => Some(Rebuild { origins, job }),
                Err(e) => {
                    log::warn!("could not start an IVF-PQ training catch-up: {e}");
                    self.retry.failed(Instant::now());
                    None
                }
            };
        }
        encode_added(&stored, &mut trained);
        self.stored = stored;
        self.trained = Some(trained);
        self.retry.succeeded();
        None
    }

    /// Installs what [`IvfPqIndex::prepare`] made.
    fn install(&mut self, prepared: Prepared) {
        match prepared {
            Prepared::Compact(stored) => self.stored = stored,
            Prepared::Replace(parts) => {
                let (stored, trained) = *parts;
                self.stored = stored;
                self.trained = Some(trained);
            }
            Prepared::Append { entries, indexed } => {
                if let Some(trained) = &mut self.trained {
                    trained.append(entries, indexed);
                }
            }
        }
    }

    fn write_checkpoint(&self, out: &mut FileWriter) -> Result<()> {
        let mut head = [0u8; 64];
        let fields = match &self.trained {
            Some(t) => [
                self.stored.slots.slots() as u64,
                1,
                t.nlist() as u64,
                t.pq.m() as u64,
                t.trained_on as u64,
                t.indexed as u64,
            ],
            None => [self.stored.slots.slots() as u64, 0, 0, 0, 0, 0],
        };
        for (i, value) in fields.iter().enumerate() {
            head[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        out.write(&head)?;
        self.stored.write(out)?;
        if let Some(t) = &self.trained {
            out.write_f32s(&t.centroids())?;
            out.write_f32s(&t.pq.codebooks())?;
            for list in &t.lists {
                out.write(&(list.slots.len() as u64).to_le_bytes())?;
            }
            out.align_slab()?;
            for list in &t.lists {
                out.write_u32s(list.slots.iter().copied())?;
            }
            out.align_slab()?;
            for list in &t.lists {
                out.write(&list.codes)?;
            }
        }
        Ok(())
    }

    fn read_checkpoint(&self, input: &mut FileReader) -> Result<(StoredVectors, Option<Trained>)> {
        let mut head = [0u8; 64];
        input.read(&mut head)?;
        let field =
            |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let fields: Vec<Option<usize>> = (0..6).map(|i| usize::try_from(field(i)).ok()).collect();
        let count = |i: usize, input: &FileReader, what: &str| {
            fields[i].ok_or_else(|| input.corrupted(format!("absurd {what}")))
        };
        let n = count(0, input, "slot count")?;
        input.ensure_remaining((n as u64).saturating_mul(self.dim as u64 * 4 + 20))?;
        let stored = StoredVectors::read(input, n, self.dim)?;
        if head[48..] != [0u8; 16] {
            return Err(input.corrupted("reserved bytes are not zero"));
        }
        match field(1) {
            0 => return Ok((stored, None)),
            1 => {}
            _ => return Err(input.corrupted("the trained flag is neither 0 nor 1")),
        }
        let (nlist, m) = (
            count(2, input, "list count")?,
            count(3, input, "code size")?,
        );
        let trained_on = count(4, input, "training size")?;
        let indexed = count(5, input, "indexed count")?;
        if nlist == 0 || m == 0 || !self.dim.is_multiple_of(m) || indexed > n {
            return Err(input.corrupted("inconsistent IVF-PQ parameters"));
        }
        let centroid_floats = nlist.saturating_mul(self.dim);
        let codebook_floats = m.saturating_mul(256).saturating_mul(self.dim / m);
        let quantiser_bytes = (centroid_floats as u64)
            .checked_add(codebook_floats as u64)
            .and_then(|floats| floats.checked_mul(4))
            .ok_or_else(|| input.corrupted("absurd quantiser size"))?;
        input.ensure_remaining(quantiser_bytes)?;
        let mut centroids = Vec::with_capacity(centroid_floats);
        input.read_f32s(centroid_floats, |x| centroids.push(x))?;
        if centroids.iter().any(|x| !x.is_finite()) {
            return Err(input.corrupted("the centroids hold NaN or infinite values"));
        }
        let mut codebooks = Vec::with_capacity(codebook_floats);
        input.read_f32s(codebook_floats, |x| codebooks.push(x))?;
        let pq = ProductQuantizer::from_parts(self.dim, m, codebooks)
            .map_err(|e| input.corrupted(e.to_string()))?;
        input.ensure_remaining((nlist as u64).saturating_mul(8))?;
        let mut lengths = Vec::with_capacity(nlist);
        let mut total = 0usize;
        for _ in 0..nlist {
            let mut word = [0u8; 8];
            input.read(&mut word)?;
            // Every entry names a distinct indexed slot: the lists hold at most `indexed`.
            let len = usize::try_from(u64::from_le_bytes(word))
                .ok()
                .and_then(|len| total.checked_add(len))
                .filter(|&sum| sum <= indexed)
                .ok_or_else(|| input.corrupted("the lists hold more entries than indexed slots"))?
                - total;
            total += len;
            lengths.push(len);
        }
        input.ensure_remaining((total as u64).saturating_mul(4 + m as u64))?;
        // The slabs are read in order, straight into each list.
        input.skip_slab_padding()?;
        let mut listed = vec![false; indexed];
        let mut lists = Vec::with_capacity(nlist);
        for &len in &lengths {
            let slots = input.read_u32s(len)?;
            for &slot in &slots {
                match listed.get_mut(slot as usize) {
                    Some(seen) if !*seen => *seen = true,
                    Some(_) => return Err(input.corrupted("a slot is in two lists")),
                    None => return Err(input.corrupted("list entry beyond the indexed slots")),
                }
            }
            lists.push(InvList {
                slots,
                codes: Vec::new(),
                l2_terms: Vec::new(),
            });
        }
        input.skip_slab_padding()?;
        for (list, &len) in lists.iter_mut().zip(&lengths) {
            list.codes = vec![0u8; len * m];
            input.read(&mut list.codes)?;
        }
        if (0..indexed).any(|slot| stored.slots.id(slot).is_some() && !listed[slot]) {
            return Err(input.corrupted("an indexed vector is in no list"));
        }
        Ok((
            stored,
            Some(Trained::new(
                &centroids,
                pq,
                lists,
                (trained_on, indexed),
                self.metric,
            )),
        ))
    }

    /// Drops every vector and the quantisers.
    fn clear(&mut self) {
        self.stored.clear();
        self.trained = None;
        *self.prepared.get_mut() = None;
        // A running rebuild finishes on its own thread; its result is dropped.
        *self.rebuild.get_mut() = None;
    }
}

/// Up to `max_rows` rows of `rows` (row-major, `dim` wide), evenly spread.
fn every_nth_row(rows: &[f32], dim: usize, max_rows: usize) -> Vec<f32> {
    let n = rows.len() / dim.max(1);
    let step = n.div_ceil(max_rows.max(1)).max(1);
    rows.chunks_exact(dim.max(1))
        .step_by(step)
        .flatten()
        .copied()
        .collect()
}

/// Up to `max_rows` live vectors of `stored`, evenly spread over the slots (deterministic),
/// as one row-major buffer.
fn sample_rows(stored: &StoredVectors, max_rows: usize, dim: usize) -> Vec<f32> {
    let live: Vec<usize> = (0..stored.slots.slots())
        .filter(|&s| stored.slots.id(s).is_some())
        .collect();
    let step = live.len().div_ceil(max_rows.max(1)).max(1);
    let mut rows = Vec::with_capacity(live.len().min(max_rows) * dim);
    for &slot in live.iter().step_by(step) {
        rows.extend_from_slice(stored.vectors.get(slot));
    }
    rows
}

impl DerivedIndex for IvfPqIndex {
    fn name(&self) -> &'static str {
        "ivfpq"
    }

    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()> {
        let uuid = doc.map(|d| d.id).unwrap_or_default();
        match self.stored.classify(&self.distance, change, doc)? {
            StoredChange::Unchanged => {}
            StoredChange::Insert(vector) => {
                self.stored.push(change.id, uuid, &vector);
            }
            StoredChange::Replace { slot, vector } => {
                // The new version is scanned exactly until its batch is encoded.
                self.stored.slots.vacate(slot);
                self.stored.push(change.id, uuid, &vector);
            }
            StoredChange::Delete(slot) => self.stored.slots.vacate(slot),
        }
        self.watermark = self.watermark.max(change.seq);
        Ok(())
    }

    fn finish_batch(&self) -> Result<()> {
        let prepared = self.prepare()?;
        *self.prepared.lock() = prepared;
        Ok(())
    }

    fn needs_publish(&self) -> bool {
        self.prepared.lock().is_some() || self.rebuild_done()
    }

    fn background_work(&self) -> bool {
        self.rebuilding()
    }

    fn background_done(&self) -> bool {
        self.rebuild_done()
    }

    fn publish(&mut self) -> Result<()> {
        if let Some(prepared) = self.prepared.get_mut().take() {
            self.install(prepared);
        }
        if let Some(rebuild) = self.rebuild.get_mut().take_if(|r| r.job.is_done()) {
            *self.rebuild.get_mut() = self.install_rebuild(rebuild);
            // What came due while it ran (say, growth past the retraining size).
            self.start_due_rebuild();
        }
        Ok(())
    }

    fn watermark(&self) -> Seq {
        self.watermark
    }

    fn reset(&mut self, watermark: Seq) {
        self.clear();
        self.watermark = watermark;
    }

    fn checkpoint(&self, dir: &IndexDir) -> Result<Seq> {
        if self.prepared.lock().is_some() {
            return Err(Error::Internal(
                "checkpoint of an unpublished IVF-PQ batch".into(),
            ));
        }
        let mut out = FileWriter::create(dir, FILE_NAME, self.header())?;
        self.write_checkpoint(&mut out)?;
        out.finish()?;
        Ok(self.watermark)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool> {
        let Some(mut input) = FileReader::open(&Self::path(dir), &self.header())? else {
            return Ok(false);
        };
        let (stored, trained) = self.read_checkpoint(&mut input)?;
        let header = input.finish()?;
        self.stored = stored;
        self.trained = trained;
        *self.prepared.get_mut() = None;
        *self.rebuild.get_mut() = None;
        self.watermark = header.watermark;
        Ok(true)
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        self.stored.slots.sorted_ids()
    }

    fn reserve(&mut self, additional: usize) {
        self.stored.reserve(additional);
    }

    fn train(&self) -> Result<bool> {
        if self.stored.slots.live() < MIN_MANUAL_TRAINING_VECTORS {
            return Err(Error::InvalidArgument(format!(
                "IVF-PQ training needs at least {MIN_MANUAL_TRAINING_VECTORS} vectors, the collection has {}",
                self.stored.slots.live()
            )));
        }
        // Covers every vector now: a rebuild running in the background is superseded.
        *self.rebuild.lock() = None;
        let rebuilt = self.builder().build(self.stored.live_copy().0, None)?;
        *self.prepared.lock() = Some(Prepared::Replace(Box::new(rebuilt)));
        Ok(true)
    }

    fn verify(&self) -> Vec<String> {
        let Some(t) = &self.trained else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut seen = vec![false; self.stored.slots.slots()];
        for (l, list) in t.lists.iter().enumerate() {
            if list.codes.len() != list.slots.len() * t.pq.code_size() {
                problems.push(format!("list {l}: codes and slots differ in number"));
            }
            let terms = if t.keeps_l2_terms {
                list.slots.len()
            } else {
                0
            };
            if list.l2_terms.len() != terms {
                problems.push(format!(
                    "list {l}: {} norm terms for {terms} entries",
                    list.l2_terms.len()
                ));
            }
            for &slot in &list.slots {
                match seen.get_mut(slot as usize) {
                    Some(flag) if !*flag => *flag = true,
                    Some(_) => problems.push(format!("slot {slot} is in two lists")),
                    None => problems.push(format!("list {l} names slot {slot}, beyond the index")),
                }
            }
        }
        let missing = (0..t.indexed.min(seen.len()))
            .filter(|&s| self.stored.slots.id(s).is_some() && !seen[s])
            .count();
        if missing > 0 {
            problems.push(format!("{missing} indexed vectors are in no list"));
        }
        problems
    }
}

/// The public id of the vector in `slot`, if occupied.
fn uuid_of(stored: &StoredVectors, slot: usize) -> Option<(InternalId, Uuid)> {
    stored
        .slots
        .id(slot)
        .map(|id| (id, stored.slots.uuid(slot)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IndexConfig;
    use crate::index::testing::{apply_changes, found_ids, nearest_in_model, vector, Model};
    use crate::index::{SearchKnobs, VectorIndexRead};

    const DIM: usize = 8;
    const NLIST: usize = 8;

    fn new_index() -> IvfPqIndex {
        new_index_for(Metric::L2)
    }

    fn new_index_for(metric: Metric) -> IvfPqIndex {
        let params = IvfPqParams {
            nlist: Some(NLIST),
            pq_m: Some(4),
        };
        let config = CollectionConfig::new(DIM, metric).with_index(IndexConfig::IvfPq {
            nlist: params.nlist,
            pq_m: params.pq_m,
        });
        IvfPqIndex::new(&config, params, 3)
    }

    fn finish(index: &mut IvfPqIndex) {
        index.finish_batch().unwrap();
        if index.needs_publish() {
            index.publish().unwrap();
        }
    }

    /// An index and its model holding documents `0..MIN_TRAINING_VECTORS`, with the last
    /// sequence number used, and the training their batch started, taken out of the index (held
    /// back, so that a test can land changes, or a failure, while it is pending).
    fn training_held_back() -> (IvfPqIndex, Model, Seq, Rebuild) {
        let mut index = new_index();
        let (mut model, mut seq) = (Model::new(), 0);
        let inserts: Vec<_> = (0..MIN_TRAINING_VECTORS as u32)
            .map(|id| (id, Some(vector(id.into(), DIM))))
            .collect();
        apply_changes(&mut index, &mut model, &mut seq, &inserts);
        index.finish_batch().unwrap();
        let started = index.rebuild.get_mut().take().expect("a training started");
        (index, model, seq, started)
    }

    /// The index holds exactly the model's documents with their vectors, its lists are sound,
    /// and a search probing every list with a wide re-ranking returns the exact nearest.
    fn assert_matches(index: &IvfPqIndex, model: &Model, ctx: &str) {
        let ids: Vec<InternalId> = model.keys().copied().collect();
        assert_eq!(index.internal_ids(), ids, "{ctx}");
        for (id, v) in model {
            assert_eq!(index.stored.vector_of(*id).as_ref(), Some(v), "{ctx}: {id}");
        }
        assert_eq!(index.verify(), Vec::<String>::new(), "{ctx}");
        let knobs = SearchKnobs {
            nprobe: Some(NLIST),
            refine: Some(model.len()),
            ..SearchKnobs::default()
        };
        for seed in 0..5 {
            let q = vector(900 + seed, DIM);
            let found = found_ids(&index.search(&q, 10, &knobs));
            let want = nearest_in_model(model, &q, 10);
            assert_eq!(found, want, "{ctx}: nearest documents");
        }
    }

    /// An index of `metric` holding documents `0..n` with vectors `vector_of(id)`, trained by
    /// hand, and the folder its checkpoint was written to.
    fn trained_and_saved(
        metric: Metric,
        n: u32,
        vector_of: impl Fn(u64) -> Vec<f32>,
    ) -> (IvfPqIndex, tempfile::TempDir) {
        let mut index = new_index_for(metric);
        let (mut model, mut seq) = (Model::new(), 0);
        let inserts: Vec<_> = (0..n).map(|id| (id, Some(vector_of(id.into())))).collect();
        apply_changes(&mut index, &mut model, &mut seq, &inserts);
        finish(&mut index);
        assert!(index.train().unwrap());
        index.publish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        index
            .checkpoint(&IndexDir::os(dir.path().to_path_buf()))
            .unwrap();
        (index, dir)
    }

    /// The centroid and decoded residual of an indexed slot's list entry: the vector it stands
    /// for is their sum.
    fn reconstruction(t: &Trained, slot: usize) -> (Vec<f32>, Vec<f32>) {
        let m = t.pq.code_size();
        let (l, at) = t
            .lists
            .iter()
            .enumerate()
            .find_map(|(l, list)| Some((l, list.slots.iter().position(|&s| s as usize == slot)?)))
            .expect("the slot is in a list");
        let (mut centroid, mut residual) = (vec![0f32; DIM], vec![0f32; DIM]);
        t.centroid(l, &mut centroid);
        t.pq.decode(&t.lists[l].codes[at * m..(at + 1) * m], &mut residual);
        (centroid, residual)
    }

    /// Without re-ranking, every hit's distance is the exact distance from the query to the
    /// vector its entry reconstructs (centroid + decoded residual) under the metric: for L2
    /// (and cosine, as half the squared L2 distance between unit vectors) through the entry's
    /// half-precision norm term and the query's one table (also with coordinates in the
    /// thousands, whose terms overflow half precision unless scaled), for dot products through
    /// that table and the centroid's inner product. Also after a reload, which recomputes the
    /// norm terms.
    #[test]
    fn approximate_distances_are_the_distances_to_the_reconstructed_vectors() {
        // (metric, scale, offset added to every coordinate)
        let cases = [
            (Metric::L2, 1.0, 0.0),
            (Metric::L2, 1_000.0, 0.0),
            (Metric::L2, 1.0, 1_000.0),
            (Metric::Cosine, 1.0, 0.0),
            (Metric::Dot, 1.0, 0.0),
        ];
        for (metric, magnitude, offset) in cases {
            let ctx = format!("{metric:?} × {magnitude} + {offset}");
            let scaled = |seed: u64| -> Vec<f32> {
                vector(seed, DIM)
                    .iter()
                    .map(|x| x * magnitude + offset)
                    .collect()
            };
            let (index, dir) = trained_and_saved(metric, 2_000, scaled);
            let mut reloaded = new_index_for(metric);
            assert!(reloaded.load_checkpoint(dir.path()).unwrap());
            let knobs = SearchKnobs {
                nprobe: Some(NLIST),
                refine: Some(0),
                ..SearchKnobs::default()
            };
            for (which, index) in [("built", &index), ("reloaded", &reloaded)] {
                let t = index.trained.as_ref().expect("trained");
                assert_eq!(t.keeps_l2_terms, metric != Metric::Dot, "{ctx}");
                // The mean centroid, from the centroids themselves.
                let mut mean = vec![0f32; DIM];
                let mut c = vec![0f32; DIM];
                for l in 0..t.nlist() {
                    t.centroid(l, &mut c);
                    mean.iter_mut()
                        .zip(&c)
                        .for_each(|(m, x)| *m += x / NLIST as f32);
                }
                for seed in 0..5 {
                    let raw = scaled(900 + seed);
                    let q = index.distance.prepare(&raw).unwrap();
                    let found = index.search(&raw, 50, &knobs);
                    assert_eq!(found.neighbors.len(), 50, "{ctx}");
                    for hit in &found.neighbors {
                        let slot = index.stored.slots.slot(hit.id).expect("listed");
                        let (c, r) = reconstruction(t, slot);
                        let x: Vec<f32> = c.iter().zip(&r).map(|(c, r)| c + r).collect();
                        let ip = crate::distance::dot(&q, &x);
                        // Cosine: half the squared distance from the unit query (the cosine
                        // distance when the reconstruction is a unit vector too).
                        let exact = match metric {
                            Metric::L2 => crate::distance::l2_squared(&q, &x),
                            Metric::Cosine => 0.5 * crate::distance::l2_squared(&q, &x),
                            Metric::Dot => -ip,
                        };
                        // Half precision keeps 11 bits of a term `‖r‖² + 2⟨c − μ, r⟩`, at
                        // most 2(‖c − μ‖² + ‖r‖²) in size: the error must not grow with an
                        // offset every vector shares.
                        let spread = crate::distance::l2_squared(&c, &mean);
                        let norms = spread + crate::distance::dot(&r, &r);
                        let tolerance = 1e-3 * (1.0 + exact.abs() + norms);
                        assert!(
                            (hit.distance - exact).abs() <= tolerance,
                            "{ctx}, {which}: {} vs exact {exact}",
                            hit.distance
                        );
                    }
                }
            }
        }
    }

    /// A checkpoint whose centroids hold a NaN (checksums valid) is refused as corrupt, not
    /// loaded into NaN distances.
    #[test]
    fn a_checkpoint_with_a_nan_centroid_is_refused() {
        let (index, dir) = trained_and_saved(Metric::L2, 1_000, |seed| vector(seed, DIM));
        let path = IvfPqIndex::path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        // The first centroid's bytes, found in the file, its first coordinate set to NaN.
        let first: Vec<u8> = index.trained.as_ref().unwrap().centroids()[..DIM]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let at = bytes
            .windows(first.len())
            .position(|w| w == first.as_slice())
            .expect("the centroids are in the file");
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let payload = crc32c::crc32c(&bytes[64..]);
        bytes[48..52].copy_from_slice(&payload.to_le_bytes());
        let header = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&header.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut reloaded = new_index();
        assert!(matches!(
            reloaded.load_checkpoint(dir.path()),
            Err(Error::Corrupted { .. })
        ));
    }

    /// A training that fails leaves the index untrained and exact, and the next one waits for
    /// the retry pause instead of starting with every write.
    #[test]
    fn a_failed_training_is_dropped_and_retried_only_after_a_pause() {
        let (mut index, mut model, mut seq, started) = training_held_back();
        let n = MIN_TRAINING_VECTORS as u32;
        *index.rebuild.get_mut() = Some(Rebuild {
            origins: started.origins,
            job: Job::failed(Error::Internal("injected failure".into())),
        });
        index.publish().unwrap();
        assert!(!index.background_work(), "the failure is dropped");
        assert!(!index.is_trained());
        assert_matches(&index, &model, "after the failed training");
        // The next write finds a training due but starts none during the pause.
        apply_changes(
            &mut index,
            &mut model,
            &mut seq,
            &[(n, Some(vector(7, DIM)))],
        );
        finish(&mut index);
        assert!(
            !index.background_work(),
            "no training right after a failure"
        );
        assert_matches(&index, &model, "after the next write");
        assert!(index
            .retry
            .allows(Instant::now() + std::time::Duration::from_secs(2)));
    }

    /// The batch that crosses the training size starts a training in the background and
    /// returns untrained; deletes, replacements and inserts landing before the training is
    /// installed are carried over: inserts are encoded at once when few, else by a catch-up
    /// job installed the same way.
    #[test]
    fn a_background_training_carries_over_the_writes_made_while_it_ran() {
        for added in [600u32, ENCODE_UNDER_LOCK as u32 + 100] {
            let ctx = format!("{added} added");
            let (mut index, mut model, mut seq, mut rebuild) = training_held_back();
            let n = MIN_TRAINING_VECTORS as u32;
            rebuild.job.wait();
            assert!(!index.is_trained(), "{ctx}: the write returned untrained");
            assert_matches(&index, &model, &format!("{ctx}, untrained"));
            let meanwhile: Vec<_> = (0..400)
                .step_by(4)
                .map(|id| (id, None))
                .chain(
                    (1..400)
                        .step_by(4)
                        .map(|id| (id, Some(vector(7_000 + u64::from(id), DIM)))),
                )
                .chain((n..n + added).map(|id| (id, Some(vector(id.into(), DIM)))))
                .collect();
            apply_changes(&mut index, &mut model, &mut seq, &meanwhile);
            // (This batch starts a training of its own, which is dropped.)
            finish(&mut index);
            *index.rebuild.get_mut() = Some(rebuild);
            assert!(index.background_work() && index.needs_publish(), "{ctx}");
            index.publish().unwrap();
            let encoded_at_once = added as usize + 100 <= ENCODE_UNDER_LOCK;
            if !encoded_at_once {
                assert!(
                    !index.is_trained(),
                    "{ctx}: a catch-up job encodes the added ones"
                );
                index
                    .rebuild
                    .get_mut()
                    .as_mut()
                    .expect("catching up")
                    .job
                    .wait();
                assert!(index.needs_publish(), "{ctx}");
                index.publish().unwrap();
            }
            assert!(!index.background_work(), "{ctx}: installed");
            let t = index.trained.as_ref().expect("trained");
            assert_eq!((t.nlist(), t.trained_on), (NLIST, n as usize), "{ctx}");
            let slots = index.stored.slots.slots();
            // Copied: the n documents; vacated since: the 100 deleted and 100 replaced ones.
            assert_eq!(slots, n as usize + 100 + added as usize, "{ctx}: slots");
            assert_eq!(index.stored.slots.live(), model.len(), "{ctx}");
            assert_eq!(t.indexed, slots, "{ctx}: every vector encoded");
            assert_matches(&index, &model, &format!("{ctx}, installed"));
            // Later batches are encoded with the new quantisers.
            apply_changes(
                &mut index,
                &mut model,
                &mut seq,
                &[(0, Some(vector(1, DIM)))],
            );
            finish(&mut index);
            let t = index.trained.as_ref().expect("trained");
            assert_eq!(t.indexed, index.stored.slots.slots(), "{ctx}");
            assert_matches(&index, &model, &format!("{ctx}, next batch"));
        }
    }
}
