//! The DiskANN index against an independent reference: the exact f64 brute force of
//! `common.rs` over a model of the live documents.
//!
//! Covered: recall@10 for every metric after a merge, exact distances of every hit, deletes
//! never returned, inserts and updates served from the delta and kept through a merge, reloads,
//! every read mode, filtered search, partitioned (larger-than-budget) builds, damaged node and
//! state files rebuilt on open, and damage found by a running search.

use std::collections::{HashMap, HashSet};

use quiverdb::index::diskann::nodefile::ReadMode;
use quiverdb::index::diskann::DiskStatus;
use quiverdb::sync::Recovery;
use quiverdb::{
    Collection, CollectionConfig, Database, Error, Filter, IndexConfig, Metric, OpenOptions,
    PayloadKind, SearchRequest,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::{
    assert_hits_exact, fill, index_file, replace_file, scratch_dir, seeded_id, true_hits, Clusters,
    Docs, Rng,
};

const DIM: usize = 32;
const K: usize = 10;
const SEARCH_L: usize = 64;
const MIN_RECALL: f64 = 0.95;
const QUERIES: usize = 60;

fn config(metric: Metric, build_ram_mb: usize) -> CollectionConfig {
    CollectionConfig::new(DIM, metric).with_index(IndexConfig::DiskAnn {
        r: 24,
        l: 48,
        pq_bytes: Some(16),
        cache_nodes: 64,
        build_ram_mb,
    })
}

fn disk_status(c: &Collection) -> DiskStatus {
    c.info()
        .unwrap()
        .vector_index
        .disk
        .expect("a DiskANN status")
}

/// Searches every query and checks each answer against the brute force over `live`: exact
/// distances, order, only live ids, `K` hits, disk statistics; returns the mean recall@K.
fn recall(c: &Collection, metric: Metric, live: &Docs, queries: &[Vec<f32>], ctx: &str) -> f64 {
    let by_id: HashMap<Uuid, &[f32]> = live.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    let mut found = 0;
    for (qi, query) in queries.iter().enumerate() {
        let ctx = format!("{ctx}, query {qi}");
        let mut request = SearchRequest::new(query.clone(), K);
        request.search_l = Some(SEARCH_L);
        let response = c.search(&request).unwrap();
        assert_eq!(response.strategy, "diskann", "{ctx}");
        assert_eq!(response.hits.len(), K.min(live.len()), "{ctx}");
        assert!(response.disk.is_some_and(|d| d.hops >= 1), "{ctx}");
        assert_hits_exact(&response.hits, metric, &by_id, query, &ctx);
        found += true_hits(metric, live, query, K, &response.hits);
    }
    found as f64 / (queries.len() * K.min(live.len())) as f64
}

fn assert_recall(c: &Collection, metric: Metric, live: &Docs, queries: &[Vec<f32>], ctx: &str) {
    let r = recall(c, metric, live, queries, ctx);
    assert!(r >= MIN_RECALL, "{ctx}: recall@{K} {r:.4} < {MIN_RECALL}");
}

fn sorted(docs: &HashMap<Uuid, Vec<f32>>) -> Docs {
    let mut out: Docs = docs.iter().map(|(id, v)| (*id, v.clone())).collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

fn recall_for(metric: Metric, seed: u64) {
    let dir = scratch_dir();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("d", config(metric, 2048)).unwrap();
    let mut rng = Rng(seed);
    let clusters = Clusters::new(&mut rng, 40, DIM);
    let docs = clusters.docs(&mut rng, 4000);
    fill(&c, &docs);
    // The last batch starts a background merge of everything; `train` waits for it (or finds
    // it installed already by a checkpoint, and has nothing left to do).
    c.train().unwrap();
    let status = disk_status(&c);
    assert_eq!((status.disk_nodes, status.delta), (4000, 0), "{status:?}");
    assert!(
        !c.train().unwrap(),
        "nothing left to merge: train does not rebuild"
    );
    assert_eq!(disk_status(&c), status);
    let queries = clusters.points(&mut rng, QUERIES);
    assert_recall(
        &c,
        metric,
        &docs,
        &queries,
        &format!("{} seed {seed}", metric.name()),
    );
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn recall_at_10_l2() {
    recall_for(Metric::L2, 1);
}

#[test]
fn recall_at_10_cosine() {
    recall_for(Metric::Cosine, 2);
}

#[test]
fn recall_at_10_dot() {
    recall_for(Metric::Dot, 3);
}

#[test]
fn deletes_are_never_returned_and_inserts_and_updates_survive_a_merge_and_a_reload() {
    let dir = scratch_dir();
    let metric = Metric::L2;
    let mut rng = Rng(11);
    let clusters = Clusters::new(&mut rng, 40, DIM);
    let queries = clusters.points(&mut rng, QUERIES);
    let mut live: HashMap<Uuid, Vec<f32>> = HashMap::new();
    let mut deleted = HashSet::new();
    let before_reload;
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("d", config(metric, 2048)).unwrap();
        let base = clusters.docs(&mut rng, 3000);
        fill(&c, &base);
        c.train().unwrap();
        live.extend(base.iter().cloned());

        // Deletes of disk nodes go to the delete list.
        let ids: Vec<Uuid> = sorted(&live).iter().map(|(id, _)| *id).step_by(6).collect();
        assert_eq!(c.delete(&ids).unwrap(), ids.len());
        for id in &ids {
            live.remove(id);
            deleted.insert(*id);
        }
        // New documents go to the delta; some disk documents get new vectors (delete + insert),
        // others only new metadata (nothing moves).
        let added = clusters.docs(&mut rng, 1500);
        fill(&c, &added);
        live.extend(added.iter().cloned());
        let moved: Vec<Uuid> = sorted(&live).iter().map(|(id, _)| *id).take(40).collect();
        for id in &moved {
            let vector = clusters.point(&mut rng);
            c.update_vector(*id, vector.clone()).unwrap();
            live.insert(*id, vector);
        }
        let patched: Vec<Uuid> = sorted(&live)
            .iter()
            .map(|(id, _)| *id)
            .skip(40)
            .take(40)
            .collect();
        for id in &patched {
            c.update_metadata(*id, json!({"patched": true})).unwrap();
        }
        let status = disk_status(&c);
        assert_eq!(status.disk_nodes, 3000, "{status:?}");
        assert!(status.deleted >= ids.len() as u64, "{status:?}");
        assert!(status.delta >= 1500, "{status:?}");
        let docs = sorted(&live);
        assert_recall(&c, metric, &docs, &queries, "before the merge");
        assert_no_deleted(&c, &queries, &deleted, docs.len(), "before the merge");
        assert!(db.check(None).unwrap().ok());

        c.train().unwrap();
        let status = disk_status(&c);
        assert_eq!((status.deleted, status.delta), (0, 0), "{status:?}");
        assert_eq!(status.disk_nodes, docs.len());
        assert_recall(&c, metric, &docs, &queries, "after the merge");
        assert_no_deleted(&c, &queries, &deleted, docs.len(), "after the merge");
        // More deletes and inserts after the merge, then a reload.
        let gone: Vec<Uuid> = docs.iter().map(|(id, _)| *id).skip(3).step_by(9).collect();
        c.delete(&gone).unwrap();
        for id in &gone {
            live.remove(id);
            deleted.insert(*id);
        }
        let added = clusters.docs(&mut rng, 300);
        fill(&c, &added);
        live.extend(added.iter().cloned());
        before_reload = search_all(&c, &queries);
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("d").unwrap();
    let info = c.info().unwrap();
    assert!(
        matches!(info.vector_index.recovery, Recovery::Loaded { .. }),
        "{:?}",
        info.vector_index.recovery
    );
    assert_eq!(search_all(&c, &queries), before_reload);
    let docs = sorted(&live);
    assert_recall(&c, metric, &docs, &queries, "after the reload");
    assert_no_deleted(&c, &queries, &deleted, docs.len(), "after the reload");
    assert_eq!(c.count().unwrap(), docs.len() as u64);
}

fn assert_no_deleted(
    c: &Collection,
    queries: &[Vec<f32>],
    deleted: &HashSet<Uuid>,
    live: usize,
    ctx: &str,
) {
    for query in queries.iter().take(10) {
        let mut request = SearchRequest::new(query.clone(), 200);
        request.search_l = Some(400);
        let response = c.search(&request).unwrap();
        assert_eq!(response.hits.len(), 200.min(live), "{ctx}");
        for hit in &response.hits {
            assert!(
                !deleted.contains(&hit.id),
                "{ctx}: deleted {} returned",
                hit.id
            );
        }
    }
}

/// The ids and distances of every query's answer.
fn search_all(c: &Collection, queries: &[Vec<f32>]) -> Vec<Vec<(Uuid, f32)>> {
    queries
        .iter()
        .map(|q| {
            let mut request = SearchRequest::new(q.clone(), K);
            request.search_l = Some(SEARCH_L);
            c.search(&request)
                .unwrap()
                .hits
                .iter()
                .map(|h| (h.id, h.distance.unwrap()))
                .collect()
        })
        .collect()
}

#[test]
fn every_read_mode_gives_the_same_answers() {
    // On a disk-backed folder, so that O_DIRECT is really used where the file system has it.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let clusters = Clusters::new(&mut rng, 20, DIM);
    let queries = clusters.points(&mut rng, 20);
    let expected = {
        let db = Database::open(dir.path()).unwrap();
        let c = db
            .create_collection("d", config(Metric::Cosine, 2048))
            .unwrap();
        fill(&c, &clusters.docs(&mut rng, 2000));
        c.train().unwrap();
        let answers = search_all(&c, &queries);
        db.close().unwrap();
        answers
    };
    for mode in [ReadMode::Direct, ReadMode::Mmap, ReadMode::Buffered] {
        let db = Database::open_with(dir.path(), OpenOptions::new().node_reads(mode)).unwrap();
        let c = db.collection("d").unwrap();
        assert_eq!(search_all(&c, &queries), expected, "{mode:?}");
        let used = disk_status(&c).read_mode;
        assert!(used == mode || (mode == ReadMode::Direct && used == ReadMode::Buffered));
        db.close().unwrap();
    }
}

#[test]
fn filtered_searches_return_only_allowed_documents_exactly_or_by_beam() {
    let dir = scratch_dir();
    let metric = Metric::L2;
    let db = Database::open(dir.path()).unwrap();
    let config = config(metric, 2048).with_payload_field("g", PayloadKind::Integer);
    let c = db.create_collection("d", config).unwrap();
    let mut rng = Rng(41);
    let clusters = Clusters::new(&mut rng, 30, DIM);
    let docs = clusters.docs(&mut rng, 4000);
    let inputs = docs
        .iter()
        .enumerate()
        .map(|(i, (id, v))| {
            quiverdb::DocumentInput::new(v.clone())
                .with_id(*id)
                .with_metadata(json!({"g": i % 10}))
        })
        .collect::<Vec<_>>();
    for chunk in inputs.chunks(1000) {
        c.upsert(chunk.to_vec()).unwrap();
    }
    c.train().unwrap();
    let queries = clusters.points(&mut rng, 20);
    // 10% (exact scan of the allowed nodes) and 70% (filtered beam search).
    for (filter, keep, strategy) in [
        (json!({"g": 3}), 3..4, "diskann_filtered_exact"),
        (json!({"g": {"$lt": 7}}), 0..7, "diskann_filtered"),
    ] {
        let filter = Filter::from_json(&filter).unwrap();
        let allowed: Docs = docs
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(&(i % 10)))
            .map(|(_, d)| d.clone())
            .collect();
        let by_id: HashMap<Uuid, &[f32]> =
            allowed.iter().map(|(id, v)| (*id, v.as_slice())).collect();
        let mut found = 0;
        for query in &queries {
            let mut request = SearchRequest::new(query.clone(), K);
            request.filter = Some(filter.clone());
            request.search_l = Some(SEARCH_L);
            let response = c.search(&request).unwrap();
            assert_eq!(response.strategy, strategy);
            assert_eq!(response.hits.len(), K);
            assert_hits_exact(&response.hits, metric, &by_id, query, strategy);
            found += true_hits(metric, &allowed, query, K, &response.hits);
        }
        let recall = found as f64 / (queries.len() * K) as f64;
        assert!(recall >= MIN_RECALL, "{strategy}: recall {recall}");
    }
}

#[test]
fn builds_beyond_the_ram_budget_are_partitioned_and_keep_recall() {
    let dir = scratch_dir();
    let metric = Metric::L2;
    let db = Database::open(dir.path()).unwrap();
    // 1 MiB holds about 3,000 points of this size: 5,000 points need partitions.
    let c = db.create_collection("d", config(metric, 1)).unwrap();
    let mut rng = Rng(51);
    let clusters = Clusters::new(&mut rng, 40, DIM);
    let docs = clusters.docs(&mut rng, 5000);
    fill(&c, &docs);
    c.train().unwrap();
    assert_eq!(disk_status(&c).disk_nodes, 5000);
    let queries = clusters.points(&mut rng, QUERIES);
    assert_recall(&c, metric, &docs, &queries, "partitioned");
    assert!(db.check(None).unwrap().ok());
    let leftovers: Vec<String> = std::fs::read_dir(index_file(dir.path(), "."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("build") || name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");
}

/// The only node file of the collection in `db`.
fn node_file(db: &std::path::Path) -> std::path::PathBuf {
    let folder = index_file(db, ".");
    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qdn"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn damaged_node_or_state_files_are_rebuilt_from_the_store() {
    let dir = scratch_dir();
    let metric = Metric::Cosine;
    let mut rng = Rng(61);
    let clusters = Clusters::new(&mut rng, 20, DIM);
    let docs: Docs = (0..1500)
        .map(|_| (seeded_id(&mut rng), clusters.point(&mut rng)))
        .collect();
    let queries = clusters.points(&mut rng, 20);
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("d", config(metric, 2048)).unwrap();
        fill(&c, &docs);
        c.train().unwrap();
        db.close().unwrap();
    }
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 4] = [
        ("a flipped node byte", |db| {
            let path = node_file(db);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[4096 * 3 + 100] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        }),
        ("a truncated node file", |db| {
            let path = node_file(db);
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len - 4096)
                .unwrap();
        }),
        ("a missing node file", |db| {
            replace_file(&node_file(db), None)
        }),
        ("a garbage state file", |db| {
            replace_file(&index_file(db, "diskann.qvi"), Some(b"not a checkpoint"))
        }),
    ];
    for (what, damage) in damages {
        damage(dir.path());
        let db = Database::open(dir.path()).unwrap();
        let c = db.collection("d").unwrap();
        let recovery = c.info().unwrap().vector_index.recovery;
        assert!(
            matches!(recovery, Recovery::Rebuilt { .. }),
            "{what}: {recovery:?}"
        );
        assert_recall(&c, metric, &docs, &queries, what);
        assert!(db.check(None).unwrap().ok(), "{what}");
        db.close().unwrap();
    }
}

#[test]
fn damage_found_by_a_running_search_refuses_searches_until_a_reopen_rebuilds() {
    let dir = scratch_dir();
    let metric = Metric::L2;
    let mut rng = Rng(71);
    let clusters = Clusters::new(&mut rng, 20, DIM);
    let mut docs = clusters.docs(&mut rng, 1500);
    let queries = clusters.points(&mut rng, 10);
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("d", config(metric, 2048)).unwrap();
        fill(&c, &docs);
        c.train().unwrap();
        // Overwrite every node block under the open database (loaded and verified already).
        let path = node_file(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        use std::os::unix::fs::FileExt;
        let trailer = 4096 * (1 + 1500u64.div_ceil(4096 / (4 * 32 + 32 + 4 * 24)));
        file.write_all_at(&vec![0x5a; (trailer - 4096) as usize], 4096)
            .unwrap();
        assert!(trailer < len);
        let refused = c.search(&SearchRequest::new(queries[0].clone(), K));
        assert!(
            matches!(refused, Err(Error::IndexUnavailable { .. })),
            "{refused:?}"
        );
        // Writes are still acknowledged (the store is the source of truth).
        let extra = clusters.docs(&mut rng, 10);
        fill(&c, &extra);
        docs.extend(extra);
        assert!(matches!(
            c.search(&SearchRequest::new(queries[0].clone(), K)),
            Err(Error::IndexUnavailable { .. })
        ));
        drop(c);
        db.close().ok();
    }
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("d").unwrap();
    assert!(matches!(
        c.info().unwrap().vector_index.recovery,
        Recovery::Rebuilt { .. }
    ));
    assert_eq!(c.count().unwrap(), 1510);
    docs.sort_by_key(|(id, _)| *id);
    assert_recall(&c, metric, &docs, &queries, "after the rebuild");
}

#[test]
fn invalid_diskann_parameters_are_refused() {
    let dir = scratch_dir();
    let db = Database::open(dir.path()).unwrap();
    let diskann = |r, l, pq_bytes, cache_nodes, build_ram_mb| IndexConfig::DiskAnn {
        r,
        l,
        pq_bytes,
        cache_nodes,
        build_ram_mb,
    };
    for (index, what) in [
        (diskann(2, 100, None, 0, 64), "diskann r "),
        (diskann(513, 600, None, 0, 64), "diskann r "),
        (diskann(64, 10, None, 0, 64), "diskann l "),
        (diskann(64, 4097, None, 0, 64), "diskann l "),
        (diskann(64, 100, Some(0), 0, 64), "diskann pq_bytes "),
        (diskann(64, 100, Some(5), 0, 64), "diskann pq_bytes "),
        (
            diskann(64, 100, None, 10_000_001, 64),
            "diskann cache_nodes ",
        ),
        (diskann(64, 100, None, 0, 0), "diskann build_ram_mb "),
    ] {
        let config = CollectionConfig::new(DIM, Metric::L2).with_index(index);
        match db.create_collection("bad", config) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(what), "{what}: {m}"),
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
    let c = db.create_collection("ok", config(Metric::L2, 64)).unwrap();
    for (l, beam) in [
        (Some(0), None),
        (Some(5000), None),
        (None, Some(0)),
        (None, Some(65)),
    ] {
        let mut request = SearchRequest::new(vec![0.5; DIM], K);
        request.search_l = l;
        request.beam = beam;
        assert!(
            matches!(c.search(&request), Err(Error::InvalidArgument(_))),
            "{l:?} {beam:?}"
        );
    }
}

#[test]
fn delta_nodes_a_checkpoint_caught_unlinked_are_still_found_after_a_reopen() {
    let dir = scratch_dir();
    let mut rng = Rng(91);
    let clusters = Clusters::new(&mut rng, 20, DIM);
    // Fewer than a merge needs (1,024), so the reopened delta stays a delta.
    let docs = clusters.docs(&mut rng, 1000);
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("d", config(Metric::L2, 2048)).unwrap();
        // A bulk load holds its documents unlinked until all 5,000 announced are in.
        c.reserve(5000).unwrap();
        fill(&c, &docs);
        assert_eq!(disk_status(&c).delta, docs.len());
        c.checkpoint().unwrap();
        drop(c);
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("d").unwrap();
    assert_eq!(disk_status(&c).delta, docs.len(), "{:?}", disk_status(&c));
    let assert_found = |when: &str| {
        for (id, vector) in docs.iter().step_by(7) {
            let hits = c
                .search(&SearchRequest::new(vector.clone(), 1))
                .unwrap()
                .hits;
            assert_eq!(
                hits.first().map(|h| h.id),
                Some(*id),
                "document {id} {when}"
            );
        }
    };
    assert_found("is lost");
    // The next batch links them; they stay found.
    fill(&c, &clusters.docs(&mut rng, 10));
    assert_found("after linking");
}

#[test]
fn merges_run_in_the_background_while_writes_go_on() {
    let dir = scratch_dir();
    let metric = Metric::L2;
    let mut rng = Rng(81);
    let clusters = Clusters::new(&mut rng, 40, DIM);
    let queries = clusters.points(&mut rng, QUERIES);
    let mut live: HashMap<Uuid, Vec<f32>> = HashMap::new();
    let mut deleted = HashSet::new();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("d", config(metric, 2048)).unwrap();
    let base = clusters.docs(&mut rng, 3000);
    fill(&c, &base);
    c.train().unwrap();
    live.extend(base.iter().cloned());
    let first = disk_status(&c).generation;
    // The delta reaching the disk part's size starts a merge in the background.
    let more = clusters.docs(&mut rng, 3100);
    fill(&c, &more);
    live.extend(more.iter().cloned());
    assert_eq!(
        disk_status(&c).generation,
        first,
        "the merge ran inside the write"
    );
    // Writes go on meanwhile: deletes of documents the merge took (on disk and in the delta),
    // new vectors, new documents. A write after the merge ends installs it.
    let mut writes_during_merge = 0;
    let started = std::time::Instant::now();
    while disk_status(&c).generation == first {
        assert!(
            started.elapsed().as_secs() < 120,
            "the merge never finished"
        );
        let ids: Vec<Uuid> = sorted(&live).iter().map(|(id, _)| *id).collect();
        let gone = [ids[rng.below(ids.len())], ids[rng.below(ids.len())]];
        c.delete(&gone).unwrap();
        for id in gone {
            live.remove(&id);
            deleted.insert(id);
        }
        let moved = ids[rng.below(ids.len())];
        if live.contains_key(&moved) {
            let vector = clusters.point(&mut rng);
            c.update_vector(moved, vector.clone()).unwrap();
            live.insert(moved, vector);
        }
        let added = clusters.docs(&mut rng, 3);
        fill(&c, &added);
        live.extend(added);
        writes_during_merge += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(writes_during_merge >= 1);
    let status = disk_status(&c);
    assert!(status.disk_nodes >= 6000, "{status:?}");
    let docs = sorted(&live);
    assert_eq!(c.count().unwrap(), docs.len() as u64);
    assert_recall(&c, metric, &docs, &queries, "after a background merge");
    assert_no_deleted(
        &c,
        &queries,
        &deleted,
        docs.len(),
        "after a background merge",
    );
    assert!(db.check(None).unwrap().ok());
    let before = search_all(&c, &queries);
    drop(c);
    db.close().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("d").unwrap();
    assert_eq!(search_all(&c, &queries), before);
}
