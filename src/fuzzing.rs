//! Entry points for the cargo-fuzz targets in `fuzz/`; not a stable API.
//!
//! The fuzz targets reach the index loaders and the import line parser only through this file,
//! so that a change to those internals (e.g. the signature of
//! [`crate::index::DerivedIndex::load_checkpoint`]) is adapted here in a few lines.

use std::fs;
use std::path::Path;

use roaring::RoaringBitmap;
use uuid::Uuid;

use crate::config::{CollectionConfig, IndexConfig, VectorPrecision};
use crate::error::{Error, Result};
use crate::index::file::HEADER_LEN;
use crate::index::io::IndexDir;
use crate::index::{new_vector_index, SearchKnobs, VectorIndex};
use crate::types::{
    validate_metadata, validate_vector_for, Change, ChangeOp, DocView, DocumentInput, Metric,
};

/// Dimension of the indexes the loaders are fuzzed with.
pub const INDEX_DIM: usize = 4;
/// Collection instance the fuzzed index files are written for (part of their fingerprint).
const INSTANCE: u64 = 7;

/// The index kinds whose files can be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// The flat (exact) index.
    Flat,
    /// HNSW, with `M = 4`, `efConstruction = 16`.
    Hnsw,
    /// IVF-PQ with the default parameters (trained on 256 vectors or more).
    IvfPq,
}

/// The collection configuration of the fuzzed indexes.
fn config(kind: IndexKind, metric: Metric) -> CollectionConfig {
    CollectionConfig::new(INDEX_DIM, metric).with_index(match kind {
        IndexKind::Flat => IndexConfig::Flat {},
        IndexKind::Hnsw => IndexConfig::Hnsw {
            m: 4,
            ef_construction: 16,
            precision: VectorPrecision::F32,
        },
        IndexKind::IvfPq => IndexConfig::IvfPq {
            nlist: None,
            pq_m: None,
        },
    })
}

/// An empty index of `kind` and the name of the file it checkpoints to in its directory.
fn empty_index(kind: IndexKind, metric: Metric) -> (Box<dyn VectorIndex>, String) {
    // In-RAM kinds only: the directory is never written.
    let dir = IndexDir::os(std::env::temp_dir());
    let index = new_vector_index(&config(kind, metric), INSTANCE, &dir);
    let file = format!("{}.qvi", index.name());
    (index, file)
}

/// A deterministic pseudo-random vector (never the zero vector).
fn sample_vector(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..INDEX_DIM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + 1e-3
        })
        .collect()
}

/// A valid index file (header and payload) of `kind`, written by the index itself: `vectors`
/// pseudo-random documents with every third one deleted, the HNSW graph linked, the IVF-PQ
/// quantisers trained when there are at least 256 live vectors. `dir` is a scratch directory.
pub fn index_file_template(
    kind: IndexKind,
    metric: Metric,
    vectors: usize,
    dir: &Path,
) -> Result<Vec<u8>> {
    let (mut index, file) = empty_index(kind, metric);
    let meta = serde_json::Map::new();
    let mut seq = 0;
    for i in 0..vectors {
        let vector = sample_vector(i as u64);
        seq += 1;
        let view = DocView {
            id: Uuid::from_u128(0x5eed_0000 + i as u128),
            vector: &vector,
            metadata: &meta,
            text: None,
        };
        let change = Change {
            seq,
            op: ChangeOp::Upsert,
            id: i as u32,
        };
        index.apply(&change, Some(view))?;
    }
    for i in (0..vectors).step_by(3) {
        seq += 1;
        let change = Change {
            seq,
            op: ChangeOp::Delete,
            id: i as u32,
        };
        index.apply(&change, None)?;
    }
    index.finish_batch()?;
    if index.needs_publish() {
        index.publish()?;
    }
    // Train (IVF-PQ) or finish the compaction the deletes started (HNSW) before writing, so
    // the template does not depend on thread timing.
    if kind != IndexKind::Flat && index.train()? {
        index.publish()?;
    }
    index.checkpoint(&IndexDir::os(dir.to_path_buf()))?;
    Ok(fs::read(dir.join(file))?)
}

/// `file` (a valid index file, e.g. from [`index_file_template`]) with its payload replaced by
/// `payload`: the header keeps its kind, configuration and watermark, with the payload length
/// and both checksums recomputed, so a loader gets past every header check.
pub fn with_payload(file: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut header = [0u8; HEADER_LEN];
    let n = file.len().min(HEADER_LEN);
    header[..n].copy_from_slice(&file[..n]);
    header[40..48].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[48..52].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out
}

/// What [`load_index_file`] found.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Live vectors of the loaded index.
    pub len: usize,
    /// Problems of an index that loaded: its own integrity check
    /// ([`crate::index::DerivedIndex::verify`]), and searches answering something impossible
    /// (more than `k` hits, unknown ids).
    pub problems: Vec<String>,
}

/// Writes `bytes` as the index file of `kind` into `dir`, loads it into an empty index of the
/// fuzzing configuration and, if it loads, checks it ([`crate::index::DerivedIndex::verify`])
/// and runs a few searches (plain, filtered, batched, with extreme knobs). A file that does
/// not load must fail with [`Error::Corrupted`].
pub fn load_index_file(
    kind: IndexKind,
    metric: Metric,
    dir: &Path,
    bytes: &[u8],
) -> Result<LoadOutcome> {
    let (mut index, file) = empty_index(kind, metric);
    fs::write(dir.join(&file), bytes)?;
    if !index.load_checkpoint(dir)? {
        return Err(Error::Internal(
            "the index file written was not found".into(),
        ));
    }
    let mut problems = index.verify();
    let ids = index.internal_ids();
    if ids.len() != index.len() {
        problems.push(format!("{} ids, len {}", ids.len(), index.len()));
    }
    let mut allowed: RoaringBitmap = ids.iter().copied().step_by(2).collect();
    allowed.insert(u32::MAX - 1);
    let knobs = [
        SearchKnobs::default(),
        SearchKnobs {
            ef: Some(1),
            nprobe: Some(1),
            refine: Some(0),
            ..SearchKnobs::default()
        },
        SearchKnobs {
            ef: Some(4096),
            nprobe: Some(1 << 20),
            refine: Some(64),
            ..SearchKnobs::default()
        },
    ];
    let query = sample_vector(99);
    let mut check = |what: &str, k: usize, hits: &[crate::index::Neighbor]| {
        if hits.len() > k {
            problems.push(format!("{what}: {} hits for k = {k}", hits.len()));
        }
        if let Some(hit) = hits.iter().find(|h| ids.binary_search(&h.id).is_err()) {
            problems.push(format!("{what}: hit {} is not in the index", hit.id));
        }
    };
    for (i, knob) in knobs.iter().enumerate() {
        for k in [1, 10] {
            let found = index.search(&query, k, knob);
            check(&format!("search {i}"), k, &found.neighbors);
            let found = index.search_filtered(&query, k, knob, &allowed);
            check(&format!("filtered search {i}"), k, &found.neighbors);
        }
    }
    let other = sample_vector(5);
    for found in index.search_many(&[&query, &other], &[3, 5], &knobs[..2]) {
        check("batch search", 5, &found.neighbors);
    }
    for &id in ids.iter().take(4) {
        if index.vector(id).is_none_or(|v| v.len() != INDEX_DIM) {
            problems.push(format!("no vector of dimension {INDEX_DIM} for id {id}"));
        }
        index.document_id(id);
    }
    index.memory_bytes();
    index.quantization();
    if problems.is_empty() {
        problems.extend(checkpoint_round_trip(&*index, kind, metric, dir, &file)?);
    }
    Ok(LoadOutcome {
        len: index.len(),
        problems,
    })
}

/// Checkpoints a loaded index, loads that checkpoint into a new index and checkpoints it again:
/// the second load must succeed with the same documents, and both checkpoints must be the same
/// bytes (the first may differ from the fuzzed file, whose padding and flags are not canonical).
fn checkpoint_round_trip(
    index: &dyn VectorIndex,
    kind: IndexKind,
    metric: Metric,
    dir: &Path,
    file: &str,
) -> Result<Vec<String>> {
    index.checkpoint(&IndexDir::os(dir.to_path_buf()))?;
    let first = fs::read(dir.join(file))?;
    let (mut again, _) = empty_index(kind, metric);
    match again.load_checkpoint(dir) {
        Ok(true) => {}
        Ok(false) => return Ok(vec!["the checkpoint of a loaded index vanished".into()]),
        Err(e) => return Ok(vec![format!("the checkpoint of a loaded index fails: {e}")]),
    }
    let mut problems = Vec::new();
    if again.internal_ids() != index.internal_ids() || again.watermark() != index.watermark() {
        problems.push("the checkpoint of a loaded index holds other documents".into());
    }
    again.checkpoint(&IndexDir::os(dir.to_path_buf()))?;
    if fs::read(dir.join(file))? != first {
        problems.push("checkpoint → load → checkpoint changes the file".into());
    }
    Ok(problems)
}

/// Parses one line of a `quiver import` JSON-lines file as the import does: `Ok(None)` for a
/// blank line (skipped), else the document, checked like every document written to a
/// collection of dimension `dim` and this metric.
pub fn parse_import_line(line: &str, dim: usize, metric: Metric) -> Result<Option<DocumentInput>> {
    let Some(doc) = crate::import::parse_json_line(line)? else {
        return Ok(None);
    };
    validate_vector_for(&doc.vector, dim, metric)?;
    validate_metadata(&doc.metadata)?;
    Ok(Some(doc))
}
