//! Exact search against an f64 brute force, for every metric.

use quiverdb::{CollectionConfig, Database, DocumentInput, Include, Metric, SearchRequest};
use serde_json::json;
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, distance_f64, Rng};

fn fill(
    db: &Database,
    name: &str,
    metric: Metric,
    n: usize,
    dim: usize,
    seed: u64,
) -> Vec<(Uuid, Vec<f32>)> {
    let collection = db
        .create_collection(name, CollectionConfig::new(dim, metric))
        .unwrap();
    let mut rng = Rng(seed);
    let docs: Vec<(Uuid, Vec<f32>)> = (0..n).map(|_| (Uuid::new_v4(), rng.vector(dim))).collect();
    for chunk in docs.chunks(500) {
        let inputs = chunk
            .iter()
            .map(|(id, v)| {
                DocumentInput::new(v.clone())
                    .with_id(*id)
                    .with_metadata(json!({"n": id.to_string()}))
            })
            .collect();
        collection.upsert(inputs).unwrap();
    }
    docs
}

#[test]
fn exact_search_equals_f64_brute_force_for_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for (i, metric) in [Metric::L2, Metric::Cosine, Metric::Dot]
        .into_iter()
        .enumerate()
    {
        let name = format!("m{i}");
        let docs = fill(&db, &name, metric, 1_000, 37, 7 + i as u64);
        let collection = db.collection(&name).unwrap();
        let mut rng = Rng(99);
        for k in [1, 10, 100, 1_000, 5_000] {
            let query = rng.vector(37);
            let response = collection
                .search(&SearchRequest::new(query.clone(), k))
                .unwrap();
            assert!(response.exhaustive);
            assert_eq!(response.examined, 1_000);
            let all = brute_force(metric, &docs, &query, docs.len());
            let expected = &all[..k.min(docs.len())];
            assert_matches_brute_force(&response.hits, expected, &all);
        }
    }
}

#[test]
fn large_collections_use_the_parallel_scan_and_stay_exact() {
    // 2 100 × 1 024 floats crosses the threshold above which one query is split across threads.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let docs = fill(&db, "big", Metric::L2, 2_100, 1_024, 3);
    let collection = db.collection("big").unwrap();
    let mut rng = Rng(5);
    let requests: Vec<SearchRequest> = (0..4)
        .map(|_| SearchRequest::new(rng.vector(1_024), 25))
        .collect();
    let responses = collection.search_batch(&requests).unwrap();
    for (request, response) in requests.iter().zip(&responses) {
        let all = brute_force(
            Metric::L2,
            &docs,
            request.vector.as_deref().unwrap(),
            docs.len(),
        );
        assert_matches_brute_force(&response.hits, &all[..25], &all);
    }
}

#[test]
fn ties_are_broken_by_id_and_fields_are_included_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let collection = db
        .create_collection("t", CollectionConfig::new(2, Metric::L2))
        .unwrap();
    let mut ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let inputs = ids
        .iter()
        .map(|id| {
            DocumentInput::new(vec![1.0, 1.0])
                .with_id(*id)
                .with_metadata(json!({"id": id.to_string()}))
                .with_text(format!("text {id}"))
        })
        .collect();
    collection.upsert(inputs).unwrap();
    ids.sort();
    let request = SearchRequest::new(vec![0.0, 0.0], 7).with_include(Include {
        metadata: true,
        text: true,
        vector: true,
    });
    let hits = collection.search(&request).unwrap().hits;
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        ids[..7].to_vec()
    );
    for hit in &hits {
        assert_eq!(hit.distance.unwrap(), 2.0);
        assert_eq!(
            hit.metadata.as_ref().unwrap()["id"],
            json!(hit.id.to_string())
        );
        assert_eq!(
            hit.text.as_deref(),
            Some(format!("text {}", hit.id).as_str())
        );
        assert_eq!(hit.vector.as_deref(), Some(&[1.0, 1.0][..]));
    }
    let bare = collection
        .search(&SearchRequest::new(vec![0.0, 0.0], 3))
        .unwrap()
        .hits;
    assert!(bare
        .iter()
        .all(|h| h.metadata.is_none() && h.text.is_none() && h.vector.is_none()));
}

#[test]
fn cosine_returns_the_original_vector_and_distance_ignores_scale() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let collection = db
        .create_collection("c", CollectionConfig::new(3, Metric::Cosine))
        .unwrap();
    let id = collection
        .upsert(vec![DocumentInput::new(vec![3.0, 0.0, 4.0])])
        .unwrap()[0];
    assert_eq!(
        collection.get(id).unwrap().unwrap().vector,
        vec![3.0, 0.0, 4.0]
    );
    let hits = collection
        .search(&SearchRequest::new(vec![30.0, 0.0, 40.0], 1))
        .unwrap()
        .hits;
    assert_eq!(hits[0].id, id);
    assert!(hits[0].distance.unwrap().abs() < 1e-6);
    let d = distance_f64(Metric::Cosine, &[1.0, 0.0, 0.0], &[3.0, 0.0, 4.0]);
    let hits = collection
        .search(&SearchRequest::new(vec![1.0, 0.0, 0.0], 1))
        .unwrap()
        .hits;
    assert!((f64::from(hits[0].distance.unwrap()) - d).abs() < 1e-6);
}

#[test]
fn searches_see_every_acknowledged_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let collection = db
        .create_collection("s", CollectionConfig::new(2, Metric::L2))
        .unwrap();
    assert!(collection
        .search(&SearchRequest::new(vec![0.0, 0.0], 5))
        .unwrap()
        .hits
        .is_empty());
    let id = collection
        .upsert(vec![DocumentInput::new(vec![9.0, 9.0])])
        .unwrap()[0];
    let hits = collection
        .search(&SearchRequest::new(vec![0.0, 0.0], 5))
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1);
    collection.update_vector(id, vec![1.0, 0.0]).unwrap();
    let hits = collection
        .search(&SearchRequest::new(vec![0.0, 0.0], 5))
        .unwrap()
        .hits;
    assert_eq!(hits[0].distance.unwrap(), 1.0);
    collection.delete(&[id]).unwrap();
    assert!(collection
        .search(&SearchRequest::new(vec![0.0, 0.0], 5))
        .unwrap()
        .hits
        .is_empty());
}

#[test]
fn batch_search_shares_scans_and_stays_exact() {
    // 40 requests (more than one group of queries) with different k over 5,000 vectors (several
    // scan blocks), for each metric: every answer equals its own brute force.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for (i, metric) in [Metric::L2, Metric::Cosine, Metric::Dot]
        .into_iter()
        .enumerate()
    {
        let name = format!("b{i}");
        let docs = fill(&db, &name, metric, 5_000, 48, 20 + i as u64);
        let collection = db.collection(&name).unwrap();
        let mut rng = Rng(30 + i as u64);
        let requests: Vec<SearchRequest> = (0..40)
            .map(|j| {
                SearchRequest::new(rng.vector(48), 1 + (j * 7) % 50).with_include(Include {
                    metadata: j % 2 == 0,
                    ..Include::default()
                })
            })
            .collect();
        let responses = collection.search_batch(&requests).unwrap();
        assert_eq!(responses.len(), requests.len());
        for (request, response) in requests.iter().zip(&responses) {
            let all = brute_force(
                metric,
                &docs,
                request.vector.as_deref().unwrap(),
                docs.len(),
            );
            assert_matches_brute_force(&response.hits, &all[..request.k], &all);
            assert_eq!(
                response.hits.iter().all(|h| h.metadata.is_some()),
                request.include.metadata
            );
            assert!(response.exhaustive);
        }
    }
}
