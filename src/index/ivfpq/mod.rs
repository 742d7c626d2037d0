//! IVF-PQ (Jégou et al. 2011): a k-means coarse quantiser splits the vectors into `nlist`
//! inverted lists; each vector is stored in its nearest list as a product-quantised code of its
//! residual (`m` bytes); a query scans the `nprobe` nearest lists with per-query ADC lookup
//! tables, then re-ranks the best `k × refine` candidates with the full vectors.
//!
//! Lifecycle under the sync protocol:
//! - **Untrained** while the collection holds fewer than [`MIN_TRAINING_VECTORS`] (or
//!   `39 × nlist`) vectors: searches scan every vector exactly.
//! - **Training** happens by itself in the batch that crosses that size (and on
//!   [`DerivedIndex::train`], `quiver collection train`): k-means on a sample of at most
//!   `256 × nlist` vectors, a product quantiser on the residuals of that sample, then every
//!   vector is assigned and encoded. `nlist` defaults to `4·√n` at training time, `m` to the
//!   largest divisor of the dimension ≤ `dim / 8`.
//! - **Afterwards** inserts are encoded into their nearest list when their batch finishes
//!   (until then they are scanned exactly, so searches stay complete); deletes vacate their slot
//!   (a tombstone the scan skips).
//! - **Retraining rule**: when the live vectors reach [`RETRAIN_GROWTH`]× the number the
//!   quantisers were trained on (the data has drifted from the sample), everything is retrained
//!   and re-encoded; when more than [`COMPACT_VACANT_FRACTION`] of the slots are tombstones,
//!   the lists and vectors are compacted with the same quantisers.
//!
//! The index keeps the full vectors too (exact search before training, re-ranking, retraining).
//!
//! Checkpoint payload (kind version 1), after the container header:
//! ```text
//! 64-byte head: u64 slots, u64 trained (0|1), u64 nlist, u64 m, u64 trained_on, u64 indexed
//! the stored vectors and slot maps (as every in-RAM index writes them)
//! if trained: nlist × dim f32 centroids, m × 256 × (dim/m) f32 codebooks,
//!             nlist × u64 list lengths, then per list: len × u32 slots, len × m code bytes
//! ```

mod search;

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rayon::prelude::*;
use uuid::Uuid;

use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::kmeans::{self, KMeansParams};
use super::pq::ProductQuantizer;
use super::stored::{StoredChange, StoredVectors};
use super::DerivedIndex;
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId, Metric, Seq};

const KIND_VERSION: u16 = 1;
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

/// One inverted list: the slots of its vectors and their codes (`m` bytes each).
#[derive(Clone, Debug, Default, PartialEq)]
struct InvList {
    slots: Vec<u32>,
    codes: Vec<u8>,
}

/// Largest precomputed L2 table kept, in floats (`nlist × m × 256`); beyond it, each probed
/// list's table is computed per query instead.
const MAX_PRECOMPUTED_FLOATS: usize = 64 << 20;

/// The trained quantisers and the lists they fill.
struct Trained {
    centroids: Vec<f32>,
    /// The centroids dimension-major (`dim × nlist`), for one-call distances to all of them.
    centroids_t: Vec<f32>,
    pq: ProductQuantizer,
    lists: Vec<InvList>,
    /// L2 only: per list `l`, sub-space `j`, code `c`: `‖r‖² + 2⟨c_l, r⟩` for the residual
    /// codeword `r` — so that a probed list's ADC table is this plus the query's one
    /// `−2⟨q, r⟩` table, with no per-list table computation (Jégou et al. §4.2). Derived from
    /// the centroids and codebooks; not stored in checkpoints.
    precomputed: Option<Vec<f32>>,
    /// The reconstruction error `(mse, relative)` over a sample, computed on first request
    /// (the quantisers never change after training, so it stays valid).
    reconstruction: std::sync::OnceLock<(f64, f64)>,
    /// Live vectors when the quantisers were trained.
    trained_on: usize,
    /// Slots below this are in the lists (or vacant); later ones wait to be encoded.
    indexed: usize,
}

impl Trained {
    /// Assembles a trained state, precomputing the L2 tables when the metric is L2 and they fit.
    fn new(
        centroids: Vec<f32>,
        pq: ProductQuantizer,
        lists: Vec<InvList>,
        trained_on: usize,
        indexed: usize,
        metric: Metric,
    ) -> Trained {
        let nlist = lists.len();
        let dim = pq.dim();
        let mut centroids_t = vec![0f32; centroids.len()];
        for (l, centroid) in centroids.chunks_exact(dim.max(1)).enumerate() {
            for (d, &x) in centroid.iter().enumerate() {
                centroids_t[d * nlist + l] = x;
            }
        }
        let mut trained = Trained {
            centroids,
            centroids_t,
            pq,
            lists,
            precomputed: None,
            reconstruction: std::sync::OnceLock::new(),
            trained_on,
            indexed,
        };
        let floats = trained.nlist() * trained.pq.table_len();
        if metric == Metric::L2 && floats <= MAX_PRECOMPUTED_FLOATS {
            trained.precomputed = Some(trained.precompute_l2_tables());
        }
        trained
    }

    /// `‖r‖² + 2⟨c_l, r⟩` for every list, sub-space and codeword (see `precomputed`).
    fn precompute_l2_tables(&self) -> Vec<f32> {
        let (m, dsub) = (self.pq.m(), self.pq.dsub());
        let dim = m * dsub;
        let codebooks = self.pq.codebooks();
        let norms: Vec<f32> = codebooks
            .chunks_exact(dsub)
            .map(|r| r.iter().map(|x| x * x).sum())
            .collect();
        let mut tables = vec![0f32; self.nlist() * m * 256];
        tables
            .par_chunks_mut(m * 256)
            .zip(self.centroids.par_chunks(dim))
            .for_each(|(table, centroid)| {
                for j in 0..m {
                    let c = &centroid[j * dsub..(j + 1) * dsub];
                    for t in 0..256 {
                        let r = &codebooks[(j * 256 + t) * dsub..(j * 256 + t + 1) * dsub];
                        let cross: f32 = c.iter().zip(r).map(|(a, b)| a * b).sum();
                        table[j * 256 + t] = norms[j * 256 + t] + 2.0 * cross;
                    }
                }
            });
        tables
    }

    fn nlist(&self) -> usize {
        self.lists.len()
    }

    fn memory_bytes(&self) -> usize {
        self.centroids.len() * 8
            + self.pq.memory_bytes()
            + self.precomputed.as_ref().map_or(0, |t| t.len() * 4)
            + self
                .lists
                .iter()
                .map(|l| l.slots.capacity() * 4 + l.codes.capacity())
                .sum::<usize>()
    }
}

/// What `finish_batch` prepares for `publish` to install.
enum Prepared {
    /// New slots encoded: (list, slot, code) each; slots up to `indexed` are then in the lists.
    Append {
        entries: Vec<(u32, u32, Vec<u8>)>,
        indexed: usize,
    },
    /// A (re)trained or compacted index.
    Replace(Box<(StoredVectors, Trained)>),
    /// An untrained index's vectors without their vacant slots.
    Compact(StoredVectors),
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

    /// The stored vectors' prepared form for the metric (inner products for cosine and dot).
    fn uses_inner_product(&self) -> bool {
        self.metric != Metric::L2
    }

    /// Live slots in slot order.
    fn live_slots(&self) -> Vec<usize> {
        (0..self.stored.slots.slots())
            .filter(|&s| self.stored.slots.id(s).is_some())
            .collect()
    }

    /// A copy of the stored vectors without vacant slots.
    fn compacted_storage(&self) -> StoredVectors {
        let mut stored = StoredVectors::new(self.dim);
        let live = self.live_slots();
        stored.reserve(live.len());
        for slot in live {
            if let Some(id) = self.stored.slots.id(slot) {
                stored.push(
                    id,
                    self.stored.slots.uuid(slot),
                    self.stored.vectors.get(slot),
                );
            }
        }
        stored
    }

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

    /// Nearest list and residual code of `vector`.
    fn encode(&self, centroids: &[f32], pq: &ProductQuantizer, vector: &[f32]) -> (u32, Vec<u8>) {
        let list = kmeans::nearest(vector, centroids, self.dim, 1)
            .first()
            .map_or(0, |&(list, _)| list);
        let c = &centroids[list as usize * self.dim..(list as usize + 1) * self.dim];
        let residual: Vec<f32> = vector.iter().zip(c).map(|(x, c)| x - c).collect();
        let mut code = vec![0u8; pq.code_size()];
        pq.encode(&residual, &mut code);
        (list, code)
    }

    /// A compacted copy of the index with every vector in its list: quantisers retrained if
    /// `retrain` (or never trained), else reused.
    fn rebuild(&self, retrain: bool) -> Result<(StoredVectors, Trained)> {
        let stored = self.compacted_storage();
        let (centroids, pq) = match (&self.trained, retrain) {
            (Some(t), false) => (t.centroids.clone(), t.pq.clone()),
            _ => self.train_quantisers(&stored)?,
        };
        let n = stored.slots.slots();
        let encoded: Vec<(u32, Vec<u8>)> = (0..n)
            .into_par_iter()
            .map(|slot| self.encode(&centroids, &pq, stored.vectors.get(slot)))
            .collect();
        let mut lists = vec![InvList::default(); centroids.len() / self.dim];
        for (slot, (list, code)) in encoded.into_iter().enumerate() {
            let list = &mut lists[list as usize];
            list.slots.push(slot as u32);
            list.codes.extend_from_slice(&code);
        }
        let trained_on = match (&self.trained, retrain) {
            (Some(t), false) => t.trained_on,
            _ => n,
        };
        Ok((
            stored,
            Trained::new(centroids, pq, lists, trained_on, n, self.metric),
        ))
    }

    /// A retrained index, or `None` (logged) if training failed: searches then go on with the
    /// current state (exact, or the old quantisers) rather than failing the write.
    fn try_training(&self) -> Option<(StoredVectors, Trained)> {
        match self.rebuild(true) {
            Ok(rebuilt) => Some(rebuilt),
            Err(e) => {
                log::warn!("IVF-PQ training failed, keeping the current index: {e}");
                None
            }
        }
    }

    /// What the batch just applied calls for: training, retraining, compaction, or encoding the
    /// new slots.
    fn prepare(&self) -> Result<Option<Prepared>> {
        let live = self.stored.slots.live();
        let slots = self.stored.slots.slots();
        let vacant = slots - live;
        let compact = vacant as f64 > COMPACT_VACANT_FRACTION * slots as f64;
        let Some(trained) = &self.trained else {
            if live >= self.training_threshold() {
                if let Some(rebuilt) = self.try_training() {
                    return Ok(Some(Prepared::Replace(Box::new(rebuilt))));
                }
            }
            if compact {
                return Ok(Some(Prepared::Compact(self.compacted_storage())));
            }
            return Ok(None);
        };
        if live >= RETRAIN_GROWTH * trained.trained_on.max(1) {
            if let Some(rebuilt) = self.try_training() {
                return Ok(Some(Prepared::Replace(Box::new(rebuilt))));
            }
        }
        if compact {
            return Ok(Some(Prepared::Replace(Box::new(self.rebuild(false)?))));
        }
        if trained.indexed >= slots {
            return Ok(None);
        }
        let entries = (trained.indexed..slots)
            .into_par_iter()
            .filter(|&slot| self.stored.slots.id(slot).is_some())
            .map(|slot| {
                let (list, code) = self.encode(
                    &trained.centroids,
                    &trained.pq,
                    self.stored.vectors.get(slot),
                );
                (list, slot as u32, code)
            })
            .collect();
        Ok(Some(Prepared::Append {
            entries,
            indexed: slots,
        }))
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
                    for (list, slot, code) in entries {
                        let list = &mut trained.lists[list as usize];
                        list.slots.push(slot);
                        list.codes.extend_from_slice(&code);
                    }
                    trained.indexed = indexed;
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
            out.write_f32s(&t.centroids)?;
            out.write_f32s(t.pq.codebooks())?;
            for list in &t.lists {
                out.write(&(list.slots.len() as u64).to_le_bytes())?;
            }
            for list in &t.lists {
                out.write_u32s(list.slots.iter().copied())?;
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
        let mut codebooks = Vec::with_capacity(codebook_floats);
        input.read_f32s(codebook_floats, |x| codebooks.push(x))?;
        let pq = ProductQuantizer::from_parts(self.dim, m, codebooks)
            .map_err(|e| input.corrupted(e.to_string()))?;
        input.ensure_remaining((nlist as u64).saturating_mul(8))?;
        let mut lengths = Vec::with_capacity(nlist);
        for _ in 0..nlist {
            let mut word = [0u8; 8];
            input.read(&mut word)?;
            let len = usize::try_from(u64::from_le_bytes(word))
                .ok()
                .filter(|&len| len <= n)
                .ok_or_else(|| input.corrupted("list longer than the index"))?;
            lengths.push(len);
        }
        let total: u64 = lengths.iter().map(|&l| l as u64).sum();
        input.ensure_remaining(total.saturating_mul(4 + m as u64))?;
        let mut lists = Vec::with_capacity(nlist);
        let mut listed = vec![false; indexed];
        for len in lengths {
            let slots = input.read_u32s(len)?;
            for &slot in &slots {
                match listed.get_mut(slot as usize) {
                    Some(seen) if !*seen => *seen = true,
                    Some(_) => return Err(input.corrupted("a slot is in two lists")),
                    None => return Err(input.corrupted("list entry beyond the indexed slots")),
                }
            }
            let mut codes = vec![0u8; len * m];
            input.read(&mut codes)?;
            lists.push(InvList { slots, codes });
        }
        if (0..indexed).any(|slot| stored.slots.id(slot).is_some() && !listed[slot]) {
            return Err(input.corrupted("an indexed vector is in no list"));
        }
        Ok((
            stored,
            Some(Trained::new(
                centroids,
                pq,
                lists,
                trained_on,
                indexed,
                self.metric,
            )),
        ))
    }

    /// Drops every vector and the quantisers.
    fn clear(&mut self) {
        self.stored.clear();
        self.trained = None;
        *self.prepared.get_mut() = None;
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
        self.prepared.lock().is_some()
    }

    fn publish(&mut self) -> Result<()> {
        if let Some(prepared) = self.prepared.get_mut().take() {
            self.install(prepared);
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
        let rebuilt = self.rebuild(true)?;
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
