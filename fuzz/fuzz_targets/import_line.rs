//! Fuzzes the JSON-lines parser of `quiver import`: the input is split into lines as the import
//! splits it (`BufRead::lines`, so invalid UTF-8 ends the input with an I/O error), and each line
//! is parsed and validated as the import does for a collection of dimension 4 (the metric is
//! picked by the first byte). A line is blank (skipped), a valid document, or refused with a
//! typed user error — never a panic or an internal error. A valid document survives a JSON
//! round trip unchanged and passes the same validation again.
#![no_main]

use std::io::BufRead;

use libfuzzer_sys::fuzz_target;
use quiverdb::fuzzing::parse_import_line;
use quiverdb::{DocumentInput, Error, Metric};
use serde_json::Value;

const DIM: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let metric = [Metric::Cosine, Metric::L2, Metric::Dot][usize::from(selector % 3)];
    for line in input.lines() {
        let Ok(line) = line else {
            return;
        };
        match parse_import_line(&line, DIM, metric) {
            Ok(None) => assert!(line.trim().is_empty(), "a non-blank line skipped: {line:?}"),
            Ok(Some(doc)) => {
                assert_eq!(doc.vector.len(), DIM);
                assert!(doc.vector.iter().all(|x| x.is_finite()));
                assert!(doc.metadata.is_null() || doc.metadata.is_object());
                let json = serde_json::to_string(&doc).expect("a document serializes");
                assert!(!json.contains('\n'), "a serialized document spans lines");
                let again = parse_import_line(&json, DIM, metric)
                    .expect("a serialized document parses again")
                    .expect("a serialized document is not blank");
                assert_same(&doc, &again, &json);
            }
            Err(
                Error::InvalidArgument(_)
                | Error::InvalidVector(_)
                | Error::InvalidMetadata(_)
                | Error::DimensionMismatch { .. },
            ) => {}
            Err(other) => panic!("line {line:?}: unexpected error {other:?}"),
        }
    }
});

/// Equal documents, comparing vectors bit for bit (so that `-0.0` and `0.0` differ).
fn assert_same(a: &DocumentInput, b: &DocumentInput, json: &str) {
    let bits = |d: &DocumentInput| d.vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "vector changed through {json}");
    assert_eq!(a.id, b.id, "id changed through {json}");
    assert!(
        same_json(&a.metadata, &b.metadata),
        "metadata changed through {json}"
    );
    assert_eq!(a.text, b.text, "text changed through {json}");
}

/// Equal JSON values, floats within an ulp or two: serde_json's default float parsing is
/// best-effort (its `float_roundtrip` feature makes it exact), which is not what this fuzzes.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
