//! The in-memory side of payload indexes: per field, a roaring bitmap of documents per value,
//! the documents that have the field and those whose values the index cannot represent; and
//! the translation of a filter into a candidate set.

use std::collections::BTreeMap;
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};
use serde_json::{Number, Value};

use super::keys::{
    encode_float, encode_integer, encode_value, exact_float, PayloadSchema, MAX_EXACT_INTEGER,
    TAG_EXISTS, TAG_UNCOVERED, TAG_VALUE,
};
use crate::config::PayloadKind;
use crate::filter::{Condition, FieldPath, Filter};
use crate::types::InternalId;

/// What the payload indexes know of the documents a filter matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Candidates {
    /// Exactly these documents match.
    Exact(RoaringBitmap),
    /// Every match is among these; each must still be checked on its metadata.
    Superset(RoaringBitmap),
    /// The indexes cannot narrow the filter down: every document must be checked.
    Unknown,
}

impl Candidates {
    fn and(self, other: Candidates) -> Candidates {
        use Candidates::*;
        match (self, other) {
            (Exact(a), Exact(b)) => Exact(a & b),
            (Exact(a) | Superset(a), Exact(b) | Superset(b)) => Superset(a & b),
            (Exact(a) | Superset(a), Unknown) | (Unknown, Exact(a) | Superset(a)) => Superset(a),
            (Unknown, Unknown) => Unknown,
        }
    }

    fn or(self, other: Candidates) -> Candidates {
        use Candidates::*;
        match (self, other) {
            (Exact(a), Exact(b)) => Exact(a | b),
            (Exact(a) | Superset(a), Exact(b) | Superset(b)) => Superset(a | b),
            _ => Unknown,
        }
    }

    fn negate(self, live: &RoaringBitmap) -> Candidates {
        match self {
            Candidates::Exact(a) => Candidates::Exact(live - a),
            _ => Candidates::Unknown,
        }
    }
}

/// One payload index: a field, its value kind, and its bitmaps.
#[derive(Clone, Debug, PartialEq)]
struct FieldIndex {
    path: FieldPath,
    kind: PayloadKind,
    /// Encoded value → documents having it.
    values: BTreeMap<Vec<u8>, RoaringBitmap>,
    /// Documents where the path resolves.
    exists: RoaringBitmap,
    /// Documents with a value the index cannot represent.
    uncovered: RoaringBitmap,
}

impl FieldIndex {
    fn new(path: FieldPath, kind: PayloadKind) -> FieldIndex {
        FieldIndex {
            path,
            kind,
            values: BTreeMap::new(),
            exists: RoaringBitmap::new(),
            uncovered: RoaringBitmap::new(),
        }
    }

    fn apply_row(&mut self, key: &[u8], id: InternalId, added: bool) {
        let set = match key.split_first() {
            Some((&TAG_EXISTS, _)) => &mut self.exists,
            Some((&TAG_UNCOVERED, _)) => &mut self.uncovered,
            Some((&TAG_VALUE, value)) => {
                if !added {
                    if let Some(set) = self.values.get_mut(value) {
                        set.remove(id);
                        if set.is_empty() {
                            self.values.remove(value);
                        }
                    }
                    return;
                }
                self.values.entry(value.to_vec()).or_default()
            }
            _ => return,
        };
        if added {
            set.insert(id);
        } else {
            set.remove(id);
        }
    }

    /// The answer to `condition` on this field.
    fn condition(&self, condition: &Condition, live: &RoaringBitmap) -> Candidates {
        match condition {
            Condition::Ne(v) => self.condition(&Condition::Eq(v.clone()), live).negate(live),
            Condition::Nin(vs) => self
                .condition(&Condition::In(vs.clone()), live)
                .negate(live),
            Condition::Exists(true) => Candidates::Exact(self.exists.clone()),
            Condition::Exists(false) => Candidates::Exact(live - &self.exists),
            Condition::Not(c) => self.condition(c, live).negate(live),
            Condition::All(cs) => cs
                .iter()
                .map(|c| self.condition(c, live))
                .reduce(Candidates::and)
                .unwrap_or_else(|| Candidates::Exact(live.clone())),
            positive => match self.value_rows(positive) {
                // Documents with unrepresentable values may match too: check them.
                Some(rows) if self.uncovered.is_empty() => Candidates::Exact(rows),
                Some(rows) => Candidates::Superset(rows | &self.uncovered),
                // Every positive condition needs the field to exist.
                None => Candidates::Superset(self.exists.clone()),
            },
        }
    }

    /// Documents whose represented values satisfy a positive condition; `None` if the index
    /// cannot tell (whole-value equality, `$contains`, an operand beyond exact range).
    fn value_rows(&self, condition: &Condition) -> Option<RoaringBitmap> {
        match condition {
            Condition::Eq(v) => self.equal_rows(v),
            Condition::In(vs) => vs
                .iter()
                .map(|v| self.equal_rows(v))
                .collect::<Option<Vec<_>>>()
                .map(|sets| sets.union()),
            Condition::Gt(v) => self.range_rows(v, Side::Above, false),
            Condition::Gte(v) => self.range_rows(v, Side::Above, true),
            Condition::Lt(v) => self.range_rows(v, Side::Below, false),
            Condition::Lte(v) => self.range_rows(v, Side::Below, true),
            _ => None,
        }
    }

    fn rows_of(&self, key: &[u8]) -> RoaringBitmap {
        self.values.get(key).cloned().unwrap_or_default()
    }

    fn equal_rows(&self, operand: &Value) -> Option<RoaringBitmap> {
        match (self.kind, operand) {
            (_, Value::Array(_) | Value::Object(_)) => None,
            (PayloadKind::Integer, Value::Number(n)) if n.is_f64() => {
                let f = n.as_f64()?;
                let integral = f.fract() == 0.0 && f.abs() <= MAX_EXACT_INTEGER as f64;
                Some(if integral {
                    self.rows_of(&encode_integer(f as i64))
                } else {
                    RoaringBitmap::new()
                })
            }
            (PayloadKind::Float, Value::Number(n)) => {
                exact_float(n).map(|f| self.rows_of(&encode_float(f)))
            }
            // Another type, or an integer beyond the represented range: no row matches.
            _ => Some(
                encode_value(self.kind, operand)
                    .map(|key| self.rows_of(&key))
                    .unwrap_or_default(),
            ),
        }
    }

    fn range_rows(&self, operand: &Value, side: Side, inclusive: bool) -> Option<RoaringBitmap> {
        let key = match (self.kind, operand) {
            (PayloadKind::Keyword, Value::String(s)) => s.as_bytes().to_vec(),
            (PayloadKind::Integer, Value::Number(n)) => {
                let (threshold, inclusive) = integer_threshold(n, side, inclusive)?;
                return Some(self.union_range(encode_integer(threshold), side, inclusive));
            }
            (PayloadKind::Float, Value::Number(n)) => encode_float(exact_float(n)?),
            // Values of this index never compare with the operand.
            _ => return Some(RoaringBitmap::new()),
        };
        Some(self.union_range(key, side, inclusive))
    }

    fn union_range(&self, key: Vec<u8>, side: Side, inclusive: bool) -> RoaringBitmap {
        let bound = if inclusive {
            Bound::Included(key)
        } else {
            Bound::Excluded(key)
        };
        let range = match side {
            Side::Above => (bound, Bound::Unbounded),
            Side::Below => (Bound::Unbounded, bound),
        };
        self.values.range(range).map(|(_, set)| set).union()
    }
}

#[derive(Clone, Copy)]
enum Side {
    Above,
    Below,
}

/// The integer bound equivalent to comparing with `n` (integers stored are within ±2⁵³, so
/// they compare with any operand exactly): e.g. `x > 2.5` is `x ≥ 3`, i.e. `x > 2`.
fn integer_threshold(n: &Number, side: Side, inclusive: bool) -> Option<(i64, bool)> {
    const CLAMP: i64 = 1 << 60;
    if let Some(i) = n.as_i64() {
        return Some((i.clamp(-CLAMP, CLAMP), inclusive));
    }
    if n.as_u64().is_some() {
        return Some((CLAMP, inclusive));
    }
    let f = n.as_f64()?.clamp(-(CLAMP as f64), CLAMP as f64);
    if f.fract() == 0.0 {
        return Some((f as i64, inclusive));
    }
    // Strictly between two integers: "above f" is "≥ ceil(f)", "below f" is "≤ floor(f)".
    Some(match side {
        Side::Above => (f.ceil() as i64, true),
        Side::Below => (f.floor() as i64, true),
    })
}

/// Every payload index of a collection, and the set of its live documents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PayloadIndex {
    live: RoaringBitmap,
    fields: Vec<FieldIndex>,
}

impl PayloadIndex {
    /// Empty indexes for the fields of `schema`.
    pub fn new(schema: &PayloadSchema) -> PayloadIndex {
        PayloadIndex {
            live: RoaringBitmap::new(),
            fields: schema
                .fields()
                .iter()
                .map(|(path, kind)| FieldIndex::new(path.clone(), *kind))
                .collect(),
        }
    }

    /// Adds an (empty) index for a newly declared field; its rows follow by `apply_row`.
    pub fn add_field(&mut self, path: FieldPath, kind: PayloadKind) {
        self.fields.push(FieldIndex::new(path, kind));
    }

    /// Marks document `id` live or deleted.
    pub fn set_live(&mut self, id: InternalId, live: bool) {
        if live {
            self.live.insert(id);
        } else {
            self.live.remove(id);
        }
    }

    /// Adds or removes one row of field number `field`.
    pub fn apply_row(&mut self, field: u16, key: &[u8], id: InternalId, added: bool) {
        if let Some(index) = self.fields.get_mut(usize::from(field)) {
            index.apply_row(key, id, added);
        }
    }

    /// Every live document.
    pub fn live(&self) -> &RoaringBitmap {
        &self.live
    }

    /// What the indexes know of the documents matching `filter`.
    pub fn candidates(&self, filter: &Filter) -> Candidates {
        match filter {
            Filter::And(filters) => filters
                .iter()
                .map(|f| self.candidates(f))
                .reduce(Candidates::and)
                .unwrap_or_else(|| Candidates::Exact(self.live.clone())),
            Filter::Or(filters) => filters
                .iter()
                .map(|f| self.candidates(f))
                .reduce(Candidates::or)
                .unwrap_or_default(),
            Filter::Not(filter) => self.candidates(filter).negate(&self.live),
            Filter::Field { path, condition } => {
                match self.fields.iter().find(|f| &f.path == path) {
                    Some(index) => index.condition(condition, &self.live),
                    None => Candidates::Unknown,
                }
            }
        }
    }

    /// Approximate bytes of memory held by the bitmaps.
    pub fn memory_bytes(&self) -> usize {
        let field_bytes: usize = self
            .fields
            .iter()
            .map(|f| {
                f.exists.serialized_size()
                    + f.uncovered.serialized_size()
                    + f.values
                        .iter()
                        .map(|(k, v)| k.len() + v.serialized_size() + 48)
                        .sum::<usize>()
            })
            .sum();
        self.live.serialized_size() + field_bytes
    }
}

impl Default for Candidates {
    /// An empty disjunction: nothing matches.
    fn default() -> Candidates {
        Candidates::Exact(RoaringBitmap::new())
    }
}
