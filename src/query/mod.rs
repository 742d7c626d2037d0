//! The read path: search requests, their validation, execution against a vector index, and the
//! hydration of hits with stored fields.

mod arms;
mod filtered;
pub mod fusion;

use serde::{Deserialize, Serialize};

use crate::config::CollectionConfig;
use crate::error::{Error, Result};
use crate::filter::Filter;
use uuid::Uuid;

use crate::index::diskann::disk::DiskSearchStats;
use crate::index::{IndexSearch, SearchKnobs};
use crate::storage::CollectionReader;
use crate::types::{validate_vector_for, Hit, HitArms, InternalId};

pub(crate) use arms::{hybrid_answer, keyword_answer};
pub(crate) use filtered::resolve;
pub use fusion::{ArmRank, Fusion};

/// Largest `k` a search accepts.
pub const MAX_K: usize = 10_000;
/// Largest `ef` a search accepts.
pub const MAX_EF: usize = 100_000;
/// Largest `nprobe` a search accepts.
pub const MAX_NPROBE: usize = 65_536;
/// Largest DiskANN `search_l` a search accepts.
pub const MAX_SEARCH_L: usize = 4096;
/// Largest DiskANN beam width a search accepts.
pub const MAX_BEAM: usize = 64;
/// Largest `refine` factor a search accepts.
pub const MAX_REFINE: usize = 100;
/// Longest text query accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// Which stored fields a hit carries besides its id and distance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Include {
    /// Include the metadata object.
    pub metadata: bool,
    /// Include the text.
    pub text: bool,
    /// Include the vector.
    pub vector: bool,
}

impl Include {
    /// Whether any stored field is requested (hits then need a read of the store).
    pub fn any(self) -> bool {
        self.metadata || self.text || self.vector
    }
}

impl TryFrom<Vec<String>> for Include {
    type Error = Error;
    fn try_from(fields: Vec<String>) -> Result<Self> {
        let mut include = Include::default();
        for field in fields {
            match field.trim() {
                "metadata" => include.metadata = true,
                "text" => include.text = true,
                "vector" => include.vector = true,
                "" => {}
                other => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown include field {other:?} (expected metadata, text or vector)"
                    )))
                }
            }
        }
        Ok(include)
    }
}

impl From<Include> for Vec<String> {
    fn from(include: Include) -> Vec<String> {
        [
            (include.metadata, "metadata"),
            (include.text, "text"),
            (include.vector, "vector"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

impl std::str::FromStr for Include {
    type Err = Error;
    /// Parses a comma-separated list, e.g. `metadata,text`.
    fn from_str(s: &str) -> Result<Self> {
        Include::try_from(s.split(',').map(str::to_string).collect::<Vec<_>>())
    }
}

fn default_k() -> usize {
    10
}

/// How the JSON of a request names a fusion method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionKind {
    /// Reciprocal rank fusion (the default).
    Rrf,
    /// Weighted sum of normalised scores (`alpha` weighs the vector arm).
    Weighted,
}

impl std::str::FromStr for FusionKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rrf" => Ok(FusionKind::Rrf),
            "weighted" => Ok(FusionKind::Weighted),
            other => Err(Error::InvalidArgument(format!(
                "unknown fusion {other:?} (expected rrf or weighted)"
            ))),
        }
    }
}

/// A search request: a vector (nearest neighbours), a text (BM25 keyword search), or both
/// (hybrid search, the two arms fused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// The keyword query (collections created with a text index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// How many hits to return, `1..=10000` (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Stored fields to return with each hit.
    #[serde(default)]
    pub include: Include,
    /// HNSW: size of the candidate list (higher = better recall, slower); at least `k` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
    /// Only documents whose metadata matches this filter are returned (`docs/filters.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// IVF-PQ: inverted lists probed (higher = better recall, slower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// IVF-PQ: candidates re-ranked with full vectors per hit (default 4; 0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<usize>,
    /// DiskANN: candidate-list size of the beam search, `1..=4096` (default: the index's `l`;
    /// at least `k` is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_l: Option<usize>,
    /// DiskANN: beam width, node reads per hop, `1..=64` (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beam: Option<usize>,
    /// Hybrid: how the arms are fused (default RRF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionKind>,
    /// Hybrid, weighted fusion: weight of the vector arm in `[0, 1]` (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// Hybrid, RRF: the rank offset `k` (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrf_k: Option<f32>,
    /// Hybrid: hits taken from each arm before fusion (default `max(2k, 50)`, at least `k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
}

impl SearchRequest {
    /// A request for the `k` nearest neighbours of `vector`, returning ids and distances.
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        SearchRequest {
            vector: Some(vector),
            ..SearchRequest::empty(k)
        }
    }

    /// A keyword request: the `k` best documents for `text` by BM25, returning ids and scores.
    pub fn text(text: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            text: Some(text.into()),
            ..SearchRequest::empty(k)
        }
    }

    /// A hybrid request: `vector` and `text`, fused (RRF unless [`SearchRequest::with_fusion`]).
    pub fn hybrid(vector: Vec<f32>, text: impl Into<String>, k: usize) -> Self {
        SearchRequest {
            vector: Some(vector),
            text: Some(text.into()),
            ..SearchRequest::empty(k)
        }
    }

    fn empty(k: usize) -> Self {
        SearchRequest {
            vector: None,
            text: None,
            k,
            include: Include::default(),
            ef: None,
            filter: None,
            nprobe: None,
            refine: None,
            search_l: None,
            beam: None,
            fusion: None,
            alpha: None,
            rrf_k: None,
            candidates: None,
        }
    }

    /// Sets how a hybrid search fuses its arms.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        match fusion {
            Fusion::Rrf { k } => {
                self.fusion = Some(FusionKind::Rrf);
                self.rrf_k = Some(k);
                self.alpha = None;
            }
            Fusion::Weighted { alpha } => {
                self.fusion = Some(FusionKind::Weighted);
                self.alpha = Some(alpha);
                self.rrf_k = None;
            }
        }
        self
    }

    /// The fusion a hybrid search uses (defaults applied).
    pub fn fusion(&self) -> Fusion {
        match (self.fusion, self.alpha) {
            (Some(FusionKind::Weighted), alpha) | (None, alpha @ Some(_)) => Fusion::Weighted {
                alpha: alpha.unwrap_or(fusion::DEFAULT_ALPHA),
            },
            (Some(FusionKind::Rrf) | None, _) => Fusion::Rrf {
                k: self.rrf_k.unwrap_or(fusion::DEFAULT_RRF_K),
            },
        }
    }

    /// Hits each arm of a hybrid search contributes before fusion.
    pub fn arm_candidates(&self) -> usize {
        self.candidates
            .unwrap_or((2 * self.k).max(50))
            .clamp(self.k, MAX_K)
    }

    /// Restricts the search to documents matching `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the stored fields returned with each hit.
    pub fn with_include(mut self, include: Include) -> Self {
        self.include = include;
        self
    }

    /// Sets the IVF-PQ lists probed.
    pub fn with_nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = Some(nprobe);
        self
    }

    /// Sets the IVF-PQ re-ranking factor (0: no re-ranking).
    pub fn with_refine(mut self, refine: usize) -> Self {
        self.refine = Some(refine);
        self
    }

    /// Sets the HNSW candidate-list size.
    pub fn with_ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    /// Checks the request against a collection's configuration.
    pub fn validate(&self, config: &CollectionConfig) -> Result<()> {
        if self.k == 0 || self.k > MAX_K {
            return Err(Error::InvalidArgument(format!(
                "k must be in 1..={MAX_K}, got {}",
                self.k
            )));
        }
        if let Some(ef) = self.ef {
            if ef == 0 || ef > MAX_EF {
                return Err(Error::InvalidArgument(format!(
                    "ef must be in 1..={MAX_EF}, got {ef}"
                )));
            }
        }
        if let Some(filter) = &self.filter {
            filter.validate()?;
        }
        if self.nprobe.is_some_and(|n| n == 0 || n > MAX_NPROBE) {
            return Err(Error::InvalidArgument(format!(
                "nprobe must be in 1..={MAX_NPROBE}, got {}",
                self.nprobe.unwrap_or_default()
            )));
        }
        if self.search_l.is_some_and(|l| l == 0 || l > MAX_SEARCH_L) {
            return Err(Error::InvalidArgument(format!(
                "search_l must be in 1..={MAX_SEARCH_L}, got {}",
                self.search_l.unwrap_or_default()
            )));
        }
        if self.beam.is_some_and(|w| w == 0 || w > MAX_BEAM) {
            return Err(Error::InvalidArgument(format!(
                "beam must be in 1..={MAX_BEAM}, got {}",
                self.beam.unwrap_or_default()
            )));
        }
        if self.refine.is_some_and(|r| r > MAX_REFINE) {
            return Err(Error::InvalidArgument(format!(
                "refine must be in 0..={MAX_REFINE}, got {}",
                self.refine.unwrap_or_default()
            )));
        }
        if let Some(text) = &self.text {
            if !config.text_indexed {
                return Err(Error::InvalidArgument(
                    "this collection has no text index (create it with a text index to search by text)"
                        .into(),
                ));
            }
            if text.len() > MAX_TEXT_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "text query of {} bytes, at most {MAX_TEXT_BYTES}",
                    text.len()
                )));
            }
        }
        self.validate_fusion()?;
        match &self.vector {
            Some(vector) => validate_vector_for(vector, config.dim, config.metric),
            None if self.text.is_some() => Ok(()),
            None => Err(Error::InvalidArgument(
                "a search needs a vector, a text, or both".into(),
            )),
        }
    }

    fn validate_fusion(&self) -> Result<()> {
        let tuned = self.fusion.is_some()
            || self.alpha.is_some()
            || self.rrf_k.is_some()
            || self.candidates.is_some();
        if tuned && (self.vector.is_none() || self.text.is_none()) {
            return Err(Error::InvalidArgument(
                "fusion, alpha, rrf_k and candidates apply to hybrid searches (a vector and a text)"
                    .into(),
            ));
        }
        if let Some(alpha) = self.alpha {
            if !(0.0..=1.0).contains(&alpha) {
                return Err(Error::InvalidArgument(format!(
                    "alpha must be in [0, 1], got {alpha}"
                )));
            }
            if self.fusion == Some(FusionKind::Rrf) {
                return Err(Error::InvalidArgument(
                    "alpha applies to weighted fusion, not rrf".into(),
                ));
            }
        }
        if let Some(rrf_k) = self.rrf_k {
            if !(rrf_k.is_finite() && rrf_k > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "rrf_k must be a positive number, got {rrf_k}"
                )));
            }
            if self.fusion == Some(FusionKind::Weighted) || self.alpha.is_some() {
                return Err(Error::InvalidArgument(
                    "rrf_k applies to rrf fusion, not weighted".into(),
                ));
            }
        }
        if let Some(candidates) = self.candidates {
            if candidates == 0 || candidates > MAX_K {
                return Err(Error::InvalidArgument(format!(
                    "candidates must be in 1..={MAX_K}, got {candidates}"
                )));
            }
        }
        Ok(())
    }
}

/// The answer to a search: best hits first, and how they were found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// Hits, best first: by distance for a vector search (ties: lower UUID first), by BM25
    /// score for a keyword search (ties: the earlier inserted document first), by fused score
    /// for a hybrid search (ties: lower UUID first).
    pub hits: Vec<Hit>,
    /// The strategy that served the request, e.g. `"flat_exact"`.
    pub strategy: String,
    /// True when the result is exact (every document was considered).
    pub exhaustive: bool,
    /// How many vectors had their distance computed (plus, with a text, how many documents
    /// matched a query term).
    pub examined: usize,
    /// With a filter: how many documents match it (so fewer hits than `k` are explained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_matches: Option<u64>,
    /// DiskANN: hops, blocks read, cache hits and microseconds of the vector search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSearchStats>,
}

/// The index knobs a request sets.
pub(crate) fn knobs(request: &SearchRequest) -> SearchKnobs {
    SearchKnobs {
        ef: request.ef,
        nprobe: request.nprobe,
        refine: request.refine,
        search_l: request.search_l,
        beam: request.beam,
    }
}

/// A hit an index found, before stored fields are read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Found {
    pub id: InternalId,
    pub uuid: Uuid,
    pub distance: Option<f32>,
    pub score: Option<f32>,
    pub arms: Option<HitArms>,
}

/// What the indexes answered, before hydration.
#[derive(Clone, Debug, Default)]
pub(crate) struct Answer {
    pub found: Vec<Found>,
    pub strategy: String,
    pub exhaustive: bool,
    pub examined: usize,
    pub disk: Option<DiskSearchStats>,
}

impl From<IndexSearch> for Answer {
    fn from(search: IndexSearch) -> Answer {
        Answer {
            found: search
                .neighbors
                .into_iter()
                .map(|n| Found {
                    id: n.id,
                    uuid: n.uuid,
                    distance: Some(n.distance),
                    score: None,
                    arms: None,
                })
                .collect(),
            strategy: search.strategy.to_string(),
            exhaustive: search.exhaustive,
            examined: search.examined,
            disk: search.disk,
        }
    }
}

/// Turns found hits into response hits, reading requested fields from `reader`. A hit whose
/// document was deleted after the index answered is dropped (the delete linearises first).
pub(crate) fn hydrate(
    answer: Answer,
    include: Include,
    reader: Option<&CollectionReader>,
) -> Result<SearchResponse> {
    let mut hits = Vec::with_capacity(answer.found.len());
    for found in answer.found {
        let mut hit = Hit {
            id: found.uuid,
            distance: found.distance,
            score: found.score,
            arms: found.arms,
            metadata: None,
            text: None,
            vector: None,
        };
        if let (true, Some(reader)) = (include.any(), reader) {
            let Some(doc) = reader.document(found.id)?.filter(|d| d.id == found.uuid) else {
                continue;
            };
            hit.metadata = include.metadata.then_some(doc.metadata);
            hit.text = if include.text { doc.text } else { None };
            hit.vector = include.vector.then_some(doc.vector);
        }
        hits.push(hit);
    }
    Ok(SearchResponse {
        hits,
        strategy: answer.strategy,
        exhaustive: answer.exhaustive,
        examined: answer.examined,
        filter_matches: None,
        disk: answer.disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;

    #[test]
    fn include_parses_and_rejects_unknown_fields() {
        let inc: Include = "metadata,vector".parse().unwrap();
        assert!(inc.metadata && inc.vector && !inc.text);
        assert!("metadata,colour".parse::<Include>().is_err());
        let req: SearchRequest =
            serde_json::from_str(r#"{"vector":[1,2],"include":["text"]}"#).unwrap();
        assert_eq!(req.k, 10);
        assert!(req.include.text);
        assert!(serde_json::from_str::<SearchRequest>(r#"{"vector":[1],"kk":3}"#).is_err());
    }

    #[test]
    fn k_and_vector_are_validated() {
        let config = CollectionConfig::new(2, Metric::Cosine);
        assert!(SearchRequest::new(vec![1.0, 0.0], 1)
            .validate(&config)
            .is_ok());
        assert!(SearchRequest::new(vec![1.0, 0.0], 0)
            .validate(&config)
            .is_err());
        assert!(SearchRequest::new(vec![1.0, 0.0], MAX_K + 1)
            .validate(&config)
            .is_err());
        assert!(matches!(
            SearchRequest::new(vec![1.0], 1).validate(&config),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(SearchRequest::new(vec![0.0, 0.0], 1)
            .validate(&config)
            .is_err());
    }
}
