//! Metadata filters: the Mongo-style JSON language of `docs/filters.md`, parsed into a checked
//! tree ([`Filter`]), a builder for Rust callers, and the evaluator on a document's metadata.
//!
//! The payload indexes (`crate::payload`) answer the same filters from bitmaps; the evaluator here
//! is the definition they must agree with.

mod eval;
mod parse;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub(crate) use eval::values_of;

/// Deepest nesting of `$and` / `$or` / `$not` and nested conditions a filter may have.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A checked filter over document metadata. Build one with [`Filter::field`], [`Filter::and`],
/// [`Filter::or`], [`Filter::not`], or parse the JSON language with [`Filter::from_json`].
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Every filter holds (`{}` and objects with several entries; empty = match all).
    And(Vec<Filter>),
    /// At least one filter holds (never empty).
    Or(Vec<Filter>),
    /// The filter does not hold.
    Not(Box<Filter>),
    /// A condition on one field.
    Field {
        /// Where the field is.
        path: FieldPath,
        /// What must hold of it.
        condition: Condition,
    },
}

/// A condition on the values of one field (see `docs/filters.md` for the exact semantics).
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Some value equals the operand (a scalar), or the whole value equals it (array, object).
    Eq(Value),
    /// `Eq` does not hold.
    Ne(Value),
    /// Some value is greater than the operand (a number or a string).
    Gt(Value),
    /// Some value is greater than or equal to the operand.
    Gte(Value),
    /// Some value is less than the operand.
    Lt(Value),
    /// Some value is less than or equal to the operand.
    Lte(Value),
    /// `Eq` holds for one of the scalars.
    In(Vec<Value>),
    /// `In` does not hold.
    Nin(Vec<Value>),
    /// The path resolves (`true`) or does not (`false`).
    Exists(bool),
    /// An array field holds the scalar, or a string field contains the string.
    Contains(Value),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// Every condition holds (an operator object with several operators).
    All(Vec<Condition>),
}

/// A dotted path into nested metadata objects, e.g. `author.name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
}

impl FieldPath {
    /// Checks and wraps a dotted path: non-empty segments separated by `.`.
    pub fn parse(text: &str) -> Result<FieldPath> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(Error::InvalidFilter {
                location: text.to_string(),
                message: "a field path needs non-empty segments separated by '.'".into(),
            });
        }
        Ok(FieldPath {
            text: text.to_string(),
        })
    }

    /// A path known to be valid (a declared payload field, checked by the collection config).
    pub(crate) fn trusted(text: &str) -> FieldPath {
        FieldPath {
            text: text.to_string(),
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value the path resolves to in `metadata`, if it does.
    pub fn resolve<'m>(&self, metadata: &'m Map<String, Value>) -> Option<&'m Value> {
        let mut segments = self.text.split('.');
        let mut value = metadata.get(segments.next()?)?;
        for segment in segments {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Starts a condition on one field; finish it with an operator, e.g.
/// `Filter::field("year").gte(2020)`.
#[derive(Clone, Debug)]
pub struct FieldBuilder {
    path: String,
}

impl FieldBuilder {
    fn build(self, condition: Condition) -> Filter {
        Filter::Field {
            // An invalid path still builds; it matches nothing it cannot resolve. Callers who
            // need the check get it from `FieldPath::parse` or `Filter::from_json`.
            path: FieldPath { text: self.path },
            condition,
        }
    }

    /// Some value equals `value` (or the whole value, for arrays and objects).
    pub fn eq(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Eq(value.into()))
    }
    /// `eq` does not hold.
    pub fn ne(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Ne(value.into()))
    }
    /// Some value is greater than `value`.
    pub fn gt(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Gt(value.into()))
    }
    /// Some value is greater than or equal to `value`.
    pub fn gte(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Gte(value.into()))
    }
    /// Some value is less than `value`.
    pub fn lt(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Lt(value.into()))
    }
    /// Some value is less than or equal to `value`.
    pub fn lte(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Lte(value.into()))
    }
    /// Some value equals one of `values`.
    pub fn is_in<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.build(Condition::In(values.into_iter().map(Into::into).collect()))
    }
    /// `is_in` does not hold.
    pub fn nin<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.build(Condition::Nin(values.into_iter().map(Into::into).collect()))
    }
    /// The field exists (`true`) or not (`false`).
    pub fn exists(self, exists: bool) -> Filter {
        self.build(Condition::Exists(exists))
    }
    /// An array field holds `value`, or a string field contains it.
    pub fn contains(self, value: impl Into<Value>) -> Filter {
        self.build(Condition::Contains(value.into()))
    }
}

impl Filter {
    /// The filter that matches every document.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// Starts a condition on the field at dotted `path`.
    pub fn field(path: impl Into<String>) -> FieldBuilder {
        FieldBuilder { path: path.into() }
    }

    /// Every filter holds.
    pub fn and(filters: impl IntoIterator<Item = Filter>) -> Filter {
        Filter::And(filters.into_iter().collect())
    }

    /// At least one filter holds (an empty list matches nothing).
    pub fn or(filters: impl IntoIterator<Item = Filter>) -> Filter {
        Filter::Or(filters.into_iter().collect())
    }

    /// `filter` does not hold.
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: Filter) -> Filter {
        Filter::Not(Box::new(filter))
    }

    /// Parses and checks the JSON filter language; errors name the offending location.
    pub fn from_json(json: &Value) -> Result<Filter> {
        parse::parse_filter(json)
    }

    /// The filter in the JSON language (parses back to an equal filter).
    pub fn to_json(&self) -> Value {
        parse::to_json(self)
    }

    /// Whether a document with this metadata matches.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        eval::matches(self, metadata)
    }

    /// Checks a filter made with the builder as the parser would (paths, operand types,
    /// depth); parsed filters always pass.
    pub fn validate(&self) -> Result<()> {
        parse::parse_filter(&self.to_json()).map(|_| ())
    }

    /// Whether the filter matches every document (`{}`).
    pub fn is_match_all(&self) -> bool {
        matches!(self, Filter::And(filters) if filters.is_empty())
    }
}

impl std::str::FromStr for Filter {
    type Err = Error;
    /// Parses a filter from JSON text.
    fn from_str(s: &str) -> Result<Filter> {
        let json: Value = serde_json::from_str(s).map_err(|e| Error::InvalidFilter {
            location: "$".into(),
            message: format!("not valid JSON: {e}"),
        })?;
        Filter::from_json(&json)
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Filter, D::Error> {
        let json = Value::deserialize(deserializer)?;
        Filter::from_json(&json).map_err(serde::de::Error::custom)
    }
}
