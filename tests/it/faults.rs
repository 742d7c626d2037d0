//! Fault injection: the store's K-th write or sync fails (for every K a workload reaches), then
//! the writes not yet synced are lost as in a power cut; or an index checkpoint's K-th I/O
//! operation fails. Reopening must show exactly the acknowledged state, with every index in
//! agreement with the store.
//!
//! The reference is a naive model (a map) that applies an operation only when QuiverDB
//! acknowledged it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use quiverdb::faults::{Aftermath, FaultPlan, FaultyIndexIo, StorageFaults, Trigger};
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Error, Filter, IndexConfig, Metric,
    OpenOptions, PayloadKind, SearchRequest,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, Rng};

const DIM: usize = 8;
/// Ids are drawn from this many, so that upserts overwrite and deletes hit.
const ID_SPACE: u128 = 40;

/// One step of the workload.
#[derive(Clone, Debug)]
enum Op {
    Create,
    Upsert(Vec<ModelDoc>),
    Delete(Vec<Uuid>),
    Patch(Uuid, Value),
    /// Checkpoints the collection's indexes (no change to the documents).
    Checkpoint,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelDoc {
    id: Uuid,
    vector: Vec<f32>,
    metadata: Map<String, Value>,
    text: String,
}

/// The documents by id, or `None` before the collection exists.
type Model = Option<BTreeMap<Uuid, ModelDoc>>;

fn apply_to_model(model: &mut Model, op: &Op) {
    match op {
        Op::Create => *model = Some(BTreeMap::new()),
        Op::Upsert(docs) => {
            let map = model.as_mut().expect("created");
            for doc in docs {
                map.insert(doc.id, doc.clone());
            }
        }
        Op::Delete(ids) => {
            let map = model.as_mut().expect("created");
            for id in ids {
                map.remove(id);
            }
        }
        Op::Patch(id, patch) => {
            let doc = model.as_mut().expect("created").get_mut(id).expect("live");
            for (key, value) in patch.as_object().unwrap() {
                doc.metadata.insert(key.clone(), value.clone());
            }
        }
        Op::Checkpoint => {}
    }
}

/// A seeded workload of `steps` operations, each valid if all before it succeeded.
fn workload(seed: u64, steps: usize, checkpoints: bool) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut model: Model = None;
    let mut ops = vec![Op::Create];
    apply_to_model(&mut model, &ops[0]);
    for step in 0..steps {
        let live: Vec<Uuid> = model.as_ref().unwrap().keys().copied().collect();
        let op = match rng.below(10) {
            _ if checkpoints && step % 4 == 3 => Op::Checkpoint,
            0..=5 => {
                let n = 1 + rng.below(6);
                let docs = (0..n)
                    .map(|_| {
                        let id = Uuid::from_u128(1 + rng.below(ID_SPACE as usize) as u128);
                        let group = rng.below(3);
                        ModelDoc {
                            id,
                            vector: rng.vector(DIM),
                            metadata: json!({"step": step, "group": group})
                                .as_object()
                                .unwrap()
                                .clone(),
                            text: format!("step{step} group{group} common"),
                        }
                    })
                    .collect();
                Op::Upsert(docs)
            }
            6 | 7 if !live.is_empty() => {
                let n = 1 + rng.below(3);
                Op::Delete((0..n).map(|_| live[rng.below(live.len())]).collect())
            }
            _ if !live.is_empty() => Op::Patch(
                live[rng.below(live.len())],
                json!({"patched": step, "group": rng.below(3)}),
            ),
            _ => Op::Checkpoint,
        };
        apply_to_model(&mut model, &op);
        ops.push(op);
    }
    ops
}

fn collection_config() -> CollectionConfig {
    CollectionConfig::new(DIM, Metric::L2)
        .with_index(IndexConfig::hnsw())
        .with_text_index(true)
        .with_payload_field("group", PayloadKind::Integer)
}

fn apply_to_db(db: &Database, op: &Op) -> quiverdb::Result<()> {
    let collection = || db.collection("f");
    match op {
        Op::Create => db.create_collection("f", collection_config()).map(drop),
        Op::Upsert(docs) => {
            let inputs = docs
                .iter()
                .map(|d| {
                    DocumentInput::new(d.vector.clone())
                        .with_id(d.id)
                        .with_metadata(Value::Object(d.metadata.clone()))
                        .with_text(d.text.clone())
                })
                .collect();
            collection()?.upsert(inputs).map(drop)
        }
        Op::Delete(ids) => collection()?.delete(ids).map(drop),
        Op::Patch(id, patch) => collection()?.update_metadata(*id, patch.clone()),
        Op::Checkpoint => collection()?.checkpoint(),
    }
}

/// What one faulty run did.
struct Run {
    /// The model of every acknowledged operation.
    model: Model,
    /// Operations that failed.
    failed: usize,
    /// The first failed operation, if any (`None` too when the database did not open).
    first_failure: Option<usize>,
}

/// Runs `ops` on a database opened with `options`, stopping at the first failure when
/// `stop_at_failure`; then closes it (errors are expected once the disk is gone).
fn run(dir: &Path, options: OpenOptions, ops: &[Op], stop_at_failure: bool) -> Run {
    let mut run = Run {
        model: None,
        failed: 0,
        first_failure: None,
    };
    let Ok(db) = Database::open_with(dir, options) else {
        run.failed = 1;
        return run;
    };
    for (i, op) in ops.iter().enumerate() {
        match apply_to_db(&db, op) {
            Ok(()) => apply_to_model(&mut run.model, op),
            Err(e) => {
                assert!(
                    !matches!(e, Error::Internal(_)),
                    "an I/O fault surfaced as an internal error: {e}"
                );
                run.failed += 1;
                run.first_failure.get_or_insert(i);
                if stop_at_failure || run.model.is_none() {
                    break;
                }
            }
        }
    }
    db.close().ok();
    run
}

/// Reopens the database normally and checks it against the model: documents, the index check,
/// exact vector search, keyword search and payload counts.
fn assert_state(dir: &Path, model: &Model, ctx: &str) {
    let db = Database::open(dir).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let Some(expected) = model else {
        assert!(
            db.collection("f").is_err(),
            "{ctx}: an unacknowledged collection exists"
        );
        return;
    };
    let c = db
        .collection("f")
        .unwrap_or_else(|e| panic!("{ctx}: acknowledged collection missing: {e}"));
    let mut stored = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = c.scroll(100, cursor.as_deref()).unwrap();
        for d in page.documents {
            stored.insert(d.id, d);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{ctx}: document ids"
    );
    for (id, want) in expected {
        let got = &stored[id];
        assert_eq!(got.vector, want.vector, "{ctx}: vector of {id}");
        assert_eq!(got.metadata, want.metadata, "{ctx}: metadata of {id}");
        assert_eq!(got.text.as_deref(), Some(want.text.as_str()), "{ctx}: text");
    }
    let report = db.check(None).unwrap();
    assert!(report.ok(), "{ctx}: {report:?}");
    assert_search(&c, expected, ctx);
    db.close().unwrap();
}

fn assert_search(c: &Collection, expected: &BTreeMap<Uuid, ModelDoc>, ctx: &str) {
    let docs: Vec<(Uuid, Vec<f32>)> = expected
        .values()
        .map(|d| (d.id, d.vector.clone()))
        .collect();
    let query = Rng(docs.len() as u64).vector(DIM);
    let all = brute_force(Metric::L2, &docs, &query, docs.len());
    let hits = c
        .search(&SearchRequest::new(query, 5).with_ef(1000))
        .unwrap()
        .hits;
    assert_matches_brute_force(&hits, &all[..5.min(all.len())], &all);
    let keyword = c.search(&SearchRequest::text("common", 1)).unwrap();
    assert_eq!(keyword.examined, expected.len(), "{ctx}: keyword matches");
    for group in 0..3 {
        let filter: Filter = format!(r#"{{"group": {group}}}"#).parse().unwrap();
        let want = expected
            .values()
            .filter(|d| d.metadata["group"] == json!(group))
            .count();
        assert_eq!(
            c.count_where(&filter).unwrap(),
            want as u64,
            "{ctx}: payload count of group {group}"
        );
    }
}

/// Counts the store's writes and syncs for a fault-free run of `ops`.
fn count_store_operations(ops: &[Op]) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(StorageFaults::new(FaultPlan::counting()));
    let run = run(
        dir.path(),
        OpenOptions::new().storage_faults(faults.clone()),
        ops,
        true,
    );
    assert_eq!(run.failed, 0);
    assert_state(dir.path(), &run.model, "fault-free run");
    (faults.plan().writes(), faults.plan().syncs())
}

/// How a failed operation ended up after the reopen.
#[derive(Default)]
struct Outcomes {
    runs: usize,
    /// The failed operation left nothing.
    absent: usize,
    /// The failed operation was whole: its commit reached the disk before the error (the
    /// last I/O of a commit can fail after the commit became durable).
    whole: usize,
}

impl Outcomes {
    /// Checks the reopened database against the acknowledged state, allowing the first failed
    /// operation (if any) to be there whole, and counts which it was.
    fn check(&mut self, dir: &Path, run: &Run, ops: &[Op], ctx: &str) {
        self.runs += 1;
        let Some(i) = run.first_failure else {
            assert_state(dir, &run.model, ctx);
            return;
        };
        let current = {
            let db = Database::open(dir).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
            let current = current_model(&db);
            db.close().unwrap();
            current
        };
        let mut with_failed = run.model.clone();
        apply_to_model(&mut with_failed, &ops[i]);
        if current == run.model {
            self.absent += 1;
        } else {
            assert!(
                current == with_failed,
                "{ctx}: acknowledged writes lost, or the failed {:?} is partial",
                ops[i]
            );
            self.whole += 1;
        }
        assert_state(dir, &current, ctx);
    }
}

/// The store's K-th write or sync fails and the disk is gone; then the unsynced writes are lost
/// as in a power cut. For every K: the reopened database holds every acknowledged operation and
/// nothing else, except that the failed operation may be there whole.
#[test]
fn store_faults_then_power_loss_keep_the_acknowledged_state() {
    store_faults_then_power_cut(90, false);
}

/// As above, but the power cut tears the unsynced writes: each reached the disk or not, at
/// random (redb's checksums must reject a torn commit).
#[test]
fn store_faults_then_torn_writes_keep_the_acknowledged_state() {
    store_faults_then_power_cut(93, true);
}

fn store_faults_then_power_cut(seed: u64, torn: bool) {
    let ops = workload(seed, 14, false);
    let (writes, syncs) = count_store_operations(&ops);
    let mut lost_total = 0;
    let mut outcomes = Outcomes::default();
    let triggers = (1..=writes)
        .map(Trigger::NthWrite)
        .chain((1..=syncs).map(Trigger::NthSync));
    for (k, trigger) in triggers.enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(StorageFaults::new(FaultPlan::new(
            trigger,
            Aftermath::DiskGone,
        )));
        let run = run(
            dir.path(),
            OpenOptions::new().storage_faults(faults.clone()),
            &ops,
            true,
        );
        assert!(faults.plan().tripped(), "{trigger:?} was reached");
        // The last fault points fall in the close, after every operation was acknowledged.
        assert!(run.failed <= 1, "{trigger:?}: stopped at the first failure");
        if dir.path().join("quiver.redb").exists() {
            lost_total += if torn {
                faults.tear_unsynced_writes(dir.path(), k as u64).unwrap()
            } else {
                faults.lose_unsynced_writes(dir.path()).unwrap()
            };
        }
        let ctx = format!("{trigger:?} + power cut (torn: {torn})");
        outcomes.check(dir.path(), &run, &ops, &ctx);
    }
    eprintln!(
        "store faults + power cut (torn: {torn}): {} runs ({writes} write and {syncs} sync fault \
         points), {} failed operations absent, {} whole, {lost_total} unsynced writes lost",
        outcomes.runs, outcomes.absent, outcomes.whole
    );
}

/// The store's K-th write or sync fails once. Every acknowledged operation survives a reopen,
/// the failed one left all of its effects or none, and the reopened database takes new writes.
#[test]
fn transient_store_faults_lose_no_acknowledged_write() {
    let ops = workload(91, 14, false);
    let (writes, syncs) = count_store_operations(&ops);
    let mut outcomes = Outcomes::default();
    let triggers = (1..=writes)
        .step_by(3)
        .map(Trigger::NthWrite)
        .chain((1..=syncs).map(Trigger::NthSync));
    for trigger in triggers {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(StorageFaults::new(FaultPlan::new(
            trigger,
            Aftermath::Transient,
        )));
        let options = OpenOptions::new().storage_faults(faults.clone());
        let run = run(dir.path(), options, &ops, true);
        let ctx = format!("{trigger:?} (transient)");
        outcomes.check(dir.path(), &run, &ops, &ctx);
        let db = Database::open(dir.path()).unwrap();
        let mut model = current_model(&db);
        if model.is_some() {
            let probe = Op::Upsert(vec![ModelDoc {
                id: Uuid::from_u128(1_000),
                vector: vec![0.5; DIM],
                metadata: json!({"group": 1}).as_object().unwrap().clone(),
                text: "probe common".into(),
            }]);
            apply_to_db(&db, &probe).unwrap_or_else(|e| panic!("{ctx}: after reopen: {e}"));
            apply_to_model(&mut model, &probe);
        }
        db.close().unwrap();
        assert_state(dir.path(), &model, &ctx);
    }
    eprintln!(
        "transient store faults: {} runs, {} failed operations absent, {} whole",
        outcomes.runs, outcomes.absent, outcomes.whole
    );
}

/// The documents of collection `f`, as a model.
fn current_model(db: &Database) -> Model {
    let c = db.collection("f").ok()?;
    let mut map = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = c.scroll(100, cursor.as_deref()).unwrap();
        for d in page.documents {
            let doc = ModelDoc {
                id: d.id,
                vector: d.vector,
                metadata: d.metadata,
                text: d.text.unwrap_or_default(),
            };
            map.insert(doc.id, doc);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Some(map),
        }
    }
}

/// The K-th I/O operation on index files fails (vector checkpoints and the keyword index's
/// tantivy files; for every K): failed checkpoints and searches report the error, writes go on
/// being acknowledged (the store is fine), and the reopened database holds every acknowledged
/// write with its indexes recovered or rebuilt, and no temporary file left.
#[test]
fn index_checkpoint_faults_lose_nothing_and_leave_no_debris() {
    let ops = workload(92, 10, true);
    let counting = Arc::new(FaultyIndexIo::new(FaultPlan::counting()));
    let dir = tempfile::tempdir().unwrap();
    let run_ok = run(
        dir.path(),
        OpenOptions::new().index_io(counting.clone()),
        &ops,
        false,
    );
    assert_eq!(run_ok.failed, 0);
    let (writes, syncs) = (counting.plan().writes(), counting.plan().syncs());
    assert!(writes > 10 && syncs > 4, "{writes} writes, {syncs} syncs");
    let mut runs = 0;
    let mut failed_ops = 0;
    // Every fault point with the disk gone; every few with a transient error (the soak setting
    // QUIVER_FAULT_EVERY=1 runs them all).
    let transient_stride = std::env::var("QUIVER_FAULT_EVERY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    for (aftermath, stride) in [
        (Aftermath::DiskGone, 1),
        (Aftermath::Transient, transient_stride),
    ] {
        let triggers = (1..=writes)
            .step_by(stride)
            .map(Trigger::NthWrite)
            .chain((1..=syncs).step_by(stride).map(Trigger::NthSync));
        for trigger in triggers {
            let dir = tempfile::tempdir().unwrap();
            let io = Arc::new(FaultyIndexIo::new(FaultPlan::new(trigger, aftermath)));
            let run = run(
                dir.path(),
                OpenOptions::new().index_io(io.clone()),
                &ops,
                false,
            );
            let ctx = format!("index I/O {trigger:?} {aftermath:?}");
            assert!(io.plan().tripped(), "{ctx}: reached");
            failed_ops += run.failed;
            assert_no_temporary_files(dir.path(), &ctx);
            assert_state(dir.path(), &run.model, &ctx);
            runs += 1;
        }
    }
    eprintln!(
        "index file faults: {runs} runs ({writes} write and {syncs} sync fault points), \
         {failed_ops} operations failed cleanly"
    );
}

fn assert_no_temporary_files(dir: &Path, ctx: &str) {
    for entry in walk(dir) {
        assert!(
            !entry.to_string_lossy().ends_with(".tmp"),
            "{ctx}: temporary file left: {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Bit flips and truncations of the store file itself (redb's): an open that verifies the store
/// (as `quiver check` does), reading every document and checking, either works and shows exactly
/// the written documents or fails with an error; never a panic, never a wrong answer.
#[test]
fn damaged_store_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ops = workload(94, 12, false);
    let run = run(dir.path(), OpenOptions::new(), &ops, true);
    assert_eq!(run.failed, 0);
    let store = dir.path().join("quiver.redb");
    let good = std::fs::read(&store).unwrap();
    let mut rng = Rng(94);
    let (mut right, mut refused) = (0, 0);
    for trial in 0..300 {
        let mut bad = good.clone();
        if trial % 4 == 3 {
            bad.truncate(rng.below(good.len()));
        } else {
            let at = rng.below(bad.len());
            bad[at] ^= 1 << rng.below(8);
        }
        std::fs::write(&store, &bad).unwrap();
        // A plain open trusts redb's pages (as SQLite does without its integrity check): it may
        // miss the damage, but it must not panic.
        std::panic::catch_unwind(|| -> quiverdb::Result<()> {
            let db = Database::open(dir.path())?;
            let c = db.collection("f")?;
            let mut cursor = None;
            while let Some(next) = c.scroll(100, cursor.as_deref())?.next_cursor {
                cursor = Some(next);
            }
            db.check(None)?;
            drop(c);
            db.close()
        })
        .unwrap_or_else(|_| panic!("trial {trial}: a plain open panicked"))
        .ok();
        std::fs::write(&store, &bad).unwrap();
        let outcome = std::panic::catch_unwind(|| -> quiverdb::Result<Model> {
            let db = Database::open_with(dir.path(), OpenOptions::new().verify_store(true))?;
            let model = current_model(&db);
            let report = db.check(None)?;
            assert!(report.ok(), "trial {trial}: {report:?}");
            db.close()?;
            Ok(model)
        })
        .unwrap_or_else(|_| panic!("trial {trial}: panicked"));
        match outcome {
            Ok(model) => {
                assert!(model == run.model, "trial {trial}: wrong documents");
                right += 1;
            }
            Err(_) => refused += 1,
        }
    }
    std::fs::write(&store, &good).unwrap();
    eprintln!("damaged store file: 300 trials, {right} opened with the right documents, {refused} refused");
}

/// When the keyword index's files cannot be written at all, writes are still committed and
/// acknowledged, searches answer `IndexUnavailable` instead of results from an index that
/// disagrees with the store, and a reopen on a sound disk rebuilds everything.
#[test]
fn an_index_that_cannot_be_rebuilt_leaves_writes_acknowledged_and_searches_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = workload(95, 4, false);
    let run_ok = run(dir.path(), OpenOptions::new(), &first, true);
    assert_eq!(run_ok.failed, 0);
    let mut model = run_ok.model;
    // Reopened on a disk that refuses every index-file write from now on.
    let io = Arc::new(FaultyIndexIo::new(FaultPlan::new(
        Trigger::NthWrite(1),
        Aftermath::DiskGone,
    )));
    let db = Database::open_with(dir.path(), OpenOptions::new().index_io(io.clone())).unwrap();
    let doc = |i: u128| ModelDoc {
        id: Uuid::from_u128(500 + i),
        vector: vec![0.25 * i as f32; DIM],
        metadata: json!({"group": 2}).as_object().unwrap().clone(),
        text: format!("late{i} common"),
    };
    let mut refused = 0;
    for i in 0..3 {
        let op = Op::Upsert(vec![doc(i)]);
        apply_to_db(&db, &op).unwrap_or_else(|e| panic!("upsert {i} not acknowledged: {e}"));
        apply_to_model(&mut model, &op);
        match db
            .collection("f")
            .unwrap()
            .search(&SearchRequest::text("common", 5))
        {
            Ok(response) => assert_eq!(response.examined, model.as_ref().unwrap().len()),
            Err(Error::IndexUnavailable { .. } | Error::Io(_)) => refused += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(io.plan().tripped() && refused > 0, "the fault was reached");
    let c = db.collection("f").unwrap();
    assert!(
        matches!(
            c.search(&SearchRequest::new(vec![0.0; DIM], 3)),
            Err(Error::IndexUnavailable { .. })
        ),
        "searches are refused once a rebuild failed"
    );
    drop(c);
    db.close().ok();
    assert_state(dir.path(), &model, "reopened on a sound disk");
}
