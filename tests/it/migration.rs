//! Upgrading databases written by older schema versions (fixtures in `migrations/fixtures`).

use std::path::Path;

use quiverdb::{Database, Filter, Metric, SearchRequest};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, copy_dir};

struct FixtureDoc {
    id: Uuid,
    vector: Vec<f32>,
    metadata: Map<String, Value>,
}

/// The documents the fixture was imported from, minus those the fixture deleted.
fn fixture_docs(file: &str, deleted: &[Uuid]) -> Vec<FixtureDoc> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/fixtures/v1")
        .join(file);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            FixtureDoc {
                id: v["id"].as_str().unwrap().parse().unwrap(),
                vector: serde_json::from_value(v["vector"].clone()).unwrap(),
                metadata: v
                    .get("metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .filter(|d| !deleted.contains(&d.id))
        .collect()
}

/// A version-1 database (payload fields declared, no payload rows yet) opens as the current
/// version: its documents, searches and filters are right, and the payload indexes were built
/// from redb.
#[test]
fn v1_database_is_upgraded_with_payload_rows() {
    assert_upgrade("v1");
}

/// A version-2 database (document records without checksums) opens as the current version,
/// reads its old records, and rewrites a document in the new format.
#[test]
fn v2_database_is_upgraded_and_reads_unchecked_records() {
    let tmp = assert_upgrade("v2");
    let db = Database::open(tmp.path().join("db")).unwrap();
    let c = db.collection("docs").unwrap();
    let id = Uuid::from_u128(2);
    c.update_metadata(id, serde_json::json!({"lang": "de"}))
        .unwrap();
    let doc = c.get(id).unwrap().unwrap();
    assert_eq!(doc.metadata["lang"], "de");
    assert!(db.check(None).unwrap().ok());
    drop(c);
    db.close().unwrap();
}

/// Opens a copy of the fixture written by schema `version` twice (the upgrade, then a plain
/// reopen) and checks it against the documents it was imported from; returns the copy's folder
/// (the database is its `db`).
fn assert_upgrade(version: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations/fixtures")
            .join(version)
            .join("db"),
        &dir,
    );
    let deleted = [Uuid::from_u128(30)];
    let docs = fixture_docs("docs.jsonl", &deleted);
    let plain = fixture_docs("plain.jsonl", &[]);
    for round in 0..2 {
        let db = Database::open(&dir).unwrap();
        let c = db.collection("docs").unwrap();
        assert_eq!(c.count().unwrap(), docs.len() as u64, "round {round}");
        assert_eq!(db.collection("plain").unwrap().count().unwrap(), 10);
        assert!(c.info().unwrap().payload_index_bytes > 0);
        for filter in [
            r#"{"lang": "en"}"#,
            r#"{"year": {"$gte": 2010}}"#,
            r#"{"year": {"$lt": 2010.5}, "tags": "t1"}"#,
            r#"{"lang": {"$exists": false}}"#,
            // Years stored as strings are not covered by the integer index: checked on metadata.
            r#"{"$or": [{"tags": "t3"}, {"year": "2007"}]}"#,
            r#"{"year": {"$not": {"$gt": 2003}}}"#,
        ] {
            let filter: Filter = filter.parse().unwrap();
            let expected: Vec<&FixtureDoc> = docs
                .iter()
                .filter(|d| filter.matches(&d.metadata))
                .collect();
            assert!(!expected.is_empty(), "{filter:?} should match something");
            assert_eq!(c.count_where(&filter).unwrap(), expected.len() as u64);
            let query = vec![3.0, 2.0, 1.0, 0.5];
            let hits = c
                .search(&SearchRequest::new(query.clone(), 5).with_filter(filter.clone()))
                .unwrap()
                .hits;
            let pool: Vec<(Uuid, Vec<f32>)> =
                expected.iter().map(|d| (d.id, d.vector.clone())).collect();
            let all = brute_force(Metric::Cosine, &pool, &query, pool.len());
            assert_matches_brute_force(&hits, &brute_force(Metric::Cosine, &pool, &query, 5), &all);
        }
        let pool: Vec<(Uuid, Vec<f32>)> = plain.iter().map(|d| (d.id, d.vector.clone())).collect();
        let query = vec![4.2, 1.0, 0.0, -1.0];
        let hits = db
            .collection("plain")
            .unwrap()
            .search(&SearchRequest::new(query.clone(), 3))
            .unwrap()
            .hits;
        let all = brute_force(Metric::L2, &pool, &query, 10);
        assert_matches_brute_force(&hits, &all[..3], &all);
        db.close().unwrap();
    }
    tmp
}
