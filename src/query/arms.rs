//! Answers of keyword and hybrid searches, built from what each arm returned.

use uuid::Uuid;

use super::fusion::{fuse, Fusion, Ranked};
use super::{Answer, Found};
use crate::index::IndexSearch;
use crate::keyword::KeywordSearch;
use crate::types::{HitArms, InternalId, KeywordArm, VectorArm};

/// Strategy name of a keyword search.
const KEYWORD_STRATEGY: &str = "keyword_bm25";

/// The keyword arm as a ranked list; hits whose public id is unknown (deleted meanwhile) are
/// skipped.
fn keyword_ranked(
    search: &KeywordSearch,
    uuid_of: &dyn Fn(InternalId) -> Option<Uuid>,
) -> Vec<Ranked> {
    search
        .hits
        .iter()
        .filter_map(|hit| {
            Some(Ranked {
                id: hit.id,
                uuid: uuid_of(hit.id)?,
                value: hit.score,
            })
        })
        .collect()
}

/// The answer of a keyword-only search: hits carry their BM25 score.
pub(crate) fn keyword_answer(
    search: KeywordSearch,
    uuid_of: &dyn Fn(InternalId) -> Option<Uuid>,
) -> Answer {
    Answer {
        found: keyword_ranked(&search, uuid_of)
            .into_iter()
            .map(|r| Found {
                id: r.id,
                uuid: r.uuid,
                distance: None,
                score: Some(r.value),
                arms: None,
            })
            .collect(),
        strategy: KEYWORD_STRATEGY.to_string(),
        // BM25 top-k over every matching document.
        exhaustive: true,
        examined: search.matched,
        disk: None,
    }
}

/// The answer of a hybrid search: the arms fused, each hit with its fused score and arm ranks.
pub(crate) fn hybrid_answer(
    vector: IndexSearch,
    keyword: KeywordSearch,
    fusion: Fusion,
    k: usize,
    uuid_of: &dyn Fn(InternalId) -> Option<Uuid>,
) -> Answer {
    let vector_ranked: Vec<Ranked> = vector
        .neighbors
        .iter()
        .map(|n| Ranked {
            id: n.id,
            uuid: n.uuid,
            value: n.distance,
        })
        .collect();
    let keyword_ranked = keyword_ranked(&keyword, uuid_of);
    let fused = fuse(fusion, &vector_ranked, &keyword_ranked, k);
    let method = match fusion {
        Fusion::Rrf { .. } => "rrf",
        Fusion::Weighted { .. } => "weighted",
    };
    Answer {
        found: fused
            .into_iter()
            .map(|f| Found {
                id: f.id,
                uuid: f.uuid,
                distance: None,
                score: Some(f.score),
                arms: Some(HitArms {
                    vector: f.vector.map(|a| VectorArm {
                        rank: a.rank,
                        distance: a.value,
                    }),
                    keyword: f.keyword.map(|a| KeywordArm {
                        rank: a.rank,
                        score: a.value,
                    }),
                }),
            })
            .collect(),
        strategy: format!("hybrid_{method}({}+{KEYWORD_STRATEGY})", vector.strategy),
        exhaustive: vector.exhaustive,
        examined: vector.examined + keyword.matched,
        disk: None,
    }
}
