//! Visited sets for graph traversals: generation counters, so clearing is O(1) and the hot path
//! allocates nothing; a pool hands one to each concurrent search.

use parking_lot::Mutex;

/// Marks nodes visited during one traversal.
pub struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    fn new() -> Self {
        Visited {
            marks: Vec::new(),
            generation: 1,
        }
    }

    /// Starts a new traversal over `nodes` nodes (clears every mark).
    pub fn reset(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; true if it was not visited yet.
    #[inline]
    pub fn insert(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        let fresh = *mark != self.generation;
        *mark = self.generation;
        fresh
    }
}

/// A pool of visited sets, one per concurrent traversal.
#[derive(Default)]
pub struct VisitedPool {
    free: Mutex<Vec<Visited>>,
}

impl VisitedPool {
    /// Runs `f` with a cleared visited set for `nodes` nodes.
    pub fn with<T>(&self, nodes: usize, f: impl FnOnce(&mut Visited) -> T) -> T {
        let mut visited = self.free.lock().pop().unwrap_or_else(Visited::new);
        visited.reset(nodes);
        let out = f(&mut visited);
        self.free.lock().push(visited);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_clear_marks_and_survive_wrap_around() {
        let pool = VisitedPool::default();
        for round in 0..70_000u32 {
            pool.with(8, |v| {
                assert!(v.insert(round % 8), "round {round}: stale mark");
                assert!(!v.insert(round % 8));
            });
        }
    }
}
