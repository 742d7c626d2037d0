//! The node file's byte layout: a 4 KiB header block, then the nodes in 4 KiB-aligned blocks,
//! then a trailer with what the index keeps in RAM (PQ codebooks and rotation, codes, internal
//! ids).
//!
//! ```text
//! block 0 (header, 4096 bytes; integers little-endian)
//!   0    8  magic b"QVDISKAN"
//!   8    4  format version (2)
//!  12    4  dimension D
//!  16    1  metric (1 cosine, 2 l2, 3 dot)
//!  17    1  1 if the PQ has a rotation (OPQ) in the trailer, else 0; 18..20 zero
//!  20    4  maximum degree R
//!  24    8  node count N
//!  32    8  medoid (entry point) slot
//!  40    4  node bytes: 4·D + 32 + 4·R
//!  44    4  nodes per block (≥ 1 when a node fits in a block, else 0)
//!  48    4  blocks per node (1 when nodes share blocks)
//!  52    4  PQ code bytes m
//!  56    8  config fingerprint of the collection
//!  64    8  generation (names the file: diskann-<generation as 16 hex digits>.qdn)
//!  72    8  trailer offset in bytes (a multiple of 4096)
//!  80    8  trailer length in bytes
//!  88    4  crc32c of the trailer
//!  92 4000  zero
//! 4092   4  crc32c of bytes 0..4092
//!
//! node s (at block 1 + s / nodes_per_block, byte (s % nodes_per_block) · node bytes, or at
//! block 1 + s · blocks_per_node when a node spans blocks)
//!   0      4·D  vector, f32 (prepared for the metric: normalised for cosine)
//!   4·D     16  document UUID
//!   4·D+16   8  internal document id
//!   4·D+24   4  degree d ≤ R
//!   4·D+28 4·R  neighbour slots, u32; the d first are used, the rest zero
//!   4·D+28+4·R 4  crc32c of the node's bytes before it
//!   (zero padding to the end of the block)
//!
//! trailer
//!   m · 256 · (D / m) f32  PQ codebooks
//!   D · D f32              PQ rotation, row-major (only if byte 17 of the header is 1)
//!   N · m bytes            PQ code of every node
//!   N · 8 bytes            internal id of every node, u64
//! ```
//! A node's checksum is verified on every read; the header's at open, the trailer's at load.

use uuid::Uuid;

use crate::types::Metric;

/// Bytes per block: the unit of every node read.
pub const BLOCK: usize = 4096;
/// Magic bytes of a node file.
pub const MAGIC: [u8; 8] = *b"QVDISKAN";
/// Version of the layout above.
pub const FORMAT_VERSION: u32 = 2;

/// Where nodes lie in the file, derived from the dimension and the maximum degree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Vector dimension.
    pub dim: usize,
    /// Maximum out-degree.
    pub max_degree: usize,
    /// Bytes of one node record (checksum included).
    pub node_bytes: usize,
    /// Nodes per block (≥ 1 when a node fits in a block, else 0).
    pub nodes_per_block: usize,
    /// Blocks per node (1 when nodes share blocks).
    pub blocks_per_node: usize,
}

impl Geometry {
    /// The geometry for `dim`-dimensional vectors and degree `max_degree`.
    pub fn new(dim: usize, max_degree: usize) -> Geometry {
        let node_bytes = 4 * dim + 32 + 4 * max_degree;
        let nodes_per_block = BLOCK / node_bytes;
        Geometry {
            dim,
            max_degree,
            node_bytes,
            nodes_per_block,
            blocks_per_node: if nodes_per_block > 0 {
                1
            } else {
                node_bytes.div_ceil(BLOCK)
            },
        }
    }

    /// Bytes read to get one node: its block(s).
    pub fn read_bytes(&self) -> usize {
        self.blocks_per_node * BLOCK
    }

    /// Byte offset of the block(s) holding node `slot`, and the node's offset inside them.
    pub fn locate(&self, slot: u64) -> (u64, usize) {
        if self.nodes_per_block > 0 {
            let per = self.nodes_per_block as u64;
            let block = 1 + slot / per;
            (
                block * BLOCK as u64,
                (slot % per) as usize * self.node_bytes,
            )
        } else {
            ((1 + slot * self.blocks_per_node as u64) * BLOCK as u64, 0)
        }
    }

    /// Blocks holding `nodes` nodes (header excluded).
    pub fn node_blocks(&self, nodes: u64) -> u64 {
        if self.nodes_per_block > 0 {
            nodes.div_ceil(self.nodes_per_block as u64)
        } else {
            nodes.saturating_mul(self.blocks_per_node as u64)
        }
    }

    /// Byte offset where the trailer of a file with `nodes` nodes starts.
    pub fn trailer_offset(&self, nodes: u64) -> u64 {
        (1 + self.node_blocks(nodes)) * BLOCK as u64
    }
}

/// One node as stored: its vector, document and out-neighbours.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The vector, prepared for the metric.
    pub vector: Vec<f32>,
    /// Document UUID.
    pub uuid: Uuid,
    /// Internal document id.
    pub id: u64,
    /// Out-neighbour slots.
    pub neighbors: Vec<u32>,
}

/// Why a node record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeDamage {
    /// The checksum does not match.
    Checksum,
    /// The degree exceeds the maximum or a neighbour is beyond the node count.
    Links,
}

impl std::fmt::Display for NodeDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeDamage::Checksum => "checksum mismatch",
            NodeDamage::Links => "degree or neighbour out of range",
        })
    }
}

/// Writes `node` into `out` (`geometry.node_bytes` long) with its checksum.
pub fn encode_node(geometry: &Geometry, node: &Node, out: &mut [u8]) {
    let d = geometry.dim;
    out.fill(0);
    for (chunk, x) in out[..4 * d].chunks_exact_mut(4).zip(&node.vector) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out[4 * d..4 * d + 16].copy_from_slice(node.uuid.as_bytes());
    out[4 * d + 16..4 * d + 24].copy_from_slice(&node.id.to_le_bytes());
    let degree = node.neighbors.len().min(geometry.max_degree);
    out[4 * d + 24..4 * d + 28].copy_from_slice(&(degree as u32).to_le_bytes());
    let links = &mut out[4 * d + 28..4 * d + 28 + 4 * geometry.max_degree];
    for (chunk, n) in links.chunks_exact_mut(4).zip(&node.neighbors[..degree]) {
        chunk.copy_from_slice(&n.to_le_bytes());
    }
    let body = geometry.node_bytes - 4;
    let crc = crc32c::crc32c(&out[..body]);
    out[body..body + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A checked view of one node record inside a read buffer.
pub struct NodeView<'a> {
    bytes: &'a [u8],
    dim: usize,
    degree: usize,
}

impl<'a> NodeView<'a> {
    /// Checks the record `bytes` (`geometry.node_bytes` long) of a file with `nodes` nodes.
    pub fn parse(
        geometry: &Geometry,
        nodes: u64,
        bytes: &'a [u8],
    ) -> std::result::Result<Self, NodeDamage> {
        let body = geometry.node_bytes - 4;
        let bytes = &bytes[..geometry.node_bytes];
        if crc32c::crc32c(&bytes[..body]) != le_u32(&bytes[body..]) {
            return Err(NodeDamage::Checksum);
        }
        let dim = geometry.dim;
        let degree = le_u32(&bytes[4 * dim + 24..]) as usize;
        let view = NodeView { bytes, dim, degree };
        if degree > geometry.max_degree || view.neighbors().any(|n| u64::from(n) >= nodes) {
            return Err(NodeDamage::Links);
        }
        Ok(view)
    }

    /// Copies the vector into `out` (`dim` long).
    pub fn vector_into(&self, out: &mut [f32]) {
        for (x, chunk) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }

    /// The vector.
    pub fn vector(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.dim];
        self.vector_into(&mut out);
        out
    }

    /// The document UUID.
    pub fn uuid(&self) -> Uuid {
        let at = 4 * self.dim;
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&self.bytes[at..at + 16]);
        Uuid::from_bytes(raw)
    }

    /// The internal document id.
    pub fn id(&self) -> u64 {
        let at = 4 * self.dim + 16;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.bytes[at..at + 8]);
        u64::from_le_bytes(raw)
    }

    /// The out-neighbour slots.
    pub fn neighbors(&self) -> impl Iterator<Item = u32> + '_ {
        let at = 4 * self.dim + 28;
        self.bytes[at..at + 4 * self.degree]
            .chunks_exact(4)
            .map(le_u32)
    }

    /// The whole node, decoded.
    pub fn to_node(&self) -> Node {
        Node {
            vector: self.vector(),
            uuid: self.uuid(),
            id: self.id(),
            neighbors: self.neighbors().collect(),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[..8]);
    u64::from_le_bytes(raw)
}

/// What the header block says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFileHeader {
    /// Node geometry (dimension, degree and derived sizes).
    pub geometry: Geometry,
    /// Metric the vectors were prepared for.
    pub metric: Metric,
    /// Node count.
    pub nodes: u64,
    /// Entry point.
    pub medoid: u64,
    /// PQ code bytes.
    pub pq_bytes: usize,
    /// Whether the trailer holds a PQ rotation.
    pub rotated: bool,
    /// Config fingerprint of the collection.
    pub config_fingerprint: u64,
    /// Generation (also in the file name).
    pub generation: u64,
    /// Trailer length in bytes.
    pub trailer_len: u64,
    /// crc32c of the trailer.
    pub trailer_crc: u32,
}

impl NodeFileHeader {
    /// The header block.
    pub fn encode(&self) -> Vec<u8> {
        let g = &self.geometry;
        let mut h = vec![0u8; BLOCK];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(g.dim as u32).to_le_bytes());
        h[16] = self.metric.code();
        h[17] = u8::from(self.rotated);
        h[20..24].copy_from_slice(&(g.max_degree as u32).to_le_bytes());
        h[24..32].copy_from_slice(&self.nodes.to_le_bytes());
        h[32..40].copy_from_slice(&self.medoid.to_le_bytes());
        h[40..44].copy_from_slice(&(g.node_bytes as u32).to_le_bytes());
        h[44..48].copy_from_slice(&(g.nodes_per_block as u32).to_le_bytes());
        h[48..52].copy_from_slice(&(g.blocks_per_node as u32).to_le_bytes());
        h[52..56].copy_from_slice(&(self.pq_bytes as u32).to_le_bytes());
        h[56..64].copy_from_slice(&self.config_fingerprint.to_le_bytes());
        h[64..72].copy_from_slice(&self.generation.to_le_bytes());
        h[72..80].copy_from_slice(&g.trailer_offset(self.nodes).to_le_bytes());
        h[80..88].copy_from_slice(&self.trailer_len.to_le_bytes());
        h[88..92].copy_from_slice(&self.trailer_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[..BLOCK - 4]);
        h[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header block against what the index expects: `Err(detail)` for a
    /// foreign, damaged or mismatched file.
    pub fn decode(
        h: &[u8],
        dim: usize,
        metric: Metric,
        config_fingerprint: u64,
    ) -> std::result::Result<Self, String> {
        if h.len() < BLOCK {
            return Err("shorter than its header block".into());
        }
        if h[0..8] != MAGIC {
            return Err("not a QuiverDB node file (bad magic)".into());
        }
        if crc32c::crc32c(&h[..BLOCK - 4]) != le_u32(&h[BLOCK - 4..]) {
            return Err("header checksum mismatch".into());
        }
        let version = le_u32(&h[8..]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "node file format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        if le_u32(&h[12..]) as usize != dim || h[16] != metric.code() {
            return Err("written for another dimension or metric".into());
        }
        if le_u64(&h[56..]) != config_fingerprint {
            return Err("written for another collection or configuration".into());
        }
        let max_degree = le_u32(&h[20..]) as usize;
        if !(1..=MAX_DEGREE).contains(&max_degree) {
            return Err(format!("absurd maximum degree {max_degree}"));
        }
        let geometry = Geometry::new(dim, max_degree);
        let recorded = (
            le_u32(&h[40..]) as usize,
            le_u32(&h[44..]) as usize,
            le_u32(&h[48..]) as usize,
        );
        if recorded
            != (
                geometry.node_bytes,
                geometry.nodes_per_block,
                geometry.blocks_per_node,
            )
        {
            return Err("node geometry disagrees with the dimension and degree".into());
        }
        let nodes = le_u64(&h[24..]);
        let medoid = le_u64(&h[32..]);
        if nodes > MAX_NODES || (nodes > 0 && medoid >= nodes) {
            return Err("absurd node count or entry point".into());
        }
        let pq_bytes = le_u32(&h[52..]) as usize;
        if pq_bytes == 0 || !dim.is_multiple_of(pq_bytes) {
            return Err(format!("PQ code size {pq_bytes} does not divide {dim}"));
        }
        if le_u64(&h[72..]) != geometry.trailer_offset(nodes) {
            return Err("trailer offset disagrees with the node count".into());
        }
        let header = NodeFileHeader {
            geometry,
            metric,
            nodes,
            medoid,
            pq_bytes,
            rotated: h[17] == 1,
            config_fingerprint,
            generation: le_u64(&h[64..]),
            trailer_len: le_u64(&h[80..]),
            trailer_crc: le_u32(&h[88..]),
        };
        if header.trailer_len != header.expected_trailer_len() {
            return Err("trailer length disagrees with the node count".into());
        }
        if h[17] > 1 || h[18..20] != [0; 2] || h[92..BLOCK - 4].iter().any(|&b| b != 0) {
            return Err("reserved bytes are not zero".into());
        }
        Ok(header)
    }

    /// Bytes of the PQ codebooks.
    pub fn codebook_bytes(&self) -> u64 {
        (self.geometry.dim as u64) * 256 * 4
    }

    /// Bytes of the PQ rotation (0 without one).
    pub fn rotation_bytes(&self) -> u64 {
        if self.rotated {
            (self.geometry.dim as u64).pow(2) * 4
        } else {
            0
        }
    }

    /// Trailer length for this node count, code size, dimension and rotation.
    pub fn expected_trailer_len(&self) -> u64 {
        self.codebook_bytes() + self.rotation_bytes() + self.nodes * (self.pq_bytes as u64 + 8)
    }

    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.geometry.trailer_offset(self.nodes) + self.trailer_len
    }
}

/// Largest maximum degree accepted.
pub const MAX_DEGREE: usize = 512;
/// Largest node count a file may claim (slots are u32).
pub const MAX_NODES: u64 = u32::MAX as u64;

/// The node file name of a generation.
pub fn file_name(generation: u64) -> String {
    format!("diskann-{generation:016x}.qdn")
}

/// The generation a node file name encodes, if it is one.
pub fn generation_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("diskann-")?.strip_suffix(".qdn")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Checks that a node file's length matches its header.
pub fn check_len(header: &NodeFileHeader, len: u64) -> Result<(), String> {
    if len != header.file_len() {
        return Err(format!(
            "file is {len} bytes, its header describes {}",
            header.file_len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dim: usize, degree: usize, seed: u32) -> Node {
        Node {
            vector: (0..dim).map(|i| (i as f32 + seed as f32) * 0.5).collect(),
            uuid: Uuid::from_u128(seed as u128 * 7 + 1),
            id: seed as u64 * 3,
            neighbors: (0..degree as u32).map(|i| (i * 13 + seed) % 1000).collect(),
        }
    }

    #[test]
    fn geometry_packs_small_nodes_and_spans_large_ones() {
        let small = Geometry::new(128, 64);
        assert_eq!(small.node_bytes, 800);
        assert_eq!((small.nodes_per_block, small.blocks_per_node), (5, 1));
        assert_eq!(small.locate(0), (4096, 0));
        assert_eq!(small.locate(6), (8192, 800));
        let large = Geometry::new(1024, 64);
        assert_eq!(large.node_bytes, 4384);
        assert_eq!((large.nodes_per_block, large.blocks_per_node), (0, 2));
        assert_eq!(large.locate(3), ((1 + 6) * 4096, 0));
        assert_eq!(large.trailer_offset(10), 21 * 4096);
    }

    #[test]
    fn nodes_round_trip_and_every_bit_flip_is_caught() {
        let g = Geometry::new(8, 4);
        let n = node(8, 3, 5);
        let mut buf = vec![0u8; g.node_bytes];
        encode_node(&g, &n, &mut buf);
        let view = NodeView::parse(&g, 1000, &buf).expect("valid node");
        assert_eq!(view.to_node(), n);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(NodeView::parse(&g, 1000, &bad).is_err(), "bit {bit}");
        }
        // A neighbour beyond the node count is refused even with a valid checksum.
        assert_eq!(NodeView::parse(&g, 10, &buf).err(), Some(NodeDamage::Links));
    }

    #[test]
    fn headers_round_trip_and_refuse_foreign_or_damaged_blocks() {
        let mut header = NodeFileHeader {
            geometry: Geometry::new(16, 8),
            metric: Metric::L2,
            nodes: 100,
            medoid: 7,
            pq_bytes: 4,
            rotated: true,
            config_fingerprint: 42,
            generation: 9,
            trailer_len: 0,
            trailer_crc: 1,
        };
        header.trailer_len = header.expected_trailer_len();
        let block = header.encode();
        assert_eq!(
            NodeFileHeader::decode(&block, 16, Metric::L2, 42),
            Ok(header)
        );
        assert!(NodeFileHeader::decode(&block, 32, Metric::L2, 42).is_err());
        assert!(NodeFileHeader::decode(&block, 16, Metric::Cosine, 42).is_err());
        assert!(NodeFileHeader::decode(&block, 16, Metric::L2, 43).is_err());
        assert!(NodeFileHeader::decode(&block[..100], 16, Metric::L2, 42).is_err());
        for byte in [0, 9, 17, 30, 100, 4095] {
            let mut bad = block.clone();
            bad[byte] ^= 0x10;
            assert!(NodeFileHeader::decode(&bad, 16, Metric::L2, 42).is_err());
        }
    }

    #[test]
    fn file_names_encode_generations() {
        assert_eq!(generation_of(&file_name(0xabc)), Some(0xabc));
        assert_eq!(generation_of("diskann-xyz.qdn"), None);
        assert_eq!(generation_of("flat.qvi"), None);
    }
}
