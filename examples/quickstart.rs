//! The README's Rust quickstart: open a database, create a collection, write, search, update.
//!
//! Run with `cargo run --release --example quickstart`.

use quiverdb::{CollectionConfig, Database, DocumentInput, Include, Metric, SearchRequest};
use serde_json::json;

fn main() -> quiverdb::Result<()> {
    let dir = std::env::temp_dir().join(format!("quiver-quickstart-{}", std::process::id()));
    let db = Database::open(&dir)?;
    let notes = db.create_collection("notes", CollectionConfig::new(3, Metric::Cosine))?;

    // One batch = one durable transaction: all or nothing.
    let ids = notes.upsert(vec![
        DocumentInput::new(vec![0.9, 0.1, 0.0])
            .with_metadata(json!({"lang": "en", "year": 2024}))
            .with_text("vector search in Rust"),
        DocumentInput::new(vec![0.0, 1.0, 0.2]).with_metadata(json!({"lang": "fr"})),
    ])?;

    let request = SearchRequest::new(vec![1.0, 0.0, 0.0], 2).with_include(Include {
        metadata: true,
        ..Include::default()
    });
    for hit in notes.search(&request)?.hits {
        println!(
            "{} distance={:.4} metadata={:?}",
            hit.id, hit.distance, hit.metadata
        );
    }

    notes.update_metadata(ids[0], json!({"year": null, "reviewed": true}))?;
    println!("{:?}", notes.get(ids[0])?.map(|d| d.metadata));
    println!("{} documents", notes.count()?);

    db.close()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
