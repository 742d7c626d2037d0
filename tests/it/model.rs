//! Random operation sequences checked against a naive in-memory model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use quiverdb::{CollectionConfig, Database, DocumentInput, Error, Metric, SearchRequest};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, Rng};

const DIM: usize = 4;
const POOL: u128 = 10;

#[derive(Clone, Debug)]
enum Op {
    Upsert(Vec<(u128, u64)>),
    Insert(Vec<(u128, u64)>),
    /// A batch whose last document has the wrong dimension: must change nothing.
    BadUpsert(Vec<(u128, u64)>),
    Delete(Vec<u128>),
    PatchMetadata(u128, u8, Option<i64>),
    UpdateVector(u128, u64),
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let docs = || proptest::collection::vec((0..POOL, any::<u64>()), 1..5);
    prop_oneof![
        4 => docs().prop_map(Op::Upsert),
        2 => docs().prop_map(Op::Insert),
        1 => docs().prop_map(Op::BadUpsert),
        2 => proptest::collection::vec(0..POOL, 1..4).prop_map(Op::Delete),
        2 => (0..POOL, 0u8..3, proptest::option::of(-5i64..5)).prop_map(|(i, k, v)| Op::PatchMetadata(i, k, v)),
        1 => (0..POOL, any::<u64>()).prop_map(|(i, s)| Op::UpdateVector(i, s)),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct ModelDoc {
    vector: Vec<f32>,
    metadata: Map<String, Value>,
    text: Option<String>,
}

fn id(i: u128) -> Uuid {
    Uuid::from_u128(0xabc0_0000 + i)
}

fn vector(seed: u64) -> Vec<f32> {
    Rng(seed).vector(DIM)
}

fn input(i: u128, seed: u64) -> (DocumentInput, ModelDoc) {
    let metadata = json!({"seed": seed.to_string(), "k0": 1})
        .as_object()
        .unwrap()
        .clone();
    let text = seed.is_multiple_of(2).then(|| format!("doc {seed}"));
    let doc = ModelDoc {
        vector: vector(seed),
        metadata: metadata.clone(),
        text: text.clone(),
    };
    let mut input = DocumentInput::new(doc.vector.clone())
        .with_id(id(i))
        .with_metadata(Value::Object(metadata));
    input.text = text;
    (input, doc)
}

fn assert_same_state(db: &Database, model: &BTreeMap<Uuid, ModelDoc>) {
    let c = db.collection("m").unwrap();
    assert_eq!(c.count().unwrap(), model.len() as u64);
    // Scroll in pages of 3 and compare with the model in id order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = c.scroll(3, cursor.as_deref()).unwrap();
        seen.extend(page.documents);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<Uuid> = model.keys().copied().collect();
    assert_eq!(seen.iter().map(|d| d.id).collect::<Vec<_>>(), expected);
    for doc in &seen {
        let m = &model[&doc.id];
        assert_eq!(
            (&doc.vector, &doc.metadata, &doc.text),
            (&m.vector, &m.metadata, &m.text)
        );
    }
    for i in 0..POOL {
        assert_eq!(c.get(id(i)).unwrap().is_some(), model.contains_key(&id(i)));
    }
    let docs: Vec<(Uuid, Vec<f32>)> = model
        .iter()
        .map(|(id, d)| (*id, d.vector.clone()))
        .collect();
    let query = vector(12345);
    let all = brute_force(Metric::L2, &docs, &query, docs.len());
    let hits = c.search(&SearchRequest::new(query, 5)).unwrap().hits;
    assert_matches_brute_force(&hits, &all[..5.min(all.len())], &all);
    let report = db.check(Some("m")).unwrap();
    assert!(report.ok(), "{report:?}");
}

fn run_sequence(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Database::open(dir.path()).unwrap();
    db.create_collection("m", CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    let mut model: BTreeMap<Uuid, ModelDoc> = BTreeMap::new();
    for op in ops {
        let c = db.collection("m").unwrap();
        match op {
            Op::Upsert(docs) => {
                let (inputs, docs): (Vec<_>, Vec<_>) =
                    docs.iter().map(|&(i, s)| input(i, s)).unzip();
                let ids = c.upsert(inputs.clone()).unwrap();
                for ((input, doc), id) in inputs.iter().zip(docs).zip(ids) {
                    assert_eq!(Some(id), input.id);
                    model.insert(id, doc);
                }
            }
            Op::Insert(docs) => {
                let (inputs, new): (Vec<_>, Vec<_>) =
                    docs.iter().map(|&(i, s)| input(i, s)).unzip();
                let mut batch_ids: Vec<Uuid> = inputs.iter().map(|d| d.id.unwrap()).collect();
                let clash = batch_ids.iter().any(|id| model.contains_key(id)) || {
                    batch_ids.sort();
                    batch_ids.windows(2).any(|w| w[0] == w[1])
                };
                match c.insert(inputs.clone()) {
                    Ok(_) => {
                        assert!(!clash, "insert over an existing id succeeded");
                        for (input, doc) in inputs.iter().zip(new) {
                            model.insert(input.id.unwrap(), doc);
                        }
                    }
                    Err(Error::DocumentExists(_)) => {
                        assert!(clash, "insert refused without a clash")
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            Op::BadUpsert(docs) => {
                let mut inputs: Vec<DocumentInput> =
                    docs.iter().map(|&(i, s)| input(i, s).0).collect();
                inputs.push(DocumentInput::new(vec![1.0; DIM + 1]));
                assert!(matches!(
                    c.upsert(inputs),
                    Err(Error::DimensionMismatch { .. })
                ));
            }
            Op::Delete(ids) => {
                let ids: Vec<Uuid> = ids.into_iter().map(id).collect();
                let mut unique = ids.clone();
                unique.sort();
                unique.dedup();
                let expected = unique.iter().filter(|id| model.contains_key(id)).count();
                assert_eq!(c.delete(&ids).unwrap(), expected);
                for id in &ids {
                    model.remove(id);
                }
            }
            Op::PatchMetadata(i, key, value) => {
                let key = format!("k{key}");
                let patch = json!({ key.clone(): value });
                match (c.update_metadata(id(i), patch), model.get_mut(&id(i))) {
                    (Ok(()), Some(doc)) => match value {
                        Some(v) => {
                            doc.metadata.insert(key, json!(v));
                        }
                        None => {
                            doc.metadata.remove(&key);
                        }
                    },
                    (Err(Error::DocumentNotFound(_)), None) => {}
                    (result, doc) => {
                        panic!("update_metadata gave {result:?} with model doc {doc:?}")
                    }
                }
            }
            Op::UpdateVector(i, seed) => {
                match (c.update_vector(id(i), vector(seed)), model.get_mut(&id(i))) {
                    (Ok(()), Some(doc)) => doc.vector = vector(seed),
                    (Err(Error::DocumentNotFound(_)), None) => {}
                    (result, doc) => panic!("update_vector gave {result:?} with model doc {doc:?}"),
                }
            }
            Op::Checkpoint => db.checkpoint().unwrap(),
            Op::Reopen => {
                drop(c);
                drop(db);
                db = Database::open(dir.path()).unwrap();
            }
        }
    }
    assert_same_state(&db, &model);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_same_state(&db, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]
    #[test]
    fn operation_sequences_match_a_naive_model(ops in proptest::collection::vec(op(), 1..30)) {
        run_sequence(ops);
    }
}
