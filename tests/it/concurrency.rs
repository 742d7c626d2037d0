//! One writer and eight readers for a bounded time per index kind (flat, IVF-PQ trained and
//! untrained, HNSW), with the keyword and hybrid paths on every collection: no deadlock (a
//! watchdog), every read sees a consistent snapshot (whole batches or nothing), every distance
//! is the exact distance to a version the writer wrote, and recall stays stable.
//!
//! The writer works in batches of [`B`] documents: each document of batch `b` has the payload
//! `batch: b` and the text term `tb<b>`. It upserts new batches, deletes older ones whole and
//! re-embeds whole batches, each in one call.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Filter, Hit, HitArms, IndexConfig,
    Metric, PayloadKind, SearchRequest,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::{distance_f64, scratch_dir, Rng};

/// Documents per batch.
const B: usize = 20;
const DIM: usize = 16;
const READERS: u64 = 8;
/// How long the readers and the writer run per index kind.
const RUN: Duration = Duration::from_millis(2_500);
/// If the threads have not all finished this long after the start, something is deadlocked.
const WATCHDOG: Duration = Duration::from_secs(60);
/// Batches written before the run starts (280 documents: enough to train IVF-PQ, which then
/// retrains by itself at 4× that, during the run).
const INITIAL_BATCHES: u64 = 14;
/// The writer keeps at least this many batches and at most this many.
const MIN_LIVE: usize = 15;
const MAX_LIVE: usize = 90;
/// Recall of approximate searches is averaged over windows of this many queries per reader.
const WINDOW: usize = 40;
/// Each window's mean recall@10 must reach this.
const MIN_WINDOW_RECALL: f64 = 0.9;

fn doc_id(batch: u64, i: usize) -> Uuid {
    Uuid::from_u128((u128::from(batch + 1) << 16) | i as u128)
}

/// The batch and position of a document id.
fn decode(id: Uuid) -> (u64, usize) {
    let v = id.as_u128();
    (((v >> 16) as u64).wrapping_sub(1), (v & 0xffff) as usize)
}

fn batch_filter(batch: u64) -> Filter {
    Filter::field("batch").eq(batch)
}

/// One version of a batch: its vectors, in document order, and a generation number unique to
/// this write.
#[derive(Clone)]
struct Version {
    generation: u64,
    vectors: Arc<Vec<Vec<f32>>>,
}

/// The vectors of one version of a batch, in document order.
type Vectors = Arc<Vec<Vec<f32>>>;

/// What the writer publishes for the readers.
struct Shared {
    stop: AtomicBool,
    /// Batches whose last write was acknowledged and which the writer is not changing.
    stable: Mutex<BTreeMap<u64, Version>>,
    /// Batches whose delete was acknowledged.
    deleted: Mutex<Vec<u64>>,
    /// Every version of every batch, recorded before the write that stores it.
    versions: RwLock<HashMap<u64, Vec<Vectors>>>,
    /// Batches ever started.
    next_batch: AtomicU64,
    generation: AtomicU64,
}

impl Shared {
    fn stable_version(&self, batch: u64) -> Option<Version> {
        self.stable.lock().unwrap().get(&batch).cloned()
    }

    fn was_deleted(&self, batch: u64) -> bool {
        self.deleted.lock().unwrap().contains(&batch)
    }

    /// The version that was stable at `before` and still is: the batch was surely present,
    /// unchanged, for the whole query.
    fn surely(&self, batch: u64, before: Option<Version>) -> Option<Version> {
        let before = before?;
        let now = self.stable_version(batch)?;
        (now.generation == before.generation).then_some(before)
    }
}

/// How an index kind is run.
#[derive(Clone)]
struct Setup {
    name: &'static str,
    index: IndexConfig,
    train: bool,
    /// Whether unfiltered searches must be exact.
    exact: bool,
    /// Knobs of unfiltered searches.
    tune: fn(SearchRequest) -> SearchRequest,
}

// ----- the writer ------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct WriterStats {
    inserts: u64,
    deletes: u64,
    replaces: u64,
    slowest: Duration,
}

fn inputs(batch: u64, vectors: &[Vec<f32>]) -> Vec<DocumentInput> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            DocumentInput::new(v.clone())
                .with_id(doc_id(batch, i))
                .with_metadata(json!({ "batch": batch, "i": i }))
                .with_text(format!("tb{batch} common w{}", i % 5))
        })
        .collect()
}

struct Writer<'a> {
    c: &'a Collection,
    shared: &'a Shared,
    rng: Rng,
    stats: WriterStats,
}

impl Writer<'_> {
    fn timed<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.stats.slowest = self.stats.slowest.max(started.elapsed());
        out
    }

    /// Records a new version of `batch` (before writing it, so that readers accept it as soon
    /// as it can be seen), writes it and marks it stable.
    fn write_batch(&mut self, batch: u64) {
        let vectors: Arc<Vec<Vec<f32>>> = Arc::new((0..B).map(|_| self.rng.vector(DIM)).collect());
        self.shared
            .versions
            .write()
            .unwrap()
            .entry(batch)
            .or_default()
            .push(vectors.clone());
        let (c, docs) = (self.c, inputs(batch, &vectors));
        self.timed(|| c.upsert(docs))
            .unwrap_or_else(|e| panic!("upsert of batch {batch}: {e}"));
        let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed);
        self.shared.stable.lock().unwrap().insert(
            batch,
            Version {
                generation,
                vectors,
            },
        );
    }

    fn insert(&mut self) {
        let batch = self.shared.next_batch.fetch_add(1, Ordering::AcqRel);
        self.write_batch(batch);
        self.stats.inserts += 1;
    }

    /// A stable batch other than the newest, taken out of the stable set.
    fn take_stable(&mut self, oldest: bool) -> Option<u64> {
        let mut stable = self.shared.stable.lock().unwrap();
        let batches: Vec<u64> = stable.keys().copied().collect();
        if batches.len() < 2 {
            return None;
        }
        let batch = if oldest {
            batches[0]
        } else {
            batches[self.rng.below(batches.len() - 1)]
        };
        stable.remove(&batch);
        Some(batch)
    }

    fn delete(&mut self, oldest: bool) {
        let Some(batch) = self.take_stable(oldest) else {
            return;
        };
        let c = self.c;
        let deleted = if self.stats.deletes.is_multiple_of(2) {
            let ids: Vec<Uuid> = (0..B).map(|i| doc_id(batch, i)).collect();
            self.timed(|| c.delete(&ids))
        } else {
            self.timed(|| c.delete_where(&batch_filter(batch)))
        };
        let deleted = deleted.unwrap_or_else(|e| panic!("delete of batch {batch}: {e}"));
        assert_eq!(deleted, B, "delete of batch {batch}");
        self.shared.deleted.lock().unwrap().push(batch);
        self.stats.deletes += 1;
    }

    fn replace(&mut self) {
        if let Some(batch) = self.take_stable(false) {
            self.write_batch(batch);
            self.stats.replaces += 1;
        }
    }

    fn run(mut self) -> WriterStats {
        let mut round = 0u64;
        while !self.shared.stop.load(Ordering::Acquire) {
            round += 1;
            self.insert();
            let live = self.shared.stable.lock().unwrap().len();
            if round.is_multiple_of(3) && live > MIN_LIVE {
                self.delete(false);
            }
            if round % 4 == 1 {
                self.replace();
            }
            if live > MAX_LIVE {
                self.delete(true);
            }
        }
        self.stats
    }
}

// ----- the readers -----------------------------------------------------------------------------

#[derive(Default, Debug)]
struct ReaderStats {
    /// Operations by kind: count_where, filtered vector, keyword, filtered hybrid, vector,
    /// hybrid.
    ops: [u64; 6],
    /// Reads of one batch that saw it whole (the others saw nothing).
    whole: u64,
    /// Recall@10 of each unfiltered vector search against the surely present batches.
    recalls: Vec<f64>,
    violations: Vec<String>,
}

struct Reader<'a> {
    c: &'a Collection,
    shared: &'a Shared,
    setup: Setup,
    rng: Rng,
    id: u64,
    stats: ReaderStats,
}

/// Distance tolerance between the index's f32 and the exact f64.
fn tolerance(d: f64) -> f64 {
    1e-4 * d.abs().max(1.0)
}

impl Reader<'_> {
    fn violation(&mut self, what: String) {
        if self.stats.violations.len() < 20 {
            self.stats
                .violations
                .push(format!("reader {}: {what}", self.id));
        } else {
            self.stats.violations.truncate(20);
            self.stats.violations.push("...".into());
        }
    }

    /// A batch to read: the newest (perhaps being written) a third of the time, else any
    /// batch ever started (perhaps deleted, replaced or in flight).
    fn pick_batch(&mut self) -> u64 {
        let started = self.shared.next_batch.load(Ordering::Acquire);
        if self.rng.below(3) == 0 {
            started - 1
        } else {
            self.rng.below(started as usize) as u64
        }
    }

    /// Checks the hits of a read restricted to `batch`: only its documents, each once, and
    /// all of them or none (all if it was surely present, none if deleted before the read).
    fn check_batch_hits(
        &mut self,
        what: &str,
        batch: u64,
        hits: &[Hit],
        surely: bool,
        deleted: bool,
    ) {
        let mut seen = [false; B];
        for hit in hits {
            let (b, i) = decode(hit.id);
            if b != batch || i >= B || std::mem::replace(&mut seen[i], true) {
                self.violation(format!(
                    "{what} on batch {batch}: foreign or repeated hit {b}/{i}"
                ));
                return;
            }
        }
        let before = self.stats.violations.len();
        let arms = |f: fn(&HitArms) -> bool| {
            hits.iter()
                .filter(|h| h.arms.as_ref().is_some_and(f))
                .count()
        };
        // Which arm saw what, for a hybrid search that fails.
        let detail = hits.iter().any(|h| h.arms.is_some()).then(|| {
            format!(
                " (in the vector arm: {}, in the keyword arm: {})",
                arms(|a| a.vector.is_some()),
                arms(|a| a.keyword.is_some())
            )
        });
        self.check_count(what, batch, hits.len() as u64, surely, deleted);
        if let (Some(detail), true) = (detail, self.stats.violations.len() > before) {
            if let Some(last) = self.stats.violations.last_mut() {
                last.push_str(&detail);
            }
        }
    }

    fn check_count(&mut self, what: &str, batch: u64, n: u64, surely: bool, deleted: bool) {
        let ok = match n {
            0 => !surely,
            n if n == B as u64 => !deleted,
            _ => false,
        };
        if ok {
            self.stats.whole += u64::from(n > 0);
        } else {
            self.violation(format!(
                "{what} on batch {batch}: {n} of {B} documents (surely present: {surely}, \
                 deleted before: {deleted})"
            ));
        }
    }

    /// Every hit's distance is the exact distance from `query` to some version of its
    /// document, and the hits are sorted.
    fn check_distances(&mut self, what: &str, query: &[f32], hits: &[Hit]) {
        if hits.windows(2).any(|p| p[0].distance > p[1].distance) {
            self.violation(format!("{what}: unsorted distances"));
        }
        let shared = self.shared;
        let versions = shared.versions.read().unwrap();
        for hit in hits {
            let (batch, i) = decode(hit.id);
            let Some(d) = hit.distance else {
                self.violation(format!("{what}: a hit without a distance"));
                continue;
            };
            let d = f64::from(d);
            let matches = versions.get(&batch).is_some_and(|vs| {
                vs.iter().any(|v| {
                    v.get(i).is_some_and(|v| {
                        (distance_f64(Metric::L2, query, v) - d).abs() <= tolerance(d)
                    })
                })
            });
            if !matches {
                drop(versions);
                self.violation(format!(
                    "{what}: hit {batch}/{i} at distance {d} matches no version of it"
                ));
                return;
            }
        }
    }

    fn check_scores(&mut self, what: &str, hits: &[Hit]) {
        if hits
            .windows(2)
            .any(|p| p[0].score.unwrap_or(f32::NAN) < p[1].score.unwrap_or(f32::NAN))
        {
            self.violation(format!("{what}: scores not in descending order"));
        }
        if hits.iter().any(|h| h.score.is_none_or(f32::is_nan)) {
            self.violation(format!("{what}: a hit without a score"));
        }
        let mut ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != hits.len() {
            self.violation(format!("{what}: a repeated hit"));
        }
    }

    fn search(&mut self, what: &str, request: &SearchRequest) -> Option<Vec<Hit>> {
        match self.c.search(request) {
            Ok(response) => Some(response.hits),
            Err(e) => {
                self.violation(format!("{what}: search failed: {e}"));
                None
            }
        }
    }

    /// count_where on one batch, and the total count (whole batches only).
    fn count(&mut self) {
        let batch = self.pick_batch();
        let (before, deleted) = (
            self.shared.stable_version(batch),
            self.shared.was_deleted(batch),
        );
        let n = self.c.count_where(&batch_filter(batch));
        let surely = self.shared.surely(batch, before).is_some();
        match n {
            Ok(n) => self.check_count("count_where", batch, n, surely, deleted),
            Err(e) => self.violation(format!("count_where: {e}")),
        }
        match self.c.count() {
            Ok(total) if total % B as u64 == 0 => {}
            other => self.violation(format!("count: {other:?} is not whole batches")),
        }
    }

    /// A vector search restricted to one batch: all of it or none; exact when the batch was
    /// surely present and the index says the answer is exhaustive.
    fn filtered_vector(&mut self) {
        let batch = self.pick_batch();
        let query = self.rng.vector(DIM);
        let (before, deleted) = (
            self.shared.stable_version(batch),
            self.shared.was_deleted(batch),
        );
        let request = SearchRequest::new(query.clone(), B + 5).with_filter(batch_filter(batch));
        let Ok(response) = self.c.search(&request) else {
            self.violation(format!("filtered search on batch {batch} failed"));
            return;
        };
        let surely = self.shared.surely(batch, before);
        let hits = &response.hits;
        self.check_batch_hits("filtered search", batch, hits, surely.is_some(), deleted);
        self.check_distances("filtered search", &query, hits);
        if let (Some(version), true) = (surely, response.exhaustive) {
            let mut exact: Vec<(usize, f64)> = version
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i, distance_f64(Metric::L2, &query, v)))
                .collect();
            exact.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (hit, (i, d)) in hits.iter().zip(&exact) {
                let got = f64::from(hit.distance.unwrap_or(f32::NAN));
                if (got - d).abs() > tolerance(*d) {
                    self.violation(format!(
                        "exhaustive filtered search on stable batch {batch}: distance {got} \
                         where document {i} is at {d}"
                    ));
                    break;
                }
            }
        }
    }

    /// A keyword search for the batch's own term: all of it or none.
    fn keyword(&mut self) {
        let batch = self.pick_batch();
        let (before, deleted) = (
            self.shared.stable_version(batch),
            self.shared.was_deleted(batch),
        );
        let request = SearchRequest::text(format!("tb{batch}"), B + 5);
        let Some(hits) = self.search("keyword search", &request) else {
            return;
        };
        let surely = self.shared.surely(batch, before).is_some();
        self.check_batch_hits("keyword search", batch, &hits, surely, deleted);
        self.check_scores("keyword search", &hits);
    }

    /// A hybrid search on the batch's term, restricted to the batch: all of it or none.
    fn filtered_hybrid(&mut self) {
        let batch = self.pick_batch();
        let (before, deleted) = (
            self.shared.stable_version(batch),
            self.shared.was_deleted(batch),
        );
        let request = SearchRequest::hybrid(self.rng.vector(DIM), format!("tb{batch}"), B + 5)
            .with_filter(batch_filter(batch));
        let Some(hits) = self.search("filtered hybrid search", &request) else {
            return;
        };
        let surely = self.shared.surely(batch, before).is_some();
        self.check_batch_hits("filtered hybrid search", batch, &hits, surely, deleted);
        self.check_scores("filtered hybrid search", &hits);
    }

    /// An unfiltered hybrid search: sorted, distinct hits of documents the writer wrote.
    fn hybrid(&mut self) {
        let batch = self.pick_batch();
        let request = SearchRequest::hybrid(self.rng.vector(DIM), format!("tb{batch} common"), 10);
        let Some(hits) = self.search("hybrid search", &request) else {
            return;
        };
        self.check_scores("hybrid search", &hits);
        let started = self.shared.next_batch.load(Ordering::Acquire);
        if let Some(h) = hits.iter().find(|h| decode(h.id).0 >= started) {
            self.violation(format!("hybrid search: unknown document {}", h.id));
        }
    }

    /// An unfiltered search, checked against a brute force over the batches surely present:
    /// a document of theirs closer than the k-th hit and missing is a miss (documents being
    /// written may legitimately push theirs out).
    fn vector(&mut self) {
        const K: usize = 10;
        let query = self.rng.vector(DIM);
        let before = self.shared.stable.lock().unwrap().clone();
        let request = (self.setup.tune)(SearchRequest::new(query.clone(), K));
        let Ok(response) = self.c.search(&request) else {
            self.violation("unfiltered search failed".into());
            return;
        };
        let after = self.shared.stable.lock().unwrap().clone();
        let hits = &response.hits;
        self.check_distances("search", &query, hits);
        if self.setup.exact != response.exhaustive {
            self.violation(format!(
                "search: exhaustive {} ({})",
                response.exhaustive, response.strategy
            ));
        }
        let mut truth: Vec<(Uuid, f64)> = Vec::new();
        for (batch, version) in &before {
            if after.get(batch).map(|v| v.generation) == Some(version.generation) {
                truth.extend(
                    version
                        .vectors
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (doc_id(*batch, i), distance_f64(Metric::L2, &query, v))),
                );
            }
        }
        truth.sort_by(|a, b| a.1.total_cmp(&b.1));
        truth.truncate(K);
        if hits.len() < K {
            self.violation(format!("search: {} hits of {K}", hits.len()));
        }
        let kth = hits
            .get(K - 1)
            .and_then(|h| h.distance)
            .map_or(f64::INFINITY, f64::from);
        let found = truth
            .iter()
            .filter(|(id, d)| hits.iter().any(|h| h.id == *id) || *d >= kth - tolerance(kth))
            .count();
        let recall = found as f64 / truth.len().max(1) as f64;
        if self.setup.exact && found != truth.len() {
            self.violation(format!(
                "exact search missed {} of the {K} nearest surely present documents",
                truth.len() - found
            ));
        }
        self.stats.recalls.push(recall);
    }

    fn run(mut self) -> ReaderStats {
        while !self.shared.stop.load(Ordering::Acquire) {
            let op = self.rng.below(8).min(5);
            match op {
                0 => self.count(),
                1 => self.filtered_vector(),
                2 => self.keyword(),
                3 => self.filtered_hybrid(),
                4 => self.hybrid(),
                _ => self.vector(),
            }
            self.stats.ops[op] += 1;
        }
        self.stats
    }
}

// ----- the run ---------------------------------------------------------------------------------

enum Finished {
    Writer(WriterStats),
    Reader(ReaderStats),
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

fn run(setup: Setup, seed: u64) {
    let started = Instant::now();
    let dir = scratch_dir();
    let db = Database::open(dir.path()).unwrap();
    let config = CollectionConfig::new(DIM, Metric::L2)
        .with_index(setup.index.clone())
        .with_text_index(true)
        .with_payload_field("batch", PayloadKind::Integer);
    let c = db.create_collection("conc", config).unwrap();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stable: Mutex::new(BTreeMap::new()),
        deleted: Mutex::new(Vec::new()),
        versions: RwLock::new(HashMap::new()),
        next_batch: AtomicU64::new(0),
        generation: AtomicU64::new(0),
    });
    let mut writer = Writer {
        c: &c,
        shared: &shared,
        rng: Rng(seed),
        stats: WriterStats::default(),
    };
    for _ in 0..INITIAL_BATCHES {
        writer.insert();
    }
    if setup.train {
        assert!(c.train().unwrap());
    }
    let quantization = c.info().unwrap().vector_index.quantization;
    assert_eq!(
        quantization.map(|q| q.trained),
        matches!(setup.index, IndexConfig::IvfPq { .. }).then_some(setup.train),
        "{}",
        setup.name
    );

    // Every thread reports through the channel, also when it panics; the watchdog waits for
    // all of them at most WATCHDOG.
    let (done, finished) = mpsc::channel::<(String, Result<Finished, String>)>();
    let mut threads = Vec::new();
    {
        let (c, shared, done) = (c.clone(), shared.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let writer = Writer {
                    c: &c,
                    shared: &shared,
                    rng: Rng(seed + 1),
                    stats: WriterStats::default(),
                };
                Finished::Writer(writer.run())
            }));
            // The readers stop when the writer fails.
            shared.stop.store(true, Ordering::Release);
            let _ = done.send(("writer".into(), outcome.map_err(|e| panic_message(&*e))));
        }));
    }
    for id in 0..READERS {
        let (c, shared, done, setup) = (c.clone(), shared.clone(), done.clone(), setup.clone());
        threads.push(std::thread::spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let reader = Reader {
                    c: &c,
                    shared: &shared,
                    setup,
                    rng: Rng(seed + 100 + id),
                    id,
                    stats: ReaderStats::default(),
                };
                Finished::Reader(reader.run())
            }));
            let _ = done.send((
                format!("reader {id}"),
                outcome.map_err(|e| panic_message(&*e)),
            ));
        }));
    }
    drop(done);
    let deadline = started + WATCHDOG;
    std::thread::sleep(RUN);
    shared.stop.store(true, Ordering::Release);
    let mut writer_stats = None;
    let mut readers = Vec::new();
    for _ in 0..=READERS {
        let left = deadline.saturating_duration_since(Instant::now());
        match finished.recv_timeout(left) {
            Ok((_, Ok(Finished::Writer(w)))) => writer_stats = Some(w),
            Ok((_, Ok(Finished::Reader(r)))) => readers.push(r),
            Ok((who, Err(message))) => panic!("{}: {who} panicked: {message}", setup.name),
            Err(_) => panic!(
                "{}: threads still running {WATCHDOG:?} after the start ({} of {} finished): \
                 deadlock?",
                setup.name,
                readers.len() + usize::from(writer_stats.is_some()),
                READERS + 1
            ),
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let writer = writer_stats.unwrap();

    let violations: Vec<&String> = readers.iter().flat_map(|r| &r.violations).collect();
    assert!(
        violations.is_empty(),
        "{} seed {seed}: {} violations, e.g. {:#?}",
        setup.name,
        violations.len(),
        &violations[..violations.len().min(8)]
    );
    let mut ops = [0u64; 6];
    for r in &readers {
        for (total, n) in ops.iter_mut().zip(r.ops) {
            *total += n;
        }
    }
    let whole: u64 = readers.iter().map(|r| r.whole).sum();
    // Recall: per reader, the mean over consecutive windows of WINDOW queries.
    let recalls: Vec<f64> = readers.iter().flat_map(|r| r.recalls.clone()).collect();
    let mean = recalls.iter().sum::<f64>() / recalls.len().max(1) as f64;
    let worst_window = readers
        .iter()
        .flat_map(|r| r.recalls.chunks(WINDOW).filter(|w| w.len() == WINDOW))
        .map(|w| w.iter().sum::<f64>() / WINDOW as f64)
        .fold(f64::INFINITY, f64::min);
    let live = shared.stable.lock().unwrap().len();
    let quantization = c
        .info()
        .unwrap()
        .vector_index
        .quantization
        .map(|q| {
            format!(
                " (IVF-PQ trained: {}, on {:?} vectors)",
                q.trained, q.trained_on
            )
        })
        .unwrap_or_default();
    eprintln!(
        "concurrency {}: writer {} inserts, {} deletes, {} re-embeds (slowest call {:.1?}); \
         {} reads [count_where {}, filtered vector {}, keyword {}, filtered hybrid {}, hybrid {}, \
         vector {}], {whole} saw a whole batch; recall@10 mean {mean:.3}, worst window of \
         {WINDOW} {worst_window:.3}; {live} batches live{quantization}; {:.1?}",
        setup.name,
        writer.inserts,
        writer.deletes,
        writer.replaces,
        writer.slowest,
        ops.iter().sum::<u64>(),
        ops[0],
        ops[1],
        ops[2],
        ops[3],
        ops[4],
        ops[5],
        started.elapsed()
    );
    assert!(
        readers.iter().all(|r| r.ops.iter().sum::<u64>() > 0),
        "{}: a reader never completed a read",
        setup.name
    );
    assert!(
        writer.inserts >= 5 && writer.deletes >= 1 && writer.replaces >= 1,
        "{}: the writer barely ran: {writer:?}",
        setup.name
    );
    assert!(whole > 0, "{}: no read saw a whole batch", setup.name);
    if setup.exact {
        assert_eq!(mean, 1.0, "{}", setup.name);
    } else {
        assert!(
            worst_window.is_finite(),
            "{}: no reader completed {WINDOW} searches",
            setup.name
        );
        assert!(
            worst_window >= MIN_WINDOW_RECALL,
            "{} seed {seed}: recall@10 fell to {worst_window:.3} over {WINDOW} queries (mean \
             {mean:.3})",
            setup.name
        );
    }

    // Afterwards: exactly the stable batches, and every index agrees with the store.
    let stable = shared.stable.lock().unwrap().clone();
    assert_eq!(
        c.count().unwrap(),
        (stable.len() * B) as u64,
        "{}",
        setup.name
    );
    for batch in stable.keys().take(5) {
        assert_eq!(c.count_where(&batch_filter(*batch)).unwrap(), B as u64);
        let hits = c
            .search(&SearchRequest::text(format!("tb{batch}"), B + 5))
            .unwrap()
            .hits;
        assert_eq!(hits.len(), B, "{}", setup.name);
    }
    let report = db.check(None).unwrap();
    assert!(report.ok(), "{}: {report:#?}", setup.name);
    drop(c);
    db.close().unwrap();
}

#[test]
fn flat_one_writer_eight_readers() {
    run(
        Setup {
            name: "flat",
            index: IndexConfig::Flat {},
            train: false,
            exact: true,
            tune: |r| r,
        },
        7_100,
    );
}

#[test]
fn untrained_ivfpq_one_writer_eight_readers() {
    run(
        Setup {
            name: "ivfpq untrained",
            index: IndexConfig::ivfpq(),
            train: false,
            exact: true,
            tune: |r| r,
        },
        7_200,
    );
}

#[test]
fn trained_ivfpq_one_writer_eight_readers() {
    run(
        Setup {
            name: "ivfpq trained",
            index: IndexConfig::IvfPq {
                nlist: Some(8),
                pq_m: Some(4),
            },
            train: true,
            exact: false,
            tune: |r| r.with_nprobe(6).with_refine(10),
        },
        7_300,
    );
}

#[test]
fn hnsw_one_writer_eight_readers_see_whole_batches() {
    run(
        Setup {
            name: "hnsw",
            index: IndexConfig::hnsw(),
            train: false,
            exact: false,
            tune: |r| r,
        },
        7_400,
    );
}
