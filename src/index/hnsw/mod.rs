//! The HNSW index: an in-RAM graph kept in sync with the store.
//!
//! Batches are published atomically: searches return only slots below `published`, moved once
//! the batch's new nodes are linked; replaced versions stay visible until then.
//!
//! Vectors live in a cache-line-aligned arena addressed by slot; [`SlotIds`] maps slots to
//! documents. A change is applied in two steps: `apply` (exclusive access) appends the vector and
//! an unlinked graph node, or vacates a slot (a tombstone: traversed, never returned); then
//! `finish_batch` (shared access, so searches keep running) links the new nodes, in parallel with
//! rayon when there are many. Once vacant slots pass [`COMPACT_FRACTION`] of all slots, the index
//! compacts itself: `finish_batch` builds a new graph over the live vectors while searches use the
//! old one, and `publish` swaps it in, so memory stays flat under churn.
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

use parking_lot::Mutex;
use rayon::prelude::*;
use roaring::RoaringBitmap;

use self::graph::{Context, Graph, GraphParams, GraphParts, Scored, Traversal};
use super::file::{FileHeader, FileReader, FileWriter, IndexFileKind};
use super::io::IndexDir;
use super::stored::{StoredChange, StoredVectors};
use super::{DerivedIndex, IndexSearch, Neighbor, SearchKnobs, VectorIndexRead};
use crate::config::CollectionConfig;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
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
    /// A compacted replacement built by `finish_batch`, waiting for `publish`.
    compacted: Mutex<Option<Compacted<E>>>,
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
            compacted: Mutex::new(None),
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

    fn is_live(&self, node: u32) -> bool {
        (node as usize) < self.published.load(Ordering::Acquire)
            && self.stored.slots.id(node as usize).is_some()
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
        let nodes = self.graph.len();
        let link = |&node: &u32| {
            self.visited.with(nodes, |v| {
                self.graph
                    .insert(&self.stored.vectors, self.distance, node, v)
            })
        };
        if pending.len() > 1 {
            pending.par_iter().for_each(link);
        } else {
            pending.iter().for_each(link);
        }
    }

    fn vacant_slots(&self) -> usize {
        self.stored.slots.slots() - self.stored.slots.live()
    }

    /// Whether enough slots are vacant to compact.
    fn compaction_due(&self) -> bool {
        let vacant = self.vacant_slots();
        vacant >= COMPACT_MIN_VACANT
            && vacant as f64 > COMPACT_FRACTION * self.stored.slots.slots() as f64
    }

    /// Builds a new graph over the live vectors only (slots renumbered, memory reclaimed) while
    /// the current one keeps serving searches.
    fn build_compacted(&self) -> Compacted<E> {
        let live = self.stored.slots.live();
        log::info!(
            "compacting the HNSW index: {live} live of {} slots",
            self.stored.slots.slots()
        );
        let mut stored = StoredVectors::new(self.dim);
        stored.reserve(live);
        let mut graph = Graph::new(self.graph.params());
        graph.reserve(live);
        for slot in 0..self.stored.slots.slots() {
            // Skip vacant slots, and old versions the current batch replaced.
            let current = self
                .stored
                .slots
                .id(slot)
                .filter(|&id| self.stored.slots.slot(id) == Some(slot));
            if let Some(id) = current {
                let new_slot =
                    stored.push_copy(id, self.stored.slots.uuid(slot), &self.stored.vectors, slot);
                graph.add_node(graph.draw_level(new_slot));
            }
        }
        let nodes = graph.len();
        (0..nodes as u32).into_par_iter().for_each(|node| {
            self.visited.with(nodes, |v| {
                graph.insert(&stored.vectors, self.distance, node, v)
            })
        });
        Compacted { stored, graph }
    }

    fn clear(&mut self) {
        self.stored.clear();
        self.graph = Graph::new(self.graph.params());
        self.pending.get_mut().clear();
        *self.compacted.get_mut() = None;
        self.published.store(0, Ordering::Release);
        self.replaced.clear();
    }

    /// Exact scan of every live slot (used when the collection is no larger than `ef`).
    fn exact(&self, q: &[f32], k: usize) -> IndexSearch {
        let published = self.published.load(Ordering::Acquire);
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

impl<E: Element> HnswIndex<E> {
    /// Alg. 5 over the graph: the `ef` nearest nodes passing `accept` (live ones only), as
    /// neighbours closest first (ties by id), and the number of distances computed.
    fn graph_search(
        &self,
        q: &[f32],
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> (Vec<Neighbor>, usize) {
        let ctx = Context {
            vectors: &self.stored.vectors,
            distance: self.distance,
            is_live: |n: u32| self.is_live(n) && accept(n),
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

    /// The slot serving document `id` to searches: its published slot, or, while a batch that
    /// re-embeds it is being linked, the slot of its previous version.
    fn visible_slot(&self, id: InternalId) -> Option<usize> {
        let published = self.published.load(Ordering::Acquire);
        match self.stored.slots.slot(id) {
            Some(slot) if slot < published => Some(slot),
            _ => self
                .replaced
                .iter()
                .copied()
                .find(|&slot| slot < published && self.stored.slots.id(slot) == Some(id)),
        }
    }

    /// Exact scan of the documents in `allowed`.
    fn exact_among(
        &self,
        q: &[f32],
        k: usize,
        allowed: &RoaringBitmap,
        strategy: &'static str,
    ) -> IndexSearch {
        self.stored
            .exact_among(q, allowed, k, &self.distance, strategy, |id| {
                self.visible_slot(id)
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
        if self.stored.slots.live() <= ef {
            return self.exact(&q, k);
        }
        let (mut neighbors, examined) = self.graph_search(&q, ef, |_| true);
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
        if matches <= graph_cost.min(live) {
            return self.exact_among(&q, k, allowed, "filtered_exact_scan");
        }
        let (mut neighbors, examined) = self.graph_search(&q, ef, |node| {
            self.stored
                .slots
                .id(node as usize)
                .is_some_and(|id| allowed.contains(id))
        });
        if (neighbors.len() as u64) < allowed.len().min(k as u64) {
            let mut exact = self.exact_among(&q, k, allowed, "hnsw_filtered_then_exact_scan");
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
        if self.compaction_due() {
            let compacted = self.build_compacted();
            *self.compacted.lock() = Some(compacted);
        }
        if !self.needs_publish() {
            // Nothing to swap: the new nodes become visible at once.
            self.published.store(self.graph.len(), Ordering::Release);
        }
        Ok(())
    }

    fn needs_publish(&self) -> bool {
        !self.replaced.is_empty() || self.compacted.lock().is_some()
    }

    fn publish(&mut self) -> Result<()> {
        for slot in std::mem::take(&mut self.replaced) {
            self.stored.slots.vacate(slot);
        }
        if let Some(Compacted { stored, graph }) = self.compacted.get_mut().take() {
            self.stored = stored;
            self.graph = graph;
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
