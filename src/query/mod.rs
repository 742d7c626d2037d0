//! The read path: search requests, their validation, execution against a vector index, and the
//! hydration of hits with stored fields.

mod filtered;

use serde::{Deserialize, Serialize};

use crate::config::CollectionConfig;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::{IndexSearch, SearchKnobs, VectorIndexRead};
use crate::storage::CollectionReader;
use crate::types::{validate_vector_for, Hit};

pub(crate) use filtered::resolve;

/// Largest `k` a search accepts.
pub const MAX_K: usize = 10_000;
/// Largest `ef` a search accepts.
pub const MAX_EF: usize = 100_000;

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

/// A vector search request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query vector.
    pub vector: Vec<f32>,
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
}

impl SearchRequest {
    /// A request for the `k` nearest neighbours of `vector`, returning ids and distances.
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        SearchRequest {
            vector,
            k,
            include: Include::default(),
            ef: None,
            filter: None,
        }
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
        validate_vector_for(&self.vector, config.dim, config.metric)
    }
}

/// The answer to a search: hits closest first, and how they were found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// Hits ordered by distance, ties broken by id.
    pub hits: Vec<Hit>,
    /// The strategy that served the request, e.g. `"flat_exact"`.
    pub strategy: String,
    /// True when the result is exact (every document was considered).
    pub exhaustive: bool,
    /// How many vectors had their distance computed.
    pub examined: usize,
    /// With a filter: how many documents match it (so fewer hits than `k` are explained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_matches: Option<u64>,
}

/// The index knobs a request sets.
pub(crate) fn knobs(request: &SearchRequest) -> SearchKnobs {
    SearchKnobs { ef: request.ef }
}

/// Runs a validated request against `index`.
pub(crate) fn execute(request: &SearchRequest, index: &dyn VectorIndexRead) -> IndexSearch {
    index.search(&request.vector, request.k, &knobs(request))
}

/// Turns index neighbours into hits, reading requested fields from `reader`. A hit whose
/// document was deleted after the index answered is dropped (the delete linearises first).
pub(crate) fn hydrate(
    search: IndexSearch,
    include: Include,
    reader: Option<&CollectionReader>,
) -> Result<SearchResponse> {
    let mut hits = Vec::with_capacity(search.neighbors.len());
    for neighbor in search.neighbors {
        let mut hit = Hit {
            id: neighbor.uuid,
            distance: neighbor.distance,
            metadata: None,
            text: None,
            vector: None,
        };
        if let (true, Some(reader)) = (include.any(), reader) {
            let Some(doc) = reader
                .document(neighbor.id)?
                .filter(|d| d.id == neighbor.uuid)
            else {
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
        strategy: search.strategy.to_string(),
        exhaustive: search.exhaustive,
        examined: search.examined,
        filter_matches: None,
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
