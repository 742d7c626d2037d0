//! Metadata filters, checked against an independent reference written from `docs/filters.md`
//! alone (not from the implementation): parsing, evaluation, serde round trips, errors, payload
//! indexes, filtered count / scroll / delete / search, and filtered HNSW recall.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Error, Filter, Hit, IndexConfig, Metric,
    PayloadField, PayloadKind, SearchRequest,
};
use serde_json::{json, Map, Number, Value};
use uuid::Uuid;

use crate::common::{brute_force, distance_f64, Rng};

// ----- 1. the reference evaluator ---------------------------------------------------------------

/// A JSON number as the spec compares it: exactly when both are integers, as `f64` otherwise.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().expect("JSON numbers are finite"))
    }
}

fn num_as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    }
}

fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    match (num(a), num(b)) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (x, y) => num_as_f64(x).partial_cmp(&num_as_f64(y)),
    }
}

/// Equality of two JSON values: same type and equal; numbers numerically; arrays element by
/// element; objects with the same keys and equal values.
fn ref_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| ref_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| ref_eq(v, w)))
        }
        _ => false,
    }
}

/// Order: numbers with numbers, strings with strings (by code point); nothing else compares.
fn ref_order(value: &Value, operand: &Value) -> Option<Ordering> {
    match (value, operand) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// Resolves a dotted path: every segment but the last must name an object member that is an
/// object; the last names any member. Arrays are not walked through.
fn resolve<'a>(metadata: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let segments: Vec<&str> = path.split('.').collect();
    let (last, parents) = segments
        .split_last()
        .expect("split yields one segment at least");
    let mut object = metadata;
    for segment in parents {
        object = object.get(*segment)?.as_object()?;
    }
    object.get(*last)
}

/// The values of a field: an array's elements, another value itself, nothing when missing.
fn values_of(field: Option<&Value>) -> Vec<&Value> {
    match field {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
    }
}

/// Whether a valid filter (see [`ref_check`]) holds for `metadata`.
fn ref_matches(filter: &Value, metadata: &Map<String, Value>) -> bool {
    let entries = filter.as_object().expect("a valid filter is an object");
    entries.iter().all(|(key, operand)| match key.as_str() {
        "$and" => operand
            .as_array()
            .unwrap()
            .iter()
            .all(|f| ref_matches(f, metadata)),
        "$or" => operand
            .as_array()
            .unwrap()
            .iter()
            .any(|f| ref_matches(f, metadata)),
        "$not" => !ref_matches(operand, metadata),
        path => ref_condition(operand, resolve(metadata, path)),
    })
}

fn ref_condition(condition: &Value, field: Option<&Value>) -> bool {
    match condition {
        Value::Object(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => ops
            .iter()
            .all(|(op, operand)| ref_operator(op, operand, field)),
        literal => ref_operator("$eq", literal, field),
    }
}

fn ref_operator(op: &str, operand: &Value, field: Option<&Value>) -> bool {
    let some_value = |holds: &dyn Fn(&Value) -> bool| values_of(field).into_iter().any(holds);
    let order = |wanted: &[Ordering]| {
        some_value(&|v| ref_order(v, operand).is_some_and(|o| wanted.contains(&o)))
    };
    match op {
        "$eq" if is_scalar(operand) => some_value(&|v| ref_eq(v, operand)),
        "$eq" => field.is_some_and(|v| ref_eq(v, operand)),
        "$ne" => !ref_operator("$eq", operand, field),
        "$gt" => order(&[Ordering::Greater]),
        "$gte" => order(&[Ordering::Greater, Ordering::Equal]),
        "$lt" => order(&[Ordering::Less]),
        "$lte" => order(&[Ordering::Less, Ordering::Equal]),
        "$in" => operand
            .as_array()
            .unwrap()
            .iter()
            .any(|v| ref_operator("$eq", v, field)),
        "$nin" => !ref_operator("$in", operand, field),
        "$exists" => field.is_some() == operand.as_bool().unwrap(),
        "$contains" => match field {
            Some(Value::Array(items)) => items.iter().any(|e| ref_eq(e, operand)),
            Some(Value::String(s)) => operand.as_str().is_some_and(|t| s.contains(t)),
            _ => false,
        },
        "$not" => !ref_condition(operand, field),
        other => panic!("reference evaluator given an unchecked operator {other}"),
    }
}

/// The spec's validity rules, except nesting depth (the tests keep filters shallow).
fn ref_check(filter: &Value) -> Result<(), String> {
    let entries = filter
        .as_object()
        .ok_or_else(|| format!("filter {filter} is not an object"))?;
    for (key, operand) in entries {
        match key.as_str() {
            "$and" | "$or" => {
                let items = operand
                    .as_array()
                    .filter(|items| !items.is_empty())
                    .ok_or_else(|| format!("{key} needs a non-empty array"))?;
                for item in items {
                    ref_check(item)?;
                }
            }
            "$not" => ref_check(operand)?,
            op if op.starts_with('$') => return Err(format!("unknown operator {op} at the top")),
            path => {
                if path.split('.').any(str::is_empty) {
                    return Err(format!("empty path segment in {path:?}"));
                }
                ref_check_condition(operand)?;
            }
        }
    }
    Ok(())
}

fn ref_check_condition(condition: &Value) -> Result<(), String> {
    let Value::Object(ops) = condition else {
        return Ok(());
    };
    let operators = ops.keys().filter(|k| k.starts_with('$')).count();
    if operators == 0 {
        return Ok(());
    }
    if operators != ops.len() {
        return Err(format!("{condition} mixes operators and plain keys"));
    }
    for (op, operand) in ops {
        match op.as_str() {
            "$eq" | "$ne" => {}
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !(operand.is_number() || operand.is_string()) {
                    return Err(format!("{op} takes a number or a string"));
                }
            }
            "$in" | "$nin" => {
                if !operand.as_array().is_some_and(|a| a.iter().all(is_scalar)) {
                    return Err(format!("{op} takes an array of scalars"));
                }
            }
            "$exists" => {
                if !operand.is_boolean() {
                    return Err("$exists takes a boolean".into());
                }
            }
            "$contains" => {
                if !is_scalar(operand) {
                    return Err("$contains takes a scalar".into());
                }
            }
            "$not" => ref_check_condition(operand)?,
            other => return Err(format!("unknown operator {other} in a condition")),
        }
    }
    Ok(())
}

// ----- generators ------------------------------------------------------------------------------

const STRINGS: &[&str] = &[
    "", "x", "y", "xy", "yx", "X", "é", "ü", "ab", "a.b", "2021", "en",
];
const PATHS: &[&str] = &[
    "a",
    "n",
    "f",
    "b",
    "tags",
    "nested",
    "nested.x",
    "nested.y",
    "nested.y.z",
    "nested.x.z",
    "tags.x",
    "a.b",
    "missing",
];

fn obj<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Object(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn strings() -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(STRINGS).prop_map(Value::from)
}

fn ints() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        3 => (-8i64..8).prop_map(Value::from),
        1 => prop::sample::select(vec![
            json!(2021),
            json!(1i64 << 53),
            json!((1i64 << 53) + 1),
            json!(-(1i64 << 53) - 1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(1u64 << 63),
            json!((1u64 << 63) + 1),
            json!(u64::MAX),
        ]),
    ]
}

fn floats() -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(vec![
        0.0,
        -0.0,
        2.0,
        2.5,
        -1.5,
        0.1,
        7.0,
        -8.0,
        2021.0,
        1e300,
        -1e300,
        5e-324,
        9_007_199_254_740_992.0,
        9_007_199_254_740_994.0,
        9_223_372_036_854_775_808.0,
        18_446_744_073_709_551_616.0,
    ])
    .prop_map(Value::from)
}

fn scalars() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        3 => strings(),
        3 => ints(),
        2 => floats(),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn small_object() -> impl Strategy<Value = Value> + Clone {
    prop::collection::btree_map(prop::sample::select(&["x", "y"][..]), scalars(), 0..3)
        .prop_map(obj)
}

fn arrays() -> impl Strategy<Value = Value> + Clone {
    prop::collection::vec(
        prop_oneof![
            6 => scalars(),
            1 => prop::collection::vec(scalars(), 0..3).prop_map(Value::Array),
            1 => small_object(),
        ],
        0..4,
    )
    .prop_map(Value::Array)
}

fn any_value() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![6 => scalars(), 2 => arrays(), 1 => small_object()]
}

fn nested_value() -> impl Strategy<Value = Value> + Clone {
    let x = prop_oneof![4 => ints(), 1 => floats(), 1 => any_value()];
    let y = prop_oneof![
        2 => prop::collection::btree_map(Just("z"), scalars(), 0..2).prop_map(obj),
        1 => any_value(),
    ];
    let object = (
        proptest::option::weighted(0.8, x),
        proptest::option::weighted(0.5, y),
    )
        .prop_map(|(x, y)| {
            obj([("x", x), ("y", y)]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?))))
        });
    prop_oneof![
        5 => object.clone(),
        // Arrays of objects: paths do not walk through them.
        1 => prop::collection::vec(object, 1..3).prop_map(Value::Array),
        1 => any_value(),
    ]
}

/// A random metadata document over a small vocabulary, with missing fields, nulls, wrong types.
fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    (
        proptest::option::weighted(
            0.8,
            prop_oneof![6 => strings(), 1 => any_value(), 1 => Just(Value::Null)],
        ),
        proptest::option::weighted(
            0.8,
            prop_oneof![6 => ints(), 1 => floats(), 1 => any_value(), 1 => Just(Value::Null)],
        ),
        proptest::option::weighted(
            0.7,
            prop_oneof![6 => floats(), 1 => ints(), 1 => any_value()],
        ),
        proptest::option::weighted(
            0.7,
            prop_oneof![6 => any::<bool>().prop_map(Value::from), 1 => any_value()],
        ),
        proptest::option::weighted(
            0.7,
            prop_oneof![
                6 => prop::collection::vec(strings(), 0..4).prop_map(Value::Array),
                2 => arrays(),
                1 => prop::collection::vec(small_object(), 1..3).prop_map(Value::Array),
                1 => any_value(),
            ],
        ),
        proptest::option::weighted(0.6, nested_value()),
        proptest::option::weighted(0.1, any_value()),
    )
        .prop_map(|(a, n, f, b, tags, nested, dotted)| {
            [
                ("a", a),
                ("n", n),
                ("f", f),
                ("b", b),
                ("tags", tags),
                ("nested", nested),
                ("a.b", dotted),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect()
        })
}

/// One operator of a condition with a valid operand; with `wild` > 0, sometimes any key with any
/// operand (to probe the parser's checks near valid filters).
fn operator(wild: u32) -> impl Strategy<Value = (String, Value)> + Clone {
    let range_operand = prop_oneof![strings(), ints(), floats()];
    prop_oneof![
        2 => any_value().prop_map(|v| ("$eq".to_string(), v)),
        1 => any_value().prop_map(|v| ("$ne".to_string(), v)),
        4 => (prop::sample::select(&["$gt", "$gte", "$lt", "$lte"][..]), range_operand)
            .prop_map(|(op, v)| (op.to_string(), v)),
        2 => (
            prop::sample::select(&["$in", "$nin"][..]),
            prop::collection::vec(scalars(), 0..4),
        )
            .prop_map(|(op, v)| (op.to_string(), Value::Array(v))),
        1 => any::<bool>().prop_map(|b| ("$exists".to_string(), Value::from(b))),
        2 => scalars().prop_map(|v| ("$contains".to_string(), v)),
        wild => (prop::sample::select(KEYS), arbitrary_json()).prop_map(|(k, v)| (k.to_string(), v)),
        wild => near_miss_operator(),
    ]
}

/// An operator whose operand is almost right: one detail breaks a rule of the doc.
fn near_miss_operator() -> impl Strategy<Value = (String, Value)> + Clone {
    let not_scalar = prop_oneof![arrays(), small_object()];
    prop_oneof![
        (
            prop::sample::select(&["$in", "$nin"][..]),
            prop::collection::vec(scalars(), 0..3),
            not_scalar.clone(),
        )
            .prop_map(|(op, mut items, bad)| {
                items.push(bad);
                (op.to_string(), Value::Array(items))
            }),
        (prop::sample::select(&["$in", "$nin"][..]), scalars())
            .prop_map(|(op, v)| (op.to_string(), v)),
        (
            prop::sample::select(&["$gt", "$gte", "$lt", "$lte"][..]),
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
                not_scalar.clone()
            ],
        )
            .prop_map(|(op, v)| (op.to_string(), v)),
        prop_oneof![strings(), ints(), Just(Value::Null), not_scalar.clone()]
            .prop_map(|v| ("$exists".to_string(), v)),
        not_scalar.prop_map(|v| ("$contains".to_string(), v)),
        (
            prop::sample::select(&["$and", "$or", "$foo", "$regex", "$"][..]),
            any_value()
        )
            .prop_map(|(op, v)| (op.to_string(), v)),
        (prop::sample::select(&["x", "a.b", ""][..]), any_value())
            .prop_map(|(k, v)| (k.to_string(), v)),
    ]
}

/// A valid condition: bare value, object shorthand, operators, `$not` nesting.
fn condition(wild: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        2 => prop_oneof![3 => scalars(), 1 => arrays()],
        1 => small_object(),
        5 => prop::collection::vec(operator(wild), 1..3).prop_map(obj),
        wild => arbitrary_json(),
    ];
    leaf.prop_recursive(2, 8, 2, move |inner| {
        (inner, prop::collection::vec(operator(wild), 0..2)).prop_map(|(c, mut ops)| {
            ops.push(("$not".to_string(), c));
            obj(ops)
        })
    })
    .boxed()
}

fn field_entries(
    n: std::ops::Range<usize>,
    wild: u32,
) -> impl Strategy<Value = Vec<(String, Value)>> {
    let path = prop_oneof![
        20 => prop::sample::select(PATHS),
        wild => prop::sample::select(KEYS),
    ];
    prop::collection::vec(
        (path, condition(wild)).prop_map(|(p, c)| (p.to_string(), c)),
        n,
    )
}

/// A valid filter built structurally.
fn filter() -> BoxedStrategy<Value> {
    filter_with(0)
}

/// A filter built structurally; with `wild` > 0, some nodes are arbitrary JSON.
fn filter_with(wild: u32) -> BoxedStrategy<Value> {
    let near_miss = prop_oneof![
        (
            prop::sample::select(&["$and", "$or"][..]),
            prop_oneof![Just(json!([])), scalars(), small_object(), Just(json!([1]))],
        )
            .prop_map(|(op, v)| obj([(op, v)])),
        prop_oneof![scalars(), arrays()].prop_map(|v| json!({ "$not": v })),
        (
            prop::sample::select(&["$eq", "$gt", "$in", "$exists", "$contains", "$foo"][..]),
            scalars(),
        )
            .prop_map(|(op, v)| obj([(op, v)])),
        (
            prop::sample::select(&["", ".", "a..b", ".a", "a."][..]),
            scalars()
        )
            .prop_map(|(path, v)| obj([(path, v)])),
    ];
    let leaf = prop_oneof![
        20 => field_entries(0..3, wild).prop_map(obj),
        wild => arbitrary_json(),
        wild => near_miss,
    ];
    leaf.prop_recursive(3, 16, 3, move |inner| {
        prop_oneof![
            (
                prop::sample::select(&["$and", "$or"][..]),
                prop::collection::vec(inner.clone(), 1..4),
                field_entries(0..2, wild),
            )
                .prop_map(|(op, items, mut entries)| {
                    entries.push((op.to_string(), Value::Array(items)));
                    obj(entries)
                }),
            (inner.clone(), field_entries(0..2, wild)).prop_map(|(f, mut entries)| {
                entries.push(("$not".to_string(), f));
                obj(entries)
            }),
            (
                prop::collection::vec(inner.clone(), 1..3),
                prop::collection::vec(inner, 1..3),
            )
                .prop_map(|(all, any)| json!({"$and": all, "$or": any})),
        ]
    })
    .boxed()
}

fn doc_json(metadata: &Map<String, Value>) -> String {
    Value::Object(metadata.clone()).to_string()
}

fn parse(filter: &Value) -> Result<Filter, TestCaseError> {
    Filter::from_json(filter)
        .map_err(|e| TestCaseError::fail(format!("valid filter {filter} rejected: {e}")))
}

// ----- 2. evaluation against the reference -----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]
    #[test]
    fn filters_match_the_reference_evaluator(
        filter in filter(),
        docs in prop::collection::vec(metadata(), 1..10),
    ) {
        prop_assert_eq!(ref_check(&filter), Ok(()), "generator made an invalid filter");
        let parsed = parse(&filter)?;
        // Serialized, the filter is JSON with the same meaning, and it parses back.
        let serialized = serde_json::to_value(&parsed).unwrap();
        prop_assert_eq!(ref_check(&serialized), Ok(()), "serialized {} of {}", serialized, filter);
        let reparsed = parse(&serialized)?;
        let deserialized: Filter = serde_json::from_value(filter.clone())
            .map_err(|e| TestCaseError::fail(format!("deserialize {filter}: {e}")))?;
        let from_str: Filter = filter
            .to_string()
            .parse()
            .map_err(|e| TestCaseError::fail(format!("parse {filter}: {e}")))?;
        for doc in &docs {
            let expected = ref_matches(&filter, doc);
            let ctx = format!("filter {filter} on {}", doc_json(doc));
            prop_assert_eq!(parsed.matches(doc), expected, "{}", ctx);
            prop_assert_eq!(reparsed.matches(doc), expected, "{} (reparsed {})", ctx, serialized);
            prop_assert_eq!(ref_matches(&serialized, doc), expected, "{} (serialized {})", ctx, serialized);
            prop_assert_eq!(deserialized.matches(doc), expected, "{} (serde)", ctx);
            prop_assert_eq!(from_str.matches(doc), expected, "{} (FromStr)", ctx);
        }
    }
}

/// Numbers where integer and `f64` comparison disagree, or nearly.
fn numbers() -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(vec![
        json!(0),
        json!(-0.0),
        json!(0.0),
        json!(2),
        json!(2.0),
        json!(2.5),
        json!(-1),
        json!(1i64 << 53),
        json!((1i64 << 53) + 1),
        json!(9_007_199_254_740_992.0),
        json!(9_007_199_254_740_994.0),
        json!(-(1i64 << 53) - 1),
        json!(-9_007_199_254_740_992.0),
        json!(i64::MAX),
        json!(1u64 << 63),
        json!((1u64 << 63) + 1),
        json!(9_223_372_036_854_775_808.0),
        json!(u64::MAX),
        json!(18_446_744_073_709_551_616.0),
        json!(i64::MIN),
        json!(-9_223_372_036_854_775_808.0),
        json!(1e300),
    ])
}

/// Numbers near the edges (beyond 2^53, u64 and i64 limits, -0.0, integral floats) under every
/// operator that compares or equates them.
fn numeric_condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            prop::sample::select(&["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains"][..]),
            numbers(),
        )
            .prop_map(|(op, v)| json!({ op: v })),
        (
            prop::sample::select(&["$in", "$nin"][..]),
            prop::collection::vec(numbers(), 0..3),
        )
            .prop_map(|(op, v)| json!({ op: v })),
        numbers(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]
    #[test]
    fn numbers_compare_as_specified(
        condition in numeric_condition(),
        value in prop_oneof![
            4 => numbers(),
            1 => prop::collection::vec(numbers(), 0..3).prop_map(Value::Array),
        ],
    ) {
        let filter = json!({ "n": condition });
        let doc = json!({ "n": value });
        let doc = doc.as_object().unwrap();
        prop_assert_eq!(
            parse(&filter)?.matches(doc),
            ref_matches(&filter, doc),
            "filter {} on {}", filter, doc_json(doc)
        );
    }
}

/// Strings where code-point order differs from case-insensitive or UTF-16 order.
fn order_strings() -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(
        &[
            "",
            "a",
            "ab",
            "b",
            "X",
            "Z",
            "x",
            "é",
            "e",
            "\u{FFFF}",
            "\u{10000}",
            "\u{FF61}",
            "\u{1F600}",
            "2021",
            "10",
        ][..],
    )
    .prop_map(Value::from)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]
    #[test]
    fn strings_compare_by_code_point(
        op in prop::sample::select(&["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains"][..]),
        operand in order_strings(),
        value in prop_oneof![
            4 => order_strings(),
            1 => prop::collection::vec(order_strings(), 0..3).prop_map(Value::Array),
        ],
    ) {
        let filter = json!({ "s": { op: operand } });
        let doc = json!({ "s": value });
        let doc = doc.as_object().unwrap();
        prop_assert_eq!(
            parse(&filter)?.matches(doc),
            ref_matches(&filter, doc),
            "filter {} on {}", filter, doc_json(doc)
        );
    }
}

/// The consequences spelled out in the doc, one by one (and a check of the reference itself).
#[test]
fn documented_examples_hold() {
    let cases: &[(Value, Value, bool)] = &[
        (json!({}), json!({}), true),
        (json!({}), json!({"a": 1}), true),
        (json!({"f": null}), json!({}), false),
        (json!({"f": null}), json!({"f": null}), true),
        (json!({"f": {"$exists": false}}), json!({}), true),
        (json!({"f": {"$exists": true}}), json!({"f": null}), true),
        (json!({"f": {"$exists": false}}), json!({"f": null}), false),
        (
            json!({"$or": [{"f": null}, {"f": {"$exists": false}}]}),
            json!({}),
            true,
        ),
        (json!({"f": {"$ne": 1}}), json!({}), true),
        (json!({"f": {"$nin": [1]}}), json!({}), true),
        (json!({"f": {"$not": {"$gt": 1}}}), json!({}), true),
        (json!({"f": {"$gt": 1}}), json!({}), false),
        (json!({"f": {"$in": [1, null]}}), json!({"f": null}), true),
        (json!({"f": {"$gte": 0}}), json!({"f": null}), false),
        (json!({"f": {"$lte": ""}}), json!({"f": null}), false),
        (json!({"tags": "a"}), json!({"tags": ["a", "b"]}), true),
        (
            json!({"tags": ["a", "b"]}),
            json!({"tags": ["a", "b"]}),
            true,
        ),
        (
            json!({"tags": ["a", "b"]}),
            json!({"tags": ["b", "a"]}),
            false,
        ),
        (
            json!({"tags": ["a", "b"]}),
            json!({"tags": [["a", "b"]]}),
            false,
        ),
        (json!({"tags": ["a"]}), json!({"tags": "a"}), false),
        (json!({"n": {"$gt": 5}}), json!({"n": [1, 7]}), true),
        (json!({"n": {"$gt": 5}}), json!({"n": [1, 5]}), false),
        (
            json!({"tags": {"$ne": "a"}}),
            json!({"tags": ["b", "c"]}),
            true,
        ),
        (
            json!({"tags": {"$ne": "a"}}),
            json!({"tags": ["b", "a"]}),
            false,
        ),
        (
            json!({"year": {"$gt": 2000}}),
            json!({"year": "2021"}),
            false,
        ),
        (
            json!({"year": {"$gt": "2000"}}),
            json!({"year": 2021}),
            false,
        ),
        (
            json!({"year": {"$gt": "2000"}}),
            json!({"year": "2021"}),
            true,
        ),
        (json!({"n": 1}), json!({"n": 1.0}), true),
        (json!({"n": 1.0}), json!({"n": 1}), true),
        (json!({"n": {"$in": [1.0]}}), json!({"n": [3, 1]}), true),
        (json!({"n": 0}), json!({"n": -0.0}), true),
        (json!({"n": true}), json!({"n": 1}), false),
        (json!({"n": "1"}), json!({"n": 1}), false),
        (
            json!({"n": (1i64 << 53) + 1}),
            json!({"n": (1i64 << 53) + 1}),
            true,
        ),
        (
            json!({"n": (1i64 << 53) + 1}),
            json!({"n": 1i64 << 53}),
            false,
        ),
        (
            json!({"n": {"$gt": 1i64 << 53}}),
            json!({"n": (1i64 << 53) + 1}),
            true,
        ),
        (
            json!({"n": {"$gt": i64::MAX}}),
            json!({"n": u64::MAX}),
            true,
        ),
        (json!({"n": {"$lt": -1}}), json!({"n": i64::MIN}), true),
        (json!({"n": {"$gte": 2.5}}), json!({"n": 3}), true),
        (json!({"n": {"$gt": 2.5}}), json!({"n": 2}), false),
        (json!({"s": {"$lt": "é"}}), json!({"s": "z"}), true),
        (json!({"s": {"$lt": "Z"}}), json!({"s": "a"}), false),
        (json!({"s": {"$gte": ""}}), json!({"s": ""}), true),
        (
            json!({"o": {"x": 1, "y": [1, 2]}}),
            json!({"o": {"y": [1.0, 2], "x": 1.0}}),
            true,
        ),
        (
            json!({"o": {"x": 1}}),
            json!({"o": {"x": 1, "y": 2}}),
            false,
        ),
        (json!({"o": {}}), json!({"o": {}}), true),
        (json!({"o": {}}), json!({"o": []}), false),
        (json!({"o": {"$eq": {}}}), json!({"o": {}}), true),
        (json!({"o": []}), json!({"o": []}), true),
        (json!({"o": []}), json!({"o": [[]]}), false),
        // An object without `$` keys is a literal, even if a member looks like an operator.
        (
            json!({"o": {"x": {"$gt": 1}}}),
            json!({"o": {"x": 5}}),
            false,
        ),
        (
            json!({"o": {"x": {"$gt": 1}}}),
            json!({"o": {"x": {"$gt": 1}}}),
            true,
        ),
        (
            json!({"o": {"$eq": {"$gt": 1}}}),
            json!({"o": {"$gt": 1}}),
            true,
        ),
        (
            json!({"author.name": "ann"}),
            json!({"author": {"name": "ann"}}),
            true,
        ),
        (
            json!({"authors.name": "ann"}),
            json!({"authors": [{"name": "ann"}]}),
            false,
        ),
        (
            json!({"authors.name": {"$exists": false}}),
            json!({"authors": [{"name": "ann"}]}),
            true,
        ),
        (json!({"a.b": 1}), json!({"a.b": 1}), false),
        (json!({"a.b": 1}), json!({"a": {"b": 1}}), true),
        (
            json!({"a.b.c": {"$exists": true}}),
            json!({"a": {"b": {"c": null}}}),
            true,
        ),
        (
            json!({"a.b.c": {"$exists": true}}),
            json!({"a": {"b": 1}}),
            false,
        ),
        (
            json!({"t": {"$contains": "b"}}),
            json!({"t": ["a", "b"]}),
            true,
        ),
        (json!({"t": {"$contains": "b"}}), json!({"t": "abc"}), true),
        (json!({"t": {"$contains": ""}}), json!({"t": "abc"}), true),
        (json!({"t": {"$contains": "d"}}), json!({"t": "abc"}), false),
        (json!({"t": {"$contains": 1}}), json!({"t": "1"}), false),
        (json!({"t": {"$contains": 1}}), json!({"t": [1.0]}), true),
        (json!({"t": {"$contains": 1}}), json!({"t": 1}), false),
        (
            json!({"t": {"$contains": null}}),
            json!({"t": [null]}),
            true,
        ),
        (
            json!({"t": {"$contains": "a"}}),
            json!({"t": [["a"]]}),
            false,
        ),
        (json!({"t": {"$in": []}}), json!({"t": 1}), false),
        (json!({"t": {"$nin": []}}), json!({"t": 1}), true),
        (json!({"t": {"$not": 5}}), json!({"t": 5}), false),
        (json!({"t": {"$not": 5}}), json!({"t": 6}), true),
        (json!({"t": {"$not": {}}}), json!({"t": {}}), false),
        (
            json!({"t": {"$gt": 1, "$lt": 3}}),
            json!({"t": [0, 4]}),
            true, // some value > 1 and some (other) value < 3
        ),
        (json!({"t": {"$gt": 1, "$lt": 3}}), json!({"t": 4}), false),
        (json!({"$not": {}}), json!({"a": 1}), false),
        (json!({"$and": [{}, {"a": 1}]}), json!({"a": 1}), true),
        (json!({"$or": [{"a": 2}, {"a": 3}]}), json!({"a": 1}), false),
        (
            json!({"lang": "en", "year": {"$gte": 2020}, "$or": [{"tag": {"$in": ["a", "b"]}}, {"draft": {"$exists": false}}]}),
            json!({"lang": "en", "year": 2021, "tag": "c", "draft": true}),
            false,
        ),
        (
            json!({"lang": "en", "year": {"$gte": 2020}, "$or": [{"tag": {"$in": ["a", "b"]}}, {"draft": {"$exists": false}}]}),
            json!({"lang": "en", "year": 2021.5, "tag": ["c", "b"], "draft": true}),
            true,
        ),
    ];
    for (filter, doc, expected) in cases {
        let doc = doc.as_object().unwrap();
        assert_eq!(ref_check(filter), Ok(()), "{filter}");
        assert_eq!(
            ref_matches(filter, doc),
            *expected,
            "reference: {filter} on {}",
            doc_json(doc)
        );
        let parsed = Filter::from_json(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(
            parsed.matches(doc),
            *expected,
            "{filter} on {}",
            doc_json(doc)
        );
    }
}

#[test]
fn builder_filters_mean_their_json() {
    let docs: Vec<Map<String, Value>> = [
        json!({"lang": "en", "year": 2021, "tag": "a"}),
        json!({"lang": "en", "year": 2019, "tag": "a"}),
        json!({"lang": "fr", "year": 2022}),
        json!({"lang": "en", "year": 2020, "tag": ["c", "b"], "draft": true}),
        json!({"lang": "en", "year": 2020.5, "tag": "c", "draft": false}),
        json!({"lang": "en", "year": "2021"}),
        json!({"n": [1, 7], "s": "abc"}),
        json!({}),
    ]
    .iter()
    .map(|d| d.as_object().unwrap().clone())
    .collect();
    let pairs: Vec<(Filter, Value)> = vec![
        (
            Filter::and(vec![
                Filter::field("lang").eq(json!("en")),
                Filter::field("year").gte(json!(2020)),
                Filter::or(vec![
                    Filter::field("tag").is_in(vec![json!("a"), json!("b")]),
                    Filter::field("draft").exists(false),
                ]),
            ]),
            json!({"lang": "en", "year": {"$gte": 2020}, "$or": [{"tag": {"$in": ["a", "b"]}}, {"draft": {"$exists": false}}]}),
        ),
        (
            Filter::field("lang").ne(json!("en")),
            json!({"lang": {"$ne": "en"}}),
        ),
        (
            Filter::field("year").gt(json!(2020)),
            json!({"year": {"$gt": 2020}}),
        ),
        (
            Filter::field("year").lt(json!(2020.5)),
            json!({"year": {"$lt": 2020.5}}),
        ),
        (
            Filter::field("year").lte(json!("2021")),
            json!({"year": {"$lte": "2021"}}),
        ),
        (
            Filter::field("tag").nin(vec![json!("a"), json!(null)]),
            json!({"tag": {"$nin": ["a", null]}}),
        ),
        (
            Filter::field("tag").contains(json!("b")),
            json!({"tag": {"$contains": "b"}}),
        ),
        (
            Filter::field("s").contains(json!("bc")),
            json!({"s": {"$contains": "bc"}}),
        ),
        (
            Filter::not(Filter::field("n").gt(json!(5))),
            json!({"$not": {"n": {"$gt": 5}}}),
        ),
        (Filter::all(), json!({})),
    ];
    for (built, json) in &pairs {
        let serialized = serde_json::to_value(built).unwrap();
        assert_eq!(ref_check(&serialized), Ok(()), "{serialized}");
        for doc in &docs {
            let expected = ref_matches(json, doc);
            assert_eq!(built.matches(doc), expected, "{json} on {}", doc_json(doc));
            assert_eq!(
                ref_matches(&serialized, doc),
                expected,
                "{serialized} (built as {json}) on {}",
                doc_json(doc)
            );
        }
    }
    for doc in &docs {
        assert!(Filter::all().matches(doc));
    }
}

// ----- 3. arbitrary JSON never panics ----------------------------------------------------------

const KEYS: &[&str] = &[
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$contains",
    "$not",
    "$and",
    "$or",
    "$foo",
    "$regex",
    "$",
    "$EQ",
    "a",
    "b",
    "tags",
    "nested.x",
    "a.b",
    "",
    ".",
    "..",
    ".a",
    "a.",
    "a..b",
    "x$",
];

fn arbitrary_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        ints(),
        floats(),
        prop::sample::select(KEYS).prop_map(Value::from),
        strings(),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            3 => prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..4).prop_map(obj),
        ]
    })
    .boxed()
}

fn fixed_docs() -> Vec<Map<String, Value>> {
    [
        json!({}),
        json!({"a": "x", "b": true, "n": 3, "f": 2.0, "tags": ["x", "y"], "nested": {"x": 1}}),
        json!({"a": null, "b": [true, false], "n": [1, 7.5, "8"], "tags": [], "nested": {"x": {"y": 2}}}),
        json!({"a": ["$eq", ""], "b": {"x": 1}, "n": u64::MAX, "f": -0.0, "tags": [["x"]], "nested": [{"x": 1}]}),
        json!({"a": {"b": 1}, "a.b": "a.b", "$eq": 1, "": 2, "nested": {"x": null}}),
        json!({"a": "a..b", "b": "$foo", "n": i64::MIN, "tags": "xy", "nested": "x"}),
    ]
    .iter()
    .map(|d| d.as_object().unwrap().clone())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]
    #[test]
    fn arbitrary_json_is_parsed_or_rejected_as_the_spec_says(
        json in prop_oneof![
            1 => arbitrary_json(),
            2 => prop::collection::btree_map(prop::sample::select(KEYS), arbitrary_json(), 0..4)
                .prop_map(obj),
            3 => filter_with(1),
        ]
    ) {
        let result = Filter::from_json(&json);
        match (result, ref_check(&json)) {
            (Ok(filter), Ok(())) => {
                for doc in fixed_docs() {
                    prop_assert_eq!(
                        filter.matches(&doc),
                        ref_matches(&json, &doc),
                        "filter {} on {}", json, doc_json(&doc)
                    );
                }
                let serialized = serde_json::to_value(&filter).unwrap();
                prop_assert!(Filter::from_json(&serialized).is_ok(), "{} -> {}", json, serialized);
            }
            (Err(Error::InvalidFilter { message, .. }), Err(_)) => {
                prop_assert!(!message.is_empty());
                prop_assert!(serde_json::from_value::<Filter>(json.clone()).is_err(), "{}", json);
            }
            (Ok(_), Err(why)) => {
                return Err(TestCaseError::fail(format!("{json} accepted although {why}")));
            }
            (Err(e), Ok(())) => {
                return Err(TestCaseError::fail(format!("{json} rejected: {e:?}")));
            }
            (Err(e), Err(_)) => {
                return Err(TestCaseError::fail(format!("{json}: not InvalidFilter: {e:?}")));
            }
        }
    }
}

fn nest(depth: usize, leaf: Value, wrap: impl Fn(Value) -> Value) -> Value {
    (0..depth).fold(leaf, |inner, _| wrap(inner))
}

fn assert_too_deep(json: &Value, what: &str) {
    match Filter::from_json(json) {
        Err(Error::InvalidFilter { .. }) => {}
        other => panic!("{what}: expected InvalidFilter, got {other:?}"),
    }
}

/// "Nesting deeper than 32 levels (`$and`, `$or`, `$not` and nested conditions each count one)"
/// leaves open whether the top-level object and the innermost field condition count, so 29 levels
/// of the operator must be accepted and 33 (and more) rejected under any reading.
#[test]
fn nesting_deeper_than_32_is_rejected() {
    // (name, one level of nesting, how many levels of the operator one level adds)
    type Wrap = fn(Value) -> Value;
    let shapes: [(&str, Wrap, usize); 4] = [
        ("$not", |f| json!({ "$not": f }), 1),
        ("$and", |f| json!({ "$and": [f] }), 1),
        ("$or", |f| json!({ "$or": [{"a": 2}, f] }), 1),
        (
            "$and/$or/$not",
            |f| json!({ "$and": [{"$or": [{"$not": f}]}] }),
            3,
        ),
    ];
    let leaf = json!({"a": 1});
    for (what, wrap, per_level) in shapes {
        let ok = nest(29 / per_level, leaf.clone(), wrap);
        let parsed = Filter::from_json(&ok).unwrap_or_else(|e| panic!("{what} x 29: {e}"));
        let doc = json!({"a": 1});
        assert_eq!(
            parsed.matches(doc.as_object().unwrap()),
            ref_matches(&ok, doc.as_object().unwrap())
        );
        for depth in [33usize, 40, 1000] {
            assert_too_deep(&nest(depth.div_ceil(per_level), leaf.clone(), wrap), what);
        }
    }
    // Nested conditions: `{"a": {"$not": {"$not": ... 1}}}`.
    let condition = |depth| json!({"a": nest(depth, json!(1), |c| json!({ "$not": c }))});
    let ok = condition(29);
    let parsed = Filter::from_json(&ok).unwrap_or_else(|e| panic!("condition $not x 29: {e}"));
    for doc in [json!({"a": 1}), json!({"a": 2}), json!({})] {
        let doc = doc.as_object().unwrap();
        assert_eq!(parsed.matches(doc), ref_matches(&ok, doc));
    }
    for depth in [33, 40, 1000] {
        assert_too_deep(&condition(depth), "condition $not");
    }
    // Mixed: 20 logical levels around 20 condition levels.
    let mixed = nest(20, condition(20), |f| json!({ "$not": f }));
    assert_too_deep(&mixed, "20 $not around 20 condition $not");
    // Shallow filters are fine.
    for depth in 0..10 {
        Filter::from_json(&nest(depth, json!({"a": 1}), |f| json!({ "$not": f }))).unwrap();
        Filter::from_json(&condition(depth)).unwrap();
    }
}

// ----- 4. each documented error ----------------------------------------------------------------

#[track_caller]
fn assert_invalid(json: &Value, location_mentions: &[&str]) {
    match Filter::from_json(json) {
        Err(e @ Error::InvalidFilter { .. }) => {
            assert_eq!(e.code(), "invalid_filter");
            assert!(e.is_user_error(), "{e}");
            let Error::InvalidFilter { location, message } = &e else {
                unreachable!()
            };
            assert!(!message.is_empty(), "{json}: empty message");
            for needle in location_mentions {
                assert!(
                    location.contains(needle),
                    "{json}: location {location:?} (message {message:?}) does not mention {needle:?}"
                );
            }
            assert!(e.to_string().contains(location.as_str()), "{e}");
            // Every way into a Filter refuses it.
            assert!(
                serde_json::from_value::<Filter>(json.clone()).is_err(),
                "{json}: serde accepted"
            );
            assert!(
                json.to_string().parse::<Filter>().is_err(),
                "{json}: FromStr accepted"
            );
        }
        other => panic!("{json}: expected InvalidFilter, got {other:?}"),
    }
}

#[test]
fn the_filter_must_be_an_object() {
    for json in [
        json!(null),
        json!(true),
        json!(1),
        json!("a"),
        json!([]),
        json!([{"a": 1}]),
    ] {
        assert_invalid(&json, &[]);
    }
    assert_invalid(&json!({"$and": [{"a": 1}, 5]}), &["$and"]);
    assert_invalid(&json!({"$and": [{"a": 1}, [{"a": 1}]]}), &["$and"]);
    assert_invalid(&json!({"$or": [{}, "x"]}), &["$or"]);
    assert_invalid(&json!({"$or": [null]}), &["$or"]);
    assert_invalid(&json!({"$not": 5}), &["$not"]);
    assert_invalid(&json!({"$not": [{"a": 1}]}), &["$not"]);
    assert_invalid(&json!({"$not": null}), &["$not"]);
    assert_invalid(
        &json!({"$and": [{"$or": [{"a": 1}, {"$not": "b"}]}]}),
        &["$and", "$or", "$not"],
    );
}

#[test]
fn unknown_operators_are_rejected_at_the_top_and_in_conditions() {
    assert_invalid(&json!({"$regex": "x"}), &["$regex"]);
    assert_invalid(&json!({"$foo": 1}), &["$foo"]);
    assert_invalid(&json!({"$": 1}), &["$"]);
    assert_invalid(&json!({"$AND": [{}]}), &["$AND"]);
    assert_invalid(&json!({"a": {"$foo": 1}}), &["a", "$foo"]);
    assert_invalid(&json!({"a": {"$regex": "^x"}}), &["a", "$regex"]);
    assert_invalid(&json!({"a": {"$gt": 1, "$foo": 1}}), &["a", "$foo"]);
    assert_invalid(&json!({"a": {"$not": {"$regex": "x"}}}), &["a", "$regex"]);
    assert_invalid(
        &json!({"$or": [{"a": 1}, {"b": {"$Eq": 1}}]}),
        &["$or", "b", "$Eq"],
    );
    // Condition operators are not logical operators, and logical `$and`/`$or` are not operators
    // of a condition (the operator table lists `$not` only).
    assert_invalid(&json!({"$eq": 1}), &["$eq"]);
    assert_invalid(&json!({"$exists": true}), &["$exists"]);
    assert_invalid(&json!({"a": {"$and": [{"$gt": 1}]}}), &["a", "$and"]);
    assert_invalid(&json!({"a": {"$or": [{"b": 1}]}}), &["a", "$or"]);
}

#[test]
fn and_or_need_a_non_empty_array() {
    for op in ["$and", "$or"] {
        for operand in [
            json!([]),
            json!({}),
            json!({"a": 1}),
            json!(null),
            json!("a"),
            json!(1),
        ] {
            assert_invalid(&json!({ op: operand }), &[op]);
        }
        assert_invalid(&json!({"$not": { op: [] }}), &["$not", op]);
    }
}

#[test]
fn range_operators_need_a_number_or_a_string() {
    for op in ["$gt", "$gte", "$lt", "$lte"] {
        for operand in [
            json!(true),
            json!(null),
            json!([1]),
            json!([]),
            json!({"x": 1}),
            json!({}),
        ] {
            assert_invalid(&json!({"year": { op: operand }}), &["year", op]);
        }
        // Valid operands.
        for operand in [json!(1), json!(-2.5), json!(""), json!("2020")] {
            Filter::from_json(&json!({"year": { op: operand }})).unwrap();
        }
    }
}

#[test]
fn in_and_nin_need_an_array_of_scalars() {
    for op in ["$in", "$nin"] {
        for operand in [
            json!("a"),
            json!(1),
            json!(null),
            json!({"a": 1}),
            json!([["a"]]),
            json!(["a", {"b": 1}]),
            json!([[]]),
            json!([{}]),
        ] {
            assert_invalid(&json!({"tag": { op: operand }}), &["tag", op]);
        }
        for operand in [json!([]), json!(["a", 1, 2.5, true, null])] {
            Filter::from_json(&json!({"tag": { op: operand }})).unwrap();
        }
    }
    // The example of the doc.
    assert_invalid(
        &json!({"$or": [{"a": 1}, {"tag": {"$in": "a"}}]}),
        &["$or[1]", "tag", "$in"],
    );
}

#[test]
fn exists_needs_a_boolean() {
    for operand in [
        json!(1),
        json!(0),
        json!("true"),
        json!(null),
        json!([true]),
        json!({}),
    ] {
        assert_invalid(
            &json!({"draft": {"$exists": operand}}),
            &["draft", "$exists"],
        );
    }
}

#[test]
fn contains_refuses_arrays_and_objects() {
    for operand in [json!([1]), json!([]), json!({}), json!({"a": 1})] {
        assert_invalid(
            &json!({"tags": {"$contains": operand}}),
            &["tags", "$contains"],
        );
    }
    for operand in [json!(1), json!("a"), json!(""), json!(null), json!(false)] {
        Filter::from_json(&json!({"tags": {"$contains": operand}})).unwrap();
    }
}

#[test]
fn empty_paths_and_segments_are_rejected() {
    assert_invalid(&json!({"": 1}), &[]);
    for path in ["a..b", ".a", "a.", ".", "..", "a.b.", "a...b"] {
        assert_invalid(&json!({ path: 1 }), &[path]);
    }
    assert_invalid(
        &json!({"$and": [{"ok": 1}, {"a..b": {"$gt": 1}}]}),
        &["$and", "a..b"],
    );
    assert_invalid(&json!({"$not": {".a": {"$exists": true}}}), &["$not", ".a"]);
}

#[test]
fn objects_mixing_operators_and_plain_keys_are_rejected() {
    assert_invalid(&json!({"a": {"$gt": 1, "x": 2}}), &["a"]);
    assert_invalid(&json!({"a": {"x": 2, "$eq": 2}}), &["a"]);
    assert_invalid(&json!({"a": {"$not": {"$gt": 1, "x": 2}}}), &["a", "$not"]);
    assert_invalid(
        &json!({"$or": [{"b": {"$in": [1], "y": 1}}]}),
        &["$or", "b"],
    );
    // A literal object with `$` keys deeper down is fine (only its own keys count).
    Filter::from_json(&json!({"a": {"x": {"$gt": 1}}})).unwrap();
    Filter::from_json(&json!({"a": {"$eq": {"$gt": 1, "x": 2}}})).unwrap();
    Filter::from_json(&json!({"a": {"$ne": {"$foo": 1}}})).unwrap();
    Filter::from_json(&json!({"a": [{"$foo": 1}]})).unwrap();
}

#[test]
fn text_that_is_not_json_is_refused() {
    for text in ["", "{", "{\"a\": }", "nope", "{\"a\": 1} trailing"] {
        assert!(text.parse::<Filter>().is_err(), "{text:?}");
    }
    let parsed: Filter = " {\"a\": {\"$in\": [1, 2]}} ".parse().unwrap();
    assert!(parsed.matches(json!({"a": 2.0}).as_object().unwrap()));
}

// ----- 5. collections: indexes, count / scroll / search / delete against a model ----------------

const DIM: usize = 4;
const ID_POOL: u128 = 60;
const K: usize = 5;
const PAGE: usize = 7;

/// Payload indexes the property test may declare (at creation or later).
const PAYLOAD: &[(&str, PayloadKind)] = &[
    ("a", PayloadKind::Keyword),
    ("n", PayloadKind::Integer),
    ("f", PayloadKind::Float),
    ("b", PayloadKind::Bool),
    ("tags", PayloadKind::Keyword),
    ("nested.x", PayloadKind::Integer),
    ("nested.y.z", PayloadKind::Keyword),
];

/// A scalar of the type a path usually holds in [`metadata`] (sometimes another one).
fn typed_scalar(path: &str) -> BoxedStrategy<Value> {
    let typed = match path {
        "a" | "tags" | "nested.y.z" => strings().boxed(),
        "n" | "nested.x" => prop_oneof![3 => ints(), 1 => floats()].boxed(),
        "f" => prop_oneof![3 => floats(), 1 => ints()].boxed(),
        "b" => any::<bool>().prop_map(Value::from).boxed(),
        _ => scalars().boxed(),
    };
    prop_oneof![4 => typed, 1 => scalars()].boxed()
}

/// One valid condition on `path` with operands of the path's usual type.
fn typed_condition(path: &'static str) -> BoxedStrategy<Value> {
    let range = typed_scalar(path).prop_map(|v| {
        if v.is_number() || v.is_string() {
            v
        } else {
            json!(0)
        }
    });
    prop_oneof![
        2 => typed_scalar(path),
        3 => (prop::sample::select(&["$eq", "$ne", "$contains"][..]), typed_scalar(path))
            .prop_map(|(op, v)| obj([(op, v)])),
        4 => (prop::sample::select(&["$gt", "$gte", "$lt", "$lte"][..]), range)
            .prop_map(|(op, v)| obj([(op, v)])),
        2 => (
            prop::sample::select(&["$in", "$nin"][..]),
            prop::collection::vec(typed_scalar(path), 0..4),
        )
            .prop_map(|(op, v)| obj([(op, Value::Array(v))])),
        1 => any::<bool>().prop_map(|b| json!({ "$exists": b })),
        1 => condition(0),
    ]
    .boxed()
}

/// Filters for the collection tests: mostly one or two conditions with operands of the field's
/// type (so that they match some of the documents, not none or all), sometimes anything
/// [`filter`] makes.
fn collection_filter() -> BoxedStrategy<Value> {
    let path = prop::sample::select(
        &[
            "a",
            "a",
            "n",
            "n",
            "f",
            "f",
            "b",
            "tags",
            "tags",
            "nested.x",
            "nested.x",
            "nested.y.z",
            "nested",
            "missing",
        ][..],
    );
    let leaf = path.prop_flat_map(|path| typed_condition(path).prop_map(move |c| obj([(path, c)])));
    prop_oneof![
        4 => leaf.clone(),
        2 => (
            prop::sample::select(&["$and", "$or"][..]),
            prop::collection::vec(leaf.clone(), 2..4),
        )
            .prop_map(|(op, items)| obj([(op, Value::Array(items))])),
        1 => leaf.prop_map(|f| json!({ "$not": f })),
        1 => filter(),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum Op {
    Upsert(Vec<(u128, u64, Map<String, Value>)>),
    Delete(Vec<u128>),
    Patch(u128, Map<String, Value>),
}

fn vector_seed() -> impl Strategy<Value = u64> {
    // A few shared seeds make identical vectors: exact ties, broken by id.
    prop_oneof![1 => 0u64..3, 3 => any::<u64>()]
}

fn patch() -> impl Strategy<Value = Map<String, Value>> {
    let top = (
        prop::sample::select(&["a", "n", "f", "b", "tags", "nested", "extra"][..]),
        prop_oneof![1 => Just(Value::Null), 3 => any_value()],
    )
        .prop_map(|(k, v)| (k.to_string(), v));
    let nested = prop_oneof![1 => Just(Value::Null), 3 => ints(), 1 => any_value()]
        .prop_map(|x| ("nested".to_string(), json!({ "x": x })));
    prop::collection::vec(prop_oneof![3 => top, 1 => nested], 1..3)
        .prop_map(|entries| entries.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec((0..ID_POOL, vector_seed(), metadata()), 2..10).prop_map(Op::Upsert),
        1 => prop::collection::vec(0..ID_POOL, 1..5).prop_map(Op::Delete),
        2 => (0..ID_POOL, patch()).prop_map(|(i, p)| Op::Patch(i, p)),
    ]
}

fn doc_id(i: u128) -> Uuid {
    // Scatter the ids so that UUID order is not the order of the pool.
    Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ 0x5555)
}

fn vector(seed: u64) -> Vec<f32> {
    Rng(seed).vector(DIM)
}

/// RFC 7396 merge patch, written here for the model.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub) => {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                merge_patch(entry.as_object_mut().unwrap(), sub);
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

type Model = BTreeMap<Uuid, (Vec<f32>, Map<String, Value>)>;

fn apply(c: &Collection, model: &mut Model, op: &Op) {
    match op {
        Op::Upsert(docs) => {
            let inputs = docs
                .iter()
                .map(|(i, seed, metadata)| {
                    DocumentInput::new(vector(*seed))
                        .with_id(doc_id(*i))
                        .with_metadata(Value::Object(metadata.clone()))
                })
                .collect();
            c.upsert(inputs).unwrap();
            for (i, seed, metadata) in docs {
                model.insert(doc_id(*i), (vector(*seed), metadata.clone()));
            }
        }
        Op::Delete(ids) => {
            let ids: Vec<Uuid> = ids.iter().map(|i| doc_id(*i)).collect();
            let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
            let expected = unique.iter().filter(|id| model.contains_key(id)).count();
            assert_eq!(c.delete(&ids).unwrap(), expected);
            for id in &ids {
                model.remove(id);
            }
        }
        Op::Patch(i, patch) => {
            let id = doc_id(*i);
            match (
                c.update_metadata(id, Value::Object(patch.clone())),
                model.get_mut(&id),
            ) {
                (Ok(()), Some((_, metadata))) => merge_patch(metadata, patch),
                (Err(Error::DocumentNotFound(_)), None) => {}
                (result, doc) => panic!("update_metadata gave {result:?} with model doc {doc:?}"),
            }
        }
    }
}

fn matching(model: &Model, filter: &Value) -> Vec<Uuid> {
    model
        .iter()
        .filter(|(_, (_, metadata))| ref_matches(filter, metadata))
        .map(|(id, _)| *id)
        .collect()
}

/// Checks that `hits` are exactly the brute force over `docs`: the same ids in the same order,
/// except where two different vectors are within 1e-5 of each other (f32 rounding); identical
/// vectors tie exactly and must come in UUID order.
fn assert_exact_hits(
    hits: &[Hit],
    docs: &[(Uuid, Vec<f32>)],
    query: &[f32],
    k: usize,
    ctx: &str,
) -> Result<(), TestCaseError> {
    let all = brute_force(Metric::L2, docs, query, docs.len());
    let expected = &all[..k.min(all.len())];
    prop_assert_eq!(hits.len(), expected.len(), "{}: number of hits", ctx);
    let vectors: BTreeMap<Uuid, &Vec<f32>> = docs.iter().map(|(id, v)| (*id, v)).collect();
    let distinct: BTreeSet<Uuid> = hits.iter().map(|h| h.id).collect();
    prop_assert_eq!(distinct.len(), hits.len(), "{}: duplicate hits", ctx);
    for (i, (hit, (id, dist))) in hits.iter().zip(expected).enumerate() {
        let Some(hit_vector) = vectors.get(&hit.id) else {
            return Err(TestCaseError::fail(format!(
                "{ctx}: hit {i} {} does not match the filter",
                hit.id
            )));
        };
        let exact = distance_f64(Metric::L2, query, hit_vector);
        prop_assert!(
            (f64::from(hit.distance.unwrap()) - exact).abs() <= 1e-4 * exact.abs().max(1.0),
            "{}: hit {} distance {} vs exact {}",
            ctx,
            i,
            hit.distance.unwrap(),
            exact
        );
        if hit.id != *id {
            prop_assert!(
                (exact - dist).abs() <= 1e-5 * dist.abs().max(1.0) && *hit_vector != vectors[id],
                "{}: hit {} is {} (distance {}) instead of {} (distance {})",
                ctx,
                i,
                hit.id,
                exact,
                id,
                dist
            );
        }
    }
    Ok(())
}

/// Every filtered operation but delete agrees with the model, for every filter.
fn check_filters(
    c: &Collection,
    model: &Model,
    filters: &[Value],
    query: &[f32],
    stage: &str,
) -> Result<(), TestCaseError> {
    // Distances as an unfiltered search computes them.
    let unfiltered: BTreeMap<Uuid, f32> = if model.is_empty() {
        BTreeMap::new()
    } else {
        c.search(&SearchRequest::new(query.to_vec(), model.len()))
            .unwrap()
            .hits
            .into_iter()
            .map(|h| (h.id, h.distance.unwrap()))
            .collect()
    };
    prop_assert_eq!(unfiltered.len(), model.len());
    for json in filters {
        let ctx = format!("{stage}: filter {json}");
        let filter = parse(json)?;
        let expected = matching(model, json);
        prop_assert_eq!(
            c.count_where(&filter).unwrap(),
            expected.len() as u64,
            "{}: count_where",
            ctx
        );
        // Scroll in small pages.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..=(ID_POOL as usize) {
            let page = c.scroll_where(&filter, PAGE, cursor.as_deref()).unwrap();
            prop_assert!(page.documents.len() <= PAGE, "{}: page too long", ctx);
            seen.extend(page.documents);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => {
                    cursor = None;
                    break;
                }
            }
        }
        prop_assert!(cursor.is_none(), "{}: scroll does not end", ctx);
        prop_assert_eq!(
            seen.iter().map(|d| d.id).collect::<Vec<_>>(),
            expected.clone(),
            "{}: scroll_where",
            ctx
        );
        for doc in &seen {
            let (vector, metadata) = &model[&doc.id];
            prop_assert_eq!(&doc.vector, vector, "{}", ctx);
            prop_assert_eq!(&doc.metadata, metadata, "{}", ctx);
        }
        // Exact filtered search.
        let response = c
            .search(&SearchRequest::new(query.to_vec(), K).with_filter(filter))
            .unwrap();
        prop_assert!(
            response.exhaustive,
            "{}: flat filtered search not exhaustive ({})",
            ctx,
            response.strategy
        );
        let docs: Vec<(Uuid, Vec<f32>)> = expected
            .iter()
            .map(|id| (*id, model[id].0.clone()))
            .collect();
        assert_exact_hits(&response.hits, &docs, query, K, &ctx)?;
        for hit in &response.hits {
            let d = unfiltered[&hit.id];
            prop_assert!(
                (hit.distance.unwrap() - d).abs() <= 1e-6 * d.abs().max(1.0),
                "{}: distance {} of {}, unfiltered search says {}",
                ctx,
                hit.distance.unwrap(),
                hit.id,
                d
            );
        }
    }
    Ok(())
}

/// The whole collection equals the model.
fn check_state(c: &Collection, model: &Model, ctx: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(c.count().unwrap(), model.len() as u64, "{}", ctx);
    let all = Filter::all();
    prop_assert_eq!(c.count_where(&all).unwrap(), model.len() as u64, "{}", ctx);
    let page = c.scroll_where(&all, ID_POOL as usize + 1, None).unwrap();
    prop_assert!(page.next_cursor.is_none(), "{}", ctx);
    prop_assert_eq!(
        page.documents.iter().map(|d| d.id).collect::<Vec<_>>(),
        model.keys().copied().collect::<Vec<_>>(),
        "{}",
        ctx
    );
    Ok(())
}

fn payload_field(path: &str, kind: PayloadKind) -> PayloadField {
    PayloadField {
        path: path.to_string(),
        kind,
    }
}

fn run_collection_case(
    indexed_at_creation: &[bool],
    before: &[Op],
    after: &[Op],
    filters: &[Value],
    query_seed: u64,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let query = vector(query_seed);
    let mut config = CollectionConfig::new(DIM, Metric::L2).with_index(IndexConfig::Flat {});
    for ((path, kind), indexed) in PAYLOAD.iter().zip(indexed_at_creation) {
        if *indexed {
            config = config.with_payload_field(*path, *kind);
        }
    }
    let mut model = Model::new();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("f", config).unwrap();
        for op in before {
            apply(&c, &mut model, op);
        }
        check_filters(&c, &model, filters, &query, "some fields indexed")?;
        // The remaining indexes, added to a collection holding documents, change no answer.
        for ((path, kind), indexed) in PAYLOAD.iter().zip(indexed_at_creation) {
            if !*indexed {
                c.create_payload_index(payload_field(path, *kind)).unwrap();
            }
        }
        check_filters(&c, &model, filters, &query, "after create_payload_index")?;
        // Later writes maintain every index.
        for op in after {
            apply(&c, &mut model, op);
        }
        check_filters(&c, &model, filters, &query, "after more writes")?;
        check_state(&c, &model, "after more writes")?;
    }
    // Reopened, the indexes answer the same.
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("f").unwrap();
    check_filters(&c, &model, filters, &query, "after reopening")?;
    check_state(&c, &model, "after reopening")?;
    // delete_where deletes exactly the matching documents.
    let victims = matching(&model, &filters[0]);
    let deleted = c.delete_where(&parse(&filters[0])?).unwrap();
    prop_assert_eq!(deleted, victims.len(), "delete_where {}", filters[0]);
    for id in &victims {
        model.remove(id);
    }
    check_state(&c, &model, "after delete_where")?;
    prop_assert_eq!(c.count_where(&parse(&filters[0])?).unwrap(), 0);
    check_filters(&c, &model, filters, &query, "after delete_where")?;
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("f").unwrap();
    check_state(&c, &model, "after delete_where and reopening")?;
    check_filters(
        &c,
        &model,
        filters,
        &query,
        "after delete_where and reopening",
    )?;
    let report = db.check(Some("f")).unwrap();
    prop_assert!(report.ok(), "{:?}", report);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn filtered_operations_on_a_collection_match_the_model(
        indexed in prop::collection::vec(proptest::bool::weighted(0.6), PAYLOAD.len()),
        before in prop::collection::vec(op(), 4..20),
        after in prop::collection::vec(op(), 0..6),
        filters in prop::collection::vec(collection_filter(), 1..6),
        query_seed in any::<u64>(),
    ) {
        run_collection_case(&indexed, &before, &after, &filters, query_seed)?;
    }
}

/// A hand-written case over indexed values the indexes must treat as uncovered (null, objects,
/// nested and empty arrays, wrong types, integers beyond 2^53, integral floats, -0.0).
#[test]
fn indexed_fields_with_unrepresentable_values_answer_exactly() {
    let values = [
        json!(null),
        json!({"x": 1}),
        json!([[1]]),
        json!([]),
        json!("1"),
        json!(true),
        json!((1i64 << 53) + 1),
        json!(1i64 << 53),
        json!(-(1i64 << 53) - 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(2.0),
        json!(-0.0),
        json!(0),
        json!(2),
        json!(2.5),
        json!(9_007_199_254_740_992.0),
        json!([1, "x", 2.5]),
        json!(["x", null]),
        json!("x"),
        json!(1e300),
    ];
    let docs: Vec<Map<String, Value>> = values
        .iter()
        .flat_map(|v| {
            [
                json!({"a": v, "n": v, "f": v, "b": v, "tags": v}),
                json!({"nested": {"x": v}}),
            ]
        })
        .chain([json!({})])
        .map(|d| d.as_object().unwrap().clone())
        .collect();
    let operands = [
        json!(null),
        json!(0),
        json!(2),
        json!(2.0),
        json!(2.5),
        json!(1i64 << 53),
        json!((1i64 << 53) + 1),
        json!(9_007_199_254_740_992.0),
        json!(u64::MAX),
        json!("x"),
        json!("1"),
        json!(true),
        json!(-0.0),
    ];
    let mut filters = Vec::new();
    for path in ["a", "n", "f", "b", "tags", "nested.x"] {
        for operand in &operands {
            for op in ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains"] {
                let f = json!({ path: { op: operand } });
                if ref_check(&f).is_ok() {
                    filters.push(f);
                }
            }
            filters.push(json!({ path: { "$in": [operand, 1] } }));
            filters.push(json!({ path: { "$nin": [operand] } }));
            filters.push(json!({ path: operand }));
        }
        filters.push(json!({ path: { "$exists": true } }));
        filters.push(json!({ path: { "$exists": false } }));
        filters.push(json!({ path: [] }));
        filters.push(json!({ path: {} }));
        filters.push(json!({ path: [1, "x", 2.5] }));
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let mut config = CollectionConfig::new(DIM, Metric::L2);
    for (path, kind) in PAYLOAD {
        config = config.with_payload_field(*path, *kind);
    }
    let c = db.create_collection("u", config).unwrap();
    let mut model = Model::new();
    let ops = vec![Op::Upsert(
        docs.iter()
            .enumerate()
            .map(|(i, m)| (i as u128, i as u64 % 5, m.clone()))
            .collect(),
    )];
    for op in &ops {
        apply(&c, &mut model, op);
    }
    check_filters(&c, &model, &filters, &vector(7), "unrepresentable values")
        .unwrap_or_else(|e| panic!("{e}"));
}

// ----- 6. HNSW filtered recall -----------------------------------------------------------------

const HDIM: usize = 16;
const TOP: usize = 10;
const QUERIES: usize = 30;

type HnswDoc = (Uuid, Vec<f32>, Map<String, Value>);

/// An HNSW collection (default parameters) holding `docs`, with payload indexes.
fn hnsw_collection(db: &Database, docs: &[HnswDoc]) -> Collection {
    let c = db
        .create_collection(
            "h",
            CollectionConfig::new(HDIM, Metric::L2)
                .with_index(IndexConfig::hnsw())
                .with_payload_field("bucket", PayloadKind::Integer)
                .with_payload_field("side", PayloadKind::Keyword),
        )
        .unwrap();
    for chunk in docs.chunks(1_000) {
        c.upsert(
            chunk
                .iter()
                .map(|(id, v, metadata)| {
                    DocumentInput::new(v.clone())
                        .with_id(*id)
                        .with_metadata(Value::Object(metadata.clone()))
                })
                .collect(),
        )
        .unwrap();
    }
    c
}

fn random_docs(rng: &mut Rng, n: usize) -> Vec<HnswDoc> {
    (0..n)
        .map(|_| {
            let id =
                Uuid::from_u128((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
            let v = rng.vector(HDIM);
            let metadata = json!({
                "bucket": rng.below(1000),
                "side": if v[0] > 0.0 { "pos" } else { "neg" },
            });
            (id, v, metadata.as_object().unwrap().clone())
        })
        .collect()
}

/// What one batch of filtered queries gave.
struct RecallReport {
    recall: f64,
    matches: usize,
    strategies: BTreeSet<String>,
    approximate: usize,
}

/// Runs `queries` with `filter` (k = [`TOP`], `ef` if given) and checks every hit (it matches,
/// its distance is right, hits are ordered and distinct, min(k, matches) of them); returns the
/// mean recall@k against the exact filtered brute force (ties within 1e-5 count as found).
fn filtered_recall(
    c: &Collection,
    docs: &[HnswDoc],
    filter_json: &Value,
    queries: &[Vec<f32>],
    ef: Option<usize>,
) -> RecallReport {
    let filter = Filter::from_json(filter_json).unwrap();
    let matching: Vec<(Uuid, Vec<f32>)> = docs
        .iter()
        .filter(|(_, _, metadata)| ref_matches(filter_json, metadata))
        .map(|(id, v, _)| (*id, v.clone()))
        .collect();
    assert_eq!(
        c.count_where(&filter).unwrap(),
        matching.len() as u64,
        "{filter_json}"
    );
    let vectors: BTreeMap<Uuid, &Vec<f32>> = matching.iter().map(|(id, v)| (*id, v)).collect();
    let mut recall_sum = 0.0;
    let mut strategies = BTreeSet::new();
    let mut approximate = 0;
    for (qi, query) in queries.iter().enumerate() {
        let mut request = SearchRequest::new(query.clone(), TOP).with_filter(filter.clone());
        request.ef = ef;
        let response = c.search(&request).unwrap();
        strategies.insert(response.strategy.clone());
        approximate += usize::from(!response.exhaustive);
        let ctx = format!(
            "{filter_json} ef {ef:?}, query {qi} ({})",
            response.strategy
        );
        assert_eq!(
            response.hits.len(),
            TOP.min(matching.len()),
            "{ctx}: number of hits"
        );
        let mut previous = f32::NEG_INFINITY;
        let mut seen = BTreeSet::new();
        for hit in &response.hits {
            let v = vectors
                .get(&hit.id)
                .unwrap_or_else(|| panic!("{ctx}: hit {} does not match", hit.id));
            assert!(seen.insert(hit.id), "{ctx}: duplicate hit {}", hit.id);
            let d = distance_f64(Metric::L2, query, v);
            assert!(
                (f64::from(hit.distance.unwrap()) - d).abs() <= 1e-4 * d.max(1.0),
                "{ctx}: distance {} vs exact {d}",
                hit.distance.unwrap()
            );
            assert!(
                hit.distance.unwrap() >= previous,
                "{ctx}: hits out of order"
            );
            previous = hit.distance.unwrap();
        }
        let exact = brute_force(Metric::L2, &matching, query, TOP);
        let Some(&(_, kth)) = exact.last() else {
            recall_sum += 1.0;
            continue;
        };
        let found = response
            .hits
            .iter()
            .filter(|h| {
                exact.iter().any(|(id, _)| *id == h.id)
                    || f64::from(h.distance.unwrap()) <= kth + 1e-5 * kth.max(1.0)
            })
            .count();
        recall_sum += found as f64 / exact.len() as f64;
    }
    RecallReport {
        recall: recall_sum / queries.len() as f64,
        matches: matching.len(),
        strategies,
        approximate,
    }
}

#[test]
fn hnsw_filtered_search_keeps_recall_at_every_selectivity() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let mut rng = Rng(0x5eed_f11e);
    let docs = random_docs(&mut rng, 5_000);
    let c = hnsw_collection(&db, &docs);
    for (selectivity, limit) in [(0.5, 500), (0.1, 100), (0.01, 10), (0.001, 1)] {
        let filter = json!({"bucket": {"$lt": limit}});
        let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| rng.vector(HDIM)).collect();
        let report = filtered_recall(&c, &docs, &filter, &queries, None);
        eprintln!(
            "filtered hnsw, 5000 docs: selectivity {selectivity} ({} matches): recall@{TOP} \
             {:.4}, strategies {:?}",
            report.matches, report.recall, report.strategies
        );
        assert!(
            report.recall >= 0.95,
            "selectivity {selectivity}: mean recall@{TOP} {:.4} < 0.95 ({:?})",
            report.recall,
            report.strategies
        );
    }
}

/// Large enough that the graph is walked under a filter (at 5,000 documents an exact scan of the
/// matches is cheaper at every selectivity above), including a filter correlated with the
/// vectors: the matching half of the space lies opposite the queries.
#[test]
fn hnsw_filtered_graph_traversal_keeps_recall() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let mut rng = Rng(0xf11e_7e12);
    let docs = random_docs(&mut rng, 20_000);
    let c = hnsw_collection(&db, &docs);
    let random_queries =
        |rng: &mut Rng| -> Vec<Vec<f32>> { (0..QUERIES).map(|_| rng.vector(HDIM)).collect() };
    let cases = [
        (json!({"bucket": {"$lt": 900}}), None),
        (json!({"bucket": {"$lt": 500}}), None),
        (json!({"bucket": {"$gte": 700}}), None),
        (json!({"bucket": {"$lt": 200}}), Some(40)),
        (
            json!({"$or": [{"bucket": {"$lt": 250}}, {"bucket": {"$gte": 750}}]}),
            None,
        ),
        (json!({"side": "pos"}), None),
    ];
    /// A filter, its queries, the `ef` to use, and what the queries are.
    type Run = (Value, Vec<Vec<f32>>, Option<usize>, &'static str);
    let mut runs: Vec<Run> = cases
        .into_iter()
        .map(|(filter, ef)| (filter, random_queries(&mut rng), ef, "random queries"))
        .collect();
    // Correlated: only documents with v[0] > 0 match, and every query has v[0] = -0.9.
    let opposite: Vec<Vec<f32>> = random_queries(&mut rng)
        .into_iter()
        .map(|mut q| {
            q[0] = -0.9;
            q
        })
        .collect();
    runs.push((
        json!({"side": "pos"}),
        opposite,
        None,
        "queries opposite the matches",
    ));
    let mut approximate = 0;
    for (filter, queries, ef, what) in &runs {
        let report = filtered_recall(&c, &docs, filter, queries, *ef);
        eprintln!(
            "filtered hnsw, 20000 docs: {filter} ef {ef:?}, {what} ({} matches): recall@{TOP} \
             {:.4}, strategies {:?}, {} approximate",
            report.matches, report.recall, report.strategies, report.approximate
        );
        assert!(
            report.recall >= 0.95,
            "{filter} ef {ef:?}, {what}: mean recall@{TOP} {:.4} < 0.95 ({:?})",
            report.recall,
            report.strategies
        );
        approximate += report.approximate;
    }
    // Otherwise this test would not check what it is for.
    assert!(
        approximate > 0,
        "every filtered query was answered by an exact scan: no graph traversal was checked"
    );
}
