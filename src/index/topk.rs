//! Bounded selection of the k nearest candidates, ordered by (distance, id).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Neighbor;

/// A heap entry; the greatest (farthest, then highest id) sits on top.
#[derive(Clone, Copy, Debug)]
struct Entry(Neighbor);

impl Entry {
    fn cmp_key(&self, other: &Self) -> Ordering {
        self.0
            .distance
            .total_cmp(&other.0.distance)
            .then_with(|| self.0.uuid.cmp(&other.0.uuid))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_key(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_key(other)
    }
}

/// Keeps the `k` smallest neighbours by (distance, uuid), a total order (`f32::total_cmp`).
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    /// An empty collector for `k` results.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    /// The distance a candidate must beat (or tie) to enter, or +∞ while not full.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap.peek().map_or(f32::INFINITY, |e| e.0.distance)
        }
    }

    /// Offers a candidate.
    #[inline]
    pub fn push(&mut self, candidate: Neighbor) {
        if self.k == 0 {
            return;
        }
        let entry = Entry(candidate);
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if entry < *top {
                *top = entry;
            }
        }
    }

    /// Merges another collector into this one.
    pub fn merge(&mut self, other: TopK) {
        for entry in other.heap {
            self.push(entry.0);
        }
    }

    /// The kept neighbours, closest first.
    pub fn into_sorted(self) -> Vec<Neighbor> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| e.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    proptest! {
        #[test]
        fn keeps_the_k_smallest_in_order(
            dists in proptest::collection::vec(0u8..20, 0..200),
            k in 0usize..30,
        ) {
            let all: Vec<Neighbor> = dists.iter().enumerate().map(|(i, &d)| Neighbor {
                id: i as u32,
                uuid: Uuid::from_u128((i as u128 * 7919) % 1000),
                distance: f32::from(d),
            }).collect();
            let mut topk = TopK::new(k);
            for n in &all { topk.push(*n); }
            let mut expected = all.clone();
            expected.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.uuid.cmp(&b.uuid)));
            expected.truncate(k);
            prop_assert_eq!(topk.into_sorted(), expected);
        }
    }
}
