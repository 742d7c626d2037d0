//! The HNSW index: an in-RAM graph kept in sync with the store.
//!
//! Batches are published atomically: searches return only slots below `published`, moved once
//! the batch's new nodes are linked; replaced versions stay visible until then. Each search
//! reads `published` once and works with that value throughout, so a batch published while it
//! runs is seen whole or not at all.
//!
//! Vectors live in a cache-line-aligned arena addressed by slot; [`SlotIds`] maps slots to
//! documents. A change is applied in two steps: `apply` (exclusive access) appends the vector and
//! an unlinked graph node, or vacates a slot (a tombstone: traversed, never returned); then
//! `finish_batch` (shared access, so searches keep running) links the new nodes, in parallel with
//! rayon when there are many. Once vacant slots pass [`COMPACT_FRACTION`] of all slots, the index
//! compacts itself in the background: `finish_batch` copies the live vectors and starts building
//! a new graph over them on its own thread, so the write that crossed the threshold returns at
//! once and later writes and searches go on against the current graph. The next `publish` after
//! the build ends (after a write, or at a checkpoint) swaps the new graph in, carrying over what
//! changed meanwhile (many additions are first linked by a background catch-up job), so memory
//! stays flat under churn.
//!
//! Checkpoint payload (kind version 1), after the container header:
//! ```text
//! u64 slots, u32 M, u32 efConstruction, u64 seed, u64 entry ((level << 32) | node, or
//!     u64::MAX), u8 keep_pruned, u8 precision (0 f32, 1 f16), 30 zero bytes   (64 bytes)
//! slots × dim × (f32 | f16)    vectors
//! slots × u32, slots × [u8;16] slot → internal id (u32::MAX = vacant), slot → uuid
//! slots × u8, zero-padded to a multiple of 4: levels
//! slots × (1 + 2M) × u32       layer-0 blocks (count, ids)
//! per node: level × (1 + M) × u32   upper-layer blocks
//! ```

pub(crate) mod graph;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use rayon::prelude::*;
use roaring::RoaringBitmap;

use self::graph::{Context, Graph, GraphParams, GraphParts, Scored, Traversal};
use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::stored::{SlotOrigins, StoredChange, StoredVectors};
use super::{DerivedIndex, GraphStatus, IndexSearch, Neighbor, SearchKnobs, VectorIndexRead};
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::index::job::{Job, RetryAfterFailure};
use crate::index::visited::VisitedPool;
use crate::types::{Change, DocView, InternalId, Metric, Seq};
use crate::vectors::Element;

const KIND_VERSION: u16 = 1;
const FILE_NAME: &str = "hnsw.qvi";
/// `ef` of a search that does not set one.
pub const DEFAULT_EF: usize = 100;
/// Compact once vacant slots exceed this fraction of all slots.
pub const COMPACT_FRACTION: f64 = 0.10;
/// ... and at least this many.
const COMPACT_MIN_VACANT: usize = 64;
/// Installing a compaction links the documents added since its snapshot under the write lock
/// when there are at most this many; more are linked by a background catch-up job first.
const LINK_UNDER_LOCK: usize = 1024;

/// HNSW parameters of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// `M`: links per node per layer (2·M on layer 0).
    pub m: usize,
    /// `efConstruction`: candidate-list size while inserting.
    pub ef_construction: usize,
}

/// Vectors and graph rebuilt over the live documents only.
struct Compacted<E: Element> {
    stored: StoredVectors<E>,
    graph: Graph,
}

/// A compaction running in the background: a new graph over a snapshot of the live documents.
struct Compaction<E: Element> {
    /// Where each slot of the compacted storage comes from in the current one.
    origins: SlotOrigins,
    job: Job<Compacted<E>>,
}

/// An HNSW vector index over vectors stored as `E` (`f32`, or `f16` for half the memory).
pub struct HnswIndex<E: Element = f32> {
    dim: usize,
    metric: Metric,
    distance: MetricDistance,
    config_fingerprint: u64,
    stored: StoredVectors<E>,
    graph: Graph,
    /// Nodes added by `apply` and not linked yet.
    pending: Mutex<Vec<u32>>,
    /// A compaction started by `finish_batch`, running or waiting for `publish` to install it.
    compaction: Mutex<Option<Compaction<E>>>,
    /// Holds compactions back for a while after one failed.
    retry: RetryAfterFailure,
    /// Searches return only slots below this: a batch's new nodes become visible all at once,
    /// after they are linked.
    published: AtomicUsize,
    /// Slots of documents whose vector the current batch replaced: they keep serving the old
    /// version until the batch is published, then become vacant.
    replaced: Vec<usize>,
    visited: VisitedPool,
    watermark: Seq,
}

impl<E: Element> HnswIndex<E> {
    /// An empty index; `instance` identifies the collection and seeds the level draws.
    pub fn new(config: &CollectionConfig, params: HnswParams, instance: u64) -> Self {
        HnswIndex {
            dim: config.dim,
            metric: config.metric,
            distance: MetricDistance::new(config.metric),
            config_fingerprint: config.index_fingerprint(instance),
            stored: StoredVectors::new(config.dim),
            graph: Graph::new(GraphParams {
                m: params.m,
                ef_construction: params.ef_construction,
                keep_pruned: false,
                seed: instance,
            }),
            pending: Mutex::new(Vec::new()),
            compaction: Mutex::new(None),
            retry: RetryAfterFailure::default(),
            published: AtomicUsize::new(0),
            replaced: Vec::new(),
            visited: VisitedPool::default(),
            watermark: 0,
        }
    }

    fn header(&self) -> FileHeader {
        FileHeader {
            kind: IndexFileKind::Hnsw,
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

    /// The published slot count a search works with: loaded once per search, so that a batch
    /// published while it runs is seen whole or not at all.
    fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    fn is_live(&self, node: u32, published: usize) -> bool {
        (node as usize) < published && self.stored.slots.id(node as usize).is_some()
    }

    /// Appends `vector` (prepared) as a new, unlinked node for document `id`.
    fn add(&mut self, id: InternalId, uuid: uuid::Uuid, vector: &[f32]) {
        let slot = self.stored.push(id, uuid, vector);
        let level = self.graph.draw_level(slot);
        let node = self.graph.add_node(level);
        debug_assert_eq!(node as usize, slot);
        self.pending.get_mut().push(node);
    }

    /// Links every pending node into the graph; parallel when there are several.
    fn link_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.lock());
        link(
            &self.graph,
            &self.stored,
            self.distance,
            &self.visited,
            pending,
        );
    }

    fn vacant_slots(&self) -> usize {
        self.stored.slots.slots() - self.stored.slots.live()
    }

    /// Whether a compaction has ended and waits to be installed (`false` while `train` holds
    /// the slot: this is polled by the checkpointer and must not wait).
    fn compaction_done(&self) -> bool {
        self.compaction
            .try_lock()
            .is_some_and(|c| c.as_ref().is_some_and(|c| c.job.is_done()))
    }

    /// Whether enough slots are vacant to compact.
    fn compaction_due(&self) -> bool {
        let vacant = self.vacant_slots();
        vacant >= COMPACT_MIN_VACANT
            && vacant as f64 > COMPACT_FRACTION * self.stored.slots.slots() as f64
    }

    /// Starts building, on its own thread, a new graph over a copy of the live vectors (slots
    /// renumbered, vacant ones dropped) while this one keeps serving searches and writes.
    fn start_compaction(&self) -> Result<Compaction<E>> {
        let live = self.stored.slots.live();
        log::info!(
            "compacting the HNSW index in the background: {live} live of {} slots",
            self.stored.slots.slots()
        );
        let (stored, origins) = self.stored.live_copy();
        let job = Self::link_in_background(stored, Graph::new(self.graph.params()), self.distance)?;
        Ok(Compaction { origins, job })
    }

    /// Starts a job that adds the slots of `stored` beyond `graph`'s nodes to `graph` and links
    /// them (on a pool of its own, see [`Job::start_pooled`]).
    fn link_in_background(
        stored: StoredVectors<E>,
        mut graph: Graph,
        distance: MetricDistance,
    ) -> Result<Job<Compacted<E>>> {
        Job::start_pooled("quiver-hnsw-compaction", move || {
            link_new_slots(&mut graph, &stored, distance, &VisitedPool::default());
            Ok(Compacted { stored, graph })
        })
    }

    /// Installs a finished compaction, carrying over the changes applied since its snapshot:
    /// documents of the snapshot deleted or replaced since are vacated in the new storage, and
    /// documents added since are copied in and linked. When more than [`LINK_UNDER_LOCK`] were
    /// added, they are linked by a catch-up job instead (returned, to be installed the same way
    /// once it ends), so the write lock is never held for long. A failed compaction is logged
    /// and dropped (the index keeps its tombstones and compacts again after a write, once
    /// [`RetryAfterFailure`] allows: 1 s after the first failure, doubling up to 5 min).
    fn install(&mut self, compaction: Compaction<E>) -> Option<Compaction<E>> {
        let Compaction { mut origins, job } = compaction;
        let Compacted {
            mut stored,
            mut graph,
        } = match job.result() {
            Ok(compacted) => compacted,
            Err(e) => {
                log::warn!("HNSW compaction failed, tombstones stay until the next one: {e}");
                self.retry.failed(Instant::now());
                return None;
            }
        };
        self.link_pending();
        let added = origins.catch_up(&mut stored, &self.stored);
        if added.len() > LINK_UNDER_LOCK {
            return match Self::link_in_background(stored, graph, self.distance) {
                Ok(job) => Some(Compaction { origins, job }),
                Err(e) => {
                    log::warn!("could not start an HNSW compaction catch-up: {e}");
                    self.retry.failed(Instant::now());
                    None
                }
            };
        }
        debug_assert_eq!(added, graph.len()..stored.slots.slots());
        link_new_slots(&mut graph, &stored, self.distance, &self.visited);
        self.stored = stored;
        self.graph = graph;
        self.retry.succeeded();
        None
    }

    fn clear(&mut self) {
        self.stored.clear();
        self.graph = Graph::new(self.graph.params());
        self.pending.get_mut().clear();
        // A running compaction finishes on its own thread; its result is dropped.
        *self.compaction.get_mut() = None;
        self.published.store(0, Ordering::Release);
        self.replaced.clear();
    }

    /// Exact scan of every slot below `published` (used when the collection is no larger
    /// than `ef`).
    fn exact(&self, q: &[f32], k: usize, published: usize) -> IndexSearch {
        let top = self.stored.scan(q, 0..published, k, &self.distance);
        IndexSearch {
            strategy: "hnsw_exact_scan",
            neighbors: top.into_sorted(),
            examined: self.stored.slots.live(),
            exhaustive: true,
            disk: None,
        }
    }

    fn write_checkpoint(&self, out: &mut FileWriter) -> Result<()> {
        let params = self.graph.params();
        let GraphParts {
            levels,
            level0,
            upper,
            entry,
        } = self.graph.parts();
        let mut head = [0u8; 64];
        head[0..8].copy_from_slice(&(self.stored.slots.slots() as u64).to_le_bytes());
        head[8..12].copy_from_slice(&(params.m as u32).to_le_bytes());
        head[12..16].copy_from_slice(&(params.ef_construction as u32).to_le_bytes());
        head[16..24].copy_from_slice(&params.seed.to_le_bytes());
        let entry = entry.map_or(u64::MAX, |(node, level)| {
            ((level as u64) << 32) | u64::from(node)
        });
        head[24..32].copy_from_slice(&entry.to_le_bytes());
        head[32] = u8::from(params.keep_pruned);
        head[33] = E::CODE;
        out.write(&head)?;
        self.stored.write(out)?;
        out.write(levels)?;
        out.write(&vec![0u8; levels.len().next_multiple_of(4) - levels.len()])?;
        out.write_u32s(level0.iter().map(|a| a.load(Ordering::Acquire)))?;
        for block in upper {
            out.write_u32s(block.iter().map(|a| a.load(Ordering::Acquire)))?;
        }
        Ok(())
    }

    fn read_checkpoint(&self, input: &mut FileReader) -> Result<(StoredVectors<E>, Graph)> {
        let mut head = [0u8; 64];
        input.read(&mut head)?;
        let word =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let long = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
        let params = GraphParams {
            m: word(8) as usize,
            ef_construction: word(12) as usize,
            seed: long(16),
            keep_pruned: head[32] != 0,
        };
        if head[33] != E::CODE {
            return Err(input.corrupted("vector precision differs from the collection's"));
        }
        let expected = self.graph.params();
        if (params.m, params.ef_construction, params.seed)
            != (expected.m, expected.ef_construction, expected.seed)
        {
            return Err(input.corrupted("graph parameters differ from the collection's"));
        }
        let n = usize::try_from(long(0)).map_err(|_| input.corrupted("absurd node count"))?;
        let entry = match long(24) {
            u64::MAX => None,
            e => Some(((e & 0xffff_ffff) as u32, (e >> 32) as usize)),
        };
        // Check the smallest size `n` nodes can take before allocating anything for them.
        let per_node = (self.dim * E::BYTES) as u64 + 4 + 16 + 1 + 4 * (2 * params.m as u64 + 1);
        input.ensure_remaining((n as u64).saturating_mul(per_node))?;
        let stored = StoredVectors::read(input, n, self.dim)?;
        input.ensure_remaining(n as u64)?;
        let mut levels = vec![0u8; n];
        input.read(&mut levels)?;
        input.read(&mut vec![0u8; n.next_multiple_of(4) - n])?;
        let level0 = input.read_u32s(n * (2 * params.m + 1))?;
        let mut upper = Vec::with_capacity(n);
        for &level in &levels {
            if usize::from(level) > graph::MAX_LEVEL {
                return Err(input.corrupted(format!("node level {level} out of range")));
            }
            upper.push(input.read_u32s(usize::from(level) * (params.m + 1))?);
        }
        let graph = Graph::from_raw_parts(params, levels, level0, upper, entry)
            .map_err(|detail| input.corrupted(format!("graph: {detail}")))?;
        Ok((stored, graph))
    }
}

/// Links `nodes` (already added to `graph`) with the vectors of `stored`; in parallel when
/// there are several.
/// Adds a node for every slot of `stored` past the end of `graph`, and links them all.
fn link_new_slots<E: Element>(
    graph: &mut Graph,
    stored: &StoredVectors<E>,
    distance: MetricDistance,
    visited: &VisitedPool,
) {
    let first = graph.len();
    let slots = stored.slots.slots();
    graph.reserve(slots.saturating_sub(first));
    for slot in first..slots {
        graph.add_node(graph.draw_level(slot));
    }
    link(
        graph,
        stored,
        distance,
        visited,
        (first as u32..slots as u32).collect(),
    );
}

fn link<E: Element>(
    graph: &Graph,
    stored: &StoredVectors<E>,
    distance: MetricDistance,
    visited: &VisitedPool,
    nodes: Vec<u32>,
) {
    let size = graph.len();
    let insert = |node: u32| {
        visited.with(size, |v| graph.insert(&stored.vectors, distance, node, v));
    };
    if nodes.len() > 1 {
        nodes.into_par_iter().for_each(insert);
    } else {
        nodes.into_iter().for_each(insert);
    }
}

impl<E: Element> HnswIndex<E> {
    /// Alg. 5 over the graph: the `ef` nearest nodes passing `accept` (live ones below
    /// `published` only), as neighbours closest first (ties by id), and the number of distances
    /// computed.
    fn graph_search(
        &self,
        q: &[f32],
        ef: usize,
        published: usize,
        accept: impl Fn(u32) -> bool,
    ) -> (Vec<Neighbor>, usize) {
        // Without tombstones every published node is live: skip the lookup of its document (a
        // random read of the slot table per candidate). Vacancies change only under the write
        // lock, which this search excludes.
        let all_live = self.vacant_slots() == 0;
        let ctx = Context {
            vectors: &self.stored.vectors,
            distance: self.distance,
            is_live: |n: u32| {
                (if all_live {
                    (n as usize) < published
                } else {
                    self.is_live(n, published)
                }) && accept(n)
            },
        };
        let (found, examined) = self.visited.with(self.graph.len(), |visited| {
            let mut tr = Traversal {
                visited,
                examined: 0,
            };
            let found: Vec<Scored> = self.graph.search(&ctx, q, ef, &mut tr);
            (found, tr.examined)
        });
        let mut neighbors: Vec<Neighbor> = found
            .into_iter()
            .filter_map(|s| {
                let slot = s.node as usize;
                Some(Neighbor {
                    id: self.stored.slots.id(slot)?,
                    uuid: self.stored.slots.uuid(slot),
                    distance: s.distance,
                })
            })
            .collect();
        neighbors.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.uuid.cmp(&b.uuid)));
        (neighbors, examined)
    }

    /// The slot serving document `id` to a search that sees the slots below `published`: its
    /// published slot, or, while a batch that re-embeds it is being linked, the slot of its
    /// previous version.
    fn visible_slot(&self, id: InternalId, published: usize) -> Option<usize> {
        match self.stored.slots.slot(id) {
            Some(slot) if slot < published => Some(slot),
            _ => self
                .replaced
                .iter()
                .copied()
                .find(|&slot| slot < published && self.stored.slots.id(slot) == Some(id)),
        }
    }

    /// Exact scan of the documents in `allowed`, as seen by a search that sees the slots below
    /// `published`.
    fn exact_among(
        &self,
        q: &[f32],
        k: usize,
        allowed: &RoaringBitmap,
        published: usize,
        strategy: &'static str,
    ) -> IndexSearch {
        self.stored
            .exact_among(q, allowed, k, &self.distance, strategy, |id| {
                self.visible_slot(id, published)
            })
    }
}

impl<E: Element> VectorIndexRead for HnswIndex<E> {
    fn search(&self, query: &[f32], k: usize, knobs: &SearchKnobs) -> IndexSearch {
        let Some(q) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "hnsw",
                ..IndexSearch::default()
            };
        };
        let ef = knobs.ef.unwrap_or(DEFAULT_EF).max(k);
        let published = self.published();
        if self.stored.slots.live() <= ef {
            return self.exact(&q, k, published);
        }
        let (mut neighbors, examined) = self.graph_search(&q, ef, published, |_| true);
        if neighbors.len() < k.min(self.stored.slots.live()) {
            // The traversal reached fewer than k live documents (the graph is cut: tombstones
            // everywhere around the entry, or damaged links that still pass the checks): answer
            // exactly rather than return fewer hits than asked.
            let mut exact = self.exact(&q, k, published);
            exact.strategy = "hnsw_then_exact_scan";
            exact.examined += examined;
            return exact;
        }
        neighbors.truncate(k);
        IndexSearch {
            strategy: "hnsw",
            neighbors,
            examined,
            exhaustive: false,
            disk: None,
        }
    }

    /// Plans by cost: a graph traversal that walks through non-matching nodes costs about
    /// `ef · M / s` distances at selectivity `s`, an exact scan of the matches `s · n`; the
    /// scan runs when it is cheaper (and is exact). If the traversal finds fewer than
    /// `min(k, matches)` hits (the matches are cut off in the graph), the exact scan runs too.
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        knobs: &SearchKnobs,
        allowed: &RoaringBitmap,
    ) -> IndexSearch {
        let Some(q) = self.distance.prepare(query) else {
            return IndexSearch {
                strategy: "hnsw_filtered",
                ..IndexSearch::default()
            };
        };
        let ef = knobs.ef.unwrap_or(DEFAULT_EF).max(k);
        let live = self.stored.slots.live() as f64;
        let matches = allowed.len() as f64;
        let graph_cost = (ef * self.graph.params().m) as f64 * live / matches.max(1.0);
        let published = self.published();
        if matches <= graph_cost.min(live) {
            return self.exact_among(&q, k, allowed, published, "filtered_exact_scan");
        }
        let (mut neighbors, examined) = self.graph_search(&q, ef, published, |node| {
            self.stored
                .slots
                .id(node as usize)
                .is_some_and(|id| allowed.contains(id))
        });
        if (neighbors.len() as u64) < allowed.len().min(k as u64) {
            let mut exact =
                self.exact_among(&q, k, allowed, published, "hnsw_filtered_then_exact_scan");
            exact.examined += examined;
            return exact;
        }
        neighbors.truncate(k);
        IndexSearch {
            strategy: "hnsw_filtered",
            neighbors,
            examined,
            exhaustive: false,
            disk: None,
        }
    }

    fn len(&self) -> usize {
        self.stored.slots.live()
    }

    fn vector(&self, id: InternalId) -> Option<Vec<f32>> {
        self.stored.vector_of(id)
    }

    fn memory_bytes(&self) -> usize {
        self.stored.memory_bytes() + self.graph.memory_bytes()
    }

    fn document_id(&self, id: InternalId) -> Option<uuid::Uuid> {
        self.stored.document_id(id)
    }

    fn graph_status(&self) -> Option<GraphStatus> {
        Some(GraphStatus {
            precision: E::NAME,
            slots: self.stored.slots.slots(),
            vacant_slots: self.vacant_slots(),
            // A compaction slot held by `train` means one is running.
            compacting: self.background_work(),
        })
    }
}

impl<E: Element> DerivedIndex for HnswIndex<E> {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()> {
        let uuid = doc.map(|d| d.id).unwrap_or_default();
        match self.stored.classify(&self.distance, change, doc)? {
            // Metadata or text changed, not the vector: the graph stays as it is.
            StoredChange::Unchanged => {}
            StoredChange::Insert(vector) => self.add(change.id, uuid, &vector),
            StoredChange::Replace { slot, vector } => {
                // The old version stays visible until this batch is published.
                self.replaced.push(slot);
                self.add(change.id, uuid, &vector);
            }
            StoredChange::Delete(slot) => self.stored.slots.vacate(slot),
        }
        self.watermark = self.watermark.max(change.seq);
        Ok(())
    }

    fn finish_batch(&self) -> Result<()> {
        self.link_pending();
        {
            let mut compaction = self.compaction.lock();
            if compaction.is_none() && self.compaction_due() && self.retry.allows(Instant::now()) {
                match self.start_compaction() {
                    Ok(started) => *compaction = Some(started),
                    Err(e) => {
                        log::warn!("could not start an HNSW compaction: {e}");
                        self.retry.failed(Instant::now());
                    }
                }
            }
        }
        if self.replaced.is_empty() && !self.compaction_done() {
            // Nothing to swap: the new nodes become visible at once.
            self.published.store(self.graph.len(), Ordering::Release);
        }
        Ok(())
    }

    /// Also true while nodes are unpublished: `compaction_done` only probes its lock, so it may
    /// say `true` to `finish_batch` and `false` here, and the batch must still be published.
    fn needs_publish(&self) -> bool {
        !self.replaced.is_empty() || self.published() < self.graph.len() || self.compaction_done()
    }

    fn background_work(&self) -> bool {
        self.compaction.try_lock().is_none_or(|c| c.is_some())
    }

    fn background_done(&self) -> bool {
        self.compaction_done()
    }

    fn publish(&mut self) -> Result<()> {
        // Replaced versions first: a compaction being installed must see them vacated.
        for slot in std::mem::take(&mut self.replaced) {
            self.stored.slots.vacate(slot);
        }
        if let Some(compaction) = self.compaction.get_mut().take_if(|c| c.job.is_done()) {
            *self.compaction.get_mut() = self.install(compaction);
        }
        self.published.store(self.graph.len(), Ordering::Release);
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
        if !self.replaced.is_empty() {
            return Err(Error::Internal(
                "checkpoint of an unpublished HNSW batch".into(),
            ));
        }
        self.link_pending();
        let mut out = FileWriter::create(dir, FILE_NAME, self.header())?;
        self.write_checkpoint(&mut out)?;
        out.finish()?;
        Ok(self.watermark)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool> {
        let Some(mut input) = FileReader::open(&Self::path(dir), &self.header())? else {
            return Ok(false);
        };
        let (stored, graph) = self.read_checkpoint(&mut input)?;
        let header = input.finish()?;
        self.stored = stored;
        self.graph = graph;
        self.pending.get_mut().clear();
        *self.compaction.get_mut() = None;
        self.replaced.clear();
        self.published.store(self.graph.len(), Ordering::Release);
        self.watermark = header.watermark;
        Ok(true)
    }

    fn reserve(&mut self, additional: usize) {
        self.stored.reserve(additional);
        self.graph.reserve(additional);
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        self.stored.slots.sorted_ids()
    }

    /// Compacts now if tombstones are due for it, for `publish` to install. A compaction
    /// already running does not cover the deletes applied since it started: it is replaced by
    /// one that covers everything. Waits without holding the compaction slot.
    fn train(&self) -> Result<bool> {
        let mut slot = self.compaction.lock();
        *slot = None;
        if !self.compaction_due() {
            return Ok(false);
        }
        let mut compaction = self.start_compaction()?;
        drop(slot);
        if let Some(e) = compaction.job.take_error() {
            return Err(e);
        }
        *self.compaction.lock() = Some(compaction);
        Ok(true)
    }

    fn verify(&self) -> Vec<String> {
        let mut problems = self.graph.verify(10);
        if self.graph.len() != self.stored.slots.slots()
            || self.stored.vectors.len() != self.stored.slots.slots()
        {
            problems.push(format!(
                "{} graph nodes, {} vectors, {} slots",
                self.graph.len(),
                self.stored.vectors.len(),
                self.stored.slots.slots()
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::config::IndexConfig;
    use crate::index::testing::{self, apply_changes, found_ids, nearest_in_model, Model};

    const DIM: usize = 8;

    fn vector(seed: u64) -> Vec<f32> {
        testing::vector(seed, DIM)
    }

    /// Applies one batch to `index` and to the model (`Some` upserts, `None` deletes), and
    /// publishes it. A compaction the batch started is taken out of the index, before it could
    /// be installed, and returned.
    fn batch(
        index: &mut HnswIndex<f32>,
        model: &mut Model,
        seq: &mut Seq,
        changes: &[(InternalId, Option<Vec<f32>>)],
    ) -> Option<Compaction<f32>> {
        apply_changes(index, model, seq, changes);
        index.finish_batch().unwrap();
        let started = index.compaction.get_mut().take();
        index.publish().unwrap();
        started
    }

    /// An index (M 8, efConstruction 64, seeded by `instance`) and its model holding documents
    /// `0..n`, with the last sequence number used.
    fn indexed(n: u32, instance: u64) -> (HnswIndex<f32>, Model, Seq) {
        let config = crate::CollectionConfig::new(DIM, Metric::L2).with_index(IndexConfig::hnsw());
        let params = HnswParams {
            m: 8,
            ef_construction: 64,
        };
        let mut index = HnswIndex::<f32>::new(&config, params, instance);
        let mut model = Model::new();
        let mut seq = 0;
        let inserts: Vec<_> = (0..n).map(|id| (id, Some(vector(u64::from(id))))).collect();
        assert!(batch(&mut index, &mut model, &mut seq, &inserts).is_none());
        (index, model, seq)
    }

    /// [`indexed`] with 400 documents, then a quarter of them deleted: the compaction the
    /// deletes start is held back (taken out of the index) and returned once it has ended, so
    /// that a test can land changes while it is pending, whatever the thread timing.
    fn compacting(instance: u64) -> (HnswIndex<f32>, Model, Seq, Compaction<f32>) {
        let (mut index, mut model, mut seq) = indexed(400, instance);
        let deletes: Vec<_> = (0..400).step_by(4).map(|id| (id, None)).collect();
        let mut compaction =
            batch(&mut index, &mut model, &mut seq, &deletes).expect("a compaction started");
        compaction.job.wait();
        (index, model, seq, compaction)
    }

    /// The index holds exactly the model's documents with their vectors, its graph is sound,
    /// and a search as wide as the collection returns the exact nearest documents.
    fn assert_matches(index: &HnswIndex<f32>, model: &Model, ctx: &str) {
        let ids: Vec<InternalId> = model.keys().copied().collect();
        assert_eq!(index.internal_ids(), ids, "{ctx}");
        for (id, v) in model {
            assert_eq!(index.vector(*id).as_ref(), Some(v), "{ctx}: document {id}");
        }
        assert_eq!(index.verify(), Vec::<String>::new(), "{ctx}");
        let q = vector(999);
        let knobs = SearchKnobs {
            ef: Some(model.len()),
            ..SearchKnobs::default()
        };
        let found = found_ids(&index.search(&q, 5, &knobs));
        let want = nearest_in_model(model, &q, 5);
        assert_eq!(found, want, "{ctx}: nearest documents");
    }

    #[test]
    fn a_search_the_graph_cannot_serve_falls_back_to_an_exact_scan() {
        let (mut index, model, _) = indexed(300, 11);
        let q = vector(999);
        let knobs = SearchKnobs {
            ef: Some(20),
            ..SearchKnobs::default()
        };
        assert_eq!(index.search(&q, 10, &knobs).strategy, "hnsw");
        // Cut every layer-0 list (as a damaged file could): the traversal ends where it lands.
        let parts = index.graph.parts();
        let width = 2 * index.graph.params().m + 1;
        let mut level0: Vec<u32> = parts
            .level0
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        for block in level0.chunks_mut(width) {
            block[0] = 0;
        }
        let upper = parts
            .upper
            .iter()
            .map(|b| b.iter().map(|a| a.load(Ordering::Relaxed)).collect())
            .collect();
        let (levels, entry) = (parts.levels.to_vec(), parts.entry);
        index.graph =
            Graph::from_raw_parts(index.graph.params(), levels, level0, upper, entry).unwrap();
        let found = index.search(&q, 10, &knobs);
        assert_eq!(found.strategy, "hnsw_then_exact_scan");
        assert_eq!(found_ids(&found), nearest_in_model(&model, &q, 10));
    }

    /// Searches running while `finish_batch` links a batch and publishes it see the batch whole
    /// or not at all: each search works with one published count, however long it runs.
    #[test]
    fn searches_racing_a_publish_see_the_batch_whole_or_not_at_all() {
        const BATCH: u32 = 400;
        let (mut index, mut model, mut seq) = indexed(BATCH, 5);
        let knobs = SearchKnobs::default();
        let mut partial = Vec::new();
        for round in 1..=12 {
            let ids = round * BATCH..(round + 1) * BATCH;
            let inserts: Vec<_> = ids
                .clone()
                .map(|id| (id, Some(vector(u64::from(id)))))
                .collect();
            apply_changes(&mut index, &mut model, &mut seq, &inserts);
            let allowed: RoaringBitmap = ids.collect();
            let linking = AtomicBool::new(true);
            std::thread::scope(|scope| {
                let index = &index;
                let searches = scope.spawn(|| {
                    let mut counts = Vec::new();
                    let q = vector(u64::from(round) + 10_000);
                    loop {
                        let done = !linking.load(Ordering::Acquire);
                        let found = index.search_filtered(&q, BATCH as usize, &knobs, &allowed);
                        assert_eq!(found.strategy, "filtered_exact_scan");
                        counts.push(found.neighbors.len());
                        if done {
                            return counts;
                        }
                    }
                });
                index.finish_batch().unwrap();
                linking.store(false, Ordering::Release);
                let counts = searches.join().unwrap();
                assert_eq!(counts.last(), Some(&(BATCH as usize)), "round {round}");
                partial.extend(
                    counts
                        .into_iter()
                        .filter(|&n| n != 0 && n != BATCH as usize),
                );
            });
            assert!(!index.needs_publish(), "round {round}");
        }
        assert_eq!(
            partial,
            Vec::<usize>::new(),
            "searches that saw part of a batch"
        );
        assert_matches(&index, &model, "after the rounds");
    }

    /// A batch that `finish_batch` leaves for `publish` (a compaction has ended) still needs
    /// publishing when the compaction's lock is busy as the writer asks (the checkpointer
    /// probes it), or its documents would stay invisible.
    #[test]
    fn a_batch_left_for_publish_is_published_even_if_the_compaction_is_busy() {
        let (mut index, mut model, mut seq, compaction) = compacting(9);
        *index.compaction.get_mut() = Some(compaction);
        let inserts: Vec<_> = (400..420)
            .map(|id| (id, Some(vector(u64::from(id)))))
            .collect();
        apply_changes(&mut index, &mut model, &mut seq, &inserts);
        index.finish_batch().unwrap();
        let busy = index.compaction.lock();
        assert!(index.needs_publish(), "unpublished nodes need a publish");
        drop(busy);
        index.publish().unwrap();
        assert!(index.compaction.get_mut().is_none(), "installed");
        assert!(!index.needs_publish());
        assert_matches(&index, &model, "after the publish");
    }

    #[test]
    fn a_compaction_carries_over_the_changes_made_while_it_ran() {
        let (mut index, mut model, mut seq, compaction) = compacting(7);
        assert_eq!(compaction.origins.copied(), 300);
        let meanwhile: Vec<_> = (1..400)
            .step_by(4)
            .take(20)
            .map(|id| (id, None)) // snapshot documents deleted
            .chain(
                (2..400)
                    .step_by(4)
                    .take(20)
                    .map(|id| (id, Some(vector(5000 + u64::from(id))))),
            )
            .chain((400..450).map(|id| (id, Some(vector(u64::from(id)))))) // new documents
            .collect();
        // (This batch starts a compaction of its own, which is dropped.)
        batch(&mut index, &mut model, &mut seq, &meanwhile);
        assert_matches(&index, &model, "before the install");
        *index.compaction.get_mut() = Some(compaction);
        index.publish().unwrap();
        assert!(
            index.compaction.get_mut().is_none(),
            "the compaction was installed"
        );
        assert_matches(&index, &model, "after the install");
        // Only documents deleted or replaced after the snapshot are left vacant.
        assert_eq!(
            index.stored.slots.slots(),
            300 + 20 + 50,
            "slots after the install"
        );
        assert_eq!(index.vacant_slots(), 40);
    }

    #[test]
    fn a_failed_compaction_is_dropped_and_retried_only_after_a_pause() {
        let (mut index, mut model, mut seq, compaction) = compacting(13);
        let vacant = index.vacant_slots();
        *index.compaction.get_mut() = Some(Compaction {
            origins: compaction.origins,
            job: Job::failed(Error::Internal("injected failure".into())),
        });
        index.publish().unwrap();
        assert!(
            index.compaction.get_mut().is_none(),
            "the failure is dropped"
        );
        assert_eq!(index.vacant_slots(), vacant, "the tombstones stay");
        assert_matches(&index, &model, "after the failed compaction");
        // More deletes keep a compaction due, but none starts until the pause has passed.
        let deletes: Vec<_> = (1..400).step_by(4).take(10).map(|id| (id, None)).collect();
        assert!(
            batch(&mut index, &mut model, &mut seq, &deletes).is_none(),
            "no compaction right after a failure"
        );
        assert!(index.compaction_due());
        assert_matches(&index, &model, "after the deletes");
        assert!(index
            .retry
            .allows(Instant::now() + std::time::Duration::from_secs(2)));
    }

    #[test]
    fn many_inserts_during_a_compaction_are_linked_by_a_catch_up_job() {
        let (mut index, mut model, mut seq) = indexed(400, 9);
        let deletes: Vec<_> = (0..400).step_by(4).map(|id| (id, None)).collect();
        let first = batch(&mut index, &mut model, &mut seq, &deletes).expect("a compaction");
        let added = LINK_UNDER_LOCK as u32 + 76;
        let meanwhile: Vec<_> = (1..400)
            .step_by(4)
            .take(20)
            .map(|id| (id, None))
            .chain(
                (2..400)
                    .step_by(4)
                    .take(20)
                    .map(|id| (id, Some(vector(5000 + u64::from(id))))),
            )
            .chain((400..400 + added).map(|id| (id, Some(vector(u64::from(id))))))
            .collect();
        batch(&mut index, &mut model, &mut seq, &meanwhile);
        *index.compaction.get_mut() = Some(first);
        index.publish().unwrap();
        let mut catch_up = index
            .compaction
            .get_mut()
            .take()
            .expect("too many additions for the write lock: a catch-up job");
        assert_eq!(catch_up.origins.copied(), 300 + 20 + added as usize);
        assert_matches(&index, &model, "while the catch-up runs");
        catch_up.job.wait();
        // Deletes of snapshot and caught-up documents, and replacements, during the catch-up.
        let later: Vec<_> = (3..400)
            .step_by(4)
            .take(10)
            .chain(400..410)
            .map(|id| (id, None))
            .chain((410..415).map(|id| (id, Some(vector(9000 + u64::from(id))))))
            .collect();
        batch(&mut index, &mut model, &mut seq, &later);
        *index.compaction.get_mut() = Some(catch_up);
        index.publish().unwrap();
        assert!(
            index.compaction.get_mut().is_none(),
            "the catch-up was installed"
        );
        assert_matches(&index, &model, "after the catch-up");
        assert_eq!(index.stored.slots.slots(), 300 + 20 + added as usize + 5);
        assert_eq!(index.vacant_slots(), 20 + 20 + 20 + 5);
    }
}
