//! Core value types: ids, metrics, documents, hits, and vector validation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The public identity of a document.
pub type DocId = Uuid;
/// Dense per-collection id assigned by QuiverDB; what indexes store. Never reused.
pub type InternalId = u32;
/// A change-log sequence number (per collection, starts at 1).
pub type Seq = u64;

/// Largest vector dimension a collection accepts.
pub const MAX_DIM: usize = 65_536;

/// How vectors are compared. Distances follow one convention: smaller is closer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `1 − cos(a, b)`, in `[0, 2]`.
    Cosine,
    /// Squared Euclidean distance.
    L2,
    /// `−a·b` (negated inner product).
    Dot,
}

impl Metric {
    /// The metric's lower-case name as used by the CLI and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Dot => "dot",
        }
    }

    /// Stable one-byte code used in file headers.
    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 1,
            Metric::L2 => 2,
            Metric::Dot => 3,
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "l2" | "euclidean" => Ok(Metric::L2),
            "dot" | "ip" => Ok(Metric::Dot),
            other => Err(Error::InvalidArgument(format!(
                "unknown metric {other:?} (expected cosine, l2 or dot)"
            ))),
        }
    }
}

/// A document as the caller submits it. `id` is generated (UUID v7) when absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    /// The document's id; `None` asks QuiverDB for a fresh UUID v7.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The embedding; must have the collection's dimension and finite values.
    pub vector: Vec<f32>,
    /// A JSON object (`null` or absent means empty).
    #[serde(default)]
    pub metadata: Value,
    /// Optional text (indexed for keyword search when the collection says so).
    #[serde(default)]
    pub text: Option<String>,
}

impl DocumentInput {
    /// A document with this vector, no id, empty metadata and no text.
    pub fn new(vector: Vec<f32>) -> Self {
        DocumentInput {
            vector,
            ..Default::default()
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the metadata (must be a JSON object).
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
}

/// A stored document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The document's id.
    pub id: Uuid,
    /// The vector exactly as it was written.
    pub vector: Vec<f32>,
    /// The metadata object.
    pub metadata: Map<String, Value>,
    /// The text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Document {
    /// A borrowed view of this document, as derived indexes receive it.
    pub fn view(&self) -> DocView<'_> {
        DocView {
            id: self.id,
            vector: &self.vector,
            metadata: &self.metadata,
            text: self.text.as_deref(),
        }
    }
}

/// One search result. A vector search gives `distance`, a keyword search `score`, a hybrid
/// search `score` (fused) and `arms`. Stored fields are filled when the request includes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The document's id.
    pub id: Uuid,
    /// Vector search: distance to the query; smaller is closer (see [`Metric`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    /// Keyword search: BM25 score; hybrid search: fused score. Higher is better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// Hybrid search: where each arm ranked the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arms: Option<HitArms>,
    /// The metadata, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The text, when requested (and present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The vector, when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

/// Where the arms of a hybrid search ranked a hit (an arm that did not return it is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HitArms {
    /// The vector arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<VectorArm>,
    /// The keyword arm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<KeywordArm>,
}

/// A hit's place in the vector arm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorArm {
    /// 1-based rank.
    pub rank: usize,
    /// Distance to the query vector.
    pub distance: f32,
}

/// A hit's place in the keyword arm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeywordArm {
    /// 1-based rank.
    pub rank: usize,
    /// BM25 score.
    pub score: f32,
}

/// What a change-log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// The document was inserted or replaced (vector, metadata or text changed).
    Upsert,
    /// The document was deleted.
    Delete,
}

/// One change-log entry: after `seq`, document `id` was upserted or deleted. Indexes read the
/// document's state from the store, so replaying a change is idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Sequence number, increasing by one per change within a collection.
    pub seq: Seq,
    /// What happened.
    pub op: ChangeOp,
    /// The document's internal id.
    pub id: InternalId,
}

/// What a derived index sees of a document when a change is applied: no storage types.
#[derive(Clone, Copy, Debug)]
pub struct DocView<'a> {
    /// The document's public id.
    pub id: Uuid,
    /// The vector as stored.
    pub vector: &'a [f32],
    /// The metadata object.
    pub metadata: &'a Map<String, Value>,
    /// The text, if any.
    pub text: Option<&'a str>,
}

/// Checks that `vector` is a valid vector of dimension `dim` (non-empty, right length, finite).
pub fn validate_vector(vector: &[f32], dim: usize) -> Result<()> {
    if vector.is_empty() {
        return Err(Error::InvalidVector("vector is empty".into()));
    }
    if vector.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: vector.len(),
        });
    }
    if let Some(pos) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidVector(format!(
            "component {pos} is {} (NaN and infinity are not allowed)",
            vector[pos]
        )));
    }
    Ok(())
}

/// Largest squared L2 norm a vector may have: with both norms below `sqrt(f32::MAX / 8)`, every
/// dot product and squared distance between two vectors stays finite in `f32`.
pub const MAX_SQUARED_NORM: f64 = f32::MAX as f64 / 8.0;
/// Deepest nesting of metadata objects and arrays accepted (JSON parsers stop at 128).
pub const MAX_METADATA_DEPTH: usize = 64;

/// Checks a vector for `metric`: valid, not so large that distances overflow `f32`, and for
/// cosine not the zero vector (it has no direction).
pub fn validate_vector_for(vector: &[f32], dim: usize, metric: Metric) -> Result<()> {
    validate_vector(vector, dim)?;
    let squared_norm: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if squared_norm > MAX_SQUARED_NORM {
        return Err(Error::InvalidVector(format!(
            "vector norm {:.3e} is too large (at most {:.3e}): distances would overflow",
            squared_norm.sqrt(),
            MAX_SQUARED_NORM.sqrt()
        )));
    }
    if metric == Metric::Cosine && vector.iter().all(|&x| x == 0.0) {
        return Err(Error::InvalidVector(
            "the zero vector has no direction under the cosine metric".into(),
        ));
    }
    Ok(())
}

/// Nesting depth of a JSON value (a scalar is 0, `{}` and `[]` are 1).
pub fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks that metadata (or a patch) is an object (or `null`) nested at most
/// [`MAX_METADATA_DEPTH`] deep.
pub fn validate_metadata(value: &Value) -> Result<()> {
    if !(value.is_null() || value.is_object()) {
        return Err(Error::InvalidMetadata(format!(
            "metadata must be a JSON object, got {}",
            json_type_name(value)
        )));
    }
    let depth = json_depth(value);
    if depth > MAX_METADATA_DEPTH {
        return Err(Error::InvalidMetadata(format!(
            "metadata is nested {depth} deep, at most {MAX_METADATA_DEPTH} is allowed"
        )));
    }
    Ok(())
}

/// Turns a metadata value into an object: `null` becomes `{}`, anything but an object is an error.
pub fn metadata_object(value: Value) -> Result<Map<String, Value>> {
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map),
        other => Err(Error::InvalidMetadata(format!(
            "metadata must be a JSON object, got {}",
            json_type_name(&other)
        ))),
    }
}

/// Applies a JSON merge patch (RFC 7396) to `target`: keys with `null` are removed, objects merge
/// recursively, anything else replaces.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub_patch) => {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(sub_target) = entry {
                    merge_patch(sub_target, sub_patch);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vector_validation_names_the_problem() {
        assert!(matches!(
            validate_vector(&[], 3),
            Err(Error::InvalidVector(_))
        ));
        assert!(matches!(
            validate_vector(&[1.0, 2.0], 3),
            Err(Error::DimensionMismatch {
                expected: 3,
                got: 2
            })
        ));
        assert!(matches!(
            validate_vector(&[1.0, f32::NAN, 2.0], 3),
            Err(Error::InvalidVector(_))
        ));
        assert!(matches!(
            validate_vector(&[1.0, f32::INFINITY, 2.0], 3),
            Err(Error::InvalidVector(_))
        ));
        assert!(validate_vector(&[0.0, 0.0, 0.0], 3).is_ok());
        assert!(matches!(
            validate_vector_for(&[0.0, 0.0, 0.0], 3, Metric::Cosine),
            Err(Error::InvalidVector(_))
        ));
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(metadata_object(json!(null)).unwrap().is_empty());
        assert_eq!(metadata_object(json!({"a": 1})).unwrap()["a"], json!(1));
        for bad in [json!(1), json!("x"), json!([1]), json!(true)] {
            assert!(matches!(
                metadata_object(bad),
                Err(Error::InvalidMetadata(_))
            ));
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = metadata_object(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})).unwrap();
        let patch = metadata_object(
            json!({"a": null, "b": {"c": null, "x": 9}, "e": {"f": 1}, "g": "new"}),
        )
        .unwrap();
        merge_patch(&mut target, &patch);
        assert_eq!(
            Value::Object(target),
            json!({"b": {"d": 3, "x": 9}, "e": {"f": 1}, "g": "new"})
        );
    }

    #[test]
    fn huge_vectors_and_deep_metadata_are_refused() {
        assert!(validate_vector_for(&[1e18, 1e18], 2, Metric::Dot).is_ok());
        assert!(matches!(
            validate_vector_for(&[1e19, 1e19], 2, Metric::Dot),
            Err(Error::InvalidVector(_))
        ));
        let mut deep = json!(1);
        for _ in 0..MAX_METADATA_DEPTH {
            deep = json!({ "a": deep });
        }
        assert!(validate_metadata(&deep).is_ok());
        assert!(matches!(
            validate_metadata(&json!({ "a": deep })),
            Err(Error::InvalidMetadata(_))
        ));
        assert!(validate_metadata(&json!([1])).is_err());
    }

    #[test]
    fn metric_parses_names() {
        assert_eq!("COSINE".parse::<Metric>().unwrap(), Metric::Cosine);
        assert_eq!("l2".parse::<Metric>().unwrap(), Metric::L2);
        assert_eq!("dot".parse::<Metric>().unwrap(), Metric::Dot);
        assert!("hamming".parse::<Metric>().is_err());
    }
}
