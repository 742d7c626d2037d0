//! Derived indexes: the trait every index implements to stay in sync with the store, the read
//! side that searches use, and the index kinds.
//!
//! Index algorithms never import the storage layer: they receive changes and [`DocView`]s from
//! the sync protocol (`crate::sync`) and keep their own copy of what they need.

pub mod diskann;
pub mod file;
pub mod flat;
pub mod hnsw;
pub mod io;
pub mod ivfpq;
pub(crate) mod job;
pub mod kmeans;
pub mod pq;
pub mod rotation;
pub mod slots;
pub mod stored;
#[cfg(test)]
pub(crate) mod testing;
mod topk;
pub(crate) mod visited;

use std::path::Path;

use rayon::prelude::*;
use roaring::RoaringBitmap;
use uuid::Uuid;

use crate::config::{CollectionConfig, IndexConfig, VectorPrecision};
use crate::distance::f16;
use crate::error::Result;
use crate::types::{Change, DocView, InternalId, Seq};
use io::IndexDir;

pub use topk::TopK;

/// An index derived from the store and kept in sync through the change log (DESIGN §3).
///
/// The contract: after `apply` of every change up to sequence `s` (in order), `watermark()` is
/// `s` and the index reflects exactly the store's state at `s`. A checkpoint persists that state
/// with its watermark; `load_checkpoint` restores it. Applying a change twice is harmless.
pub trait DerivedIndex: Send + Sync {
    /// Short name, e.g. `"flat"`; also names the checkpoint file.
    fn name(&self) -> &'static str;
    /// Applies one change. `doc` is the document's state after the change (`None` if deleted).
    /// Work that can run while searches proceed may be left for [`DerivedIndex::finish_batch`].
    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()>;
    /// Called with shared access after the `apply` calls of a batch, while searches may run:
    /// does the work `apply` deferred (e.g. linking new graph nodes). When it returns, the index
    /// reflects every applied change. It may also prepare a replacement of the index's
    /// structures (e.g. a compacted graph) for [`DerivedIndex::publish`] to install.
    fn finish_batch(&self) -> Result<()> {
        Ok(())
    }
    /// Whether `finish_batch` prepared something for [`DerivedIndex::publish`].
    fn needs_publish(&self) -> bool {
        false
    }
    /// Called with exclusive access when [`DerivedIndex::needs_publish`] says so: installs what
    /// `finish_batch` prepared (a quick swap, so searches wait only briefly).
    fn publish(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether background work (a training, a compaction, a merge) is running or waits to be
    /// installed by [`DerivedIndex::publish`]. A probe, polled without waiting.
    fn background_work(&self) -> bool {
        false
    }
    /// Whether background work has ended and waits for [`DerivedIndex::publish`] to install
    /// it (which a checkpoint does). A probe, polled without waiting.
    fn background_done(&self) -> bool {
        false
    }
    /// The last change-log sequence number reflected.
    fn watermark(&self) -> Seq;
    /// Empties the index and sets its watermark, before a rebuild from the store.
    fn reset(&mut self, watermark: Seq);
    /// Writes a checkpoint into `dir` atomically (through its I/O); returns the watermark it
    /// records.
    fn checkpoint(&self, dir: &IndexDir) -> Result<Seq>;
    /// Replaces the in-memory state with the checkpoint in `dir`. `Ok(false)` if there is none;
    /// [`crate::Error::Corrupted`] if it is damaged, foreign or of another version.
    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool>;
    /// Internal ids of every document the index holds, sorted (for integrity checks).
    fn internal_ids(&self) -> Vec<InternalId>;
    /// Makes room for `additional` more documents ahead of a bulk load (a hint).
    fn reserve(&mut self, additional: usize) {
        let _ = additional;
    }
    /// Trains the index's quantisers on the vectors it holds (IVF-PQ), with shared access, for
    /// [`DerivedIndex::publish`] to install; `Ok(false)` for indexes that have nothing to train.
    fn train(&self) -> Result<bool> {
        Ok(false)
    }
    /// Checks the index's own invariants (e.g. graph links); one line per problem.
    fn verify(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One neighbour found by a vector index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    /// Internal id.
    pub id: InternalId,
    /// Public id (indexes keep it so that ties break by id and hits need no lookup).
    pub uuid: Uuid,
    /// Distance to the query (smaller is closer).
    pub distance: f32,
}

/// What a vector index returns for one query.
#[derive(Clone, Debug, Default)]
pub struct IndexSearch {
    /// Short name of the strategy used, e.g. `"flat_exact"` or `"hnsw"`.
    pub strategy: &'static str,
    /// The nearest neighbours, closest first, ties broken by id.
    pub neighbors: Vec<Neighbor>,
    /// How many vectors had their distance computed.
    pub examined: usize,
    /// Whether the result is exact (every stored vector was considered).
    pub exhaustive: bool,
    /// DiskANN: what the search read from disk.
    pub disk: Option<diskann::disk::DiskSearchStats>,
}

/// Per-query knobs; each index reads the ones it has and ignores the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchKnobs {
    /// HNSW: size of the dynamic candidate list (default: the index's own).
    pub ef: Option<usize>,
    /// IVF-PQ: inverted lists probed (default: the index's own).
    pub nprobe: Option<usize>,
    /// IVF-PQ: candidates re-ranked with full vectors per hit wanted; 0 = no re-ranking.
    pub refine: Option<usize>,
    /// DiskANN: candidate-list size `L` of the beam search (default: the index's build `L`).
    pub search_l: Option<usize>,
    /// DiskANN: beam width `W`, node blocks read per hop (default 4).
    pub beam: Option<usize>,
}

/// The read side of a vector index: what searches hold.
pub trait VectorIndexRead: Send + Sync {
    /// The `k` nearest stored vectors to `query` (already validated for dimension and values).
    fn search(&self, query: &[f32], k: usize, knobs: &SearchKnobs) -> IndexSearch;
    /// Many searches at once (`ks[i]` neighbours of `queries[i]` with `knobs[i]`); results in
    /// order. Indexes may share work between the queries; by default they run in parallel.
    fn search_many(
        &self,
        queries: &[&[f32]],
        ks: &[usize],
        knobs: &[SearchKnobs],
    ) -> Vec<IndexSearch> {
        queries
            .par_iter()
            .zip(ks)
            .zip(knobs)
            .map(|((q, &k), kn)| self.search(q, k, kn))
            .collect()
    }
    /// The `k` nearest stored vectors to `query` among the documents in `allowed` (internal
    /// ids). Returns `min(k, matches)` hits whenever `matches` allowed documents are indexed;
    /// the result says which strategy ran and whether it is exact.
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        knobs: &SearchKnobs,
        allowed: &RoaringBitmap,
    ) -> IndexSearch;
    /// Number of vectors held.
    fn len(&self) -> usize;
    /// The vector held for `id`, as the index stores it (normalised for cosine).
    fn vector(&self, id: InternalId) -> Option<Vec<f32>>;
    /// The public id the index holds for `id`.
    fn document_id(&self, id: InternalId) -> Option<Uuid>;
    /// Approximate bytes of memory the index holds (vectors, links, id maps).
    fn memory_bytes(&self) -> usize;
    /// The state of a quantising index (IVF-PQ); `None` for the others.
    fn quantization(&self) -> Option<QuantizationStatus> {
        None
    }
    /// Damage a search found in the index's files (DiskANN node checksums): searches must not
    /// be trusted until the index is rebuilt. `None` for in-RAM indexes.
    fn damage(&self) -> Option<String> {
        None
    }
    /// The state of a disk-resident index (DiskANN); `None` for the others.
    fn disk_status(&self) -> Option<diskann::DiskStatus> {
        None
    }
    /// The state of an in-RAM graph index (HNSW); `None` for the others.
    fn graph_status(&self) -> Option<GraphStatus> {
        None
    }
    /// True when the index holds no vector.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state of an in-RAM graph index, as `info` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GraphStatus {
    /// How vectors are stored: `"f32"` or `"f16"`.
    pub precision: &'static str,
    /// Node slots, vacant ones included.
    pub slots: usize,
    /// Slots of deleted or replaced documents (tombstones), traversed but never returned until
    /// a compaction reclaims them.
    pub vacant_slots: usize,
    /// Whether a background compaction is running or waiting to be installed.
    pub compacting: bool,
}

/// The state of a quantising index, as `info` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QuantizationStatus {
    /// Whether the quantisers are trained (before that, searches are exact).
    pub trained: bool,
    /// Inverted lists (when trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// Bytes per code (when trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_bytes: Option<usize>,
    /// Live vectors when the quantisers were trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_on: Option<usize>,
    /// Whether a training, retraining or compaction runs in the background (searches meanwhile
    /// use the current state: exact scans before the first training).
    pub training: bool,
    /// Bytes of the list entries: slots, codes and (L2) norm terms.
    pub code_memory_bytes: usize,
    /// Bytes of the coarse centroids, the codebooks and the lists' headers. With
    /// `code_memory_bytes`, all the index holds besides the full vectors.
    pub quantiser_memory_bytes: usize,
    /// Mean squared error of the reconstructed vectors (centroid + decoded residual), over a
    /// sample of up to 1,000 live vectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconstruction_mse: Option<f64>,
    /// The same relative to the vectors' mean squared norm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_reconstruction_error: Option<f64>,
}

/// A vector index: derived (kept in sync) and searchable.
pub trait VectorIndex: DerivedIndex + VectorIndexRead {}

impl<T: DerivedIndex + VectorIndexRead> VectorIndex for T {}

/// Creates the empty vector index a collection's configuration asks for; `instance` identifies
/// the collection in the index's files, `dir` is where disk-resident indexes keep them.
pub fn new_vector_index(
    config: &CollectionConfig,
    instance: u64,
    dir: &IndexDir,
) -> Box<dyn VectorIndex> {
    match config.index {
        IndexConfig::Flat {} => Box::new(flat::FlatIndex::new(config, instance)),
        IndexConfig::Hnsw {
            m,
            ef_construction,
            precision,
        } => {
            let params = hnsw::HnswParams { m, ef_construction };
            match precision {
                VectorPrecision::F32 => {
                    Box::new(hnsw::HnswIndex::<f32>::new(config, params, instance))
                }
                VectorPrecision::F16 => {
                    Box::new(hnsw::HnswIndex::<f16>::new(config, params, instance))
                }
            }
        }
        IndexConfig::IvfPq { nlist, pq_m } => Box::new(ivfpq::IvfPqIndex::new(
            config,
            ivfpq::IvfPqParams { nlist, pq_m },
            instance,
        )),
        IndexConfig::DiskAnn {
            r,
            l,
            pq_bytes,
            cache_nodes,
            build_ram_mb,
        } => Box::new(diskann::DiskAnnIndex::new(
            config,
            diskann::DiskAnnParams {
                max_degree: r,
                build_list: l,
                pq_bytes: pq_bytes.unwrap_or_else(|| diskann::default_pq_bytes(config.dim)),
                alpha: diskann::ALPHA,
                cache_nodes,
                build_ram_bytes: build_ram_mb.saturating_mul(1 << 20),
                beam: diskann::DEFAULT_BEAM,
            },
            instance,
            dir,
        )),
    }
}
