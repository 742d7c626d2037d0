//! The evaluator: whether a document's metadata matches a filter. This is the reference the
//! payload indexes must agree with (`docs/filters.md`).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::{Condition, Filter};

/// Whether `metadata` matches `filter`.
pub(super) fn matches(filter: &Filter, metadata: &Map<String, Value>) -> bool {
    match filter {
        Filter::And(filters) => filters.iter().all(|f| matches(f, metadata)),
        Filter::Or(filters) => filters.iter().any(|f| matches(f, metadata)),
        Filter::Not(filter) => !matches(filter, metadata),
        Filter::Field { path, condition } => holds(condition, path.resolve(metadata)),
    }
}

/// The values element-wise operators look at: an array's elements, or the one value.
pub(crate) fn values_of(field: Option<&Value>) -> &[Value] {
    match field {
        None => &[],
        Some(Value::Array(items)) => items,
        Some(value) => std::slice::from_ref(value),
    }
}

/// Whether `condition` holds of a field that resolved to `field` (`None`: missing).
fn holds(condition: &Condition, field: Option<&Value>) -> bool {
    let some_value = |test: &dyn Fn(&Value) -> bool| values_of(field).iter().any(test);
    let ordered = |operand: &Value, accept: fn(Ordering) -> bool| {
        some_value(&|v| compare(v, operand).is_some_and(accept))
    };
    match condition {
        Condition::Eq(operand) => equals(field, operand),
        Condition::Ne(operand) => !equals(field, operand),
        Condition::Gt(operand) => ordered(operand, Ordering::is_gt),
        Condition::Gte(operand) => ordered(operand, Ordering::is_ge),
        Condition::Lt(operand) => ordered(operand, Ordering::is_lt),
        Condition::Lte(operand) => ordered(operand, Ordering::is_le),
        Condition::In(operands) => operands.iter().any(|o| equals(field, o)),
        Condition::Nin(operands) => !operands.iter().any(|o| equals(field, o)),
        Condition::Exists(exists) => field.is_some() == *exists,
        Condition::Contains(operand) => match field {
            Some(Value::Array(items)) => items.iter().any(|v| json_eq(v, operand)),
            Some(Value::String(s)) => operand.as_str().is_some_and(|part| s.contains(part)),
            _ => false,
        },
        Condition::Not(condition) => !holds(condition, field),
        Condition::All(conditions) => conditions.iter().all(|c| holds(c, field)),
    }
}

/// `$eq`: element-wise for a scalar operand, whole-value for an array or object.
fn equals(field: Option<&Value>, operand: &Value) -> bool {
    match operand {
        Value::Array(_) | Value::Object(_) => field.is_some_and(|v| json_eq(v, operand)),
        _ => values_of(field).iter().any(|v| json_eq(v, operand)),
    }
}

/// JSON equality with numbers compared numerically (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Order of two values: numbers numerically, strings by code point; `None` otherwise.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Numeric order: exact when both are integers, as `f64` otherwise.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Filter;

    fn check(filter: serde_json::Value, doc: serde_json::Value) -> bool {
        let filter = Filter::from_json(&filter).unwrap();
        filter.matches(doc.as_object().unwrap())
    }

    #[test]
    fn semantics_of_the_doc_examples() {
        let doc = json!({"tags": ["a", "b"], "n": [1, 7], "year": "2021", "x": null,
                         "author": {"name": "Ann"}, "title": "vector search"});
        assert!(check(json!({"tags": "a"}), doc.clone()));
        assert!(check(json!({"tags": ["a", "b"]}), doc.clone()));
        assert!(!check(json!({"tags": ["b", "a"]}), doc.clone()));
        assert!(check(json!({"n": {"$gt": 5}}), doc.clone()));
        assert!(!check(json!({"tags": {"$ne": "a"}}), doc.clone()));
        assert!(check(json!({"tags": {"$ne": "c"}}), doc.clone()));
        assert!(!check(json!({"year": {"$gt": 2000}}), doc.clone()));
        assert!(check(json!({"year": {"$gt": "2000"}}), doc.clone()));
        assert!(check(json!({"x": null}), doc.clone()));
        assert!(!check(json!({"missing": null}), doc.clone()));
        assert!(check(json!({"missing": {"$ne": 1}}), doc.clone()));
        assert!(check(json!({"missing": {"$nin": [1]}}), doc.clone()));
        assert!(check(json!({"x": {"$exists": true}}), doc.clone()));
        assert!(check(json!({"author.name": "Ann"}), doc.clone()));
        assert!(check(json!({"author": {"name": "Ann"}}), doc.clone()));
        assert!(!check(json!({"author.name.first": "Ann"}), doc.clone()));
        assert!(check(
            json!({"title": {"$contains": "search"}}),
            doc.clone()
        ));
        assert!(check(json!({"tags": {"$contains": "b"}}), doc.clone()));
        assert!(check(json!({"n": {"$in": [7.0, 9]}}), doc.clone()));
        assert!(check(
            json!({"$or": [{"tags": "z"}, {"$not": {"n": {"$lt": 0}}}]}),
            doc.clone()
        ));
        assert!(check(json!({"n": {"$not": {"$gt": 100}}}), doc.clone()));
        assert!(check(json!({}), doc));
    }

    #[test]
    fn integers_compare_exactly_beyond_f64_precision() {
        let doc = json!({"n": 9_007_199_254_740_993u64});
        assert!(!check(json!({"n": 9_007_199_254_740_992u64}), doc.clone()));
        assert!(check(
            json!({"n": {"$gt": 9_007_199_254_740_992u64}}),
            doc.clone()
        ));
        assert!(check(json!({"n": {"$gt": -1}}), doc));
    }
}
