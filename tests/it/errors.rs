//! Every user error is typed, and a rejected call changes nothing.

use quiverdb::{CollectionConfig, Database, DocumentInput, Error, Metric, SearchRequest};
use serde_json::json;
use uuid::Uuid;

fn setup() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db
        .create_collection("c", CollectionConfig::new(3, Metric::Cosine))
        .unwrap();
    c.upsert(vec![
        DocumentInput::new(vec![1.0, 0.0, 0.0]).with_id(Uuid::from_u128(1))
    ])
    .unwrap();
    (dir, db)
}

fn assert_unchanged(db: &Database) {
    let c = db.collection("c").unwrap();
    assert_eq!(c.count().unwrap(), 1);
    assert_eq!(
        c.get(Uuid::from_u128(1)).unwrap().unwrap().vector,
        vec![1.0, 0.0, 0.0]
    );
    assert!(db.check(Some("c")).unwrap().ok());
}

#[test]
fn bad_documents_are_rejected_with_typed_errors_and_change_nothing() {
    let (_dir, db) = setup();
    let c = db.collection("c").unwrap();
    let good = || DocumentInput::new(vec![0.0, 1.0, 0.0]);
    type IsExpected = fn(&Error) -> bool;
    let cases: Vec<(DocumentInput, IsExpected)> = vec![
        (DocumentInput::new(vec![1.0, 2.0]), |e| {
            matches!(
                e,
                Error::DimensionMismatch {
                    expected: 3,
                    got: 2
                }
            )
        }),
        (DocumentInput::new(vec![]), |e| {
            matches!(e, Error::InvalidVector(_))
        }),
        (DocumentInput::new(vec![1.0, f32::NAN, 0.0]), |e| {
            matches!(e, Error::InvalidVector(_))
        }),
        (DocumentInput::new(vec![1.0, f32::NEG_INFINITY, 0.0]), |e| {
            matches!(e, Error::InvalidVector(_))
        }),
        (DocumentInput::new(vec![0.0, 0.0, 0.0]), |e| {
            matches!(e, Error::InvalidVector(_))
        }),
        (good().with_metadata(json!([1, 2])), |e| {
            matches!(e, Error::InvalidMetadata(_))
        }),
        (good().with_metadata(json!("x")), |e| {
            matches!(e, Error::InvalidMetadata(_))
        }),
    ];
    for (bad, expected) in cases {
        // The bad document is last in a batch of good ones: the whole batch is refused.
        let batch = vec![good(), good().with_id(Uuid::from_u128(1)), bad];
        let err = c.upsert(batch.clone()).unwrap_err();
        assert!(expected(&err), "unexpected error {err:?}");
        assert!(err.is_user_error());
        let err = c.insert(batch).unwrap_err();
        assert!(expected(&err), "unexpected error {err:?}");
        assert_unchanged(&db);
    }
}

#[test]
fn insert_refuses_existing_and_repeated_ids_atomically() {
    let (_dir, db) = setup();
    let c = db.collection("c").unwrap();
    let fresh = Uuid::from_u128(2);
    let err = c
        .insert(vec![
            DocumentInput::new(vec![0.0, 1.0, 0.0]).with_id(fresh),
            DocumentInput::new(vec![0.0, 0.0, 1.0]).with_id(Uuid::from_u128(1)),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::DocumentExists(id) if id == Uuid::from_u128(1)));
    let repeated = vec![
        DocumentInput::new(vec![0.0, 1.0, 0.0]).with_id(fresh),
        DocumentInput::new(vec![0.0, 0.0, 1.0]).with_id(fresh),
    ];
    assert!(matches!(c.insert(repeated.clone()), Err(Error::DocumentExists(id)) if id == fresh));
    assert_unchanged(&db);
    // Upsert of the same batch: the last write wins.
    c.upsert(repeated).unwrap();
    assert_eq!(c.get(fresh).unwrap().unwrap().vector, vec![0.0, 0.0, 1.0]);
}

#[test]
fn oversized_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db
        .create_collection("c", CollectionConfig::new(1, Metric::L2))
        .unwrap();
    let batch = vec![DocumentInput::new(vec![1.0]); quiverdb::collection::MAX_BATCH_DOCS + 1];
    assert!(matches!(c.upsert(batch), Err(Error::BatchTooLarge { .. })));
    let ids = vec![Uuid::nil(); quiverdb::collection::MAX_BATCH_DOCS + 1];
    assert!(matches!(c.delete(&ids), Err(Error::BatchTooLarge { .. })));
    assert_eq!(c.count().unwrap(), 0);
}

#[test]
fn collection_errors() {
    let (_dir, db) = setup();
    assert!(matches!(
        db.collection("nope"),
        Err(Error::CollectionNotFound(_))
    ));
    assert!(matches!(
        db.drop_collection("nope"),
        Err(Error::CollectionNotFound(_))
    ));
    assert!(matches!(
        db.create_collection("c", CollectionConfig::new(3, Metric::L2)),
        Err(Error::CollectionExists(_))
    ));
    for bad in ["", "../c", "a/b", "x.y", "-x", &"n".repeat(65)] {
        assert!(matches!(
            db.create_collection(bad, CollectionConfig::new(3, Metric::L2)),
            Err(Error::InvalidName { .. })
        ));
    }
    for dim in [0, 65_537] {
        assert!(matches!(
            db.create_collection("d", CollectionConfig::new(dim, Metric::L2)),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert_eq!(db.list_collections(), vec!["c".to_string()]);
    let handle = db.collection("c").unwrap();
    db.drop_collection("c").unwrap();
    assert!(matches!(handle.count(), Err(Error::CollectionNotFound(_))));
    assert!(matches!(
        handle.upsert(vec![DocumentInput::new(vec![1.0, 0.0, 0.0])]),
        Err(Error::CollectionNotFound(_))
    ));
    let again = db
        .create_collection("c", CollectionConfig::new(2, Metric::Dot))
        .unwrap();
    assert_eq!(again.count().unwrap(), 0);
}

#[test]
fn request_errors() {
    let (_dir, db) = setup();
    let c = db.collection("c").unwrap();
    let missing = Uuid::from_u128(99);
    assert!(matches!(
        c.update_metadata(missing, json!({"a": 1})),
        Err(Error::DocumentNotFound(_))
    ));
    assert!(matches!(
        c.update_vector(missing, vec![1.0, 0.0, 0.0]),
        Err(Error::DocumentNotFound(_))
    ));
    assert!(matches!(
        c.update_metadata(Uuid::from_u128(1), json!([1])),
        Err(Error::InvalidMetadata(_))
    ));
    assert!(matches!(
        c.update_vector(Uuid::from_u128(1), vec![1.0]),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        c.search(&SearchRequest::new(vec![1.0, 0.0, 0.0], 0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.search(&SearchRequest::new(vec![1.0, 0.0, 0.0], 10_001)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.search(&SearchRequest::new(vec![1.0, f32::NAN, 0.0], 1)),
        Err(Error::InvalidVector(_))
    ));
    assert!(matches!(
        c.search(&SearchRequest::new(vec![1.0], 1)),
        Err(Error::DimensionMismatch { .. })
    ));
    let batch = [
        SearchRequest::new(vec![1.0, 0.0, 0.0], 1),
        SearchRequest::new(vec![1.0], 1),
    ];
    assert!(c.search_batch(&batch).is_err());
    assert!(matches!(c.scroll(0, None), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        c.scroll(10, Some("not-a-cursor")),
        Err(Error::InvalidArgument(_))
    ));
    assert_unchanged(&db);
}

#[test]
fn a_second_open_of_the_same_database_is_refused() {
    let (dir, db) = setup();
    assert!(matches!(
        Database::open(dir.path()),
        Err(Error::DatabaseLocked(_))
    ));
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_unchanged(&db);
}
