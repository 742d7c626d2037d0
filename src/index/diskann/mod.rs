//! DiskANN (Subramanya et al., NeurIPS 2019) with FreshDiskANN-style updates (Singh et al.
//! 2021): a Vamana graph whose nodes (full vector + neighbour list) live in 4 KiB blocks of an
//! SSD-resident node file, while RAM holds only PQ codes, an id index and a cache of the nodes
//! nearest the entry point.
//!
//! Under the sync protocol:
//! - **Inserts** go to an in-RAM *delta*: full vectors and a Vamana graph of their own, linked
//!   when the batch finishes. An update is a delete of the old version plus an insert.
//! - **Deletes** of nodes on disk go to a delete list (a bitmap of slots): deleted nodes still
//!   route searches but are never returned.
//! - **Merge**: when the delta reaches the disk part's live size (or [`DELTA_BUDGET_FRACTION`]
//!   of the build RAM budget), or more than [`MERGE_DELETED_FRACTION`] of the disk nodes are
//!   deleted, or on [`DerivedIndex::train`], the live disk nodes and the delta are built into a
//!   new node file (a new *generation*: Vamana, PQ codes, written once and never modified) on
//!   a background thread from a snapshot; the first write after it ends installs it,
//!   carrying over the changes applied meanwhile (see `merge.rs`).
//! - **Search** runs a beam search on the disk graph (PQ distances steer, each hop reads `W`
//!   blocks at once, expanded nodes are re-ranked with their full vectors) and a greedy search
//!   on the delta, and merges both.
//! - **Checkpoint**: the state file `diskann.qvi` names the current generation and holds the
//!   delete list and the delta; older generations are removed once it is durable.

mod build;
mod candidates;
pub mod disk;
pub mod layout;
mod merge;
pub mod nodefile;
pub mod vamana;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use uuid::Uuid;

use self::build::MergeSource;
use self::disk::{BeamParams, DiskGraph, DiskSearchStats};
use self::merge::MergeJob;
use self::nodefile::{NodeFile, ReadMode};
use self::vamana::{Graph, VamanaParams};
use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::stored::StoredVectors;
use super::visited::VisitedPool;
use super::{DerivedIndex, IndexSearch, Neighbor, SearchKnobs, TopK, VectorIndexRead};
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::types::{Change, DocView, InternalId, Metric, Seq};

const KIND_VERSION: u16 = 1;
const STATE_FILE: &str = "diskann.qvi";
/// A merge needs at least this many delta vectors (unless deletes or `train` call for it).
pub const MERGE_MIN_DELTA: usize = 1024;
/// Merge when the delta's vectors take this fraction of the build RAM budget.
pub const DELTA_BUDGET_FRACTION: f64 = 0.25;
/// Merge when more than this fraction of the disk nodes are deleted.
pub const MERGE_DELETED_FRACTION: f64 = 0.2;
/// Filtered searches allowing at most this many documents scan them exactly.
const FILTER_EXACT_LIMIT: u64 = 2048;
/// Largest candidate list a filtered beam search widens to.
const MAX_FILTER_LIST: usize = 4096;
/// Pruning factor α of the second construction pass (the paper's 1.2).
pub const ALPHA: f32 = 1.2;
/// Default beam width `W`.
pub const DEFAULT_BEAM: usize = 4;

/// PQ code bytes when the collection does not choose: the largest divisor of the dimension
/// that is at most `dim / 4` (one byte per four dimensions: 1/16 of the raw vector, e.g. 32
/// bytes for 128-D and 256 for 1024-D).
pub fn default_pq_bytes(dim: usize) -> usize {
    let cap = (dim / 4).max(1);
    (1..=cap)
        .rev()
        .find(|&m| dim.is_multiple_of(m))
        .unwrap_or(1)
}

/// The collection's DiskANN parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskAnnParams {
    /// Maximum out-degree `R`.
    pub max_degree: usize,
    /// Candidate-list size `L` while building; also the default search list.
    pub build_list: usize,
    /// PQ code bytes per vector (must divide the dimension).
    pub pq_bytes: usize,
    /// Pruning factor α of the second pass.
    pub alpha: f32,
    /// Nodes cached in RAM around the entry point.
    pub cache_nodes: usize,
    /// RAM a build may use (beyond it, the build is partitioned).
    pub build_ram_bytes: usize,
    /// Default beam width `W`.
    pub beam: usize,
}

/// The state of a DiskANN index, as `info` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DiskStatus {
    /// Generation of the node file (0: none yet).
    pub generation: u64,
    /// Nodes in the node file, deleted ones included.
    pub disk_nodes: usize,
    /// Nodes of the node file deleted since it was built.
    pub deleted: u64,
    /// Live vectors in the in-RAM delta (not merged yet).
    pub delta: usize,
    /// Bytes of the node file.
    pub node_file_bytes: u64,
    /// Nodes cached in RAM.
    pub cached_nodes: usize,
    /// How node blocks are read.
    pub read_mode: ReadMode,
}

/// The in-RAM delta: new vectors and their own graph.
struct Delta {
    stored: StoredVectors,
    graph: Graph,
    /// Nodes linked into the graph so far (later ones are scanned exactly).
    linked: AtomicUsize,
}

impl Delta {
    fn new(dim: usize) -> Self {
        Delta {
            stored: StoredVectors::new(dim),
            graph: Graph::empty(0),
            linked: AtomicUsize::new(0),
        }
    }

    fn memory_bytes(&self) -> usize {
        self.stored.memory_bytes() + self.graph.memory_bytes()
    }
}

/// The DiskANN index of a collection.
pub struct DiskAnnIndex {
    dim: usize,
    metric: Metric,
    distance: MetricDistance,
    config_fingerprint: u64,
    params: DiskAnnParams,
    dir: IndexDir,
    read_mode: ReadMode,
    disk: Option<Arc<DiskGraph>>,
    /// 0 when there is no disk part.
    generation: u64,
    /// Deleted disk slots.
    deleted: RoaringBitmap,
    delta: Delta,
    /// The merge in progress or done but not installed yet.
    merge: Mutex<Option<MergeJob>>,
    /// Damage found while searching (a node failed its checksum): searches refuse until a
    /// reopen rebuilds the index.
    damage: Mutex<Option<String>>,
    visited: VisitedPool,
    /// A bulk load announced by [`DerivedIndex::reserve`]: until the delta has this many slots,
    /// batches neither link nor merge (one build at the end instead of many); 0 when none.
    bulk_until: usize,
    watermark: Seq,
}

impl DiskAnnIndex {
    /// An empty index whose node files live in `dir`.
    pub fn new(
        config: &CollectionConfig,
        params: DiskAnnParams,
        instance: u64,
        dir: &IndexDir,
    ) -> Self {
        DiskAnnIndex {
            dim: config.dim,
            metric: config.metric,
            distance: MetricDistance::new(config.metric),
            config_fingerprint: config.index_fingerprint(instance),
            params,
            dir: dir.clone(),
            read_mode: dir.read_mode(),
            disk: None,
            generation: 0,
            deleted: RoaringBitmap::new(),
            delta: Delta::new(config.dim),
            merge: Mutex::new(None),
            damage: Mutex::new(None),
            visited: VisitedPool::default(),
            bulk_until: 0,
            watermark: 0,
        }
    }

    fn header(&self) -> FileHeader {
        FileHeader {
            kind: IndexFileKind::DiskAnn,
            kind_version: KIND_VERSION,
            dim: self.dim as u32,
            metric: self.metric,
            config_fingerprint: self.config_fingerprint,
            watermark: self.watermark,
        }
    }

    fn vamana_params(&self) -> VamanaParams {
        VamanaParams {
            max_degree: self.params.max_degree,
            build_list: self.params.build_list,
            // α scales distances; with negative ones (inner product) only α = 1 keeps its sense.
            alpha: if self.metric == Metric::Dot {
                1.0
            } else {
                self.params.alpha
            },
        }
    }

    /// The disk slot of `id`, if it is there and not deleted.
    fn disk_slot(&self, id: InternalId) -> Option<u32> {
        self.disk
            .as_ref()?
            .slot_of(id)
            .filter(|&slot| !self.deleted.contains(slot))
    }

    /// Live nodes on disk.
    fn disk_live(&self) -> usize {
        self.disk
            .as_ref()
            .map_or(0, |d| d.len() - self.deleted.len() as usize)
    }

    /// Bytes the delta's documents take (vectors, links, ids): what the merge policy weighs,
    /// whatever capacity was reserved ahead.
    fn delta_bytes(&self) -> usize {
        self.delta.stored.slots.slots() * (self.dim * 4 + self.params.max_degree * 4 * 13 / 10 + 48)
    }

    /// Whether the applied changes call for a merge.
    fn merge_due(&self) -> bool {
        let delta_live = self.delta.stored.slots.live();
        let disk_nodes = self.disk.as_deref().map_or(0, DiskGraph::len);
        let budget = self.params.build_ram_bytes as f64 * DELTA_BUDGET_FRACTION;
        let grown = delta_live >= MERGE_MIN_DELTA
            && (delta_live >= self.disk_live() || self.delta_bytes() as f64 >= budget);
        let deleted = self.deleted.len() as f64 > MERGE_DELETED_FRACTION * disk_nodes as f64
            && self.deleted.len() as usize >= MERGE_MIN_DELTA;
        grown || deleted
    }

    /// Links the delta nodes added since the last batch into the delta graph.
    fn link_delta(&self) {
        let linked = self.delta.linked.load(Ordering::Acquire);
        let total = self.delta.graph.len();
        if linked >= total {
            return;
        }
        let points: Vec<u32> = (linked as u32..total as u32).collect();
        vamana::insert(
            &self.delta.graph,
            &self.delta.stored.vectors,
            &self.distance,
            0,
            &points,
            &self.vamana_params(),
            self.vamana_params().alpha,
        );
        self.delta.linked.store(total, Ordering::Release);
    }

    /// Starts a merge of the live disk nodes and the delta into a new generation, on its own
    /// thread, from a snapshot of both.
    fn start_merge(&self) -> Result<MergeJob> {
        let generation = loop {
            let g = Uuid::new_v4().as_u64_pair().0;
            if g != 0 && g != self.generation {
                break g;
            }
        };
        MergeJob::start(MergeSource {
            dir: self.dir.clone(),
            dim: self.dim,
            metric: self.metric,
            distance: self.distance,
            config_fingerprint: self.config_fingerprint,
            params: self.params,
            vamana: self.vamana_params(),
            read_mode: self.read_mode,
            generation,
            disk: self.disk.clone(),
            deleted: self.deleted.clone(),
            delta: self.delta.stored.clone(),
        })
    }

    /// Installs a finished merge (see [`MergeJob::install`]); a failed one is logged and
    /// dropped, leaving the delta in RAM for the next attempt.
    fn install(&mut self, job: MergeJob) {
        match job.install(&mut self.disk, &mut self.deleted, &mut self.delta, self.dim) {
            Ok(generation) => {
                self.generation = generation;
                self.bulk_until = 0;
            }
            Err(e) => log::warn!("a DiskANN merge failed; its changes stay in RAM: {e}"),
        }
    }

    /// Records damage found by a search and removes the checkpoint, so that the next open
    /// rebuilds the index from the store.
    fn record_damage(&self, error: &Error) {
        log::error!("the DiskANN index is damaged: {error}");
        std::fs::remove_file(self.dir.path().join(STATE_FILE)).ok();
        self.damage.lock().get_or_insert_with(|| error.to_string());
    }

    /// The `k` best of the disk part and the delta for the prepared `query`, among the
    /// documents `allowed` accepts.
    fn search_both(
        &self,
        query: &[f32],
        k: usize,
        params: BeamParams,
        allowed: impl Fn(InternalId) -> bool,
        stats: &mut DiskSearchStats,
    ) -> TopK {
        let started = Instant::now();
        let mut top = TopK::new(k);
        if let Some(disk) = &self.disk {
            let keep = |slot: u32, id: InternalId| !self.deleted.contains(slot) && allowed(id);
            if let Err(e) = disk.search(query, params, keep, &mut top, stats) {
                self.record_damage(&e);
            }
        }
        self.search_delta(query, params.list, &allowed, &mut top);
        stats.micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        top
    }

    /// Offers the delta's nearest live vectors to `top`: a greedy search of its graph, and an
    /// exact scan of the nodes not linked yet.
    fn search_delta(
        &self,
        query: &[f32],
        list: usize,
        allowed: &impl Fn(InternalId) -> bool,
        top: &mut TopK,
    ) {
        let stored = &self.delta.stored;
        let linked = self
            .delta
            .linked
            .load(Ordering::Acquire)
            .min(stored.slots.slots());
        if linked > 0 {
            let (found, _) = vamana::greedy_search(
                &self.delta.graph,
                &stored.vectors,
                &self.distance,
                &self.visited,
                0,
                query,
                list,
            );
            for s in found {
                let slot = s.node as usize;
                if let Some(id) = stored.slots.id(slot).filter(|&id| allowed(id)) {
                    top.push(Neighbor {
                        id,
                        uuid: stored.slots.uuid(slot),
                        distance: s.distance,
                    });
                }
            }
        }
        stored.scan_where(
            query,
            linked..stored.slots.slots(),
            &self.distance,
            top,
            allowed,
        );
    }

    /// Exact search over the allowed documents (few of them): reads their nodes.
    fn search_allowed_exactly(
        &self,
        query: &[f32],
        k: usize,
        allowed: &RoaringBitmap,
    ) -> Result<TopK> {
        // A document is live either in the delta or on disk, never both.
        let delta = &self.delta.stored;
        let mut top = delta.scan_ids(query, allowed, k, &self.distance, |id| delta.slots.slot(id));
        if let Some(disk) = &self.disk {
            for slot in allowed.iter().filter_map(|id| self.disk_slot(id)) {
                let node = disk.node(slot)?;
                top.push(Neighbor {
                    id: disk::node_id(disk.file().path(), node.id)?,
                    uuid: node.uuid,
                    distance: self.distance.distance(query, &node.vector),
                });
            }
        }
        Ok(top)
    }

    fn beam_params(&self, k: usize, knobs: &SearchKnobs) -> BeamParams {
        BeamParams {
            list: knobs.search_l.unwrap_or(self.params.build_list).max(k),
            beam: knobs.beam.unwrap_or(self.params.beam).max(1),
        }
    }

    /// The damage searches found, if any.
    pub fn damage(&self) -> Option<String> {
        self.damage.lock().clone()
    }

    /// How node blocks are read (as the file system allowed).
    pub fn read_mode(&self) -> ReadMode {
        self.disk
            .as_ref()
            .map_or(self.read_mode, |d| d.file().mode())
    }

    fn state_path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Removes node files (and their temporaries) of generations other than the current one
    /// and than a merge's in progress, and scratch files a crashed merge left behind.
    fn remove_stale_generations(&self) {
        let merging = self.merge.lock().as_ref().map(|job| job.generation);
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let base = name.strip_suffix(".tmp").unwrap_or(&name);
            let stale = match layout::generation_of(base) {
                Some(g) => (g != self.generation || base != name) && Some(g) != merging,
                None => name.starts_with(build::SCRATCH_PREFIX) && merging.is_none(),
            };
            if stale {
                std::fs::remove_file(entry.path()).ok();
            }
        }
    }

    fn write_state(&self, out: &mut FileWriter) -> Result<()> {
        let (file_len, nodes) = self.disk.as_ref().map_or((0, 0), |d| {
            (d.file().header().file_len(), d.file().header().nodes)
        });
        let mut deleted = Vec::new();
        self.deleted.serialize_into(&mut deleted)?;
        let delta = &self.delta.stored;
        // Read before the lists: the nodes below it have their links complete.
        let linked = self.delta.linked.load(Ordering::Acquire);
        let head = [
            self.generation,
            file_len,
            nodes,
            deleted.len() as u64,
            delta.slots.slots() as u64,
            linked.min(delta.slots.slots()) as u64,
            0,
            0,
        ];
        for word in head {
            out.write(&word.to_le_bytes())?;
        }
        out.write(&deleted)?;
        delta.write(out)?;
        for node in 0..self.delta.graph.len() {
            let list = self.delta.graph.neighbors(node as u32);
            out.write_u32s(std::iter::once(list.len() as u32).chain(list))?;
        }
        Ok(())
    }

    fn read_state(
        &self,
        dir: &Path,
        input: &mut FileReader,
    ) -> Result<(Option<Arc<DiskGraph>>, u64, RoaringBitmap, Delta)> {
        let mut head = [0u8; 64];
        input.read(&mut head)?;
        let word =
            |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        if head[48..] != [0u8; 16] {
            return Err(input.corrupted("reserved bytes are not zero"));
        }
        let generation = word(0);
        let disk = if generation == 0 {
            None
        } else {
            let path = dir.join(layout::file_name(generation));
            if !path.exists() {
                return Err(Error::corrupted(
                    &path,
                    "the node file the checkpoint names is missing",
                ));
            }
            let file = NodeFile::open(
                &path,
                self.dim,
                self.metric,
                self.config_fingerprint,
                self.read_mode,
            )?;
            let disk = DiskGraph::open(file, self.params.cache_nodes, disk::VERIFY_ON_LOAD_BYTES)?;
            let header = disk.file().header();
            if header.generation != generation
                || header.file_len() != word(1)
                || header.nodes != word(2)
            {
                return Err(Error::corrupted(
                    &path,
                    "the node file is not the one the checkpoint names",
                ));
            }
            Some(Arc::new(disk))
        };
        let disk_nodes = disk.as_ref().map_or(0, |d| d.len() as u64);
        let deleted_len = word(3);
        input.ensure_remaining(deleted_len)?;
        let mut deleted_bytes = vec![0u8; deleted_len as usize];
        input.read(&mut deleted_bytes)?;
        let deleted = RoaringBitmap::deserialize_from(&deleted_bytes[..])
            .map_err(|e| input.corrupted(format!("delete list: {e}")))?;
        if deleted
            .max()
            .is_some_and(|max| u64::from(max) >= disk_nodes)
        {
            return Err(input.corrupted("the delete list names a slot beyond the node file"));
        }
        let slots = usize::try_from(word(4)).map_err(|_| input.corrupted("absurd delta size"))?;
        let linked = usize::try_from(word(5))
            .ok()
            .filter(|&linked| linked <= slots)
            .ok_or_else(|| input.corrupted("more delta nodes linked than held"))?;
        input.ensure_remaining((slots as u64).saturating_mul(self.dim as u64 * 4 + 24))?;
        let stored = StoredVectors::read(input, slots, self.dim)?;
        let mut lists = Vec::with_capacity(slots);
        for _ in 0..slots {
            let degree = input.read_u32s(1)?[0] as usize;
            if degree > 2 * self.params.max_degree {
                return Err(input.corrupted("a delta node has too many neighbours"));
            }
            let list = input.read_u32s(degree)?;
            if list.iter().any(|&n| n as usize >= slots) {
                return Err(input.corrupted("a delta link points beyond the delta"));
            }
            lists.push(list);
        }
        if let Some(disk) = &disk {
            let clash = (0..slots)
                .filter_map(|s| stored.slots.id(s))
                .any(|id| disk.slot_of(id).is_some_and(|slot| !deleted.contains(slot)));
            if clash {
                return Err(input.corrupted("a document is both on disk and in the delta"));
            }
        }
        let delta = Delta {
            stored,
            graph: Graph::from_lists(lists),
            // Nodes the checkpoint caught before they were linked are scanned exactly (and
            // linked with the next batch).
            linked: AtomicUsize::new(linked),
        };
        Ok((disk, generation, deleted, delta))
    }
}

impl DerivedIndex for DiskAnnIndex {
    fn name(&self) -> &'static str {
        "diskann"
    }

    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()> {
        self.watermark = self.watermark.max(change.seq);
        let delta_slot = self.delta.stored.slots.slot(change.id);
        let disk_slot = self.disk_slot(change.id);
        let Some(doc) = doc else {
            if let Some(slot) = delta_slot {
                self.delta.stored.slots.vacate(slot);
            }
            if let Some(slot) = disk_slot {
                self.deleted.insert(slot);
            }
            return Ok(());
        };
        let vector = self
            .distance
            .prepare(doc.vector)
            .filter(|v| v.len() == self.dim)
            .ok_or_else(|| Error::Internal(format!("unusable vector for document {}", doc.id)))?;
        if let Some(slot) = delta_slot {
            if self.delta.stored.vectors.get(slot) == vector.as_slice() {
                self.delta.stored.slots.set_uuid(slot, doc.id);
                return Ok(());
            }
            self.delta.stored.slots.vacate(slot);
        }
        if let (Some(slot), Some(disk)) = (disk_slot, &self.disk) {
            let node = disk.node(slot)?;
            if node.vector == vector && node.uuid == doc.id {
                return Ok(());
            }
            self.deleted.insert(slot);
        }
        self.delta.stored.push(change.id, doc.id, &vector);
        self.delta.graph.push();
        Ok(())
    }

    fn finish_batch(&self) -> Result<()> {
        let bulk_loading = self.delta.stored.slots.slots() < self.bulk_until;
        // A bulk load holds its documents until one build (whose budget they count against).
        if bulk_loading && self.delta_bytes() < self.params.build_ram_bytes {
            // Searches scan the unlinked delta exactly meanwhile.
            return Ok(());
        }
        let mut merge = self.merge.lock();
        if merge.is_none() && self.merge_due() {
            let mut job = self.start_merge()?;
            if self.disk.is_none() {
                // The first build (or a rebuild): nothing to serve meanwhile but the delta, so
                // it runs within the batch, and linking the delta would be wasted.
                if let Some(e) = job.take_error() {
                    return Err(e);
                }
                *merge = Some(job);
                return Ok(());
            }
            *merge = Some(job);
        }
        drop(merge);
        self.link_delta();
        Ok(())
    }

    fn needs_publish(&self) -> bool {
        self.merge.lock().as_ref().is_some_and(MergeJob::is_done)
    }

    fn background_work(&self) -> bool {
        self.merge.try_lock().is_none_or(|m| m.is_some())
    }

    fn background_done(&self) -> bool {
        self.merge
            .try_lock()
            .is_some_and(|m| m.as_ref().is_some_and(MergeJob::is_done))
    }

    fn publish(&mut self) -> Result<()> {
        if self.merge.get_mut().as_ref().is_some_and(MergeJob::is_done) {
            if let Some(job) = self.merge.get_mut().take() {
                self.install(job);
            }
        }
        Ok(())
    }

    fn watermark(&self) -> Seq {
        self.watermark
    }

    fn reset(&mut self, watermark: Seq) {
        self.disk = None;
        self.generation = 0;
        self.deleted = RoaringBitmap::new();
        self.delta = Delta::new(self.dim);
        // A running merge is abandoned (its thread ends by itself; its files are removed at
        // a later checkpoint).
        *self.merge.get_mut() = None;
        *self.damage.get_mut() = None;
        self.bulk_until = 0;
        self.watermark = watermark;
    }

    fn checkpoint(&self, dir: &IndexDir) -> Result<Seq> {
        if dir.path() != self.dir.path() {
            return Err(Error::Internal(
                "a DiskANN checkpoint belongs beside its node files".into(),
            ));
        }
        let mut out = FileWriter::create(dir, STATE_FILE, self.header())?;
        self.write_state(&mut out)?;
        out.finish()?;
        self.remove_stale_generations();
        Ok(self.watermark)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool> {
        let Some(mut input) = FileReader::open(&Self::state_path(dir), &self.header())? else {
            return Ok(false);
        };
        let (disk, generation, deleted, delta) = self.read_state(dir, &mut input)?;
        let header = input.finish()?;
        self.disk = disk;
        self.generation = generation;
        self.deleted = deleted;
        self.delta = delta;
        *self.merge.get_mut() = None;
        *self.damage.get_mut() = None;
        self.watermark = header.watermark;
        Ok(true)
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        let mut ids = self.delta.stored.slots.sorted_ids();
        if let Some(disk) = &self.disk {
            ids.extend(
                disk.sorted_ids()
                    .iter()
                    .filter(|&&id| self.disk_slot(id).is_some()),
            );
        }
        ids.sort_unstable();
        ids
    }

    fn reserve(&mut self, additional: usize) {
        if additional >= MERGE_MIN_DELTA {
            self.bulk_until = self.delta.stored.slots.slots() + additional;
        }
        self.delta.stored.reserve(additional);
    }

    fn train(&self) -> Result<bool> {
        let mut merge = self.merge.lock();
        let nothing_to_merge =
            self.disk.is_some() && self.deleted.is_empty() && self.delta.stored.slots.slots() == 0;
        if merge.is_none() && nothing_to_merge {
            // The node file already holds every document: a rebuild would reproduce it.
            return Ok(false);
        }
        // A merge in progress does not cover the changes applied since it started: replace it
        // with one that covers everything, and wait for it.
        *merge = None;
        let mut job = self.start_merge()?;
        if let Some(e) = job.take_error() {
            return Err(e);
        }
        *merge = Some(job);
        Ok(true)
    }

    fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.file().verify_nodes() {
                problems.push(e.to_string());
            }
        }
        if let Some(damage) = self.damage() {
            problems.push(format!("a search found damage: {damage}"));
        }
        let slots = self.delta.graph.len();
        if slots != self.delta.stored.slots.slots() {
            problems.push("the delta graph and the delta vectors differ in size".into());
        }
        for node in 0..slots {
            let list = self.delta.graph.neighbors(node as u32);
            if list.iter().any(|&n| n as usize >= slots) {
                problems.push(format!("delta node {node} links beyond the delta"));
            }
        }
        problems
    }
}

impl VectorIndexRead for DiskAnnIndex {
    fn search(&self, query: &[f32], k: usize, knobs: &SearchKnobs) -> IndexSearch {
        let Some(query) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "diskann",
                ..IndexSearch::default()
            };
        };
        let mut stats = DiskSearchStats::default();
        let top = self.search_both(&query, k, self.beam_params(k, knobs), |_| true, &mut stats);
        IndexSearch {
            strategy: "diskann",
            neighbors: top.into_sorted(),
            examined: (stats.blocks_read / self.blocks_per_node() + stats.cache_hits) as usize,
            exhaustive: false,
            disk: Some(stats),
        }
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        knobs: &SearchKnobs,
        allowed: &RoaringBitmap,
    ) -> IndexSearch {
        let Some(query) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "diskann_filtered",
                ..IndexSearch::default()
            };
        };
        let exact = |strategy| {
            let started = Instant::now();
            match self.search_allowed_exactly(&query, k, allowed) {
                Ok(top) => IndexSearch {
                    strategy,
                    neighbors: top.into_sorted(),
                    examined: allowed.len() as usize,
                    exhaustive: true,
                    disk: Some(DiskSearchStats {
                        micros: started.elapsed().as_micros().min(u32::MAX as u128) as u32,
                        ..DiskSearchStats::default()
                    }),
                },
                Err(e) => {
                    self.record_damage(&e);
                    IndexSearch {
                        strategy,
                        ..IndexSearch::default()
                    }
                }
            }
        };
        if allowed.len() <= FILTER_EXACT_LIMIT {
            return exact("diskann_filtered_exact");
        }
        let total = (self.len() as u64).max(1);
        let mut params = self.beam_params(k, knobs);
        let widened = (k as u64 * total / allowed.len().max(1)) as usize;
        params.list = params
            .list
            .max(widened)
            .min(MAX_FILTER_LIST.max(params.list));
        let mut stats = DiskSearchStats::default();
        let top = self.search_both(&query, k, params, |id| allowed.contains(id), &mut stats);
        let neighbors = top.into_sorted();
        let matches = allowed.len().min(self.len() as u64) as usize;
        if neighbors.len() < k.min(matches) {
            // The graph walk ran out of allowed documents: answer exactly rather than short.
            return exact("diskann_filtered_exact_fallback");
        }
        IndexSearch {
            strategy: "diskann_filtered",
            neighbors,
            examined: (stats.blocks_read / self.blocks_per_node() + stats.cache_hits) as usize,
            exhaustive: false,
            disk: Some(stats),
        }
    }

    fn len(&self) -> usize {
        self.disk_live() + self.delta.stored.slots.live()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        if let Some(slot) = self.delta.stored.slots.slot(id) {
            return Some(self.delta.stored.vectors.get(slot).to_vec());
        }
        let slot = self.disk_slot(id)?;
        let disk = self.disk.as_ref()?;
        disk.node(slot)
            .map_err(|e| self.record_damage(&e))
            .ok()
            .map(|n| n.vector)
    }

    fn document_id(&self, id: InternalId) -> Option<Uuid> {
        if let Some(slot) = self.delta.stored.slots.slot(id) {
            return Some(self.delta.stored.slots.uuid(slot));
        }
        let slot = self.disk_slot(id)?;
        let disk = self.disk.as_ref()?;
        disk.node(slot)
            .map_err(|e| self.record_damage(&e))
            .ok()
            .map(|n| n.uuid)
    }

    fn memory_bytes(&self) -> usize {
        self.disk.as_deref().map_or(0, DiskGraph::memory_bytes)
            + self.deleted.serialized_size()
            + self.delta.memory_bytes()
    }

    fn damage(&self) -> Option<String> {
        DiskAnnIndex::damage(self)
    }

    fn disk_status(&self) -> Option<DiskStatus> {
        Some(DiskStatus {
            generation: self.generation,
            disk_nodes: self.disk.as_deref().map_or(0, DiskGraph::len),
            deleted: self.deleted.len(),
            delta: self.delta.stored.slots.live(),
            node_file_bytes: self
                .disk
                .as_ref()
                .map_or(0, |d| d.file().header().file_len()),
            cached_nodes: self.disk.as_deref().map_or(0, DiskGraph::cached),
            read_mode: self.read_mode(),
        })
    }
}

impl DiskAnnIndex {
    fn blocks_per_node(&self) -> u32 {
        self.disk
            .as_ref()
            .map_or(1, |d| d.file().header().geometry.blocks_per_node as u32)
    }
}

#[cfg(test)]
mod tests;
