//! The child's side: a seeded workload that prints `ACK …` after every acknowledged write.

use std::io::Write;
use std::time::Duration;

use quiverdb::sync::CheckpointPolicy;
use quiverdb::{
    CollectionConfig, Database, DocumentInput, Error, IndexConfig, Metric, PayloadKind,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::Rng;

/// Vector dimension.
pub const DIM: usize = 16;
/// Documents per batch (one transaction).
pub const BATCH: usize = 25;
/// Every this many batches the child also deletes an earlier batch, in one transaction.
const DELETE_EVERY: u64 = 4;
/// Every this many batches the child patches the metadata of the previous batch, one document
/// (one transaction) at a time.
const PATCH_EVERY: u64 = 3;
/// IVF-PQ children train their index after this batch (so kills hit trained states too).
const IVFPQ_TRAIN_AFTER: u64 = 2;
/// A DiskANN writer merges its delta after every this many batches.
const DISKANN_MERGE_EVERY: u64 = 3;

/// The id of document `j` of batch `batch` written in `round`.
pub fn doc_id(round: u64, batch: u64, j: usize) -> Uuid {
    Uuid::from_u128((u128::from(round) << 64) | (u128::from(batch) << 16) | j as u128)
}

/// The vector of that document.
pub fn doc_vector(round: u64, batch: u64, j: usize) -> Vec<f32> {
    Rng(round * 1_000_003 + batch * 101 + j as u64).vector(DIM)
}

/// The batch deleted after batch `b` is written, if any.
pub fn deleted_after(b: u64) -> Option<u64> {
    (b % DELETE_EVERY == DELETE_EVERY - 1).then(|| b - 2)
}

/// The batch whose documents are patched after batch `b` is written, if any.
pub fn patched_after(b: u64) -> Option<u64> {
    (b % PATCH_EVERY == 1).then(|| b - 1)
}

/// The collection's configuration for index kind `kind`.
fn config(kind: &str) -> CollectionConfig {
    let index = match kind {
        "hnsw" => IndexConfig::hnsw(),
        "ivfpq" => IndexConfig::IvfPq {
            nlist: Some(8),
            pq_m: Some(4),
        },
        "flat" => IndexConfig::Flat {},
        "diskann" => IndexConfig::DiskAnn {
            r: 16,
            l: 32,
            pq_bytes: Some(4),
            cache_nodes: 16,
            build_ram_mb: 64,
        },
        other => panic!("unknown QUIVER_CRASH_INDEX {other:?}"),
    };
    // A payload index and a keyword index too: both must stay in step with the documents
    // through every kill.
    CollectionConfig::new(DIM, Metric::L2)
        .with_index(index)
        .with_text_index(true)
        .with_payload_field("batch", PayloadKind::Integer)
        .with_payload_field("state", PayloadKind::Keyword)
}

/// Runs only inside the child process.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("QUIVER_CRASH_CHILD") else {
        return;
    };
    let round: u64 = std::env::var("QUIVER_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let kind = std::env::var("QUIVER_CRASH_INDEX").unwrap();
    let policy = CheckpointPolicy {
        every_changes: 150,
        every: Duration::from_millis(50),
    };
    let db = Database::open_with_policy(&dir, policy).unwrap();
    let c = match db.create_collection("crash", config(&kind)) {
        Ok(c) => c,
        Err(Error::CollectionExists(_)) => db.collection("crash").unwrap(),
        Err(e) => panic!("{e}"),
    };
    let mut out = std::io::stdout();
    let mut ack = |line: String| {
        writeln!(out, "ACK {line}").unwrap();
        out.flush().unwrap();
    };
    for b in 0.. {
        let docs = (0..BATCH)
            .map(|j| {
                DocumentInput::new(doc_vector(round, b, j))
                    .with_id(doc_id(round, b, j))
                    .with_metadata(json!({ "batch": b, "j": j, "state": "new" }))
                    .with_text(format!("common r{round}b{b} doc{j}"))
            })
            .collect();
        c.upsert(docs).unwrap();
        ack(format!("upsert {b}"));
        if kind == "ivfpq" && b == IVFPQ_TRAIN_AFTER {
            c.train().unwrap();
        }
        if kind == "diskann" && b % DISKANN_MERGE_EVERY == DISKANN_MERGE_EVERY - 1 {
            // A merge writes a new node file generation: kills land inside merges too.
            c.train().unwrap();
        }
        if let Some(p) = patched_after(b) {
            for j in 0..BATCH {
                c.update_metadata(doc_id(round, p, j), json!({ "state": "patched" }))
                    .unwrap();
                ack(format!("patch {p} {j}"));
            }
        }
        if let Some(d) = deleted_after(b) {
            let ids: Vec<Uuid> = (0..BATCH).map(|j| doc_id(round, d, j)).collect();
            c.delete(&ids).unwrap();
            ack(format!("delete {d}"));
        }
    }
}
