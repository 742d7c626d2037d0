//! A tantivy collector for the best `k` documents by BM25 among allowed internal ids, with a
//! deterministic order (score, then internal id) and a count of every match.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use roaring::RoaringBitmap;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::{KeywordHit, ID_FIELD};

/// Collects the best `k` matches (higher score first, then lower internal id) among `allowed`
/// (every document if `None`), and counts all matches that pass the filter.
pub(super) struct BestMatches {
    pub k: usize,
    pub allowed: Option<Arc<RoaringBitmap>>,
}

/// A hit ordered so that the heap's greatest element is the worst kept hit.
#[derive(Clone, Copy, PartialEq)]
struct Ranked(KeywordHit);

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.id.cmp(&other.0.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The per-segment state of [`BestMatches`].
pub(super) struct SegmentBest {
    ids: Column<u64>,
    k: usize,
    allowed: Option<Arc<RoaringBitmap>>,
    best: BinaryHeap<Ranked>,
    matched: usize,
}

impl Collector for BestMatches {
    type Fruit = (Vec<KeywordHit>, usize);
    type Child = SegmentBest;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentBest> {
        Ok(SegmentBest {
            ids: reader.fast_fields().u64(ID_FIELD)?,
            k: self.k,
            allowed: self.allowed.clone(),
            best: BinaryHeap::with_capacity(self.k + 1),
            matched: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(
        &self,
        fruits: Vec<(Vec<KeywordHit>, usize)>,
    ) -> tantivy::Result<(Vec<KeywordHit>, usize)> {
        let matched = fruits.iter().map(|(_, m)| m).sum();
        let mut hits: Vec<Ranked> = fruits
            .into_iter()
            .flat_map(|(hits, _)| hits.into_iter().map(Ranked))
            .collect();
        hits.sort_unstable();
        hits.truncate(self.k);
        Ok((hits.into_iter().map(|r| r.0).collect(), matched))
    }
}

impl SegmentCollector for SegmentBest {
    type Fruit = (Vec<KeywordHit>, usize);

    fn collect(&mut self, doc: DocId, score: Score) {
        let Some(id) = self.ids.first(doc).and_then(|id| u32::try_from(id).ok()) else {
            return;
        };
        if self.allowed.as_ref().is_some_and(|a| !a.contains(id)) {
            return;
        }
        self.matched += 1;
        let hit = Ranked(KeywordHit { id, score });
        if self.best.len() < self.k {
            self.best.push(hit);
        } else if self.best.peek().is_some_and(|worst| hit < *worst) {
            self.best.pop();
            self.best.push(hit);
        }
    }

    fn harvest(self) -> (Vec<KeywordHit>, usize) {
        (self.best.into_iter().map(|r| r.0).collect(), self.matched)
    }
}
