//! IVF-PQ against brute force: exact before training, recall after (automatic and manual
//! training, every metric), deletes and re-inserts, filters, persistence, compaction and
//! retraining, the integrity check.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use quiverdb::index::ivfpq::MIN_TRAINING_VECTORS;
use quiverdb::sync::Recovery;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Error, Filter, IndexConfig, Metric,
    PayloadKind, SearchRequest,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, distance_f64, true_hits, Rng};

const K: usize = 10;
/// Longest wait for a background training.
const WAIT: Duration = Duration::from_secs(120);

fn id(i: usize) -> Uuid {
    Uuid::from_u128(i as u128 + 1)
}

/// `n` vectors around 40 random centres (clustered, as embeddings are).
fn clustered(rng: &mut Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..40).map(|_| rng.vector(dim)).collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.below(centres.len())];
            c.iter().map(|x| x + 0.35 * rng.unit()).collect()
        })
        .collect()
}

/// An IVF-PQ collection; `pq_m` `dim / 2` (the default `dim / 8` is coarse at these small
/// dimensions) unless `auto_m`.
fn collection(db: &Database, dim: usize, metric: Metric, nlist: Option<usize>) -> Collection {
    collection_with(db, dim, metric, nlist, Some(dim / 2))
}

fn collection_with(
    db: &Database,
    dim: usize,
    metric: Metric,
    nlist: Option<usize>,
    pq_m: Option<usize>,
) -> Collection {
    let config = CollectionConfig::new(dim, metric)
        .with_index(IndexConfig::IvfPq { nlist, pq_m })
        .with_payload_field("group", PayloadKind::Integer);
    db.create_collection("v", config).unwrap()
}

fn upsert(c: &Collection, vectors: &[Vec<f32>], first: usize) -> Vec<(Uuid, Vec<f32>)> {
    let docs: Vec<(Uuid, Vec<f32>)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (id(first + i), v.clone()))
        .collect();
    for chunk in docs.chunks(5_000) {
        c.upsert(
            chunk
                .iter()
                .map(|(id, v)| {
                    let group = id.as_u128() % 10;
                    DocumentInput::new(v.clone())
                        .with_id(*id)
                        .with_metadata(json!({ "group": group }))
                })
                .collect(),
        )
        .unwrap();
    }
    docs
}

/// Average recall@K of `requests`' answers against brute force over `live`; also checks that
/// every hit is live and, with re-ranking, carries its exact distance.
fn recall(
    c: &Collection,
    metric: Metric,
    live: &[(Uuid, Vec<f32>)],
    queries: &[Vec<f32>],
    configure: impl Fn(SearchRequest) -> SearchRequest,
    ctx: &str,
) -> f64 {
    let by_id: HashMap<Uuid, &Vec<f32>> = live.iter().map(|(id, v)| (*id, v)).collect();
    let mut found = 0;
    for (qi, query) in queries.iter().enumerate() {
        let request = configure(SearchRequest::new(query.clone(), K));
        let response = c.search(&request).unwrap();
        assert_eq!(response.hits.len(), K, "{ctx}, query {qi}");
        let refined = request.refine != Some(0);
        for hit in &response.hits {
            let vector = by_id
                .get(&hit.id)
                .unwrap_or_else(|| panic!("{ctx}: {} is not a live document", hit.id));
            if refined {
                let exact = distance_f64(metric, query, vector);
                assert!(
                    (f64::from(hit.distance.unwrap()) - exact).abs() <= 1e-4 * exact.abs().max(1.0),
                    "{ctx}: re-ranked hits carry exact distances"
                );
            }
        }
        found += true_hits(metric, live, query, K, &response.hits);
    }
    found as f64 / (queries.len() * K) as f64
}

#[test]
fn below_the_training_size_searches_are_exact() {
    let mut rng = Rng(1);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = collection(&db, 16, Metric::L2, None);
    let live = upsert(&c, &clustered(&mut rng, 800, 16), 0);
    let quantization = c.info().unwrap().vector_index.quantization.unwrap();
    assert!(!quantization.trained);
    for _ in 0..5 {
        let query = rng.vector(16);
        let response = c.search(&SearchRequest::new(query.clone(), K)).unwrap();
        assert_eq!(response.strategy, "ivfpq_untrained_exact");
        assert!(response.exhaustive);
        let all = brute_force(Metric::L2, &live, &query, live.len());
        assert_matches_brute_force(&response.hits, &all[..K], &all);
    }
}

#[test]
fn training_happens_by_itself_and_recall_follows_nprobe_and_refine() {
    let seed = 2;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let dim = 32;
    // Everything chosen at training time: nlist 4·√n, m = dim / 8.
    let c = collection_with(&db, dim, Metric::L2, None, None);
    let n = MIN_TRAINING_VECTORS + 2_000;
    let live = upsert(&c, &clustered(&mut rng, n, dim), 0);
    // The batch that crossed the training size started it in the background.
    let quantization = c.info().unwrap().vector_index.quantization.unwrap();
    assert!(
        quantization.training || quantization.trained,
        "{quantization:?}"
    );
    assert!(c.wait_for_background_work(WAIT).unwrap(), "training ended");
    let quantization = c.info().unwrap().vector_index.quantization.unwrap();
    assert!(
        quantization.trained && !quantization.training,
        "{quantization:?}"
    );
    let queries: Vec<Vec<f32>> = clustered(&mut rng, 40, dim);
    let response = c
        .search(&SearchRequest::new(queries[0].clone(), K))
        .unwrap();
    assert_eq!(
        response.strategy, "ivfpq_refined",
        "trained once {n} vectors exist"
    );
    assert!(
        response.examined < n / 2,
        "probing scans a fraction: {}",
        response.examined
    );
    let few = recall(
        &c,
        Metric::L2,
        &live,
        &queries,
        |r| r.with_nprobe(1).with_refine(0),
        "nprobe 1",
    );
    let many = recall(
        &c,
        Metric::L2,
        &live,
        &queries,
        |r| r.with_nprobe(64).with_refine(8),
        "nprobe 64 refine 8",
    );
    eprintln!("recall@10: nprobe 1 no refine {few:.3}, nprobe 64 refine 8 {many:.3}");
    assert!(many >= 0.95, "recall {many}");
    assert!(many > few, "more probes and re-ranking find more");
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn manual_training_on_every_metric() {
    for (metric, seed) in [(Metric::Cosine, 3), (Metric::Dot, 4), (Metric::L2, 5)] {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let c = collection(&db, 24, metric, Some(16));
        let live = upsert(&c, &clustered(&mut rng, 3_000, 24), 0);
        assert!(c.train().unwrap(), "{metric:?}");
        let queries = clustered(&mut rng, 30, 24);
        let response = c
            .search(&SearchRequest::new(queries[0].clone(), K))
            .unwrap();
        assert_eq!(response.strategy, "ivfpq_refined", "{metric:?}: trained");
        let q = c.info().unwrap().vector_index.quantization.unwrap();
        assert!(q.trained && q.nlist == Some(16) && q.code_bytes == Some(12));
        // Codes (12 bytes), slots (4 bytes) and, for L2 and cosine, half-precision norm terms
        // (2 bytes) per vector, of the raw 96 bytes.
        let per_vector = if metric == Metric::Dot { 16 } else { 18 };
        assert_eq!(q.code_memory_bytes, 3_000 * per_vector, "{metric:?}");
        // 16 centroids and 12 × 256 codewords of 2 coordinates, plus headers.
        let floats = (16 * 24 + 256 * 24) * 4;
        assert!(
            (floats..floats + 4_096).contains(&q.quantiser_memory_bytes),
            "{metric:?}: {} quantiser bytes",
            q.quantiser_memory_bytes
        );
        let relative = q.relative_reconstruction_error.unwrap();
        assert!(
            relative > 0.0 && relative < 0.2,
            "{metric:?}: relative error {relative}"
        );
        let got = recall(
            &c,
            metric,
            &live,
            &queries,
            |r| r.with_nprobe(16).with_refine(10),
            "all lists",
        );
        assert!(got >= 0.97, "{metric:?}: recall {got} probing every list");
        // More inserts after training go to their nearest lists.
        let more = upsert(&c, &clustered(&mut rng, 500, 24), 10_000);
        let all: Vec<(Uuid, Vec<f32>)> = live.iter().chain(&more).cloned().collect();
        let got = recall(
            &c,
            metric,
            &all,
            &queries,
            |r| r.with_nprobe(16).with_refine(10),
            "after inserts",
        );
        assert!(got >= 0.97, "{metric:?}: recall {got} after inserts");
        assert!(db.check(None).unwrap().ok(), "{metric:?}");
    }
}

#[test]
fn too_few_vectors_to_train_is_a_clear_error_and_flat_has_nothing_to_train() {
    let mut rng = Rng(6);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = collection(&db, 8, Metric::L2, None);
    upsert(&c, &clustered(&mut rng, 100, 8), 0);
    assert!(matches!(c.train(), Err(Error::InvalidArgument(m)) if m.contains("256")));
    let flat = db
        .create_collection("f", CollectionConfig::new(8, Metric::L2))
        .unwrap();
    assert!(!flat.train().unwrap());
    let bad = CollectionConfig::new(10, Metric::L2).with_index(IndexConfig::IvfPq {
        nlist: None,
        pq_m: Some(3),
    });
    assert!(matches!(
        db.create_collection("b", bad),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn deletes_are_never_returned_and_compaction_and_retraining_keep_recall() {
    let seed = 7;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let dim = 16;
    let c = collection(&db, dim, Metric::L2, Some(32));
    let mut live = upsert(&c, &clustered(&mut rng, 2_000, dim), 0);
    c.train().unwrap();
    // Delete 30% (past the compaction threshold), in batches.
    let deleted: Vec<Uuid> = live.iter().step_by(3).map(|p| p.0).collect();
    for chunk in deleted.chunks(100) {
        c.delete(chunk).unwrap();
    }
    let gone: HashSet<Uuid> = deleted.iter().copied().collect();
    live.retain(|p| !gone.contains(&p.0));
    let queries = clustered(&mut rng, 30, dim);
    for query in &queries {
        let hits = c
            .search(&SearchRequest::new(query.clone(), 50).with_nprobe(32))
            .unwrap()
            .hits;
        assert!(
            hits.iter().all(|h| !gone.contains(&h.id)),
            "a deleted id came back"
        );
    }
    let got = recall(
        &c,
        Metric::L2,
        &live,
        &queries,
        |r| r.with_nprobe(32).with_refine(10),
        "after deletes",
    );
    assert!(got >= 0.95, "recall {got} after deletes");
    assert!(db.check(None).unwrap().ok());
    // Re-insert the deleted ids, then grow past 4× the trained size: retrained by itself.
    let back: Vec<Vec<f32>> = clustered(&mut rng, deleted.len(), dim);
    for (chunk_ids, chunk) in deleted.chunks(500).zip(back.chunks(500)) {
        c.upsert(
            chunk_ids
                .iter()
                .zip(chunk)
                .map(|(id, v)| DocumentInput::new(v.clone()).with_id(*id))
                .collect(),
        )
        .unwrap();
    }
    live.extend(deleted.iter().copied().zip(back));
    live.extend(upsert(&c, &clustered(&mut rng, 6_000, dim), 100_000));
    assert!(
        c.wait_for_background_work(WAIT).unwrap(),
        "retraining ended"
    );
    let quantization = c.info().unwrap().vector_index.quantization.unwrap();
    assert!(
        quantization.trained_on.unwrap() >= 4 * 2_000,
        "retrained on the grown collection: {quantization:?}"
    );
    let got = recall(
        &c,
        Metric::L2,
        &live,
        &queries,
        |r| r.with_nprobe(32).with_refine(10),
        "after growth",
    );
    assert!(got >= 0.95, "recall {got} after re-inserts and growth");
    assert_eq!(c.count().unwrap(), live.len() as u64);
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn filtered_searches_return_k_hits_when_k_match() {
    let mut rng = Rng(8);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = collection(&db, 16, Metric::L2, Some(32));
    let live = upsert(&c, &clustered(&mut rng, 3_000, 16), 0);
    c.train().unwrap();
    let by_id: HashMap<Uuid, &Vec<f32>> = live.iter().map(|(id, v)| (*id, v)).collect();
    // 10% of the documents match: fewer than probing 4 of 32 lists would scan, so they are
    // scanned exactly; 90%: probing with the filter inside.
    type InFilter = fn(u128) -> bool;
    let cases: [(Filter, InFilter, &str); 2] = [
        (
            Filter::field("group").eq(3),
            |g| g == 3,
            "filtered_exact_scan",
        ),
        (Filter::field("group").lt(9), |g| g < 9, "ivfpq_filtered"),
    ];
    for (filter, in_filter, strategy) in cases {
        for _ in 0..10 {
            let request = SearchRequest::new(rng.vector(16), K)
                .with_nprobe(4)
                .with_filter(filter.clone());
            let response = c.search(&request).unwrap();
            assert_eq!(response.hits.len(), K, "{}", response.strategy);
            assert!(
                response.strategy.starts_with(strategy),
                "{}",
                response.strategy
            );
            for hit in &response.hits {
                assert!(in_filter(hit.id.as_u128() % 10), "hit outside the filter");
                assert!(by_id.contains_key(&hit.id));
            }
        }
    }
    // Five matches: scanned exactly, all five returned.
    c.upsert(
        (0..5)
            .map(|i| {
                DocumentInput::new(rng.vector(16))
                    .with_id(id(50_000 + i))
                    .with_metadata(json!({"group": 99}))
            })
            .collect(),
    )
    .unwrap();
    let response = c
        .search(&SearchRequest::new(rng.vector(16), K).with_filter(Filter::field("group").eq(99)))
        .unwrap();
    assert_eq!(response.strategy, "filtered_exact_scan");
    assert!(response.exhaustive);
    assert_eq!(response.hits.len(), 5);
}

#[test]
fn a_checkpoint_round_trip_answers_identically() {
    // L2 reloads recompute the lists' norm terms; inner products keep none.
    for metric in [Metric::Cosine, Metric::L2] {
        checkpoint_round_trip(metric);
    }
}

fn checkpoint_round_trip(metric: Metric) {
    let mut rng = Rng(9);
    let dir = tempfile::tempdir().unwrap();
    let queries = clustered(&mut rng, 10, 16);
    let before: Vec<_> = {
        let db = Database::open(dir.path()).unwrap();
        let c = collection(&db, 16, metric, Some(20));
        upsert(&c, &clustered(&mut rng, 2_000, 16), 0);
        c.train().unwrap();
        c.delete(&[id(5), id(6)]).unwrap();
        upsert(&c, &clustered(&mut rng, 100, 16), 5_000);
        let answers = queries
            .iter()
            .map(|q| {
                c.search(&SearchRequest::new(q.clone(), K).with_refine(0))
                    .unwrap()
                    .hits
            })
            .collect();
        drop(c);
        db.close().unwrap();
        answers
    };
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("v").unwrap();
    assert!(matches!(
        c.info().unwrap().vector_index.recovery,
        Recovery::Loaded { .. }
    ));
    for (q, expected) in queries.iter().zip(&before) {
        let hits = c
            .search(&SearchRequest::new(q.clone(), K).with_refine(0))
            .unwrap()
            .hits;
        assert_eq!(
            &hits, expected,
            "{metric:?}: approximate answers identical after reload"
        );
    }
    assert!(db.check(None).unwrap().ok());
}

/// With nothing running in the background, waiting returns at once, even with no time to
/// wait; on a dropped collection it is a clear error.
#[test]
fn waiting_for_background_work_returns_at_once_when_idle_and_fails_when_dropped() {
    let mut rng = Rng(9);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = collection(&db, 16, Metric::L2, None);
    upsert(&c, &clustered(&mut rng, 300, 16), 0);
    assert!(c.wait_for_background_work(Duration::ZERO).unwrap());
    assert!(
        !c.info()
            .unwrap()
            .vector_index
            .quantization
            .unwrap()
            .training
    );
    db.drop_collection("v").unwrap();
    assert!(matches!(
        c.wait_for_background_work(WAIT),
        Err(Error::CollectionNotFound(name)) if name == "v"
    ));
}
