//! Fusion of the ranked lists of a hybrid search (vector arm + keyword arm) into one.
//!
//! - RRF (reciprocal rank fusion, Cormack et al. 2009): `score(d) = Σ 1 / (k + rank(d))` over the
//!   arms that returned `d`, ranks counted from 1.
//! - Weighted: each arm's values min-max normalised to `[0, 1]` within the arm's list (a
//!   distance turned so that the closest is 1; a list whose values are all equal gives 1), then
//!   `score(d) = alpha · vector(d) + (1 − alpha) · keyword(d)`, an arm that missed `d` adding 0.
//!
//! Fused hits are ordered by score (higher first), ties by document id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::InternalId;

/// Default `k` of reciprocal rank fusion.
pub const DEFAULT_RRF_K: f32 = 60.0;
/// Default weight of the vector arm in weighted fusion.
pub const DEFAULT_ALPHA: f32 = 0.5;

/// How a hybrid search combines its two arms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with this `k` (> 0).
    Rrf {
        /// Rank offset: larger values flatten the advantage of top ranks.
        k: f32,
    },
    /// Weighted sum of min-max normalised scores.
    Weighted {
        /// Weight of the vector arm in `[0, 1]`; the keyword arm gets `1 − alpha`.
        alpha: f32,
    },
}

/// One entry of an arm's ranked list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// Internal id.
    pub id: InternalId,
    /// Public id.
    pub uuid: Uuid,
    /// The arm's value: a distance for the vector arm (smaller is better), a score for the
    /// keyword arm (larger is better).
    pub value: f32,
}

/// A document's place in one arm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmRank {
    /// 1-based rank in the arm's list.
    pub rank: usize,
    /// The arm's value (vector arm: distance; keyword arm: BM25 score).
    pub value: f32,
}

/// A fused hit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fused {
    /// Internal id.
    pub id: InternalId,
    /// Public id.
    pub uuid: Uuid,
    /// The fused score (higher is better).
    pub score: f32,
    /// Where the vector arm ranked it, if it did.
    pub vector: Option<ArmRank>,
    /// Where the keyword arm ranked it, if it did.
    pub keyword: Option<ArmRank>,
}

/// Fuses `vector` (closest first) and `keyword` (best first) and keeps the best `k`.
pub fn fuse(fusion: Fusion, vector: &[Ranked], keyword: &[Ranked], k: usize) -> Vec<Fused> {
    let mut by_id: HashMap<InternalId, Fused> = HashMap::new();
    fn entry<'m>(by_id: &'m mut HashMap<InternalId, Fused>, r: &Ranked) -> &'m mut Fused {
        by_id.entry(r.id).or_insert(Fused {
            id: r.id,
            uuid: r.uuid,
            score: 0.0,
            vector: None,
            keyword: None,
        })
    }
    let vector_norm = normaliser(vector, true);
    for (i, r) in vector.iter().enumerate() {
        let fused = entry(&mut by_id, r);
        fused.vector = Some(ArmRank {
            rank: i + 1,
            value: r.value,
        });
        fused.score += match fusion {
            Fusion::Rrf { k } => 1.0 / (k + (i + 1) as f32),
            Fusion::Weighted { alpha } => alpha * vector_norm(r.value),
        };
    }
    let keyword_norm = normaliser(keyword, false);
    for (i, r) in keyword.iter().enumerate() {
        let fused = entry(&mut by_id, r);
        fused.keyword = Some(ArmRank {
            rank: i + 1,
            value: r.value,
        });
        fused.score += match fusion {
            Fusion::Rrf { k } => 1.0 / (k + (i + 1) as f32),
            Fusion::Weighted { alpha } => (1.0 - alpha) * keyword_norm(r.value),
        };
    }
    let mut fused: Vec<Fused> = by_id.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.uuid.cmp(&b.uuid)));
    fused.truncate(k);
    fused
}

/// Maps an arm's values to `[0, 1]`, best = 1 (`lower_is_better` for distances).
fn normaliser(list: &[Ranked], lower_is_better: bool) -> impl Fn(f32) -> f32 {
    let (min, max) = list
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r.value), hi.max(r.value))
        });
    move |v: f32| {
        let span = max - min;
        if span > 0.0 && lower_is_better {
            (max - v) / span
        } else if span > 0.0 {
            (v - min) / span
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(ids: &[(u32, f32)]) -> Vec<Ranked> {
        ids.iter()
            .map(|&(id, value)| Ranked {
                id,
                uuid: Uuid::from_u128(u128::from(id)),
                value,
            })
            .collect()
    }

    #[test]
    fn rrf_matches_a_hand_computed_example() {
        // vector: 1, 2, 3; keyword: 3, 4, 1 (k = 60).
        // 1: 1/61 + 1/63; 3: 1/63 + 1/61; 2: 1/62; 4: 1/62.
        let vector = ranked(&[(1, 0.1), (2, 0.2), (3, 0.3)]);
        let keyword = ranked(&[(3, 9.0), (4, 5.0), (1, 1.0)]);
        let fused = fuse(Fusion::Rrf { k: 60.0 }, &vector, &keyword, 10);
        let ids: Vec<u32> = fused.iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![1, 3, 2, 4]);
        let both = 1.0 / 61.0 + 1.0 / 63.0;
        assert_eq!(fused[0].score, 1.0f32 / 61.0 + 1.0f32 / 63.0);
        assert!((fused[1].score - both).abs() < 1e-7);
        assert_eq!(fused[2].score, 1.0 / 62.0);
        assert_eq!(
            fused[0].vector,
            Some(ArmRank {
                rank: 1,
                value: 0.1
            })
        );
        assert_eq!(
            fused[0].keyword,
            Some(ArmRank {
                rank: 3,
                value: 1.0
            })
        );
        assert_eq!(fused[3].vector, None);
        assert_eq!(fuse(Fusion::Rrf { k: 60.0 }, &vector, &keyword, 2).len(), 2);
    }

    #[test]
    fn weighted_fusion_normalises_each_arm() {
        // vector distances 0.0, 0.5, 1.0 → 1, 0.5, 0; keyword scores 10, 6, 2 → 1, 0.5, 0.
        let vector = ranked(&[(1, 0.0), (2, 0.5), (3, 1.0)]);
        let keyword = ranked(&[(3, 10.0), (2, 6.0), (4, 2.0)]);
        let fused = fuse(Fusion::Weighted { alpha: 0.75 }, &vector, &keyword, 10);
        let scores: Vec<(u32, f32)> = fused.iter().map(|f| (f.id, f.score)).collect();
        // 1: 0.75; 2: 0.375 + 0.125 = 0.5; 3: 0 + 0.25; 4: 0.
        assert_eq!(scores, vec![(1, 0.75), (2, 0.5), (3, 0.25), (4, 0.0)]);
        let only_keyword = fuse(Fusion::Weighted { alpha: 0.0 }, &vector, &keyword, 1);
        assert_eq!(only_keyword[0].id, 3);
    }

    #[test]
    fn a_single_hit_or_equal_values_normalise_to_one() {
        let vector = ranked(&[(7, 0.3)]);
        let fused = fuse(Fusion::Weighted { alpha: 0.5 }, &vector, &[], 5);
        assert_eq!(fused[0].score, 0.5);
        assert!(fuse(Fusion::Rrf { k: 60.0 }, &[], &[], 5).is_empty());
    }
}
