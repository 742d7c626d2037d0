//! Crash consistency: a child process writes batches and is SIGKILLed at random moments; after
//! each kill the parent reopens the database and checks that every acknowledged batch is there,
//! none is partial, and the index agrees with the store.
//!
//! The child is this same test binary, re-run with `QUIVER_CRASH_CHILD` set so that only
//! [`crash_child_writer`] does anything. `QUIVER_CRASH_INDEX` (`flat`, `hnsw` or `ivfpq`) picks the
//! collection's vector index; the test runs once per index kind.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiverdb::query::MAX_EF;
use quiverdb::sync::{CheckpointPolicy, Recovery};
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Error, Filter, IndexConfig, Metric,
    PayloadKind, SearchRequest,
};
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, distance_f64, Rng};

const DIM: usize = 16;
const BATCH: usize = 25;
/// Every this many batches the child also deletes an earlier batch, in one transaction.
const DELETE_EVERY: u64 = 4;
/// Kills per index kind.
const FLAT_KILLS: u64 = 24;
const HNSW_KILLS: u64 = 20;
const IVFPQ_KILLS: u64 = 12;
/// IVF-PQ children train their index after this batch (so kills hit trained states too).
const IVFPQ_TRAIN_AFTER: u64 = 12;

fn doc_id(round: u64, batch: u64, j: usize) -> Uuid {
    Uuid::from_u128((u128::from(round) << 64) | (u128::from(batch) << 16) | j as u128)
}

fn doc_vector(round: u64, batch: u64, j: usize) -> Vec<f32> {
    Rng(round * 1_000_003 + batch * 101 + j as u64).vector(DIM)
}

/// The batch deleted after batch `b` is written, if any.
fn deleted_after(b: u64) -> Option<u64> {
    (b % DELETE_EVERY == DELETE_EVERY - 1).then(|| b - 2)
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
    let policy = CheckpointPolicy {
        every_changes: 150,
        every: Duration::from_millis(50),
    };
    let index = match std::env::var("QUIVER_CRASH_INDEX").as_deref() {
        Ok("hnsw") => IndexConfig::hnsw(),
        Ok("ivfpq") => IndexConfig::IvfPq {
            nlist: Some(8),
            pq_m: Some(4),
        },
        Ok("flat") | Err(_) => IndexConfig::Flat,
        Ok(other) => panic!("unknown QUIVER_CRASH_INDEX {other:?}"),
    };
    let db = Database::open_with_policy(&dir, policy).unwrap();
    // A payload index and a keyword index too: both must stay in step with the documents
    // through every kill.
    let train = matches!(index, IndexConfig::IvfPq { .. });
    let config = CollectionConfig::new(DIM, Metric::L2)
        .with_index(index)
        .with_text_index(true)
        .with_payload_field("batch", PayloadKind::Integer);
    let c = match db.create_collection("crash", config) {
        Ok(c) => c,
        Err(Error::CollectionExists(_)) => db.collection("crash").unwrap(),
        Err(e) => panic!("{e}"),
    };
    let mut out = std::io::stdout();
    for b in 0.. {
        let docs = (0..BATCH)
            .map(|j| {
                DocumentInput::new(doc_vector(round, b, j))
                    .with_id(doc_id(round, b, j))
                    .with_metadata(serde_json::json!({ "batch": b, "j": j }))
                    .with_text(format!("common r{round}b{b} doc{j}"))
            })
            .collect();
        c.upsert(docs).unwrap();
        writeln!(out, "ACK upsert {b}").unwrap();
        out.flush().unwrap();
        if train && b == IVFPQ_TRAIN_AFTER {
            c.train().unwrap();
        }
        if let Some(d) = deleted_after(b) {
            let ids: Vec<Uuid> = (0..BATCH).map(|j| doc_id(round, d, j)).collect();
            c.delete(&ids).unwrap();
            writeln!(out, "ACK delete {d}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn killed_flat_writers_lose_no_acknowledged_batch_and_leave_none_partial() {
    killed_writers("flat", FLAT_KILLS, 2024);
}

#[test]
fn killed_hnsw_writers_lose_no_acknowledged_batch_and_leave_none_partial() {
    killed_writers("hnsw", HNSW_KILLS, 2025);
}

#[test]
fn killed_ivfpq_writers_lose_no_acknowledged_batch_and_leave_none_partial() {
    killed_writers("ivfpq", IVFPQ_KILLS, 2026);
}

/// Checks HNSW searches after a recovery: an exact scan (ef above the document count) equals
/// the brute force, and graph searches return only live documents with their exact distances,
/// sorted, with recall@10 of at least 0.95 over 10 queries.
fn assert_hnsw_search(c: &Collection, expected: &[(Uuid, Vec<f32>)], rng: &mut Rng, ctx: &str) {
    let query = rng.vector(DIM);
    let all = brute_force(Metric::L2, expected, &query, expected.len());
    let response = c
        .search(&SearchRequest::new(query, 10).with_ef(MAX_EF))
        .unwrap();
    assert!(response.exhaustive, "{ctx}: ef {MAX_EF} scans");
    assert_matches_brute_force(&response.hits, &all[..10.min(all.len())], &all);
    let by_id: HashMap<Uuid, &[f32]> = expected.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    let (mut found, mut wanted) = (0, 0);
    for qi in 0..10 {
        let query = rng.vector(DIM);
        let response = c
            .search(&SearchRequest::new(query.clone(), 10).with_ef(64))
            .unwrap();
        let hits = &response.hits;
        assert_eq!(hits.len(), 10.min(expected.len()), "{ctx}, query {qi}");
        assert!(
            hits.windows(2).all(|p| p[0].distance <= p[1].distance),
            "{ctx}, query {qi}: unsorted {hits:?}"
        );
        for hit in hits {
            let v = by_id
                .get(&hit.id)
                .unwrap_or_else(|| panic!("{ctx}, query {qi}: {} is not live", hit.id));
            let exact = distance_f64(Metric::L2, &query, v);
            assert!(
                (f64::from(hit.distance.unwrap()) - exact).abs() <= 1e-4 * exact.max(1.0),
                "{ctx}, query {qi}: {} at {} instead of {exact}",
                hit.id,
                hit.distance.unwrap()
            );
        }
        let truth: HashSet<Uuid> = brute_force(Metric::L2, expected, &query, 10)
            .into_iter()
            .map(|p| p.0)
            .collect();
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
        wanted += truth.len();
    }
    if wanted == 0 {
        return; // killed before the first batch: nothing to find
    }
    let recall = found as f64 / wanted as f64;
    assert!(
        recall >= 0.95,
        "{ctx}: recall@10 {recall:.3} with ef 64 over {} documents",
        expected.len()
    );
}

fn killed_writers(kind: &str, kills: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed);
    let mut expected: Vec<(Uuid, Vec<f32>)> = Vec::new();
    let mut total_acks = 0;
    let mut rebuilds = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QUIVER_CRASH_CHILD", dir.path())
            .env("QUIVER_CRASH_ROUND", round.to_string())
            .env("QUIVER_CRASH_INDEX", kind)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("ACK "))
                .collect::<Vec<_>>()
        });
        // Kill at a random moment: sometimes during open/recovery, mostly mid-writes.
        std::thread::sleep(Duration::from_millis(5 + rng.below(300) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        total_acks += acks.len();

        let acked_upserts: BTreeSet<u64> = acks
            .iter()
            .filter_map(|l| l.strip_prefix("ACK upsert "))
            .map(|b| b.parse().unwrap())
            .collect();
        let acked_deletes: BTreeSet<u64> = acks
            .iter()
            .filter_map(|l| l.strip_prefix("ACK delete "))
            .map(|b| b.parse().unwrap())
            .collect();

        let started = Instant::now();
        let db = Database::open(dir.path()).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recovery took too long"
        );
        let c = db.collection("crash").ok();
        let last = acked_upserts.iter().next_back().map_or(0, |b| b + 1);
        // Every batch up to two past the last acknowledged one: all or nothing.
        for b in 0..last + 2 {
            let ids: Vec<Uuid> = (0..BATCH).map(|j| doc_id(round, b, j)).collect();
            let docs = match &c {
                Some(c) => c.get_many(&ids).unwrap(),
                None => vec![None; BATCH],
            };
            let present = docs.iter().filter(|d| d.is_some()).count();
            assert!(
                present == 0 || present == BATCH,
                "{kind} round {round} batch {b}: partial ({present}/{BATCH})"
            );
            if acked_deletes.contains(&b) {
                assert_eq!(
                    present, 0,
                    "{kind} round {round}: acknowledged delete of batch {b} lost"
                );
            } else if acked_upserts.contains(&b) && deleted_after(b + 2) != Some(b) {
                assert_eq!(
                    present, BATCH,
                    "{kind} round {round}: acknowledged batch {b} lost"
                );
            }
            for (j, doc) in docs.into_iter().enumerate() {
                if let Some(doc) = doc {
                    assert_eq!(doc.vector, doc_vector(round, b, j));
                    expected.push((doc.id, doc.vector));
                }
            }
        }
        if let Some(c) = &c {
            assert_eq!(
                c.count().unwrap(),
                expected.len() as u64,
                "{kind} round {round}: unexpected documents"
            );
            let info = c.info().unwrap();
            assert_eq!(info.vector_index.name, kind);
            assert_eq!(
                info.vector_index.len,
                expected.len(),
                "{kind} round {round}"
            );
            rebuilds += usize::from(matches!(
                info.vector_index.recovery,
                Recovery::Rebuilt { .. }
            ));
            let report = db.check(None).unwrap();
            assert!(report.ok(), "{kind} round {round}: {report:?}");
            assert!(
                report.indexes.iter().any(|i| i.index == "payload"),
                "{kind} round {round}: payload index checked"
            );
            assert!(
                report.indexes.iter().any(|i| i.index == "keyword"),
                "{kind} round {round}: keyword index checked"
            );
            let common = c.search(&SearchRequest::text("common", 1)).unwrap();
            assert_eq!(
                common.examined,
                expected.len(),
                "{kind} round {round}: keyword index after recovery"
            );
            if let Some(b) = acked_upserts.iter().next_back() {
                let hits = c
                    .search(&SearchRequest::text(format!("r{round}b{b}"), 2 * BATCH))
                    .unwrap()
                    .hits;
                let present = c.get(doc_id(round, *b, 0)).unwrap().is_some();
                assert_eq!(
                    hits.len(),
                    if present { BATCH } else { 0 },
                    "{kind} round {round}"
                );
            }
            let indexed: Filter = r#"{"batch": {"$gte": 0}}"#.parse().unwrap();
            assert_eq!(
                c.count_where(&indexed).unwrap(),
                expected.len() as u64,
                "{kind} round {round}: payload bitmaps after recovery"
            );
            if kind == "hnsw" {
                let ctx = format!("{kind} round {round} (seed {seed})");
                assert_hnsw_search(c, &expected, &mut rng, &ctx);
            } else if kind == "ivfpq" {
                // Probing every list and re-ranking everything found is exact.
                let query = rng.vector(DIM);
                let all = brute_force(Metric::L2, &expected, &query, expected.len());
                let request = SearchRequest::new(query, 10)
                    .with_nprobe(8)
                    .with_refine(100);
                let hits = c.search(&request).unwrap().hits;
                assert_matches_brute_force(&hits, &all[..10.min(all.len())], &all);
            } else {
                let query = rng.vector(DIM);
                let all = brute_force(Metric::L2, &expected, &query, expected.len());
                let hits = c.search(&SearchRequest::new(query, 10)).unwrap().hits;
                assert_matches_brute_force(&hits, &all[..10.min(all.len())], &all);
            }
        }
        db.close().unwrap();
    }
    eprintln!(
        "crash test ({kind}): {kills} kills, {total_acks} acknowledged writes verified, {} \
         documents at the end, {rebuilds} index rebuilds on reopen",
        expected.len()
    );
    assert!(
        total_acks > kills as usize,
        "the children barely wrote anything ({total_acks} acks)"
    );
}
