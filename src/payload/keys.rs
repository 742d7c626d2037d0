//! What a document contributes to a payload index: order-preserving byte keys of its values, and
//! markers for "the field exists" and "some value is not representable" (uncovered).
//!
//! Row key (the part after the field number; see `storage`): one tag byte, then for
//! [`TAG_VALUE`] the encoded value. Encodings sort like the values they encode, so range
//! filters are range scans:
//! - keyword: the UTF-8 bytes (byte order is code-point order);
//! - integer: `i64` with the sign bit flipped, big-endian (only |x| ≤ 2⁵³);
//! - float: IEEE-754 bits made monotonic (sign flipped, negatives inverted), big-endian, with
//!   −0 stored as +0 (integers beyond ±2⁵³ are not stored, so f64 comparisons stay exact);
//! - bool: one byte, 0 or 1.

use serde_json::{Map, Number, Value};

use crate::config::{PayloadField, PayloadKind};
use crate::filter::FieldPath;

/// Row tag: the document has this field (the path resolves).
pub const TAG_EXISTS: u8 = 0;
/// Row tag: some value of the field cannot be represented by the index; the document is checked
/// against filters on its metadata.
pub const TAG_UNCOVERED: u8 = 1;
/// Row tag: an indexed value follows.
pub const TAG_VALUE: u8 = 2;

/// Largest integer magnitude every `f64` represents exactly.
pub const MAX_EXACT_INTEGER: i64 = 1 << 53;

/// The declared payload fields of a collection, numbered by declaration order (numbers are
/// stable: fields are only ever appended).
#[derive(Clone, Debug, Default)]
pub struct PayloadSchema {
    fields: Vec<(FieldPath, PayloadKind)>,
}

impl PayloadSchema {
    /// The schema of these declared fields (already validated by the collection config).
    pub fn new(fields: &[PayloadField]) -> PayloadSchema {
        PayloadSchema {
            fields: fields
                .iter()
                .map(|f| (FieldPath::trusted(&f.path), f.kind))
                .collect(),
        }
    }

    /// Whether no field is declared.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The declared fields, in field-number order.
    pub fn fields(&self) -> &[(FieldPath, PayloadKind)] {
        &self.fields
    }

    /// Every `(field number, row key)` a document with `metadata` has, sorted, without repeats.
    pub fn row_keys(&self, metadata: &Map<String, Value>) -> Vec<(u16, Vec<u8>)> {
        let mut rows = Vec::new();
        for (field, (path, kind)) in self.fields.iter().enumerate() {
            for key in field_row_keys(path, *kind, metadata) {
                rows.push((field as u16, key));
            }
        }
        rows
    }
}

/// The row keys one field of one document has: none when the path does not resolve; else an
/// exists marker, a value row per distinct representable value, and an uncovered marker if some
/// value (or an empty array) cannot be represented.
pub fn field_row_keys(
    path: &FieldPath,
    kind: PayloadKind,
    metadata: &Map<String, Value>,
) -> Vec<Vec<u8>> {
    let Some(value) = path.resolve(metadata) else {
        return Vec::new();
    };
    let values = crate::filter::values_of(Some(value));
    let mut keys = vec![vec![TAG_EXISTS]];
    let mut uncovered = values.is_empty();
    for v in values {
        match encode_value(kind, v) {
            Some(encoded) => {
                let mut key = Vec::with_capacity(1 + encoded.len());
                key.push(TAG_VALUE);
                key.extend_from_slice(&encoded);
                keys.push(key);
            }
            None => uncovered = true,
        }
    }
    if uncovered {
        keys.push(vec![TAG_UNCOVERED]);
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The order-preserving encoding of `value` in an index of `kind`; `None` if it has another type
/// or cannot be represented exactly.
pub fn encode_value(kind: PayloadKind, value: &Value) -> Option<Vec<u8>> {
    match (kind, value) {
        (PayloadKind::Keyword, Value::String(s)) => Some(s.as_bytes().to_vec()),
        (PayloadKind::Integer, Value::Number(n)) => exact_integer(n).map(encode_integer),
        (PayloadKind::Float, Value::Number(n)) => exact_float(n).map(encode_float),
        (PayloadKind::Bool, Value::Bool(b)) => Some(vec![u8::from(*b)]),
        _ => None,
    }
}

/// An integer JSON number within ±2⁵³.
pub fn exact_integer(n: &Number) -> Option<i64> {
    n.as_i64()
        .filter(|x| (-MAX_EXACT_INTEGER..=MAX_EXACT_INTEGER).contains(x))
}

/// A JSON number as `f64` when that is exact for the comparisons of the filter language: every
/// float, and integers within ±2⁵³.
pub fn exact_float(n: &Number) -> Option<f64> {
    if n.is_f64() {
        n.as_f64()
    } else {
        exact_integer(n).map(|x| x as f64)
    }
}

/// Key of an integer.
pub fn encode_integer(x: i64) -> Vec<u8> {
    ((x as u64) ^ (1 << 63)).to_be_bytes().to_vec()
}

/// Key of a float (−0 is stored as +0: they compare equal).
pub fn encode_float(x: f64) -> Vec<u8> {
    let x = if x == 0.0 { 0.0 } else { x };
    let bits = x.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    proptest! {
        #[test]
        fn integer_keys_sort_like_integers(a in -MAX_EXACT_INTEGER..=MAX_EXACT_INTEGER,
                                           b in -MAX_EXACT_INTEGER..=MAX_EXACT_INTEGER) {
            prop_assert_eq!(encode_integer(a).cmp(&encode_integer(b)), a.cmp(&b));
        }

        #[test]
        fn float_keys_sort_like_floats(a in proptest::num::f64::NORMAL | proptest::num::f64::ZERO
                                          | proptest::num::f64::SUBNORMAL,
                                       b in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            prop_assert_eq!(encode_float(a).cmp(&encode_float(b)), a.partial_cmp(&b).unwrap());
        }
    }

    #[test]
    fn rows_mark_existence_values_and_uncovered() {
        let path = FieldPath::parse("tags").unwrap();
        let doc = json!({"tags": ["a", "b", "a", 3]});
        let keys = field_row_keys(&path, PayloadKind::Keyword, doc.as_object().unwrap());
        assert_eq!(
            keys,
            vec![
                vec![TAG_EXISTS],
                vec![TAG_UNCOVERED],
                vec![TAG_VALUE, b'a'],
                vec![TAG_VALUE, b'b']
            ]
        );
        let empty = json!({"tags": []});
        let keys = field_row_keys(&path, PayloadKind::Keyword, empty.as_object().unwrap());
        assert_eq!(keys, vec![vec![TAG_EXISTS], vec![TAG_UNCOVERED]]);
        let missing = json!({"other": 1});
        assert!(
            field_row_keys(&path, PayloadKind::Keyword, missing.as_object().unwrap()).is_empty()
        );
        assert!(encode_value(PayloadKind::Integer, &json!(1u64 << 60)).is_none());
        assert!(encode_value(PayloadKind::Integer, &json!(2.0)).is_none());
        assert_eq!(
            encode_value(PayloadKind::Float, &json!(-0.0)),
            encode_value(PayloadKind::Float, &json!(0))
        );
    }
}
