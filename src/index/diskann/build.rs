//! Building a node file generation from the live disk nodes and the delta (a merge).
//!
//! The live vectors are first streamed into a scratch row file beside the source. Then:
//! - **In RAM** when the vectors and the graph fit the build budget: the rows are loaded and
//!   a Vamana graph is built over all of them.
//! - **Partitioned** otherwise (DiskANN §3.2's larger-than-memory build): k-means on a sample
//!   splits the points into partitions, each point going to its 2 nearest; each partition is
//!   loaded and built alone within the budget and its edges are spilled to a scratch edge
//!   file; when the node file is written, each node's lists from its 2 partitions are united
//!   and pruned back to `R` with RobustPrune.
//!
//! Either way the product quantiser is trained on a sample and every vector encoded; the node
//! file is written (durably) under a fresh generation and opened.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;
use uuid::Uuid;

use super::disk::DiskGraph;
use super::layout::{self, Geometry, Node};
use super::merge::Merged;
use super::nodefile::ReadMode;
use super::nodefile::{write_node_file, NodeFile, NodeFileSpec, Trailer};
use super::vamana::{self, VamanaParams};
use super::DiskAnnParams;
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::index::hnsw::graph::Scored;
use crate::index::io::IndexDir;
use crate::index::kmeans::{self, KMeansParams};
use crate::index::pq::{ProductQuantizer, KSUB};
use crate::index::rotation::MAX_ROTATED_DIM;
use crate::index::stored::StoredVectors;
use crate::types::Metric;
use crate::vectors::VectorArena;
use roaring::RoaringBitmap;
use std::sync::Arc;

/// The product quantiser trains on at most this many vectors.
const PQ_SAMPLES: usize = 65_536;
/// k-means of a partitioned build trains on this many samples per partition.
const SAMPLES_PER_PARTITION: usize = 512;
/// File-name prefix of a merge's scratch files (removed when it ends, or at the next
/// checkpoint after a crash).
pub(super) const SCRATCH_PREFIX: &str = "diskann-build-";
/// Seed of builds (a build is deterministic for the same vectors and thread count 1).
const BUILD_SEED: u64 = 0x0d15_ca77;

/// What a merge builds from: the disk part and the delta as they were when it started (so
/// that it can run on its own thread while writes go on), and where and how to build.
pub(super) struct MergeSource {
    /// The node file's folder and I/O.
    pub dir: IndexDir,
    /// Vector dimension.
    pub dim: usize,
    /// Metric of the prepared vectors.
    pub metric: Metric,
    /// Its distance.
    pub distance: MetricDistance,
    /// Config fingerprint of the collection.
    pub config_fingerprint: u64,
    /// Index parameters (PQ bytes, cache, build budget).
    pub params: DiskAnnParams,
    /// Graph construction parameters.
    pub vamana: VamanaParams,
    /// How the new node file is read once opened.
    pub read_mode: ReadMode,
    /// The generation to write.
    pub generation: u64,
    /// The disk part, if any.
    pub disk: Option<Arc<DiskGraph>>,
    /// Its deleted slots.
    pub deleted: RoaringBitmap,
    /// A copy of the delta's vectors and slot maps.
    pub delta: StoredVectors,
}

/// The live vectors of a merge, one fixed-size row each in a scratch file removed on drop:
/// the vector (f32), the UUID, the internal id (u64).
pub(super) struct Rows {
    file: File,
    path: PathBuf,
    dim: usize,
    len: usize,
    /// Internal id of every row.
    ids: Vec<u64>,
}

impl Rows {
    fn row_bytes(&self) -> usize {
        self.dim * 4 + 24
    }

    /// Reads row `i`.
    fn read(&self, i: usize) -> Result<(Vec<f32>, Uuid, u64)> {
        let mut bytes = vec![0u8; self.row_bytes()];
        self.file
            .read_exact_at(&mut bytes, (i * self.row_bytes()) as u64)?;
        Ok(decode_row(&bytes, self.dim))
    }

    /// Reads rows `range` in one call.
    fn read_range(&self, range: std::ops::Range<usize>) -> Result<Vec<(Vec<f32>, Uuid, u64)>> {
        let mut bytes = vec![0u8; range.len() * self.row_bytes()];
        self.file
            .read_exact_at(&mut bytes, (range.start * self.row_bytes()) as u64)?;
        Ok(bytes
            .chunks_exact(self.row_bytes())
            .map(|row| decode_row(row, self.dim))
            .collect())
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

fn decode_row(bytes: &[u8], dim: usize) -> (Vec<f32>, Uuid, u64) {
    let vector = bytes[..dim * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&bytes[dim * 4..dim * 4 + 16]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[dim * 4 + 16..dim * 4 + 24]);
    (vector, Uuid::from_bytes(uuid), u64::from_le_bytes(id))
}

/// Streams the live disk nodes, then the live delta vectors, into a scratch row file.
fn gather(source: &MergeSource) -> Result<Rows> {
    let generation = source.generation;
    let path = source
        .dir
        .path()
        .join(format!("{SCRATCH_PREFIX}{generation:016x}.rows"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let mut rows = Rows {
        file,
        path,
        dim: source.dim,
        len: 0,
        ids: Vec::new(),
    };
    let mut out = BufWriter::with_capacity(1 << 20, rows.file.try_clone()?);
    let mut emit = |vector: &[f32], uuid: Uuid, id: u64| -> Result<()> {
        for x in vector {
            out.write_all(&x.to_le_bytes())?;
        }
        out.write_all(uuid.as_bytes())?;
        out.write_all(&id.to_le_bytes())?;
        rows.len += 1;
        rows.ids.push(id);
        Ok(())
    };
    if let Some(disk) = &source.disk {
        let mut vector = vec![0f32; source.dim];
        disk.file().for_each_node(|slot, node| {
            if source.deleted.contains(slot) {
                return Ok(());
            }
            node.vector_into(&mut vector);
            emit(&vector, node.uuid(), node.id())
        })?;
    }
    let delta = &source.delta;
    for slot in 0..delta.slots.slots() {
        if let Some(id) = delta.slots.id(slot) {
            emit(
                delta.vectors.get(slot),
                delta.slots.uuid(slot),
                u64::from(id),
            )?;
        }
    }
    out.flush()?;
    drop(out);
    Ok(rows)
}

/// RAM one point costs in an in-RAM build: its vector and its (slack-sized) adjacency list.
fn build_bytes_per_point(dim: usize, max_degree: usize) -> usize {
    dim * 4 + max_degree * 4 * 13 / 10 + 96
}

/// Builds generation `source.generation` from the source's live nodes (see the module docs).
pub(super) fn merge(source: &MergeSource) -> Result<Merged> {
    let generation = source.generation;
    let mut rows = gather(source)?;
    if rows.len == 0 {
        return Ok(Merged {
            disk: None,
            generation: 0,
        });
    }
    let params = source.vamana;
    let per_point = build_bytes_per_point(source.dim, params.max_degree);
    let ids = &rows.ids;
    let pq = train_pq(source, &rows)?;
    let codes = encode_all(&pq, &rows)?;
    let spec = |medoid: u32| NodeFileSpec {
        geometry: Geometry::new(source.dim, params.max_degree),
        metric: source.metric,
        nodes: rows.len as u32,
        medoid,
        config_fingerprint: source.config_fingerprint,
        generation,
        pq: &pq,
        codes: &codes,
        ids,
    };
    if rows.len.saturating_mul(per_point) <= source.params.build_ram_bytes {
        let (arena, uuids) = load_all(&rows)?;
        let (lists, medoid) =
            vamana::build(&arena, rows.len, &source.distance, &params, BUILD_SEED);
        write_node_file(&source.dir, &spec(medoid), |slot| {
            let s = slot as usize;
            Ok(Node {
                vector: arena.get(s).to_vec(),
                uuid: uuids[s],
                id: ids[s],
                neighbors: lists[s].clone(),
            })
        })?;
    } else {
        let partitioned = Partitioned::build(source, &rows, &params, per_point)?;
        write_node_file(&source.dir, &spec(partitioned.medoid), |slot| {
            partitioned.node(slot, &rows, &source.distance, &params)
        })?;
    }
    let ids = std::mem::take(&mut rows.ids);
    drop(rows);
    let path = source.dir.path().join(layout::file_name(generation));
    let file = NodeFile::open(
        &path,
        source.dim,
        source.metric,
        source.config_fingerprint,
        source.read_mode,
    )?;
    // The trailer just written is still in RAM: no need to read it back.
    let trailer = Trailer { pq, codes, ids };
    let disk = DiskGraph::from_parts(file, trailer, source.params.cache_nodes)?;
    Ok(Merged {
        disk: Some(Arc::new(disk)),
        generation,
    })
}

/// Every row's vector (in an arena) and UUID.
fn load_all(rows: &Rows) -> Result<(VectorArena, Vec<Uuid>)> {
    let mut arena: VectorArena = VectorArena::new(rows.dim);
    arena.reserve_slots(rows.len);
    let mut uuids = Vec::with_capacity(rows.len);
    for start in (0..rows.len).step_by(1 << 14) {
        for (vector, uuid, _) in rows.read_range(start..(start + (1 << 14)).min(rows.len))? {
            arena.push(&vector);
            uuids.push(uuid);
        }
    }
    Ok((arena, uuids))
}

/// Up to `max` rows evenly spread, row-major.
fn sample(rows: &Rows, max: usize) -> Result<Vec<f32>> {
    let step = rows.len.div_ceil(max.max(1)).max(1);
    let mut out = Vec::with_capacity(rows.len.min(max) * rows.dim);
    for i in (0..rows.len).step_by(step) {
        out.extend(rows.read(i)?.0);
    }
    Ok(out)
}

/// A product quantiser of `source.params.pq_bytes` sub-spaces, trained on a sample (repeated
/// up to the 256 vectors training needs when the index holds fewer). Up to
/// [`MAX_ROTATED_DIM`] dimensions it learns an OPQ rotation first: PQ distances then steer the
/// search far better on data whose coordinates are correlated (most embeddings).
fn train_pq(source: &MergeSource, rows: &Rows) -> Result<ProductQuantizer> {
    let mut data = sample(rows, PQ_SAMPLES)?;
    let held = data.len();
    while data.len() < KSUB * source.dim {
        data.extend_from_within(..held);
    }
    let (dim, m) = (source.dim, source.params.pq_bytes);
    if dim <= MAX_ROTATED_DIM {
        ProductQuantizer::train_rotated(&data, dim, m, BUILD_SEED)
    } else {
        ProductQuantizer::train(&data, dim, m, BUILD_SEED)
    }
}

/// Every row's PQ code.
fn encode_all(pq: &ProductQuantizer, rows: &Rows) -> Result<Vec<u8>> {
    let m = pq.code_size();
    let mut codes = vec![0u8; rows.len * m];
    for (chunk, start) in codes
        .chunks_mut(m << 14)
        .zip((0..rows.len).step_by(1 << 14))
    {
        let batch = rows.read_range(start..(start + (1 << 14)).min(rows.len))?;
        chunk
            .par_chunks_mut(m)
            .zip(batch.par_iter())
            .for_each(|(code, (vector, _, _))| pq.encode(vector, code));
    }
    Ok(codes)
}

/// A partitioned build's graph: each node's out-lists from its (up to 2) partitions, spilled
/// to a scratch edge file, united and pruned when the node is written.
struct Partitioned {
    edges: File,
    edges_path: PathBuf,
    /// Per node: offsets in the edge file of its lists (`u64::MAX` when absent).
    lists: Vec<[u64; 2]>,
    medoid: u32,
}

impl Drop for Partitioned {
    fn drop(&mut self) {
        std::fs::remove_file(&self.edges_path).ok();
    }
}

impl Partitioned {
    fn build(
        source: &MergeSource,
        rows: &Rows,
        params: &VamanaParams,
        per_point: usize,
    ) -> Result<Self> {
        let n = rows.len;
        let dim = rows.dim;
        let fits = (source.params.build_ram_bytes / per_point).max(2 * params.max_degree);
        let parts = (2 * n).div_ceil(fits).clamp(2, n.max(2));
        let data = sample(rows, SAMPLES_PER_PARTITION * parts)?;
        let centroids = kmeans::train(
            &data,
            dim,
            &KMeansParams::new(parts.min(data.len() / dim), BUILD_SEED),
        )?;
        drop(data);
        let parts = centroids.len() / dim;
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); parts];
        for start in (0..n).step_by(1 << 14) {
            let batch = rows.read_range(start..(start + (1 << 14)).min(n))?;
            let nearest: Vec<Vec<(u32, f32)>> = batch
                .par_iter()
                .map(|(vector, _, _)| kmeans::nearest(vector, &centroids, dim, 2))
                .collect();
            for (i, near) in nearest.into_iter().enumerate() {
                for (part, _) in near {
                    members[part as usize].push((start + i) as u32);
                }
            }
        }
        let edges_path = rows.path.with_extension("edges");
        let edges = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&edges_path)?;
        let mut built = Partitioned {
            edges,
            edges_path,
            lists: vec![[u64::MAX; 2]; n],
            medoid: 0,
        };
        let mut out = BufWriter::with_capacity(1 << 20, built.edges.try_clone()?);
        let mut offset = 0u64;
        for (part, ids) in members.iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let mut arena: VectorArena = VectorArena::new(dim);
            arena.reserve_slots(ids.len());
            for &id in ids {
                arena.push(&rows.read(id as usize)?.0);
            }
            let (lists, _) = vamana::build(
                &arena,
                ids.len(),
                &source.distance,
                params,
                BUILD_SEED ^ part as u64,
            );
            for (local, list) in lists.iter().enumerate() {
                let global = ids[local] as usize;
                let at = if built.lists[global][0] == u64::MAX {
                    0
                } else {
                    1
                };
                built.lists[global][at] = offset;
                out.write_all(&(list.len() as u32).to_le_bytes())?;
                for &next in list {
                    out.write_all(&ids[next as usize].to_le_bytes())?;
                }
                offset += 4 + 4 * list.len() as u64;
            }
        }
        out.flush()?;
        drop(out);
        built.medoid = global_medoid(rows, &source.distance)?;
        Ok(built)
    }

    /// Node `slot` with its lists united and pruned to `R`.
    fn node(
        &self,
        slot: u32,
        rows: &Rows,
        distance: &MetricDistance,
        params: &VamanaParams,
    ) -> Result<Node> {
        let (vector, uuid, id) = rows.read(slot as usize)?;
        let mut union = Vec::new();
        for &at in self.lists[slot as usize]
            .iter()
            .filter(|&&at| at != u64::MAX)
        {
            let mut word = [0u8; 4];
            self.edges.read_exact_at(&mut word, at)?;
            let degree = u32::from_le_bytes(word) as usize;
            if degree > 2 * params.max_degree {
                return Err(Error::Internal("a partition list is over-long".into()));
            }
            let mut bytes = vec![0u8; degree * 4];
            self.edges.read_exact_at(&mut bytes, at + 4)?;
            union.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        union.sort_unstable();
        union.dedup();
        let neighbors = if union.len() <= params.max_degree {
            union
        } else {
            let mut local: VectorArena = VectorArena::new(rows.dim);
            local.push(&vector);
            let mut scored = Vec::with_capacity(union.len());
            for (i, &next) in union.iter().enumerate() {
                let v = rows.read(next as usize)?.0;
                scored.push(Scored {
                    distance: distance.distance(&vector, &v),
                    node: i as u32 + 1,
                });
                local.push(&v);
            }
            vamana::robust_prune(&local, distance, 0, scored, params.alpha, params.max_degree)
                .into_iter()
                .map(|i| union[i as usize - 1])
                .collect()
        };
        Ok(Node {
            vector,
            uuid,
            id,
            neighbors,
        })
    }
}

/// The row closest to the mean of a sample of rows.
fn global_medoid(rows: &Rows, distance: &MetricDistance) -> Result<u32> {
    let data = sample(rows, 20_000)?;
    let dim = rows.dim;
    let count = (data.len() / dim).max(1);
    let mut mean = vec![0f32; dim];
    for row in data.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / count as f32;
        }
    }
    let mut best = Scored {
        distance: f32::INFINITY,
        node: 0,
    };
    for start in (0..rows.len).step_by(1 << 14) {
        let batch = rows.read_range(start..(start + (1 << 14)).min(rows.len))?;
        for (i, (vector, _, _)) in batch.iter().enumerate() {
            let candidate = Scored {
                distance: distance.distance(&mean, vector),
                node: (start + i) as u32,
            };
            best = best.min(candidate);
        }
    }
    Ok(best.node)
}
