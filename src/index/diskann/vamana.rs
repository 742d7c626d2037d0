//! Vamana graph construction in RAM (Subramanya et al., NeurIPS 2019, §2–3): greedy search
//! from the medoid, RobustPrune(α, R), a random R-regular start and two passes (α = 1, then the
//! configured α), rayon-parallel with one lock per adjacency list.
//!
//! The same insertion grows the in-RAM delta graph of new points between merges.

use parking_lot::Mutex;
use rayon::prelude::*;

use super::candidates::CandidateList;
use crate::distance::MetricDistance;
use crate::index::hnsw::graph::Scored;
use crate::index::visited::VisitedPool;
use crate::rng::SplitMix;
use crate::vectors::VectorSource;

/// Lists may grow this much past `R` before they are pruned back (DiskANN's graph slack).
const SLACK: f64 = 1.3;

/// Construction parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VamanaParams {
    /// Maximum out-degree `R`.
    pub max_degree: usize,
    /// Candidate-list size `L` of the construction searches.
    pub build_list: usize,
    /// Pruning factor α of the last pass (≥ 1; 1 for metrics whose distances can be negative).
    pub alpha: f32,
}

/// An adjacency list per node, each behind its own lock so that inserts run in parallel.
pub struct Graph {
    lists: Vec<Mutex<Vec<u32>>>,
}

impl Graph {
    /// `n` nodes without edges.
    pub fn empty(n: usize) -> Self {
        Graph {
            lists: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// A graph from adjacency lists.
    pub fn from_lists(lists: Vec<Vec<u32>>) -> Self {
        Graph {
            lists: lists.into_iter().map(Mutex::new).collect(),
        }
    }

    /// `n` nodes, each linked to `min(degree, n − 1)` distinct random others.
    pub fn random(n: usize, degree: usize, seed: u64) -> Self {
        let degree = degree.min(n.saturating_sub(1));
        let lists = (0..n)
            .into_par_iter()
            .map(|node| {
                let mut rng = SplitMix(seed ^ (node as u64).wrapping_mul(0x9e37_79b9));
                let mut list = Vec::with_capacity(degree);
                while list.len() < degree {
                    let other = rng.below(n) as u32;
                    if other as usize != node && !list.contains(&other) {
                        list.push(other);
                    }
                }
                list
            })
            .collect();
        Graph::from_lists(lists)
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Adds a node without edges; returns its id.
    pub fn push(&mut self) -> u32 {
        self.lists.push(Mutex::new(Vec::new()));
        (self.lists.len() - 1) as u32
    }

    /// A copy of `node`'s out-neighbours.
    pub fn neighbors(&self, node: u32) -> Vec<u32> {
        self.lists[node as usize].lock().clone()
    }

    /// The adjacency lists.
    pub fn into_lists(self) -> Vec<Vec<u32>> {
        self.lists.into_iter().map(Mutex::into_inner).collect()
    }

    /// Bytes held by the lists.
    pub fn memory_bytes(&self) -> usize {
        self.lists
            .iter()
            .map(|l| std::mem::size_of::<Mutex<Vec<u32>>>() + l.lock().capacity() * 4)
            .sum()
    }
}

/// The node closest to the mean of the first `n` vectors (the entry point).
pub fn medoid<V: VectorSource>(vectors: &V, n: usize, distance: &MetricDistance) -> u32 {
    if n == 0 {
        return 0;
    }
    let dim = vectors.query_of(0).len();
    let step = (n / 20_000).max(1);
    let mut mean = vec![0f64; dim];
    let mut count = 0usize;
    for slot in (0..n).step_by(step) {
        for (m, &x) in mean.iter_mut().zip(vectors.query_of(slot).iter()) {
            *m += f64::from(x);
        }
        count += 1;
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / count as f64) as f32).collect();
    (0..n)
        .into_par_iter()
        .map(|slot| Scored {
            distance: vectors.distance_to(distance, &mean, slot),
            node: slot as u32,
        })
        .min()
        .map_or(0, |s| s.node)
}

/// Greedy search for `query` from `entry` with list size `list`: returns the list (closest
/// first) and every expanded node with its distance.
pub fn greedy_search<V: VectorSource>(
    graph: &Graph,
    vectors: &V,
    distance: &MetricDistance,
    visited: &VisitedPool,
    entry: u32,
    query: &[f32],
    list: usize,
) -> (Vec<Scored>, Vec<Scored>) {
    visited.with(graph.len(), |seen| {
        let mut candidates = CandidateList::new(list);
        let mut expanded = Vec::new();
        seen.insert(entry);
        candidates.insert(Scored {
            distance: vectors.distance_to(distance, query, entry as usize),
            node: entry,
        });
        while let Some(current) = candidates.expand_next() {
            expanded.push(current);
            let mut fresh = graph.neighbors(current.node);
            fresh.retain(|&next| seen.insert(next));
            vectors.for_each_distance(distance, query, &fresh, |node, d| {
                candidates.insert(Scored { distance: d, node });
            });
        }
        (candidates.iter().collect(), expanded)
    })
}

/// RobustPrune: from `candidates` (distances to `node`), keeps up to `max_degree` neighbours,
/// dropping each candidate `c` that a kept `k` covers: `α · d(k, c) ≤ d(node, c)`.
pub fn robust_prune<V: VectorSource>(
    vectors: &V,
    distance: &MetricDistance,
    node: u32,
    mut candidates: Vec<Scored>,
    alpha: f32,
    max_degree: usize,
) -> Vec<u32> {
    candidates.retain(|c| c.node != node);
    candidates.sort_unstable();
    candidates.dedup_by_key(|c| c.node);
    let mut kept: Vec<u32> = Vec::with_capacity(max_degree);
    let mut removed = vec![false; candidates.len()];
    for i in 0..candidates.len() {
        if removed[i] {
            continue;
        }
        let chosen = candidates[i].node;
        kept.push(chosen);
        if kept.len() == max_degree {
            break;
        }
        let chosen_vector = vectors.query_of(chosen as usize);
        for j in i + 1..candidates.len() {
            if !removed[j] {
                let between =
                    vectors.distance_to(distance, &chosen_vector, candidates[j].node as usize);
                if alpha * between <= candidates[j].distance {
                    removed[j] = true;
                }
            }
        }
    }
    kept
}

/// Inserts `points` (already nodes of `graph`) in parallel: each gets pruned out-edges from a
/// greedy search from `entry`, and back-edges from its new neighbours (pruned past `R`·slack).
pub fn insert<V: VectorSource>(
    graph: &Graph,
    vectors: &V,
    distance: &MetricDistance,
    entry: u32,
    points: &[u32],
    params: &VamanaParams,
    alpha: f32,
) {
    let visited = VisitedPool::default();
    let slack = ((params.max_degree as f64) * SLACK).ceil() as usize;
    points.par_iter().for_each(|&point| {
        let query = vectors.query_of(point as usize);
        let (_, mut pool) = greedy_search(
            graph,
            vectors,
            distance,
            &visited,
            entry,
            &query,
            params.build_list,
        );
        for old in graph.neighbors(point) {
            pool.push(Scored {
                distance: vectors.distance_to(distance, &query, old as usize),
                node: old,
            });
        }
        let out = robust_prune(vectors, distance, point, pool, alpha, params.max_degree);
        *graph.lists[point as usize].lock() = out.clone();
        for neighbor in out {
            let mut list = graph.lists[neighbor as usize].lock();
            if list.contains(&point) {
                continue;
            }
            list.push(point);
            if list.len() > slack {
                *list = reprune(vectors, distance, neighbor, &list, alpha, params.max_degree);
            }
        }
    });
}

/// `node`'s out-list `list` scored against it and cut back to at most `max_degree` by
/// [`robust_prune`].
fn reprune<V: VectorSource>(
    vectors: &V,
    distance: &MetricDistance,
    node: u32,
    list: &[u32],
    alpha: f32,
    max_degree: usize,
) -> Vec<u32> {
    let from = vectors.query_of(node as usize);
    let scored = list
        .iter()
        .map(|&c| Scored {
            distance: vectors.distance_to(distance, &from, c as usize),
            node: c,
        })
        .collect();
    robust_prune(vectors, distance, node, scored, alpha, max_degree)
}

/// Prunes every list longer than `R` (after inserts with slack).
pub fn prune_overfull<V: VectorSource>(
    graph: &Graph,
    vectors: &V,
    distance: &MetricDistance,
    params: &VamanaParams,
    alpha: f32,
) {
    graph.lists.par_iter().enumerate().for_each(|(node, list)| {
        let mut list = list.lock();
        if list.len() > params.max_degree {
            *list = reprune(
                vectors,
                distance,
                node as u32,
                &list,
                alpha,
                params.max_degree,
            );
        }
    });
}

/// Builds the Vamana graph of the first `n` vectors: random `R`-regular start, a pass with
/// α = 1, a pass with `params.alpha`, both in a seeded random order. Returns the adjacency
/// lists and the medoid.
pub fn build<V: VectorSource>(
    vectors: &V,
    n: usize,
    distance: &MetricDistance,
    params: &VamanaParams,
    seed: u64,
) -> (Vec<Vec<u32>>, u32) {
    if n == 0 {
        return (Vec::new(), 0);
    }
    let entry = medoid(vectors, n, distance);
    let graph = Graph::random(n, params.max_degree, seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for alpha in [1.0, params.alpha] {
        insert(&graph, vectors, distance, entry, &order, params, alpha);
        prune_overfull(&graph, vectors, distance, params, alpha);
    }
    (graph.into_lists(), entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;
    use crate::vectors::VectorArena;

    fn arena(n: usize, dim: usize, seed: u64) -> VectorArena {
        let mut rng = SplitMix(seed);
        let mut arena: VectorArena = VectorArena::new(dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.next_f64() as f32).collect();
            arena.push(&v);
        }
        arena
    }

    #[test]
    fn built_graphs_respect_the_degree_and_find_exact_neighbours() {
        let (n, dim) = (3000, 16);
        let vectors = arena(n, dim, 3);
        let distance = MetricDistance::new(Metric::L2);
        let params = VamanaParams {
            max_degree: 24,
            build_list: 48,
            alpha: 1.2,
        };
        let (lists, entry) = build(&vectors, n, &distance, &params, 7);
        assert_eq!(lists.len(), n);
        for (node, list) in lists.iter().enumerate() {
            assert!(list.len() <= 24 && !list.is_empty(), "node {node}");
            assert!(!list.contains(&(node as u32)), "self loop at {node}");
        }
        let graph = Graph::from_lists(lists);
        let queries = arena(100, dim, 99);
        let visited = VisitedPool::default();
        let mut hits = 0;
        for q in 0..100 {
            let query = queries.get(q);
            let mut exact: Vec<Scored> = (0..n)
                .map(|s| Scored {
                    distance: distance.distance(query, vectors.get(s)),
                    node: s as u32,
                })
                .collect();
            exact.sort_unstable();
            let (found, _) = greedy_search(&graph, &vectors, &distance, &visited, entry, query, 40);
            let found: Vec<u32> = found.iter().take(10).map(|s| s.node).collect();
            hits += exact[..10]
                .iter()
                .filter(|e| found.contains(&e.node))
                .count();
        }
        let recall = hits as f64 / 1000.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn robust_prune_keeps_the_closest_and_drops_covered_candidates() {
        let mut vectors: VectorArena = VectorArena::new(1);
        for x in [0.0f32, 1.0, 1.1, 5.0] {
            vectors.push(&[x]);
        }
        let distance = MetricDistance::new(Metric::L2);
        let candidates = (1..4)
            .map(|c| Scored {
                distance: distance.distance(&[0.0], vectors.get(c)),
                node: c as u32,
            })
            .collect();
        // 2 (at 1.1) and 3 (at 5) are closer to 1 than to 0: covered.
        let kept = robust_prune(&vectors, &distance, 0, candidates, 1.0, 3);
        assert_eq!(kept, vec![1]);
    }
}
