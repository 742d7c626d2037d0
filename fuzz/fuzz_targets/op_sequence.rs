//! Fuzzes sequences of operations on one collection against a naive in-memory model.
//!
//! The input decodes (`arbitrary`) into up to 64 operations — insert, upsert, delete, metadata
//! merge patch, vector update, get, count, filtered count, delete by filter, exact search
//! (optionally filtered), checkpoint, reopen — over 16 ids and 4-dimensional L2 vectors with
//! small integer components (so every distance is exact in `f32`). Each runs against a fresh
//! database in a temporary directory (flat, HNSW or IVF-PQ index as the input picks, payload
//! indexes on `tag` and `n`) and against a `HashMap`; their answers must agree after every
//! operation, and the whole state (scroll, `check`) at the end and after each reopen.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use quiverdb::config::PayloadKind;
use quiverdb::{
    CollectionConfig, Database, DocumentInput, Error, Filter, IndexConfig, Metric, SearchRequest,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const DIM: usize = 4;
const IDS: u8 = 16;
const MAX_OPS: usize = 64;
const TAGS: [&str; 3] = ["a", "b", "c"];

#[derive(Arbitrary, Debug, Clone)]
struct DocSpec {
    id: u8,
    vector: [i8; DIM],
    tag: Option<u8>,
    n: Option<i8>,
    text: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Leaf {
    TagEq(u8),
    NGt(i8),
    NLte(i8),
    NExists,
    TagIn(u8, u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FilterSpec {
    Leaf(Leaf),
    Not(Leaf),
    And(Leaf, Leaf),
    Or(Leaf, Leaf),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PatchValue {
    Remove,
    Tag(u8),
    Int(i8),
    Object(i8),
}

/// The collection's vector index. With at most 16 documents every kind answers exactly (HNSW
/// scans when the collection is no larger than `ef`, IVF-PQ before training), so the model's
/// brute force is the expected answer for all three.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum IndexChoice {
    Flat,
    Hnsw,
    IvfPq,
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Upsert(Vec<DocSpec>),
    Insert(Vec<DocSpec>),
    Delete(Vec<u8>),
    Patch {
        id: u8,
        key: u8,
        value: PatchValue,
    },
    UpdateVector {
        id: u8,
        vector: [i8; DIM],
    },
    Get(u8),
    Count,
    CountWhere(FilterSpec),
    DeleteWhere(FilterSpec),
    Search {
        vector: [i8; DIM],
        k: u8,
        filter: Option<FilterSpec>,
    },
    Checkpoint,
    Reopen,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelDoc {
    vector: Vec<f32>,
    metadata: Map<String, Value>,
    text: Option<String>,
}

fn uuid(id: u8) -> Uuid {
    Uuid::from_u128(0xf022_0000 + u128::from(id % IDS))
}

fn vector(v: &[i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x) / 4.0).collect()
}

fn tag(t: u8) -> &'static str {
    TAGS[usize::from(t) % TAGS.len()]
}

fn spec_doc(spec: &DocSpec) -> (Uuid, ModelDoc) {
    let mut metadata = Map::new();
    if let Some(t) = spec.tag {
        metadata.insert("tag".into(), json!(tag(t)));
    }
    if let Some(n) = spec.n {
        metadata.insert("n".into(), json!(n));
    }
    let text = spec
        .text
        .then(|| format!("document {} {}", spec.id % IDS, tag(spec.id)));
    (
        uuid(spec.id),
        ModelDoc {
            vector: vector(&spec.vector),
            metadata,
            text,
        },
    )
}

fn input(id: Uuid, doc: &ModelDoc) -> DocumentInput {
    let mut input = DocumentInput::new(doc.vector.clone())
        .with_id(id)
        .with_metadata(Value::Object(doc.metadata.clone()));
    input.text = doc.text.clone();
    input
}

fn leaf_json(leaf: Leaf) -> Value {
    match leaf {
        Leaf::TagEq(t) => json!({"tag": tag(t)}),
        Leaf::NGt(x) => json!({"n": {"$gt": x}}),
        Leaf::NLte(x) => json!({"n": {"$lte": x}}),
        Leaf::NExists => json!({"n": {"$exists": true}}),
        Leaf::TagIn(a, b) => json!({"tag": {"$in": [tag(a), tag(b)]}}),
    }
}

fn filter_json(spec: FilterSpec) -> Value {
    match spec {
        FilterSpec::Leaf(l) => leaf_json(l),
        FilterSpec::Not(l) => json!({"$not": leaf_json(l)}),
        FilterSpec::And(a, b) => json!({"$and": [leaf_json(a), leaf_json(b)]}),
        FilterSpec::Or(a, b) => json!({"$or": [leaf_json(a), leaf_json(b)]}),
    }
}

/// The naive meaning of a leaf: numbers compare with numbers only, strings equal strings.
fn leaf_matches(leaf: Leaf, meta: &Map<String, Value>) -> bool {
    let n = meta.get("n").and_then(Value::as_i64);
    let t = meta.get("tag").and_then(Value::as_str);
    match leaf {
        Leaf::TagEq(x) => t == Some(tag(x)),
        Leaf::NGt(x) => n.is_some_and(|n| n > i64::from(x)),
        Leaf::NLte(x) => n.is_some_and(|n| n <= i64::from(x)),
        Leaf::NExists => meta.contains_key("n"),
        Leaf::TagIn(a, b) => t == Some(tag(a)) || t == Some(tag(b)),
    }
}

fn filter_matches(spec: FilterSpec, meta: &Map<String, Value>) -> bool {
    match spec {
        FilterSpec::Leaf(l) => leaf_matches(l, meta),
        FilterSpec::Not(l) => !leaf_matches(l, meta),
        FilterSpec::And(a, b) => leaf_matches(a, meta) && leaf_matches(b, meta),
        FilterSpec::Or(a, b) => leaf_matches(a, meta) || leaf_matches(b, meta),
    }
}

fn filter(spec: FilterSpec) -> Filter {
    Filter::from_json(&filter_json(spec)).expect("a valid filter")
}

fn patch_json(key: u8, value: PatchValue) -> Value {
    let key = ["tag", "n", "x"][usize::from(key) % 3];
    let value = match value {
        PatchValue::Remove => Value::Null,
        PatchValue::Tag(t) => json!(tag(t)),
        PatchValue::Int(i) => json!(i),
        PatchValue::Object(i) => json!({"k": i, "gone": null}),
    };
    json!({ key: value })
}

/// RFC 7396, written out naively for the model.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else if let Value::Object(sub) = value {
            let mut inner = match target.remove(key) {
                Some(Value::Object(existing)) => existing,
                _ => Map::new(),
            };
            merge(&mut inner, sub);
            target.insert(key.clone(), Value::Object(inner));
        } else {
            target.insert(key.clone(), value.clone());
        }
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn open(path: &std::path::Path) -> Database {
    Database::open(path).expect("the database opens")
}

fn assert_same_state(db: &Database, model: &HashMap<Uuid, ModelDoc>) {
    let c = db.collection("m").expect("the collection");
    assert_eq!(c.count().expect("count"), model.len() as u64);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = c.scroll(5, cursor.as_deref()).expect("scroll");
        seen.extend(page.documents);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<Uuid> = model.keys().copied().collect();
    expected.sort();
    assert_eq!(seen.iter().map(|d| d.id).collect::<Vec<_>>(), expected);
    for doc in &seen {
        let m = &model[&doc.id];
        assert_eq!(
            (&doc.vector, &doc.metadata, &doc.text),
            (&m.vector, &m.metadata, &m.text)
        );
    }
    let report = db.check(Some("m")).expect("check");
    assert!(report.ok(), "{report:?}");
}

fuzz_target!(|case: (IndexChoice, Vec<Op>)| {
    let (index, ops) = case;
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let path = dir.path().join("db");
    let mut db = open(&path);
    let config = CollectionConfig::new(DIM, Metric::L2)
        .with_index(match index {
            IndexChoice::Flat => IndexConfig::Flat,
            IndexChoice::Hnsw => IndexConfig::Hnsw {
                m: 4,
                ef_construction: 16,
                precision: quiverdb::VectorPrecision::F32,
            },
            IndexChoice::IvfPq => IndexConfig::ivfpq(),
        })
        .with_payload_field("tag", PayloadKind::Keyword)
        .with_payload_field("n", PayloadKind::Integer);
    db.create_collection("m", config).expect("create");
    let mut model: HashMap<Uuid, ModelDoc> = HashMap::new();
    for op in ops.into_iter().take(MAX_OPS) {
        let c = db.collection("m").expect("the collection");
        match op {
            Op::Upsert(specs) => {
                let docs: Vec<(Uuid, ModelDoc)> = specs.iter().take(4).map(spec_doc).collect();
                let ids = c
                    .upsert(docs.iter().map(|(id, d)| input(*id, d)).collect())
                    .expect("upsert");
                assert_eq!(ids, docs.iter().map(|(id, _)| *id).collect::<Vec<_>>());
                model.extend(docs);
            }
            Op::Insert(specs) => {
                let docs: Vec<(Uuid, ModelDoc)> = specs.iter().take(4).map(spec_doc).collect();
                let mut fresh = std::collections::HashSet::new();
                let clash = docs
                    .iter()
                    .any(|(id, _)| model.contains_key(id) || !fresh.insert(*id));
                let result = c.insert(docs.iter().map(|(id, d)| input(*id, d)).collect());
                if clash {
                    assert!(
                        matches!(result, Err(Error::DocumentExists(_))),
                        "insert over an existing id: {result:?}"
                    );
                } else {
                    result.expect("insert");
                    model.extend(docs);
                }
            }
            Op::Delete(ids) => {
                let ids: Vec<Uuid> = ids.iter().take(4).map(|&i| uuid(i)).collect();
                let expected = ids.iter().filter(|id| model.remove(id).is_some()).count();
                assert_eq!(c.delete(&ids).expect("delete"), expected);
            }
            Op::Patch { id, key, value } => {
                let patch = patch_json(key, value);
                let result = c.update_metadata(uuid(id), patch.clone());
                match model.get_mut(&uuid(id)) {
                    Some(doc) => {
                        result.expect("patch");
                        merge(&mut doc.metadata, patch.as_object().expect("an object"));
                    }
                    None => assert!(
                        matches!(result, Err(Error::DocumentNotFound(_))),
                        "{result:?}"
                    ),
                }
            }
            Op::UpdateVector { id, vector: v } => {
                let result = c.update_vector(uuid(id), vector(&v));
                match model.get_mut(&uuid(id)) {
                    Some(doc) => {
                        result.expect("update vector");
                        doc.vector = vector(&v);
                    }
                    None => assert!(
                        matches!(result, Err(Error::DocumentNotFound(_))),
                        "{result:?}"
                    ),
                }
            }
            Op::Get(id) => {
                let got = c.get(uuid(id)).expect("get");
                let got = got.map(|d| ModelDoc {
                    vector: d.vector,
                    metadata: d.metadata,
                    text: d.text,
                });
                assert_eq!(got.as_ref(), model.get(&uuid(id)));
            }
            Op::Count => assert_eq!(c.count().expect("count"), model.len() as u64),
            Op::CountWhere(spec) => {
                let expected = model
                    .values()
                    .filter(|d| filter_matches(spec, &d.metadata))
                    .count();
                assert_eq!(
                    c.count_where(&filter(spec)).expect("count_where"),
                    expected as u64,
                    "{}",
                    filter_json(spec)
                );
            }
            Op::DeleteWhere(spec) => {
                let before = model.len();
                model.retain(|_, d| !filter_matches(spec, &d.metadata));
                assert_eq!(
                    c.delete_where(&filter(spec)).expect("delete_where"),
                    before - model.len(),
                    "{}",
                    filter_json(spec)
                );
            }
            Op::Search {
                vector: v,
                k,
                filter: spec,
            } => {
                let k = usize::from(k % 20) + 1;
                let q = vector(&v);
                let mut request = SearchRequest::new(q.clone(), k);
                request.filter = spec.map(filter);
                let hits = c.search(&request).expect("search").hits;
                let mut expected: Vec<(f32, Uuid)> = model
                    .iter()
                    .filter(|(_, d)| spec.is_none_or(|s| filter_matches(s, &d.metadata)))
                    .map(|(id, d)| (l2(&q, &d.vector), *id))
                    .collect();
                expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                expected.truncate(k);
                assert_eq!(hits.len(), expected.len(), "hits {hits:?}");
                for (hit, (distance, _)) in hits.iter().zip(&expected) {
                    let doc = model.get(&hit.id).expect("a hit the model holds");
                    let mine = l2(&q, &doc.vector);
                    assert_eq!(hit.distance, Some(mine), "hit {hit:?}");
                    assert_eq!(mine, *distance, "hits {hits:?}, expected {expected:?}");
                    if let Some(s) = spec {
                        assert!(filter_matches(s, &doc.metadata), "hit {hit:?}");
                    }
                }
            }
            Op::Checkpoint => db.checkpoint().expect("checkpoint"),
            Op::Reopen => {
                drop(c);
                db.close().expect("close");
                db = open(&path);
                assert_same_state(&db, &model);
            }
        }
    }
    assert_same_state(&db, &model);
    db.close().expect("close");
});
