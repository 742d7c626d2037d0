//! The `quiver demo` walkthrough: builds a small database of generated articles and runs a few
//! searches, printing what happens.
//!
//! The vectors come from [`toy_embed`], a feature-hashing bag of words: no model is needed, and
//! texts that share words land close together, so the searches are meaningful.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::config::{CollectionConfig, IndexConfig, PayloadKind};
use crate::db::Database;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::query::{Include, SearchRequest, SearchResponse};
use crate::rng::SplitMix;
use crate::types::{DocumentInput, Metric};

/// Dimension of the demo's toy embeddings.
pub const DEMO_DIM: usize = 64;
/// Number of documents the demo writes.
pub const DEMO_DOCS: usize = 3_000;
/// Name of the collection the demo creates.
pub const DEMO_COLLECTION: &str = "articles";

const TOPICS: [(&str, &[&str]); 6] = [
    (
        "databases",
        &[
            "database",
            "index",
            "query",
            "transaction",
            "storage",
            "vector",
            "disk",
            "btree",
            "durable",
            "search",
        ],
    ),
    (
        "astronomy",
        &[
            "star",
            "galaxy",
            "planet",
            "telescope",
            "orbit",
            "nebula",
            "comet",
            "moon",
            "light",
            "universe",
        ],
    ),
    (
        "cooking",
        &[
            "recipe",
            "chocolate",
            "cake",
            "oven",
            "butter",
            "flour",
            "sugar",
            "bake",
            "dough",
            "kitchen",
        ],
    ),
    (
        "music",
        &[
            "guitar", "melody", "concert", "rhythm", "piano", "song", "chord", "band", "album",
            "jazz",
        ],
    ),
    (
        "sport",
        &[
            "football", "goal", "match", "team", "coach", "league", "stadium", "score", "season",
            "player",
        ],
    ),
    (
        "travel",
        &[
            "train", "mountain", "beach", "hotel", "journey", "passport", "island", "map", "city",
            "flight",
        ],
    ),
];
const FILLER: [&str; 8] = ["the", "a", "new", "about", "with", "and", "of", "great"];

fn fnv1a(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Embeds text as a `DEMO_DIM`-dimensional feature-hashing bag of words (lower-cased words,
/// each adding ±1 to two hashed coordinates). A toy for the demo, not a language model.
pub fn toy_embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DEMO_DIM];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
    {
        let h = fnv1a(&word);
        for i in 0..2 {
            let bits = h >> (i * 32);
            let sign = if bits & 1 == 0 { 1.0 } else { -1.0 };
            v[((bits >> 1) as usize) % DEMO_DIM] += sign;
        }
    }
    if v.iter().all(|&x| x == 0.0) {
        v[0] = 1.0;
    }
    v
}

/// Generates the demo's documents deterministically.
pub fn demo_documents() -> Vec<DocumentInput> {
    let mut rng = SplitMix(42);
    (0..DEMO_DOCS)
        .map(|i| {
            let (topic, words) = TOPICS[i % TOPICS.len()];
            let sentence: Vec<&str> = (0..8)
                .map(|j| {
                    if j % 3 == 2 {
                        FILLER[rng.below(FILLER.len())]
                    } else {
                        words[rng.below(words.len())]
                    }
                })
                .collect();
            let text = format!("Article {i}: {}.", sentence.join(" "));
            DocumentInput::new(toy_embed(&text))
                .with_metadata(json!({
                    "topic": topic,
                    "year": 2000 + rng.below(25),
                    "stars": rng.below(5) + 1,
                }))
                .with_text(text)
        })
        .collect()
}

/// Builds the demo collection in the database at `dir` (replacing an earlier demo collection)
/// and prints a few searches to `out`.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(e);
    let db = Database::open(dir)?;
    writeln!(out, "QuiverDB demo: database at {}", dir.display()).map_err(io)?;
    if db.collection(DEMO_COLLECTION).is_ok() {
        db.drop_collection(DEMO_COLLECTION)?;
    }
    let articles = db.create_collection(
        DEMO_COLLECTION,
        CollectionConfig::new(DEMO_DIM, Metric::Cosine)
            .with_index(IndexConfig::hnsw())
            .with_text_index(true)
            .with_payload_field("topic", PayloadKind::Keyword)
            .with_payload_field("year", PayloadKind::Integer),
    )?;
    let started = Instant::now();
    let docs = demo_documents();
    for batch in docs.chunks(1_000) {
        articles.upsert(batch.to_vec())?;
    }
    writeln!(
        out,
        "created collection {DEMO_COLLECTION:?} ({DEMO_DIM}-D, cosine, HNSW index, keyword index on the text, payload indexes on topic and year) and upserted {} documents in 3 transactions ({:.0} ms)\n",
        articles.count()?,
        started.elapsed().as_secs_f64() * 1e3
    )
    .map_err(io)?;

    let include = Include {
        metadata: true,
        text: true,
        vector: false,
    };
    for query in [
        "durable vector database search on disk",
        "chocolate cake recipe with butter",
        "telescope pictures of a distant galaxy",
    ] {
        let request = SearchRequest::new(toy_embed(query), 3).with_include(include);
        let started = Instant::now();
        let response = articles.search(&request)?;
        print_search(out, &format!("search {query:?}"), &response, started)?;
    }

    // Filters: `year` is answered by its payload index, `stars` (not indexed) on the metadata.
    let recent_json = r#"{"year": {"$gte": 2020}, "stars": {"$gte": 4}}"#;
    let recent: Filter = recent_json.parse()?;
    let query = "telescope pictures of a distant galaxy";
    let request = SearchRequest::new(toy_embed(query), 3)
        .with_include(include)
        .with_filter(recent);
    let started = Instant::now();
    let response = articles.search(&request)?;
    let label = format!("search {query:?} where {recent_json}");
    print_search(out, &label, &response, started)?;

    // Keyword search (BM25 over the text) and hybrid search (both arms, fused by RRF): an
    // article number is a rare exact term the toy embedding cannot see.
    let request = SearchRequest::text("article 1234 galaxy", 3).with_include(include);
    let started = Instant::now();
    let response = articles.search(&request)?;
    print_search(
        out,
        "keyword search \"article 1234 galaxy\"",
        &response,
        started,
    )?;
    let query = "article 1234 galaxy";
    let request = SearchRequest::hybrid(toy_embed(query), query, 3).with_include(include);
    let started = Instant::now();
    let response = articles.search(&request)?;
    print_search(out, &format!("hybrid search {query:?}"), &response, started)?;

    let first = articles
        .scroll(1, None)?
        .documents
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("demo collection is empty".into()))?;
    articles.update_metadata(first.id, json!({"stars": null, "featured": true}))?;
    let updated = articles
        .get(first.id)?
        .ok_or(Error::DocumentNotFound(first.id))?;
    writeln!(
        out,
        "get {} after a metadata merge patch: {}",
        first.id,
        serde_json::Value::Object(updated.metadata)
    )
    .map_err(io)?;
    articles.delete(&[first.id])?;
    writeln!(out, "deleted it; {} documents remain", articles.count()?).map_err(io)?;
    let report = db.check(Some(DEMO_COLLECTION))?;
    writeln!(
        out,
        "integrity check: {}",
        if report.ok() {
            "every index agrees with the store"
        } else {
            "PROBLEMS FOUND"
        }
    )
    .map_err(io)?;
    db.close()
}

/// Prints a search response: how it was served, then one line per hit.
fn print_search(
    out: &mut dyn Write,
    label: &str,
    response: &SearchResponse,
    started: Instant,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(e);
    let matched = response
        .filter_matches
        .map_or(String::new(), |m| format!("{m} documents match, "));
    writeln!(
        out,
        "{label} -> {} hits in {:.2} ms ({matched}{}, exhaustive: {}, {} examined)",
        response.hits.len(),
        started.elapsed().as_secs_f64() * 1e3,
        response.strategy,
        response.exhaustive,
        response.examined
    )
    .map_err(io)?;
    for hit in &response.hits {
        let field = |name: &str| {
            hit.metadata
                .as_ref()
                .and_then(|m| m.get(name))
                .map_or(String::new(), |v| {
                    v.to_string().trim_matches('"').to_string()
                })
        };
        let value = match (hit.distance, hit.score) {
            (Some(distance), _) => format!("distance {distance:.3}"),
            (None, Some(score)) => format!("score {score:.3}"),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "  {value}  [{} {} {}*]  {}",
            field("topic"),
            field("year"),
            field("stars"),
            hit.text.as_deref().unwrap_or("")
        )
        .map_err(io)?;
    }
    writeln!(out).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_embedding_puts_shared_words_close() {
        let a = toy_embed("chocolate cake recipe");
        let b = toy_embed("a recipe for chocolate cake");
        let c = toy_embed("telescope galaxy orbit");
        let cos = |x: &[f32], y: &[f32]| crate::distance::cosine_distance(x, y);
        assert!(cos(&a, &b) < cos(&a, &c));
    }

    #[test]
    fn demo_runs_and_finds_the_right_topic() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        run(dir.path(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[cooking "), "{text}");
        assert!(text.contains("documents match"), "{text}");
        assert!(text.contains("Article 1234:"), "{text}");
        assert!(text.contains("hybrid_rrf("), "{text}");
        assert!(text.contains("every index agrees"), "{text}");
        // Running it again on the same directory replaces the collection.
        run(dir.path(), &mut Vec::new()).unwrap();
    }
}
