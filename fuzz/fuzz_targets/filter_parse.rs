//! Fuzzes filter parsing: any bytes that are JSON either parse into a `Filter` or are refused
//! with `Error::InvalidFilter`; a parsed filter evaluates on a few documents without panicking
//! and survives a serde round trip with the same answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiverdb::{Error, Filter};
use serde_json::{json, Map, Value};

fn documents() -> Vec<Map<String, Value>> {
    [
        json!({}),
        json!({"a": "x", "b": true, "n": 3, "f": 2.0, "tags": ["x", "y"], "nested": {"x": 1}}),
        json!({"a": null, "b": [true, false], "n": [1, 7.5, "8"], "tags": [], "nested": {"x": {"y": 2}}}),
        json!({"a": ["$eq", ""], "b": {"x": 1}, "n": u64::MAX, "f": -0.0, "tags": [["x"]], "nested": [{"x": 1}]}),
        json!({"a": {"b": 1}, "a.b": "a.b", "$eq": 1, "": 2, "n": i64::MIN, "nested": {"x": null}}),
    ]
    .iter()
    .map(|d| d.as_object().cloned().unwrap_or_default())
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let filter = match Filter::from_json(&json) {
        Ok(filter) => filter,
        Err(Error::InvalidFilter { .. }) => return,
        Err(other) => panic!("from_json gave an error other than InvalidFilter: {other:?}"),
    };
    let serialized = serde_json::to_value(&filter).expect("a filter serializes");
    let again = Filter::from_json(&serialized).expect("a serialized filter parses again");
    let deserialized: Filter =
        serde_json::from_value(serialized.clone()).expect("a serialized filter deserializes");
    for doc in documents() {
        let answer = filter.matches(&doc);
        assert_eq!(again.matches(&doc), answer, "{json} -> {serialized}");
        assert_eq!(deserialized.matches(&doc), answer, "{json} -> {serialized}");
    }
});
