//! Writing and reading node files (layout in [`super::layout`]).
//!
//! A node file is written once, streamed through the directory's [`IndexIo`] to a temporary
//! name, fsynced and renamed into place; it is never modified afterwards (a merge writes the
//! next generation). Reads fetch whole 4 KiB blocks in one of three ways ([`ReadMode`]):
//! `pread` through the page cache (the `W` reads of a beam are announced together with
//! `posix_fadvise(WILLNEED)` so the kernel issues them in parallel), `O_DIRECT` reads that
//! bypass the page cache (run in parallel on a small I/O thread pool), or a memory map.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::layout::{self, Geometry, Node, NodeFileHeader, NodeView, BLOCK};
use crate::error::{Error, Result};
use crate::index::io::{with_suffix, IndexDir, IndexIo};
use crate::index::pq::ProductQuantizer;
use crate::index::rotation::Rotation;
use crate::types::Metric;

/// How node blocks are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// `pread` through the page cache, with read-ahead hints for a beam's blocks.
    #[default]
    Buffered,
    /// `O_DIRECT` reads, bypassing the page cache (falls back to buffered where the file
    /// system refuses it, e.g. tmpfs).
    Direct,
    /// A memory map.
    Mmap,
}

impl ReadMode {
    /// The mode's name, as [`str::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Buffered => "buffered",
            ReadMode::Direct => "direct",
            ReadMode::Mmap => "mmap",
        }
    }
}

impl std::str::FromStr for ReadMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "buffered" => Ok(ReadMode::Buffered),
            "direct" => Ok(ReadMode::Direct),
            "mmap" => Ok(ReadMode::Mmap),
            other => Err(Error::InvalidArgument(format!(
                "unknown read mode {other:?} (buffered, direct or mmap)"
            ))),
        }
    }
}

/// A buffer whose start is 4096-byte aligned (as `O_DIRECT` requires), in safe code: the
/// vector is over-allocated by a block and used from its first aligned byte.
pub struct AlignedBlocks {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBlocks {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let buf = vec![0u8; len + BLOCK];
        let start = buf.as_ptr().align_offset(BLOCK).min(BLOCK);
        AlignedBlocks { buf, start, len }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// What the index keeps in RAM from a node file: the product quantiser, every node's code and
/// every node's internal id.
pub struct Trailer {
    /// The product quantiser the codes were made with.
    pub pq: ProductQuantizer,
    /// `nodes × m` code bytes.
    pub codes: Vec<u8>,
    /// Internal id of every node.
    pub ids: Vec<u64>,
}

/// Threads of the pool that runs the parallel `O_DIRECT` reads of a beam.
const IO_THREADS: usize = 8;

fn io_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(IO_THREADS)
            .thread_name(|i| format!("quiver-io-{i}"))
            .build()
            .unwrap_or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .expect("a one-thread pool can always be built")
            })
    })
}

/// An open node file.
pub struct NodeFile {
    path: PathBuf,
    header: NodeFileHeader,
    file: File,
    direct: Option<File>,
    map: Option<memmap2::Mmap>,
}

impl NodeFile {
    /// Opens and checks `path` (header, length) for a collection of this dimension, metric and
    /// fingerprint; [`Error::Corrupted`] if it is damaged or foreign.
    pub fn open(
        path: &Path,
        dim: usize,
        metric: Metric,
        fingerprint: u64,
        mode: ReadMode,
    ) -> Result<Self> {
        let file = File::open(path)?;
        let bad = |detail: String| Error::corrupted(path, detail);
        let mut block = vec![0u8; BLOCK];
        let len = file.metadata()?.len();
        if len < BLOCK as u64 {
            return Err(bad(format!("file is {len} bytes, shorter than its header")));
        }
        file.read_exact_at(&mut block, 0)?;
        let header = NodeFileHeader::decode(&block, dim, metric, fingerprint).map_err(bad)?;
        layout::check_len(&header, len).map_err(bad)?;
        let direct = (mode == ReadMode::Direct)
            .then(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)
                    .map_err(|e| {
                        log::warn!(
                            "O_DIRECT refused for {} ({e}); reading through the page cache",
                            path.display()
                        )
                    })
                    .ok()
            })
            .flatten();
        let map = if mode == ReadMode::Mmap {
            // SAFETY: node files are immutable once renamed into place (a merge writes a new
            // generation and the old one is only unlinked), so the mapped bytes never change
            // while mapped; every node read from the map is checksum-verified anyway.
            Some(unsafe { memmap2::Mmap::map(&file)? })
        } else {
            None
        };
        Ok(NodeFile {
            path: path.to_path_buf(),
            header,
            file,
            direct,
            map,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &NodeFileHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How reads are actually done (`Direct` only when the file system accepted it).
    pub fn mode(&self) -> ReadMode {
        match (&self.direct, &self.map) {
            (Some(_), _) => ReadMode::Direct,
            (_, Some(_)) => ReadMode::Mmap,
            _ => ReadMode::Buffered,
        }
    }

    /// A buffer for one node read.
    pub fn buffer(&self) -> AlignedBlocks {
        AlignedBlocks::new(self.header.geometry.read_bytes())
    }

    /// Reads the block(s) of each of `slots` into `bufs` (one per slot), all at once.
    pub fn read_many(&self, slots: &[u32], bufs: &mut [AlignedBlocks]) -> Result<()> {
        let geometry = self.header.geometry;
        let offset = |slot: u32| geometry.locate(u64::from(slot)).0;
        if let Some(map) = &self.map {
            for (&slot, buf) in slots.iter().zip(bufs.iter_mut()) {
                let at = offset(slot) as usize;
                let bytes = map
                    .get(at..at + buf.len)
                    .ok_or_else(|| Error::corrupted(&self.path, "node beyond the file's end"))?;
                buf.bytes_mut().copy_from_slice(bytes);
            }
            return Ok(());
        }
        if let Some(direct) = &self.direct {
            let read = |(&slot, buf): (&u32, &mut AlignedBlocks)| {
                direct.read_exact_at(buf.bytes_mut(), offset(slot))
            };
            if slots.len() > 1 {
                io_pool()
                    .install(|| slots.par_iter().zip(bufs.par_iter_mut()).try_for_each(read))?;
            } else {
                slots.iter().zip(bufs.iter_mut()).try_for_each(read)?;
            }
            return Ok(());
        }
        if slots.len() > 1 {
            for &slot in slots {
                advise_willneed(&self.file, offset(slot), geometry.read_bytes());
            }
        }
        for (&slot, buf) in slots.iter().zip(bufs.iter_mut()) {
            self.file.read_exact_at(buf.bytes_mut(), offset(slot))?;
        }
        Ok(())
    }

    /// The checked node `slot` inside `buf` (as filled by [`NodeFile::read_many`]).
    pub fn node_in<'b>(&self, slot: u32, buf: &'b AlignedBlocks) -> Result<NodeView<'b>> {
        let geometry = self.header.geometry;
        let (_, within) = geometry.locate(u64::from(slot));
        NodeView::parse(&geometry, self.header.nodes, &buf.bytes()[within..])
            .map_err(|damage| Error::corrupted(&self.path, format!("node {slot}: {damage}")))
    }

    /// Reads and decodes one node.
    pub fn read_node(&self, slot: u32) -> Result<Node> {
        let mut buf = [self.buffer()];
        self.read_many(&[slot], &mut buf)?;
        Ok(self.node_in(slot, &buf[0])?.to_node())
    }

    /// Reads and checks the trailer.
    pub fn read_trailer(&self) -> Result<Trailer> {
        let h = &self.header;
        let bad = |detail: &str| Error::corrupted(&self.path, detail);
        let mut at = h.geometry.trailer_offset(h.nodes);
        let mut crc = 0u32;
        let mut read = |len: usize| -> Result<Vec<u8>> {
            let mut bytes = vec![0u8; len];
            // The codes are read at random by every search (a no-op for the small parts).
            crate::memory::advise_huge_pages(&bytes);
            self.file.read_exact_at(&mut bytes, at)?;
            at += len as u64;
            crc = crc32c::crc32c_append(crc, &bytes);
            Ok(bytes)
        };
        let book_bytes = read(h.codebook_bytes() as usize)?;
        let rotation_bytes = read(h.rotation_bytes() as usize)?;
        let nodes = usize::try_from(h.nodes).map_err(|_| bad("absurd node count"))?;
        let codes = read(nodes * h.pq_bytes)?;
        let id_bytes = read(nodes * 8)?;
        if crc != h.trailer_crc {
            return Err(bad("trailer checksum mismatch"));
        }
        let floats = |bytes: Vec<u8>| -> Vec<f32> {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut pq = ProductQuantizer::from_parts(h.geometry.dim, h.pq_bytes, floats(book_bytes));
        if h.rotated {
            pq = pq.and_then(|pq| {
                pq.with_rotation(Rotation::from_parts(
                    h.geometry.dim,
                    floats(rotation_bytes),
                )?)
            });
        }
        let pq = pq.map_err(|e| Error::corrupted(&self.path, e.to_string()))?;
        let ids = id_bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(Trailer { pq, codes, ids })
    }

    /// Reads every node block sequentially and checks each node; the first damage found.
    pub fn verify_nodes(&self) -> Result<()> {
        self.for_each_node(|_, _| Ok(()))
    }

    /// Reads the nodes in slot order (sequential reads of many blocks), checks each and hands
    /// it to `visit`.
    pub fn for_each_node(
        &self,
        mut visit: impl FnMut(u32, NodeView<'_>) -> Result<()>,
    ) -> Result<()> {
        let g = self.header.geometry;
        let nodes = self.header.nodes;
        let blocks = g.node_blocks(nodes);
        let per_read = (256 / g.blocks_per_node as u64).max(1) * g.blocks_per_node as u64;
        let mut buf = vec![0u8; per_read as usize * BLOCK];
        let mut block = 0u64;
        while block < blocks {
            let count = per_read.min(blocks - block);
            let bytes = &mut buf[..count as usize * BLOCK];
            self.file.read_exact_at(bytes, (1 + block) * BLOCK as u64)?;
            for chunk in bytes.chunks_exact(g.read_bytes()) {
                let per = g.nodes_per_block.max(1);
                for i in 0..per {
                    let slot = if g.nodes_per_block > 0 {
                        block * per as u64 + i as u64
                    } else {
                        block / g.blocks_per_node as u64
                    };
                    if slot >= nodes {
                        break;
                    }
                    let view = NodeView::parse(&g, nodes, &chunk[i * g.node_bytes..]).map_err(
                        |damage| Error::corrupted(&self.path, format!("node {slot}: {damage}")),
                    )?;
                    visit(slot as u32, view)?;
                }
                block += g.blocks_per_node as u64;
            }
        }
        Ok(())
    }
}

/// Asks the kernel to start reading a range now (it is about to be read).
fn advise_willneed(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for the
    // lifetime of `file`. A failure only loses the hint.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// What a new node file holds besides its nodes.
pub struct NodeFileSpec<'a> {
    /// Node geometry.
    pub geometry: Geometry,
    /// Metric of the prepared vectors.
    pub metric: Metric,
    /// Node count.
    pub nodes: u32,
    /// Entry point.
    pub medoid: u32,
    /// Config fingerprint of the collection.
    pub config_fingerprint: u64,
    /// Generation (names the file).
    pub generation: u64,
    /// Product quantiser of the codes.
    pub pq: &'a ProductQuantizer,
    /// `nodes × m` code bytes.
    pub codes: &'a [u8],
    /// Internal id of every node (as `node_at` also gives them).
    pub ids: &'a [u64],
}

/// Nodes encoded per write (and built per parallel step).
const WRITE_BLOCKS: u64 = 256;

/// Writes the node file of `spec` into `dir`: nodes come from `node_at(slot)`, built in
/// parallel a chunk at a time. Returns the header once the file is durable in place.
pub fn write_node_file(
    dir: &IndexDir,
    spec: &NodeFileSpec<'_>,
    node_at: impl Fn(u32) -> Result<Node> + Sync,
) -> Result<NodeFileHeader> {
    let path = dir.path().join(layout::file_name(spec.generation));
    let tmp = with_suffix(&path, ".tmp");
    let io: Arc<dyn IndexIo> = dir.io_handle();
    let mut file = io.create(&tmp)?;
    let written = write_contents(io.as_ref(), &mut file, spec, &node_at).and_then(|header| {
        io.sync(&file)?;
        io.rename(&tmp, &path)?;
        Ok(header)
    });
    let header = match written {
        Ok(header) => header,
        Err(e) => {
            drop(file);
            std::fs::remove_file(&tmp).ok();
            return Err(e);
        }
    };
    io.sync_dir(dir.path())?;
    Ok(header)
}

fn write_contents(
    io: &dyn IndexIo,
    file: &mut File,
    spec: &NodeFileSpec<'_>,
    node_at: &(impl Fn(u32) -> Result<Node> + Sync),
) -> Result<NodeFileHeader> {
    let g = spec.geometry;
    let nodes = u64::from(spec.nodes);
    io.write_all(file, &vec![0u8; BLOCK])?;
    let per_chunk = if g.nodes_per_block > 0 {
        WRITE_BLOCKS * g.nodes_per_block as u64
    } else {
        (WRITE_BLOCKS / g.blocks_per_node as u64).max(1)
    };
    let mut first = 0u64;
    while first < nodes {
        let end = (first + per_chunk).min(nodes);
        let encoded: Vec<Vec<u8>> = (first as u32..end as u32)
            .into_par_iter()
            .map(|slot| {
                let node = node_at(slot)?;
                let mut bytes = vec![0u8; g.node_bytes];
                layout::encode_node(&g, &node, &mut bytes);
                Ok(bytes)
            })
            .collect::<Result<_>>()?;
        let chunk_start = (1 + g.node_blocks(first)) * BLOCK as u64;
        let blocks = g.node_blocks(end) - g.node_blocks(first);
        let mut chunk = vec![0u8; blocks as usize * BLOCK];
        for (slot, bytes) in (first..end).zip(&encoded) {
            let (at, within) = g.locate(slot);
            let start = (at - chunk_start) as usize + within;
            chunk[start..start + g.node_bytes].copy_from_slice(bytes);
        }
        io.write_all(file, &chunk)?;
        first = end;
    }
    let mut crc = 0u32;
    let mut trailer_len = 0u64;
    let mut emit = |bytes: &[u8]| -> Result<()> {
        crc = crc32c::crc32c_append(crc, bytes);
        trailer_len += bytes.len() as u64;
        io.write_all(file, bytes)?;
        Ok(())
    };
    let bytes_of =
        |floats: &[f32]| -> Vec<u8> { floats.iter().flat_map(|x| x.to_le_bytes()).collect() };
    emit(&bytes_of(&spec.pq.codebooks()))?;
    if let Some(rotation) = spec.pq.rotation() {
        emit(&bytes_of(rotation.rows()))?;
    }
    emit(spec.codes)?;
    for ids in spec.ids.chunks(1 << 16) {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        emit(&bytes)?;
    }
    let header = NodeFileHeader {
        geometry: g,
        metric: spec.metric,
        nodes,
        medoid: u64::from(spec.medoid),
        pq_bytes: spec.pq.m(),
        rotated: spec.pq.rotation().is_some(),
        config_fingerprint: spec.config_fingerprint,
        generation: spec.generation,
        trailer_len,
        trailer_crc: crc,
    };
    io.write_all_at(file, 0, &header.encode())?;
    Ok(header)
}
