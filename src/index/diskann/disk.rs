//! The disk-resident part of a DiskANN index: an open node file with what RAM holds for it
//! (PQ codes, an id index and a cache of the nodes nearest the entry point), and the beam
//! search over it (Subramanya et al. §3.3–3.4).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use uuid::Uuid;

use super::candidates::CandidateList;
use super::layout::Node;
use super::nodefile::{AlignedBlocks, NodeFile, Trailer};
use crate::distance::MetricDistance;
use crate::error::{Error, Result};
use crate::index::hnsw::graph::Scored;
use crate::index::pq::ProductQuantizer;
use crate::index::{Neighbor, TopK};
use crate::types::{InternalId, Metric};

/// Node files up to this size have every node's checksum verified when loaded; larger ones
/// are checked node by node as searches read them.
pub const VERIFY_ON_LOAD_BYTES: u64 = 1 << 30;

/// What one disk search did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskSearchStats {
    /// Beam steps (each reads up to `beam` nodes at once).
    pub hops: u32,
    /// 4 KiB blocks read from the node file.
    pub blocks_read: u32,
    /// Nodes served from the in-RAM cache instead.
    pub cache_hits: u32,
    /// Microseconds the search took (the disk part and the delta).
    pub micros: u32,
}

/// Per-query search knobs.
#[derive(Clone, Copy, Debug)]
pub struct BeamParams {
    /// Candidate-list size `L`.
    pub list: usize,
    /// Beam width `W`: nodes read per hop.
    pub beam: usize,
}

/// A node held in RAM (the cache).
struct CachedNode {
    vector: Vec<f32>,
    neighbors: Vec<u32>,
    uuid: Uuid,
    id: InternalId,
}

/// An open node file and its in-RAM companions.
pub struct DiskGraph {
    file: NodeFile,
    pq: ProductQuantizer,
    codes: Vec<u8>,
    /// Internal ids, sorted, and the slot of each.
    sorted_ids: Vec<InternalId>,
    sorted_slots: Vec<u32>,
    cache: HashMap<u32, CachedNode>,
    metric: Metric,
    distance: MetricDistance,
}

impl DiskGraph {
    /// Loads the trailer of an opened node file; checks every node when the file is at most
    /// `verify_up_to` bytes, then caches up to `cache_nodes` nodes nearest the entry point
    /// (BFS).
    pub fn open(file: NodeFile, cache_nodes: usize, verify_up_to: u64) -> Result<Self> {
        let trailer = file.read_trailer()?;
        if file.header().file_len() <= verify_up_to {
            file.verify_nodes()?;
        }
        Self::from_parts(file, trailer, cache_nodes)
    }

    /// Assembles the graph from a node file and its trailer already in RAM (as a merge that
    /// just wrote them holds them), then caches up to `cache_nodes` nodes nearest the entry
    /// point.
    pub fn from_parts(file: NodeFile, trailer: Trailer, cache_nodes: usize) -> Result<Self> {
        let metric = file.header().metric;
        let corrupted = |detail| Error::corrupted(file.path(), detail);
        let ids = trailer
            .ids
            .iter()
            .map(|&id| InternalId::try_from(id))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| corrupted("an internal id is out of range"))?;
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by_key(|&slot| ids[slot as usize]);
        let sorted_ids: Vec<InternalId> = order.iter().map(|&s| ids[s as usize]).collect();
        if sorted_ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(corrupted("two nodes hold the same document"));
        }
        let mut graph = DiskGraph {
            file,
            pq: trailer.pq,
            codes: trailer.codes,
            sorted_ids,
            sorted_slots: order,
            cache: HashMap::new(),
            metric,
            distance: MetricDistance::new(metric),
        };
        graph.fill_cache(cache_nodes)?;
        Ok(graph)
    }

    /// Caches up to `count` nodes in breadth-first order from the entry point.
    fn fill_cache(&mut self, count: usize) -> Result<()> {
        let nodes = self.len();
        if self.is_empty() {
            return Ok(());
        }
        let mut queue = VecDeque::from([self.medoid()]);
        let mut cache = HashMap::new();
        let mut queued = std::collections::HashSet::from([self.medoid()]);
        while let Some(slot) = queue.pop_front() {
            if cache.len() >= count.min(nodes) {
                break;
            }
            let node = self.file.read_node(slot)?;
            for &next in &node.neighbors {
                if queued.insert(next) {
                    queue.push_back(next);
                }
            }
            cache.insert(
                slot,
                CachedNode {
                    vector: node.vector,
                    neighbors: node.neighbors,
                    uuid: node.uuid,
                    id: node_id(self.file.path(), node.id)?,
                },
            );
        }
        self.cache = cache;
        Ok(())
    }

    /// Nodes held in the RAM cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.sorted_ids.len()
    }

    /// Whether the file holds no node.
    pub fn is_empty(&self) -> bool {
        self.sorted_ids.is_empty()
    }

    /// The entry point.
    pub fn medoid(&self) -> u32 {
        self.file.header().medoid as u32
    }

    /// The node file.
    pub fn file(&self) -> &NodeFile {
        &self.file
    }

    /// The slot holding internal id `id`.
    pub fn slot_of(&self, id: InternalId) -> Option<u32> {
        self.sorted_ids
            .binary_search(&id)
            .ok()
            .map(|i| self.sorted_slots[i])
    }

    /// Every internal id held, sorted.
    pub fn sorted_ids(&self) -> &[InternalId] {
        &self.sorted_ids
    }

    /// The slot of each id of [`DiskGraph::sorted_ids`].
    pub fn sorted_slots(&self) -> &[u32] {
        &self.sorted_slots
    }

    /// Node `slot`, from the cache or the file.
    pub fn node(&self, slot: u32) -> Result<Node> {
        match self.cache.get(&slot) {
            Some(c) => Ok(Node {
                vector: c.vector.clone(),
                uuid: c.uuid,
                id: u64::from(c.id),
                neighbors: c.neighbors.clone(),
            }),
            None => self.file.read_node(slot),
        }
    }

    /// Bytes of RAM held: codes, id index, cache, quantiser.
    pub fn memory_bytes(&self) -> usize {
        let cached: usize = self
            .cache
            .values()
            .map(|c| c.vector.len() * 4 + c.neighbors.len() * 4 + 64)
            .sum();
        self.codes.len() + self.sorted_ids.len() * 8 + cached + self.pq.memory_bytes()
    }

    /// The PQ distance table of a prepared query.
    fn table(&self, query: &[f32]) -> Vec<f32> {
        let mut table = vec![0f32; self.pq.table_len()];
        match self.metric {
            Metric::L2 => self.pq.l2_table(query, &mut table),
            Metric::Cosine | Metric::Dot => self.pq.dot_table(query, &mut table),
        }
        table
    }

    /// The PQ-estimated distance of `slot` with `table`.
    fn estimate(&self, table: &[f32], slot: u32) -> f32 {
        let m = self.pq.m();
        let code = &self.codes[slot as usize * m..(slot as usize + 1) * m];
        let sum: f32 = code
            .iter()
            .enumerate()
            .map(|(j, &c)| table[j * 256 + c as usize])
            .sum();
        match self.metric {
            Metric::L2 => sum,
            Metric::Cosine => 1.0 - sum,
            Metric::Dot => -sum,
        }
    }

    /// Beam search for the prepared `query`: PQ distances steer, every expanded node is
    /// re-ranked at full precision, and the `top` results keep the nodes `keep` accepts.
    pub fn search(
        &self,
        query: &[f32],
        params: BeamParams,
        keep: impl Fn(u32, InternalId) -> bool,
        top: &mut TopK,
        stats: &mut DiskSearchStats,
    ) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let table = self.table(query);
        let mut candidates = CandidateList::new(params.list);
        let mut seen = SlotSet::with_capacity(params.list * 8);
        let entry = self.medoid();
        seen.insert(entry);
        candidates.insert(Scored {
            distance: self.estimate(&table, entry),
            node: entry,
        });
        let beam_width = params.beam.max(1);
        let mut beam = Vec::with_capacity(beam_width);
        let mut to_read = Vec::with_capacity(beam_width);
        let mut bufs: Vec<AlignedBlocks> = Vec::new();
        let mut vector = vec![0f32; query.len()];
        let mut neighbors = Vec::new();
        loop {
            candidates.expand_beam(beam_width, &mut beam);
            if beam.is_empty() {
                break;
            }
            stats.hops += 1;
            to_read.clear();
            neighbors.clear();
            for c in &beam {
                match self.cache.get(&c.node) {
                    Some(cached) => {
                        stats.cache_hits += 1;
                        if keep(c.node, cached.id) {
                            let d = self.distance.distance(query, &cached.vector);
                            top.push(neighbor(cached.id, cached.uuid, d));
                        }
                        neighbors.extend_from_slice(&cached.neighbors);
                    }
                    None => to_read.push(c.node),
                }
            }
            while bufs.len() < to_read.len() {
                bufs.push(self.file.buffer());
            }
            self.file.read_many(&to_read, &mut bufs[..to_read.len()])?;
            stats.blocks_read +=
                (to_read.len() * self.file.header().geometry.blocks_per_node) as u32;
            for (&slot, buf) in to_read.iter().zip(&bufs) {
                let node = self.file.node_in(slot, buf)?;
                let id = node_id(self.file.path(), node.id())?;
                if keep(slot, id) {
                    node.vector_into(&mut vector);
                    let d = self.distance.distance(query, &vector);
                    top.push(neighbor(id, node.uuid(), d));
                }
                neighbors.extend(node.neighbors());
            }
            for &next in &neighbors {
                if seen.insert(next) {
                    candidates.insert(Scored {
                        distance: self.estimate(&table, next),
                        node: next,
                    });
                }
            }
        }
        Ok(())
    }
}

fn neighbor(id: InternalId, uuid: Uuid, distance: f32) -> Neighbor {
    Neighbor { id, uuid, distance }
}

/// A node's internal id as the collection numbers them.
pub fn node_id(path: &Path, id: u64) -> Result<InternalId> {
    InternalId::try_from(id).map_err(|_| Error::corrupted(path, "an internal id is out of range"))
}

/// An open-addressing set of slots for one search (the visited set: a few thousand entries,
/// where a bitmap over a billion nodes would not do).
struct SlotSet {
    table: Vec<u32>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

impl SlotSet {
    fn with_capacity(n: usize) -> Self {
        SlotSet {
            table: vec![EMPTY; (n * 2).next_power_of_two().max(64)],
            len: 0,
        }
    }

    /// Adds `slot`; true if it was absent.
    fn insert(&mut self, slot: u32) -> bool {
        if (self.len + 1) * 2 > self.table.len() {
            let doubled = vec![EMPTY; self.table.len() * 2];
            let old = std::mem::replace(&mut self.table, doubled);
            self.len = 0;
            for s in old.into_iter().filter(|&s| s != EMPTY) {
                self.insert(s);
            }
        }
        let mask = self.table.len() - 1;
        let mut at = (u64::from(slot).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask;
        loop {
            match self.table[at] {
                EMPTY => {
                    self.table[at] = slot;
                    self.len += 1;
                    return true;
                }
                s if s == slot => return false,
                _ => at = (at + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sets_behave_like_hash_sets() {
        let mut set = SlotSet::with_capacity(4);
        let mut model = std::collections::HashSet::new();
        let mut rng = crate::rng::SplitMix(5);
        for _ in 0..10_000 {
            let slot = rng.below(3000) as u32;
            assert_eq!(set.insert(slot), model.insert(slot));
        }
        assert_eq!(set.len, model.len());
    }
}
