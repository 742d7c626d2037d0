//! The README's Rust quickstart: open a database, create a collection, write, search, update.
//!
//! Run with `cargo run --release --example quickstart`.

use quiverdb::{CollectionConfig, Database, DocumentInput, Filter, Include, Metric, SearchRequest};
use serde_json::json;

fn main() -> quiverdb::Result<()> {
    let dir = std::env::temp_dir().join(format!("quiver-quickstart-{}", std::process::id()));
    let db = Database::open(&dir)?;
    // `with_text_index`: the text is also indexed for keyword (BM25) and hybrid search.
    let notes = db.create_collection(
        "notes",
        CollectionConfig::new(3, Metric::Cosine).with_text_index(true),
    )?;

    // One batch = one durable transaction: all or nothing.
    let ids = notes.upsert(vec![
        DocumentInput::new(vec![0.9, 0.1, 0.0])
            .with_metadata(json!({"lang": "en", "year": 2024}))
            .with_text("vector search in Rust"),
        DocumentInput::new(vec![0.0, 1.0, 0.2])
            .with_metadata(json!({"lang": "fr"}))
            .with_text("recherche plein texte"),
    ])?;

    let request = SearchRequest::new(vec![1.0, 0.0, 0.0], 2).with_include(Include {
        metadata: true,
        ..Include::default()
    });
    for hit in notes.search(&request)?.hits {
        println!(
            "{} distance={:?} metadata={:?}",
            hit.id, hit.distance, hit.metadata
        );
    }

    // Keyword search (BM25: hits carry a score), and hybrid search: both arms fused by RRF.
    for hit in notes
        .search(&SearchRequest::text("searching rust", 2))?
        .hits
    {
        println!("{} score={:?}", hit.id, hit.score);
    }
    let hybrid = notes.search(&SearchRequest::hybrid(vec![0.0, 1.0, 0.0], "rust", 2))?;
    for hit in hybrid.hits {
        println!("{} fused={:?} arms={:?}", hit.id, hit.score, hit.arms);
    }

    // Filters: JSON (docs/filters.md) or the builder; payload indexes make them fast.
    notes.create_payload_index("lang:keyword".parse()?)?;
    let english: Filter = r#"{"lang": "en", "year": {"$gte": 2020}}"#.parse()?;
    let filtered =
        notes.search(&SearchRequest::new(vec![1.0, 0.0, 0.0], 2).with_filter(english))?;
    println!(
        "{} hit(s), strategy {}",
        filtered.hits.len(),
        filtered.strategy
    );
    let french = Filter::field("lang").eq("fr");
    println!("{} in French", notes.count_where(&french)?);

    notes.update_metadata(ids[0], json!({"year": null, "reviewed": true}))?;
    println!("{:?}", notes.get(ids[0])?.map(|d| d.metadata));
    notes.delete_where(&french)?;
    println!("{} documents", notes.count()?);

    db.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
