//! The JSON filter language → [`Filter`], with errors that name the offending location, and back.

use serde_json::{Map, Value};

use super::{Condition, FieldPath, Filter, MAX_FILTER_DEPTH};
use crate::error::{Error, Result};
use crate::types::json_type_name;

/// Where in the filter JSON an element sits, e.g. `filter.$or[1].tag.$in`.
#[derive(Clone)]
struct Location(String);

impl Location {
    fn root() -> Location {
        Location("filter".into())
    }

    fn key(&self, key: &str) -> Location {
        Location(format!("{}.{key}", self.0))
    }

    fn index(&self, i: usize) -> Location {
        Location(format!("{}[{i}]", self.0))
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::InvalidFilter {
            location: self.0.clone(),
            message: message.into(),
        }
    }

    fn check_depth(&self, depth: usize) -> Result<()> {
        if depth > MAX_FILTER_DEPTH {
            return Err(self.error(format!(
                "filters may nest at most {MAX_FILTER_DEPTH} levels deep"
            )));
        }
        Ok(())
    }
}

/// Parses a whole filter.
pub(super) fn parse_filter(json: &Value) -> Result<Filter> {
    filter(json, &Location::root(), 0)
}

fn filter(json: &Value, at: &Location, depth: usize) -> Result<Filter> {
    at.check_depth(depth)?;
    let Value::Object(entries) = json else {
        return Err(at.error("a filter must be a JSON object"));
    };
    let mut parts = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let at = at.key(key);
        let part = match key.as_str() {
            "$and" | "$or" => {
                let items = match value {
                    Value::Array(items) if !items.is_empty() => items,
                    _ => return Err(at.error(format!("{key} takes a non-empty array of filters"))),
                };
                let filters = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| filter(item, &at.index(i), depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                if key == "$and" {
                    Filter::And(filters)
                } else {
                    Filter::Or(filters)
                }
            }
            "$not" => Filter::Not(Box::new(filter(value, &at, depth + 1)?)),
            op if op.starts_with('$') => {
                return Err(at.error(format!(
                    "unknown operator {op} (logical operators are $and, $or, $not)"
                )))
            }
            path => Filter::Field {
                path: FieldPath::parse(path).map_err(|_| {
                    at.error(format!(
                        "field path {path:?} needs non-empty segments separated by '.'"
                    ))
                })?,
                condition: condition(value, &at, depth + 1)?,
            },
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn condition(json: &Value, at: &Location, depth: usize) -> Result<Condition> {
    at.check_depth(depth)?;
    let Value::Object(ops) = json else {
        return Ok(Condition::Eq(json.clone()));
    };
    let operators = ops.keys().filter(|k| k.starts_with('$')).count();
    if operators == 0 {
        return Ok(Condition::Eq(json.clone()));
    }
    if operators != ops.len() {
        return Err(at.error(
            "an object either holds operators ($eq, $gt, ...) or is a value to compare with, not both",
        ));
    }
    let mut conditions = ops
        .iter()
        .map(|(op, operand)| operator(op, operand, &at.key(op), depth))
        .collect::<Result<Vec<_>>>()?;
    Ok(if conditions.len() == 1 {
        conditions.remove(0)
    } else {
        Condition::All(conditions)
    })
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

fn operator(op: &str, operand: &Value, at: &Location, depth: usize) -> Result<Condition> {
    let ordered = || {
        if operand.is_number() || operand.is_string() {
            Ok(operand.clone())
        } else {
            Err(at.error(format!(
                "{op} compares with a number or a string, not {}",
                json_type_name(operand)
            )))
        }
    };
    let scalars = || match operand {
        Value::Array(items) if items.iter().all(is_scalar) => Ok(items.clone()),
        _ => Err(at.error(format!(
            "{op} takes an array of scalars (strings, numbers, booleans, null)"
        ))),
    };
    Ok(match op {
        "$eq" => Condition::Eq(operand.clone()),
        "$ne" => Condition::Ne(operand.clone()),
        "$gt" => Condition::Gt(ordered()?),
        "$gte" => Condition::Gte(ordered()?),
        "$lt" => Condition::Lt(ordered()?),
        "$lte" => Condition::Lte(ordered()?),
        "$in" => Condition::In(scalars()?),
        "$nin" => Condition::Nin(scalars()?),
        "$exists" => Condition::Exists(
            operand
                .as_bool()
                .ok_or_else(|| at.error(format!("$exists takes true or false, not {}", json_type_name(operand))))?,
        ),
        "$contains" if is_scalar(operand) => Condition::Contains(operand.clone()),
        "$contains" => {
            return Err(at.error(format!(
                "$contains takes a scalar (string, number, boolean, null), not {}",
                json_type_name(operand)
            )))
        }
        "$not" => Condition::Not(Box::new(condition(operand, at, depth + 1)?)),
        other => {
            return Err(at.error(format!(
                "unknown operator {other} (expected $eq $ne $gt $gte $lt $lte $in $nin $exists $contains $not)"
            )))
        }
    })
}

/// The JSON form of a filter; [`parse_filter`] gives back an equivalent filter.
pub(super) fn to_json(filter: &Filter) -> Value {
    let object =
        |key: &str, value: Value| Value::Object(Map::from_iter([(key.to_string(), value)]));
    let list = |filters: &[Filter]| Value::Array(filters.iter().map(to_json).collect());
    match filter {
        Filter::And(filters) if filters.is_empty() => Value::Object(Map::new()),
        Filter::And(filters) => object("$and", list(filters)),
        // An empty disjunction matches nothing, like "not everything".
        Filter::Or(filters) if filters.is_empty() => object("$not", Value::Object(Map::new())),
        Filter::Or(filters) => object("$or", list(filters)),
        Filter::Not(filter) => object("$not", to_json(filter)),
        Filter::Field { path, condition } => object(path.as_str(), condition_json(condition)),
    }
}

fn condition_json(condition: &Condition) -> Value {
    let op = |name: &str, value: Value| Value::Object(Map::from_iter([(name.to_string(), value)]));
    match condition {
        Condition::Eq(v) => op("$eq", v.clone()),
        Condition::Ne(v) => op("$ne", v.clone()),
        Condition::Gt(v) => op("$gt", v.clone()),
        Condition::Gte(v) => op("$gte", v.clone()),
        Condition::Lt(v) => op("$lt", v.clone()),
        Condition::Lte(v) => op("$lte", v.clone()),
        Condition::In(vs) => op("$in", Value::Array(vs.clone())),
        Condition::Nin(vs) => op("$nin", Value::Array(vs.clone())),
        Condition::Exists(b) => op("$exists", Value::Bool(*b)),
        Condition::Contains(v) => op("$contains", v.clone()),
        Condition::Not(c) => op("$not", condition_json(c)),
        Condition::All(conditions) => {
            // Operators of one object must differ; a repeated one goes into a double negation.
            let mut merged = Map::new();
            for (i, c) in conditions.iter().enumerate() {
                let Value::Object(single) = condition_json(c) else {
                    continue;
                };
                if single.keys().any(|k| merged.contains_key(k)) {
                    let rest = Condition::All(conditions[i..].to_vec());
                    let twice = Condition::Not(Box::new(Condition::Not(Box::new(rest))));
                    merged.insert("$not".into(), condition_json(&twice)["$not"].clone());
                    break;
                }
                merged.extend(single);
            }
            Value::Object(merged)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error_location(json: Value) -> String {
        match parse_filter(&json) {
            Err(Error::InvalidFilter { location, .. }) => location,
            other => panic!("expected an invalid-filter error for {json}, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_their_location() {
        assert_eq!(error_location(json!([1])), "filter");
        assert_eq!(error_location(json!({"$regex": 1})), "filter.$regex");
        assert_eq!(
            error_location(json!({"$or": [{"a": 1}, {"tag": {"$in": 3}}]})),
            "filter.$or[1].tag.$in"
        );
        assert_eq!(
            error_location(json!({"year": {"$gt": {}}})),
            "filter.year.$gt"
        );
        assert_eq!(
            error_location(json!({"year": {"$gt": true}})),
            "filter.year.$gt"
        );
        assert_eq!(
            error_location(json!({"a": {"$exists": 1}})),
            "filter.a.$exists"
        );
        assert_eq!(
            error_location(json!({"a": {"$contains": [1]}})),
            "filter.a.$contains"
        );
        assert_eq!(error_location(json!({"a": {"$in": [[1]]}})), "filter.a.$in");
        assert_eq!(error_location(json!({"$and": []})), "filter.$and");
        assert_eq!(error_location(json!({"$or": {}})), "filter.$or");
        assert_eq!(error_location(json!({"$not": 3})), "filter.$not");
        assert_eq!(error_location(json!({"a..b": 1})), "filter.a..b");
        assert_eq!(error_location(json!({"": 1})), "filter.");
        assert_eq!(error_location(json!({"a": {"$gt": 1, "b": 2}})), "filter.a");
        assert_eq!(error_location(json!({"a": {"$foo": 1}})), "filter.a.$foo");
    }

    #[test]
    fn depth_is_limited() {
        let mut deep = json!({"a": 1});
        for _ in 0..MAX_FILTER_DEPTH - 1 {
            deep = json!({ "$not": deep });
        }
        assert!(parse_filter(&deep).is_ok());
        let deeper = json!({ "$not": {"$not": deep} });
        assert!(matches!(
            parse_filter(&deeper),
            Err(Error::InvalidFilter { .. })
        ));
    }

    #[test]
    fn json_round_trips() {
        for json in [
            json!({}),
            json!({"a": 1, "b": {"$gte": 2, "$lt": 5}, "$or": [{"c": [1, 2]}, {"d.e": {"x": 1}}]}),
            json!({"t": {"$not": {"$in": ["x", null]}}, "$not": {"u": {"$exists": false}}}),
            json!({"s": {"$contains": "ab"}, "n": {"$nin": []}}),
        ] {
            let parsed = parse_filter(&json).unwrap();
            assert_eq!(parse_filter(&to_json(&parsed)).unwrap(), parsed, "{json}");
        }
        let built = Filter::and([
            Filter::field("a").gt(1),
            Filter::or([]),
            Filter::not(Filter::field("b").is_in(["x", "y"])),
        ]);
        let doc = json!({"a": 2, "b": "z"});
        let reparsed = parse_filter(&to_json(&built)).unwrap();
        assert_eq!(
            reparsed.matches(doc.as_object().unwrap()),
            built.matches(doc.as_object().unwrap())
        );
    }
}
