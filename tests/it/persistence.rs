//! Persistence: checkpoints, change-log replay, rebuilds from the store, drops.

use std::path::{Path, PathBuf};

use quiverdb::sync::Recovery;
use quiverdb::{CollectionConfig, Database, DocumentInput, Metric, SearchRequest};
use uuid::Uuid;

use crate::common::{
    assert_matches_brute_force, brute_force, copy_dir, index_file, replace_file, Rng,
};

const DIM: usize = 8;

fn flat_file(db_dir: &Path) -> PathBuf {
    index_file(db_dir, "flat.qvi")
}

fn write_docs(db: &Database, rng: &mut Rng, docs: &mut Vec<(Uuid, Vec<f32>)>, n: usize) {
    let c = db.collection("p").unwrap();
    let new: Vec<(Uuid, Vec<f32>)> = (0..n).map(|_| (Uuid::now_v7(), rng.vector(DIM))).collect();
    c.upsert(
        new.iter()
            .map(|(id, v)| DocumentInput::new(v.clone()).with_id(*id))
            .collect(),
    )
    .unwrap();
    docs.extend(new);
}

fn assert_search_exact(db: &Database, docs: &[(Uuid, Vec<f32>)]) {
    let c = db.collection("p").unwrap();
    assert_eq!(c.count().unwrap(), docs.len() as u64);
    let query = Rng(77).vector(DIM);
    let all = brute_force(Metric::L2, docs, &query, docs.len());
    let hits = c.search(&SearchRequest::new(query, 10)).unwrap().hits;
    assert_matches_brute_force(&hits, &all[..10.min(all.len())], &all);
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn reopen_loads_the_checkpoint_and_the_log_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(1);
    let mut docs = Vec::new();
    {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection("p", CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        write_docs(&db, &mut rng, &mut docs, 300);
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    let info = db.collection("p").unwrap().info().unwrap();
    assert_eq!(info.vector_index.recovery, Recovery::Loaded { replayed: 0 });
    assert_eq!(
        info.changelog_entries, 0,
        "the checkpoint makes the log redundant"
    );
    assert_eq!(info.vector_index.watermark, info.last_seq);
    assert_search_exact(&db, &docs);
}

#[test]
fn a_crash_image_replays_the_log_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let mut rng = Rng(2);
    let mut docs = Vec::new();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection("p", CollectionConfig::new(DIM, Metric::L2))
        .unwrap();
    write_docs(&db, &mut rng, &mut docs, 200);
    db.checkpoint().unwrap();
    write_docs(&db, &mut rng, &mut docs, 50);
    let c = db.collection("p").unwrap();
    let gone: Vec<Uuid> = docs.drain(..10).map(|(id, _)| id).collect();
    assert_eq!(c.delete(&gone).unwrap(), 10);
    // Copy the files while the database is open and idle: what a kill -9 would leave.
    copy_dir(dir.path(), image.path());
    let crashed = Database::open(image.path()).unwrap();
    let info = crashed.collection("p").unwrap().info().unwrap();
    assert_eq!(
        info.vector_index.recovery,
        Recovery::Loaded { replayed: 60 }
    );
    assert_search_exact(&crashed, &docs);
}

#[test]
fn damaged_or_missing_index_files_are_rebuilt_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let mut docs = Vec::new();
    {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection("p", CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        write_docs(&db, &mut rng, &mut docs, 400);
    }
    let file = flat_file(dir.path());
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    let damages: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("bit flip", Some(flipped)),
        ("truncated", Some(good[..good.len() - 7].to_vec())),
        ("garbage", Some(vec![0x42; 5000])),
        ("empty", Some(Vec::new())),
        ("missing", None),
    ];
    for (what, bytes) in damages {
        replace_file(&file, bytes.as_deref());
        let db = Database::open(dir.path()).unwrap();
        let info = db.collection("p").unwrap().info().unwrap();
        assert!(
            matches!(info.vector_index.recovery, Recovery::Rebuilt { .. }),
            "{what}: {:?}",
            info.vector_index.recovery
        );
        assert_search_exact(&db, &docs);
        db.close().unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap().len(),
            good.len(),
            "{what}: a fresh checkpoint replaces the damaged file"
        );
    }
}

#[test]
fn a_checkpoint_older_than_the_trimmed_log_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(4);
    let mut docs = Vec::new();
    let old = {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection("p", CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        write_docs(&db, &mut rng, &mut docs, 100);
        db.checkpoint().unwrap();
        let old = std::fs::read(flat_file(dir.path())).unwrap();
        write_docs(&db, &mut rng, &mut docs, 100);
        db.close().unwrap();
        old
    };
    std::fs::write(flat_file(dir.path()), old).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let info = db.collection("p").unwrap().info().unwrap();
    assert!(
        matches!(info.vector_index.recovery, Recovery::Rebuilt { .. }),
        "{:?}",
        info.vector_index.recovery
    );
    assert_search_exact(&db, &docs);
}

#[test]
fn dropped_collections_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db
            .create_collection("p", CollectionConfig::new(DIM, Metric::L2))
            .unwrap();
        c.upsert(vec![DocumentInput::new(vec![1.0; DIM])]).unwrap();
        db.drop_collection("p").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("collections"))
                .unwrap()
                .count(),
            0
        );
        // An orphaned folder (as a crash during a drop could leave) is removed on open.
        std::fs::create_dir_all(dir.path().join("collections/c99")).unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    assert!(db.list_collections().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("collections"))
            .unwrap()
            .count(),
        0
    );
}
