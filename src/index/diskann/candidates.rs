//! The bounded, sorted candidate list of a greedy or beam search (DiskANN's "L" list): the `L`
//! closest nodes seen so far, each marked once expanded.

use crate::index::hnsw::graph::Scored;

/// Up to `capacity` candidates sorted by (distance, node), with expansion marks.
pub struct CandidateList {
    items: Vec<(Scored, bool)>,
    capacity: usize,
    /// No unexpanded candidate sits before this position.
    cursor: usize,
}

impl CandidateList {
    /// An empty list keeping the `capacity` closest candidates (at least 1).
    pub fn new(capacity: usize) -> Self {
        CandidateList {
            items: Vec::with_capacity(capacity.max(1) + 1),
            capacity: capacity.max(1),
            cursor: 0,
        }
    }

    /// Offers a candidate (callers offer each node once); false if it is not among the best.
    pub fn insert(&mut self, candidate: Scored) -> bool {
        if self.items.len() == self.capacity
            && self
                .items
                .last()
                .is_some_and(|(worst, _)| candidate >= *worst)
        {
            return false;
        }
        let at = self.items.partition_point(|(c, _)| *c < candidate);
        self.items.insert(at, (candidate, false));
        self.items.truncate(self.capacity);
        self.cursor = self.cursor.min(at);
        true
    }

    /// Marks and returns the closest unexpanded candidate.
    pub fn expand_next(&mut self) -> Option<Scored> {
        while self.cursor < self.items.len() {
            let (candidate, expanded) = &mut self.items[self.cursor];
            self.cursor += 1;
            if !*expanded {
                *expanded = true;
                return Some(*candidate);
            }
        }
        None
    }

    /// Marks and returns up to `width` closest unexpanded candidates (a beam).
    pub fn expand_beam(&mut self, width: usize, out: &mut Vec<Scored>) {
        out.clear();
        let mut at = self.cursor;
        while at < self.items.len() && out.len() < width {
            let (candidate, expanded) = &mut self.items[at];
            if !*expanded {
                *expanded = true;
                out.push(*candidate);
            }
            at += 1;
        }
        while self.cursor < self.items.len() && self.items[self.cursor].1 {
            self.cursor += 1;
        }
    }

    /// The candidates, closest first.
    pub fn iter(&self) -> impl Iterator<Item = Scored> + '_ {
        self.items.iter().map(|(c, _)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(distance: f32, node: u32) -> Scored {
        Scored { distance, node }
    }

    #[test]
    fn keeps_the_closest_and_expands_in_order() {
        let mut list = CandidateList::new(3);
        for (d, n) in [(5.0, 1), (1.0, 2), (3.0, 3), (4.0, 4), (0.5, 5)] {
            list.insert(s(d, n));
        }
        let kept: Vec<u32> = list.iter().map(|c| c.node).collect();
        assert_eq!(kept, vec![5, 2, 3]);
        assert_eq!(list.expand_next().map(|c| c.node), Some(5));
        assert!(!list.insert(s(9.0, 9)), "worse than the worst kept");
        list.insert(s(0.1, 6));
        assert_eq!(list.expand_next().map(|c| c.node), Some(6));
        let mut beam = Vec::new();
        list.expand_beam(4, &mut beam);
        assert_eq!(beam.iter().map(|c| c.node).collect::<Vec<_>>(), vec![2]);
        assert_eq!(list.expand_next(), None);
    }
}
