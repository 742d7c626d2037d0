//! The parent's side: what a reopened database must look like after a kill.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use quiverdb::query::MAX_EF;
use quiverdb::sync::Recovery;
use quiverdb::{Collection, Database, Filter, Metric, SearchRequest};
use serde_json::json;
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, distance_f64, Rng};
use crate::workload::{deleted_after, doc_id, doc_vector, patched_after, BATCH, DIM};

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");

/// The writes a killed child acknowledged.
pub struct Acks {
    upserts: BTreeSet<u64>,
    deletes: BTreeSet<u64>,
    patches: HashSet<(u64, usize)>,
    total: usize,
}

impl Acks {
    /// Parses the child's `ACK …` lines.
    pub fn parse(lines: &[String]) -> Acks {
        let mut acks = Acks {
            upserts: BTreeSet::new(),
            deletes: BTreeSet::new(),
            patches: HashSet::new(),
            total: lines.len(),
        };
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["ACK", "upsert", b] => drop(acks.upserts.insert(b.parse().unwrap())),
                ["ACK", "delete", b] => drop(acks.deletes.insert(b.parse().unwrap())),
                ["ACK", "patch", b, j] => drop(
                    acks.patches
                        .insert((b.parse().unwrap(), j.parse().unwrap())),
                ),
                _ => panic!("unexpected line {line:?}"),
            }
        }
        acks
    }
}

/// Checks every round against everything acknowledged so far.
pub struct Verifier {
    kind: &'static str,
    seed: u64,
    /// Every live document of every round, with its vector.
    expected: Vec<(Uuid, Vec<f32>)>,
    /// How many of them carry `"state": "patched"`.
    patched: u64,
    acks: usize,
    rebuilds: usize,
    /// Rounds whose reopened index was trained (IVF-PQ).
    trained: usize,
}

impl Verifier {
    /// A verifier for index kind `kind` (its name as `info` reports it).
    pub fn new(kind: &str, seed: u64) -> Verifier {
        Verifier {
            kind: match kind {
                "flat" => "flat",
                "hnsw" => "hnsw",
                "ivfpq" => "ivfpq",
                "diskann" => "diskann",
                other => panic!("unknown kind {other}"),
            },
            seed,
            expected: Vec::new(),
            patched: 0,
            acks: 0,
            rebuilds: 0,
            trained: 0,
        }
    }

    /// Forgets the documents of the previous database (a soak moved to a fresh one).
    pub fn start_new_database(&mut self) {
        self.expected.clear();
        self.patched = 0;
    }

    /// Reopens the database after round `round`'s kill and checks it.
    pub fn verify_round(&mut self, dir: &Path, round: u64, acks: &Acks, rng: &mut Rng) {
        let kind = self.kind;
        let ctx = format!("{kind} round {round} (seed {})", self.seed);
        self.acks += acks.total;
        let started = Instant::now();
        let db = Database::open(dir).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{ctx}: recovery took too long"
        );
        let c = db.collection("crash").ok();
        let last = acks.upserts.iter().next_back().map_or(0, |b| b + 1);
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
                "{ctx}: batch {b} is partial ({present}/{BATCH})"
            );
            if acks.deletes.contains(&b) {
                assert_eq!(present, 0, "{ctx}: acknowledged delete of batch {b} lost");
            } else if acks.upserts.contains(&b) && deleted_after(b + 2) != Some(b) {
                assert_eq!(present, BATCH, "{ctx}: acknowledged batch {b} lost");
            }
            for (j, doc) in docs.into_iter().enumerate() {
                let Some(doc) = doc else { continue };
                assert_eq!(doc.vector, doc_vector(round, b, j), "{ctx}: vector");
                assert_eq!(doc.metadata["batch"], json!(b), "{ctx}: metadata");
                let state = doc.metadata["state"].as_str().unwrap();
                if acks.patches.contains(&(b, j)) {
                    assert_eq!(
                        state, "patched",
                        "{ctx}: acknowledged patch of {b}/{j} lost"
                    );
                } else if state == "patched" {
                    // Committed but killed before its acknowledgement: only the next patch.
                    assert_eq!(patched_after(b + 1), Some(b), "{ctx}: {b}/{j} patched");
                }
                self.patched += u64::from(state == "patched");
                self.expected.push((doc.id, doc.vector));
            }
        }
        if let Some(c) = &c {
            self.verify_indexes(&db, c, round, acks, rng, &ctx);
        }
        // Every handle must go for the store to close before the command below opens it.
        drop(c);
        db.close().unwrap();
        // The command-line check, as an operator would run it.
        let check = Command::new(QUIVER)
            .args(["--db", dir.to_str().unwrap(), "check"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{ctx}: quiver check: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }

    fn verify_indexes(
        &mut self,
        db: &Database,
        c: &Collection,
        round: u64,
        acks: &Acks,
        rng: &mut Rng,
        ctx: &str,
    ) {
        let expected = &self.expected;
        assert_eq!(
            c.count().unwrap(),
            expected.len() as u64,
            "{ctx}: documents"
        );
        let info = c.info().unwrap();
        assert_eq!(info.vector_index.name, self.kind);
        assert_eq!(info.vector_index.len, expected.len(), "{ctx}: index size");
        self.rebuilds += usize::from(matches!(
            info.vector_index.recovery,
            Recovery::Rebuilt { .. }
        ));
        self.trained += usize::from(info.vector_index.quantization.is_some_and(|q| q.trained));
        let report = db.check(None).unwrap();
        assert!(report.ok(), "{ctx}: {report:?}");
        for index in ["payload", "keyword"] {
            assert!(
                report.indexes.iter().any(|i| i.index == index),
                "{ctx}: {index} index checked"
            );
        }
        let common = c.search(&SearchRequest::text("common", 1)).unwrap();
        assert_eq!(common.examined, expected.len(), "{ctx}: keyword index");
        if let Some(b) = acks.upserts.iter().next_back() {
            let hits = c
                .search(&SearchRequest::text(format!("r{round}b{b}"), 2 * BATCH))
                .unwrap()
                .hits;
            let present = c.get(doc_id(round, *b, 0)).unwrap().is_some();
            assert_eq!(hits.len(), if present { BATCH } else { 0 }, "{ctx}");
        }
        let all: Filter = r#"{"batch": {"$gte": 0}}"#.parse().unwrap();
        assert_eq!(
            c.count_where(&all).unwrap(),
            expected.len() as u64,
            "{ctx}: payload bitmaps"
        );
        let patched: Filter = r#"{"state": "patched"}"#.parse().unwrap();
        assert_eq!(
            c.count_where(&patched).unwrap(),
            self.patched,
            "{ctx}: payload bitmaps after patches"
        );
        let query = rng.vector(DIM);
        let exact = brute_force(Metric::L2, expected, &query, expected.len());
        let request = match self.kind {
            "hnsw" => SearchRequest::new(query, 10).with_ef(MAX_EF),
            // Probing every list and re-ranking everything found is exact.
            "ivfpq" => SearchRequest::new(query, 10)
                .with_nprobe(8)
                .with_refine(100),
            // A filter matching every document is answered by an exact scan of its matches.
            "diskann" => SearchRequest::new(query, 10).with_filter(all.clone()),
            _ => SearchRequest::new(query, 10),
        };
        let response = c.search(&request).unwrap();
        if self.kind != "diskann" || response.strategy == "diskann_filtered_exact" {
            // (DiskANN scans a filter's matches exactly up to 2,048 of them; beyond, only the
            // recall check below applies.)
            let hits = response.hits;
            assert_matches_brute_force(&hits, &exact[..10.min(exact.len())], &exact);
        }
        match self.kind {
            "hnsw" => assert_graph_recall(c, expected, rng, ctx, |r| r.with_ef(64)),
            "diskann" => assert_graph_recall(c, expected, rng, ctx, |mut r| {
                r.search_l = Some(64);
                r
            }),
            _ => {}
        }
    }

    /// Prints the summary and checks the children wrote something.
    pub fn report(&self, kills: u64) {
        eprintln!(
            "crash test ({}): {kills} kills survived, {} acknowledged writes verified, {} \
             documents in the last database, {} index rebuilds on reopen, {} trained",
            self.kind,
            self.acks,
            self.expected.len(),
            self.rebuilds,
            self.trained
        );
        if self.kind == "ivfpq" && kills > 4 {
            assert!(self.trained > 0, "no kill hit a trained IVF-PQ index");
        }
        assert!(
            self.acks > kills as usize,
            "the children barely wrote anything ({} acks)",
            self.acks
        );
    }
}

/// Graph searches (HNSW at ef 64, DiskANN at search_l 64, as `knobs` sets) after a recovery
/// return only live documents with their exact distances, sorted, with recall@10 of at least
/// 0.95 over 10 queries.
fn assert_graph_recall(
    c: &Collection,
    expected: &[(Uuid, Vec<f32>)],
    rng: &mut Rng,
    ctx: &str,
    knobs: impl Fn(SearchRequest) -> SearchRequest,
) {
    let by_id: HashMap<Uuid, &[f32]> = expected.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    let (mut found, mut wanted) = (0, 0);
    for qi in 0..10 {
        let query = rng.vector(DIM);
        let response = c
            .search(&knobs(SearchRequest::new(query.clone(), 10)))
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
            let distance = f64::from(hit.distance.unwrap());
            assert!(
                (distance - exact).abs() <= 1e-4 * exact.max(1.0),
                "{ctx}, query {qi}: {} at {distance} instead of {exact}",
                hit.id
            );
        }
        let truth: HashSet<Uuid> = brute_force(Metric::L2, expected, &query, 10)
            .into_iter()
            .map(|p| p.0)
            .collect();
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
        wanted += truth.len();
    }
    if wanted > 0 {
        let recall = found as f64 / wanted as f64;
        assert!(
            recall >= 0.95,
            "{ctx}: recall@10 {recall:.3} over {} documents",
            expected.len()
        );
    }
}
