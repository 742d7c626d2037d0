//! Fuzzes the REST API's request bodies through the real router (every layer included).
//!
//! One database (in a temporary directory) with two small collections is built once: `c`
//! (flat, cosine, text index, keyword and integer payload indexes) and `h` (HNSW, L2, a float
//! payload index). The first byte picks the route (bits 0-2) and the collection (bit 3); the
//! rest is sent as the JSON body, through `tower::ServiceExt::oneshot` on a tokio runtime built
//! once. Whatever the body, the answer must not be a 5xx (the router turns a panic into a 500,
//! and a 500 for a malformed request is a bug), and it must be JSON.
//!
//! Every 2,000 inputs the collections are dropped and recreated, so upserts and deletes keep
//! the database small (and the process must not accumulate threads). Run with
//! `ASAN_OPTIONS=detect_leaks=0`: see `populate`.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use quiverdb::config::PayloadKind;
use quiverdb::server::{router, ServerConfig};
use quiverdb::{CollectionConfig, Database, DocumentInput, IndexConfig, Metric};
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

const RECREATE_EVERY: u64 = 2_000;
const SEED_DOCS: u128 = 16;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Database,
    app: Router,
    runtime: tokio::runtime::Runtime,
    inputs: AtomicU64,
}

fn doc_id(i: u128) -> Uuid {
    Uuid::from_u128(0xd0c0_0000 + i)
}

/// (Re)creates the two collections with a few documents each.
fn populate(db: &Database) {
    for name in ["c", "h"] {
        if db.list_collections().iter().any(|c| c == name) {
            db.drop_collection(name).expect("drop");
        }
    }
    let c = CollectionConfig::new(4, Metric::Cosine)
        .with_text_index(true)
        .with_payload_field("tag", PayloadKind::Keyword)
        .with_payload_field("n", PayloadKind::Integer);
    let h = CollectionConfig::new(4, Metric::L2)
        .with_index(IndexConfig::Hnsw {
            m: 4,
            ef_construction: 16,
            precision: quiverdb::VectorPrecision::F32,
        })
        .with_payload_field("f", PayloadKind::Float);
    for (name, config) in [("c", c), ("h", h)] {
        let collection = db.create_collection(name, config).expect("create");
        let docs = (0..SEED_DOCS)
            .map(|i| {
                let x = i as f32;
                let tag = ["a", "b", "c"][i as usize % 3];
                DocumentInput::new(vec![1.0 + x, 2.0 - x, 0.5 * x, 1.0])
                    .with_id(doc_id(i))
                    .with_metadata(json!({
                        "tag": tag,
                        "n": i,
                        "f": x * 0.25,
                        "tags": ["x", "y"],
                        "nested": {"k": i % 2 == 0},
                    }))
                    .with_text(format!("hello world document number {i}"))
            })
            .collect();
        collection.upsert(docs).expect("upsert");
    }
    // Dropping a collection with a text index drops its tantivy writer, whose thread pool exits
    // asynchronously (LeakSanitizer reports such pools' threads as leaks: run with
    // `ASAN_OPTIONS=detect_leaks=0`). Check that those threads do exit rather than pile up.
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Threads:"))?;
            line[8..].trim().parse::<usize>().ok()
        });
    if let Some(threads) = threads {
        assert!(
            threads < 256,
            "{threads} threads after recreating the collections"
        );
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let db = Database::open(dir.path().join("db")).expect("open");
        populate(&db);
        let config = ServerConfig::new("127.0.0.1:0".parse().expect("an address"));
        let app = router(db.clone(), &config);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Fixture {
            _dir: dir,
            db,
            app,
            runtime,
            inputs: AtomicU64::new(0),
        }
    })
}

/// Sends one request; returns the status and the body.
fn send(f: &Fixture, method: Method, uri: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    f.runtime.block_on(async {
        let response = f.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, bytes.to_vec())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if f.inputs.fetch_add(1, Ordering::Relaxed) % RECREATE_EVERY == RECREATE_EVERY - 1 {
        populate(&f.db);
    }
    let name = if selector & 8 == 0 { "c" } else { "h" };
    // Half of the patches name a seeded document, half one that may not exist.
    let id = doc_id(u128::from(selector >> 4) % (SEED_DOCS * 2));
    let (method, uri) = match selector & 7 {
        0 => (Method::POST, format!("/collections/{name}/documents")),
        1 => (Method::POST, format!("/collections/{name}/search")),
        2 => (Method::POST, format!("/collections/{name}/search/batch")),
        3 => (Method::POST, format!("/collections/{name}/count")),
        4 => (Method::POST, format!("/collections/{name}/scroll")),
        5 => (Method::POST, format!("/collections/{name}/delete")),
        6 => (Method::PATCH, format!("/collections/{name}/documents/{id}")),
        _ => (Method::PUT, "/collections/fuzzed".to_string()),
    };
    let (status, answer) = send(f, method.clone(), &uri, body.to_vec());
    let text = String::from_utf8_lossy(&answer);
    assert!(
        status < 500,
        "{method} {uri} with body {:?} answered {status}: {text}",
        String::from_utf8_lossy(body)
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&answer).is_ok(),
        "{method} {uri}: the answer is not JSON: {text}"
    );
    if method == Method::PUT && status == 201 {
        let (status, answer) = send(f, Method::DELETE, &uri, Vec::new());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
});
