//! The HNSW graph of Malkov & Yashunin (2016): layers of links over vector slots.
//!
//! Names follow the paper: `q` the query or new element, `ep` entry points, `ef` the size of the
//! dynamic candidate list, `M` links per element per layer (`M_max0 = 2·M` on layer 0), `mL` the
//! level-generation factor `1 / ln(M)`.
//!
//! Layout: layer-0 links in one flat array with `1 + M_max0` words per node (count, then ids);
//! upper layers in a small boxed array per node (`1 + M` words per level). Links are `AtomicU32`:
//! searches read them without locks while inserts write them (a writer stores the ids, then the
//! count with release ordering), and concurrent inserts serialise per node on striped mutexes,
//! never holding two at once. Nodes are added (`add_node`, exclusive access) before they are
//! linked (`insert`, shared access), so the node arrays never move under a reader.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::distance::{prefetch, MetricDistance};
use crate::index::visited::Visited;
use crate::vectors::VectorSource;

/// Highest level a node may get (bounds memory for unlucky draws).
pub const MAX_LEVEL: usize = 15;
/// `entry` value of an empty graph.
const NO_ENTRY: u64 = u64::MAX;
/// Number of striped link locks.
const LOCK_STRIPES: usize = 1 << 12;

/// A node id with its distance to the current query, ordered by (distance, id).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Distance to the query.
    pub distance: f32,
    /// Node (slot).
    pub node: u32,
}

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

/// Construction parameters.
#[derive(Clone, Copy, Debug)]
pub struct GraphParams {
    /// `M`: links per node on upper layers (layer 0 has `2·M`).
    pub m: usize,
    /// `efConstruction`.
    pub ef_construction: usize,
    /// Fill pruned neighbour lists up to `M` with discarded candidates (Alg. 4 option).
    pub keep_pruned: bool,
    /// Seed of the level draws.
    pub seed: u64,
}

/// What a traversal needs besides the graph: the vectors, the metric, and which nodes may be
/// returned (deleted nodes are traversed but never returned).
pub struct Context<'a, V: VectorSource, L: Fn(u32) -> bool> {
    /// Vectors by node.
    pub vectors: &'a V,
    /// The metric.
    pub distance: MetricDistance,
    /// `is_live(node)`: whether the node may appear in results.
    pub is_live: L,
}

/// The per-traversal state: the visited set and a count of distance computations.
pub struct Traversal<'v> {
    /// Nodes already seen.
    pub visited: &'v mut Visited,
    /// Distances computed so far.
    pub examined: usize,
}

/// Borrowed raw state of a graph, for checkpoints.
pub struct GraphParts<'g> {
    /// Level of each node.
    pub levels: &'g [u8],
    /// Layer-0 blocks of every node.
    pub level0: &'g [AtomicU32],
    /// Upper-layer blocks of each node.
    pub upper: &'g [Box<[AtomicU32]>],
    /// Entry point and its level.
    pub entry: Option<(u32, usize)>,
}

impl<V: VectorSource, L: Fn(u32) -> bool> Context<'_, V, L> {
    #[inline]
    fn distance_to(&self, q: &[f32], node: u32) -> f32 {
        self.vectors.distance_to(&self.distance, q, node as usize)
    }
}

/// The layered link structure.
pub struct Graph {
    params: GraphParams,
    m_max0: usize,
    level_mult: f64,
    level0: Vec<AtomicU32>,
    upper: Vec<Box<[AtomicU32]>>,
    levels: Vec<u8>,
    /// `(level << 32) | node` of the entry point, or [`NO_ENTRY`].
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    locks: Box<[Mutex<()>]>,
}

impl Graph {
    /// An empty graph.
    pub fn new(params: GraphParams) -> Self {
        Graph {
            m_max0: 2 * params.m,
            level_mult: 1.0 / (params.m.max(2) as f64).ln(),
            params,
            level0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Approximate bytes of memory the links and levels use.
    pub fn memory_bytes(&self) -> usize {
        let upper: usize = self.upper.iter().map(|b| b.len() * 4 + 16).sum();
        self.level0.capacity() * 4 + upper + self.levels.capacity()
    }

    /// Construction parameters.
    pub fn params(&self) -> GraphParams {
        self.params
    }

    /// Number of nodes (linked or not).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Level of `node`.
    pub fn level(&self, node: usize) -> usize {
        usize::from(self.levels[node])
    }

    /// The entry point and its level.
    pub fn entry(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(Ordering::Acquire);
        (e != NO_ENTRY).then_some(((e & 0xffff_ffff) as u32, (e >> 32) as usize))
    }

    /// The level drawn for node `node`: `⌊−ln(u)·mL⌋` with `u` from a seeded hash of the node.
    pub fn draw_level(&self, node: usize) -> usize {
        let mut z = self.params.seed ^ (node as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // in (0, 1]
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    /// Makes room for `additional` more nodes.
    pub fn reserve(&mut self, additional: usize) {
        self.levels.reserve(additional);
        self.level0.reserve(additional * (self.m_max0 + 1));
        crate::memory::advise_huge_pages(&self.level0);
        self.upper.reserve(additional);
    }

    /// Appends an unlinked node of `level`; returns its id. Needs exclusive access.
    pub fn add_node(&mut self, level: usize) -> u32 {
        let level = level.min(MAX_LEVEL);
        let node = self.levels.len() as u32;
        self.levels.push(level as u8);
        let capacity = self.level0.capacity();
        self.level0
            .extend((0..=self.m_max0).map(|_| AtomicU32::new(0)));
        if self.level0.capacity() != capacity {
            crate::memory::advise_huge_pages(&self.level0);
        }
        self.upper.push(
            (0..level * (self.params.m + 1))
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        node
    }

    /// Capacity of a node's list on `level`.
    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.m_max0
        } else {
            self.params.m
        }
    }

    /// The `[count, ids…]` block of `node` on `level`.
    fn block(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let start = node as usize * (self.m_max0 + 1);
            &self.level0[start..start + self.m_max0 + 1]
        } else {
            let width = self.params.m + 1;
            &self.upper[node as usize][(level - 1) * width..level * width]
        }
    }

    /// Copies the neighbours of `node` on `level` into `out`.
    #[inline]
    pub fn neighbors(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let block = self.block(node, level);
        let count = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
        out.extend(block[1..=count].iter().map(|a| a.load(Ordering::Relaxed)));
    }

    /// Replaces the neighbours of `node` on `level`. The caller holds `node`'s lock (or has
    /// exclusive access).
    fn set_neighbors(&self, node: u32, level: usize, ids: &[u32]) {
        let block = self.block(node, level);
        let count = ids.len().min(block.len() - 1);
        for (slot, &id) in block[1..=count].iter().zip(ids) {
            slot.store(id, Ordering::Relaxed);
        }
        block[0].store(count as u32, Ordering::Release);
    }

    fn lock(&self, node: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[node as usize % LOCK_STRIPES].lock()
    }

    /// Greedy descent (`ef = 1`) from `ep` through the levels above `target_level`.
    fn descend<V: VectorSource, L: Fn(u32) -> bool>(
        &self,
        ctx: &Context<'_, V, L>,
        q: &[f32],
        mut ep: Scored,
        from_level: usize,
        target_level: usize,
        tr: &mut Traversal<'_>,
    ) -> Scored {
        let mut neighbors = Vec::with_capacity(self.params.m);
        for level in (target_level + 1..=from_level).rev() {
            loop {
                let mut changed = false;
                self.neighbors(ep.node, level, &mut neighbors);
                for &n in &neighbors {
                    let d = ctx.distance_to(q, n);
                    tr.examined += 1;
                    if d < ep.distance {
                        ep = Scored {
                            distance: d,
                            node: n,
                        };
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        ep
    }

    /// Alg. 2, SEARCH-LAYER: the `ef` nearest live nodes to `q` on `level` reachable from `eps`,
    /// closest first. Dead nodes are traversed but not returned.
    pub fn search_layer<V: VectorSource, L: Fn(u32) -> bool>(
        &self,
        ctx: &Context<'_, V, L>,
        q: &[f32],
        eps: &[Scored],
        ef: usize,
        level: usize,
        tr: &mut Traversal<'_>,
    ) -> Vec<Scored> {
        let mut candidates: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef + 1);
        for &ep in eps {
            if tr.visited.insert(ep.node) {
                candidates.push(Reverse(ep));
                if (ctx.is_live)(ep.node) {
                    results.push(ep);
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        let mut neighbors = Vec::with_capacity(self.max_links(level));
        while let Some(Reverse(c)) = candidates.pop() {
            let bound = results.peek().map_or(f32::INFINITY, |f| f.distance);
            if c.distance > bound && results.len() >= ef {
                break;
            }
            // The next candidate's links will be read soon: start loading them now.
            if let Some(Reverse(next)) = candidates.peek() {
                prefetch(self.block(next.node, level));
            }
            self.neighbors(c.node, level, &mut neighbors);
            // Only unvisited neighbours are worth loading; late in a search most are visited.
            neighbors.retain(|&e| tr.visited.insert(e));
            ctx.vectors
                .for_each_distance(&ctx.distance, q, &neighbors, |e, d| {
                    tr.examined += 1;
                    let bound = results.peek().map_or(f32::INFINITY, |f| f.distance);
                    if results.len() < ef || d < bound {
                        let scored = Scored {
                            distance: d,
                            node: e,
                        };
                        candidates.push(Reverse(scored));
                        if (ctx.is_live)(e) {
                            results.push(scored);
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                });
        }
        results.into_sorted_vec()
    }

    /// K-NN-SEARCH (Alg. 5): the `ef` nearest live nodes to `q`, closest first.
    pub fn search<V: VectorSource, L: Fn(u32) -> bool>(
        &self,
        ctx: &Context<'_, V, L>,
        q: &[f32],
        ef: usize,
        tr: &mut Traversal<'_>,
    ) -> Vec<Scored> {
        let Some((ep, top)) = self.entry() else {
            return Vec::new();
        };
        let ep = Scored {
            distance: ctx.distance_to(q, ep),
            node: ep,
        };
        tr.examined += 1;
        let ep = self.descend(ctx, q, ep, top, 0, tr);
        self.search_layer(ctx, q, &[ep], ef, 0, tr)
    }

    /// Alg. 4, SELECT-NEIGHBORS-HEURISTIC: from `candidates` (closest first), keep a candidate
    /// only if it is closer to the base element than to every neighbour kept so far.
    fn select_neighbors<V: VectorSource, L: Fn(u32) -> bool>(
        &self,
        ctx: &Context<'_, V, L>,
        candidates: &[Scored],
        m: usize,
    ) -> Vec<u32> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        let mut pruned = Vec::new();
        let mut scratch = Vec::new();
        for &c in candidates {
            if kept.len() >= m {
                break;
            }
            let vc = ctx.vectors.query_into(c.node as usize, &mut scratch);
            // Prune `c` only if a kept neighbour is strictly closer to it than the base is: with
            // `<=`, an exact duplicate of the base would prune every other candidate.
            let diverse = kept
                .iter()
                .all(|k| ctx.distance_to(vc, k.node) >= c.distance);
            if diverse {
                kept.push(c);
            } else {
                pruned.push(c);
            }
        }
        if self.params.keep_pruned {
            kept.extend(pruned.into_iter().take(m - kept.len()));
        }
        kept.into_iter().map(|s| s.node).collect()
    }

    /// Alg. 1, INSERT: links node `q_node` (already added) into the graph. Safe to run for many
    /// nodes in parallel and while searches run.
    pub fn insert<V: VectorSource>(
        &self,
        vectors: &V,
        distance: MetricDistance,
        q_node: u32,
        visited: &mut Visited,
    ) {
        let q = vectors.query_of(q_node as usize);
        let q = q.as_ref();
        let level = self.level(q_node as usize);
        // As in hnswlib: a node that will rise above the current top level holds the entry lock
        // for its whole insert, so two such nodes cannot both link below each other's levels.
        let entry_guard = self.entry_lock.lock();
        let Some((ep_node, top)) = self.entry() else {
            self.entry.store(
                ((level as u64) << 32) | u64::from(q_node),
                Ordering::Release,
            );
            return;
        };
        let entry_guard = (level > top).then_some(entry_guard);
        if ep_node == q_node {
            return;
        }
        // While building, every node but the new one may be linked (deleted ones included: they
        // keep the graph connected until the next compaction).
        let ctx = Context {
            vectors,
            distance,
            is_live: |n| n != q_node,
        };
        let mut tr = Traversal {
            visited,
            examined: 0,
        };
        let ep = Scored {
            distance: ctx.distance_to(q, ep_node),
            node: ep_node,
        };
        let ep = self.descend(&ctx, q, ep, top, level, &mut tr);
        // First choose q's neighbours on every level and write q's own lists, while nothing
        // links to q yet; then add the links back to q from layer 0 up. So a search that reaches
        // q (searches run during inserts) always finds q's lists complete on every level below.
        let mut eps = vec![ep];
        let mut chosen_per_level = Vec::with_capacity(level.min(top) + 1);
        for lc in (0..=level.min(top)).rev() {
            tr.visited.reset(self.len());
            let found = self.search_layer(&ctx, q, &eps, self.params.ef_construction, lc, &mut tr);
            let chosen = self.select_neighbors(&ctx, &found, self.params.m);
            {
                let _guard = self.lock(q_node);
                self.set_neighbors(q_node, lc, &chosen);
            }
            chosen_per_level.push((lc, chosen));
            if !found.is_empty() {
                eps = found;
            }
        }
        let mut links = Vec::new();
        for (lc, chosen) in chosen_per_level.iter().rev() {
            for &e in chosen {
                self.add_link(&ctx, e, q_node, *lc, &mut links);
            }
        }
        if entry_guard.is_some() {
            self.entry.store(
                ((level as u64) << 32) | u64::from(q_node),
                Ordering::Release,
            );
        }
    }

    /// Adds the link `e → q_node` on `level`, shrinking `e`'s list with the heuristic when full.
    fn add_link<V: VectorSource, L: Fn(u32) -> bool>(
        &self,
        ctx: &Context<'_, V, L>,
        e: u32,
        q_node: u32,
        level: usize,
        links: &mut Vec<u32>,
    ) {
        let _guard = self.lock(e);
        self.neighbors(e, level, links);
        if links.contains(&q_node) {
            return;
        }
        let max = self.max_links(level);
        if links.len() < max {
            links.push(q_node);
            self.set_neighbors(e, level, links);
            return;
        }
        let ve = ctx.vectors.query_of(e as usize);
        let mut scored: Vec<Scored> = links
            .iter()
            .chain(std::iter::once(&q_node))
            .map(|&n| Scored {
                distance: ctx.distance_to(&ve, n),
                node: n,
            })
            .collect();
        scored.sort_unstable();
        let chosen = self.select_neighbors(ctx, &scored, max);
        self.set_neighbors(e, level, &chosen);
    }

    /// Checks the graph's invariants; returns one line per problem (at most `limit`).
    pub fn verify(&self, limit: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.len();
        let mut links = Vec::new();
        match self.entry() {
            None if n > 0 => problems.push(format!("{n} nodes but no entry point")),
            Some((e, level)) => {
                if e as usize >= n {
                    problems.push(format!("entry point {e} is not a node"));
                } else if self.level(e as usize) != level {
                    problems.push(format!(
                        "entry point level {level} differs from its node's level"
                    ));
                } else if let Some(max) = (0..n).map(|i| self.level(i)).max() {
                    if max > level {
                        problems.push(format!("entry level {level} below the top level {max}"));
                    }
                }
            }
            None => {}
        }
        for node in 0..n {
            for level in 0..=self.level(node) {
                let block = self.block(node as u32, level);
                if block[0].load(Ordering::Acquire) as usize > block.len() - 1 {
                    problems.push(format!("node {node} level {level}: count exceeds capacity"));
                }
                self.neighbors(node as u32, level, &mut links);
                for &t in &links {
                    if t as usize >= n {
                        problems.push(format!("node {node} level {level}: dangling link to {t}"));
                    } else if t as usize == node {
                        problems.push(format!("node {node} level {level}: links to itself"));
                    } else if self.level(t as usize) < level {
                        problems.push(format!(
                            "node {node} level {level}: link to {t} of level {}",
                            self.level(t as usize)
                        ));
                    }
                }
            }
            if problems.len() >= limit {
                problems.truncate(limit);
                break;
            }
        }
        problems
    }

    /// Raw state for checkpoints.
    pub fn parts(&self) -> GraphParts<'_> {
        GraphParts {
            levels: &self.levels,
            level0: &self.level0,
            upper: &self.upper,
            entry: self.entry(),
        }
    }

    /// Rebuilds a graph from checkpointed parts, validating every count, link and level.
    pub fn from_raw_parts(
        params: GraphParams,
        levels: Vec<u8>,
        level0: Vec<u32>,
        upper: Vec<Vec<u32>>,
        entry: Option<(u32, usize)>,
    ) -> Result<Graph, String> {
        let mut graph = Graph::new(params);
        let n = levels.len();
        if level0.len() != n * (graph.m_max0 + 1) || upper.len() != n {
            return Err("link arrays do not match the node count".into());
        }
        for (node, (&level, words)) in levels.iter().zip(&upper).enumerate() {
            if usize::from(level) > MAX_LEVEL || words.len() != usize::from(level) * (params.m + 1)
            {
                return Err(format!("node {node}: bad level {level} or upper link size"));
            }
        }
        graph.levels = levels;
        graph.level0 = level0.into_iter().map(AtomicU32::new).collect();
        crate::memory::advise_huge_pages(&graph.level0);
        graph.upper = upper
            .into_iter()
            .map(|w| w.into_iter().map(AtomicU32::new).collect())
            .collect();
        if let Some((e, level)) = entry {
            graph
                .entry
                .store(((level as u64) << 32) | u64::from(e), Ordering::Release);
        }
        match graph.verify(1).into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(graph),
        }
    }
}
