//! QuiverDB: an embedded document vector store.
//!
//! Documents (a UUID, an `f32` vector, JSON metadata and optional text) live transactionally in
//! [redb](https://docs.rs/redb), which is the source of truth. Vector indexes are derived from it
//! and kept in sync through a change log (see `docs/design.md`); collections created with a
//! text index also answer keyword (BM25, tantivy) and hybrid (fused) searches.
//!
//! ```no_run
//! use quiverdb::{CollectionConfig, Database, DocumentInput, Metric, SearchRequest};
//! # fn main() -> quiverdb::Result<()> {
//! let db = Database::open("my.quiver")?;
//! let config = CollectionConfig::new(3, Metric::Cosine).with_text_index(true);
//! let docs = db.create_collection("docs", config)?;
//! docs.upsert(vec![DocumentInput::new(vec![0.1, 0.2, 0.3]).with_text("hello world")])?;
//! let nearest = docs.search(&SearchRequest::new(vec![0.1, 0.2, 0.25], 5))?;
//! let keyword = docs.search(&SearchRequest::text("hello", 5))?;
//! let hybrid = docs.search(&SearchRequest::hybrid(vec![0.1, 0.2, 0.25], "hello", 5))?;
//! for hit in nearest.hits.iter().chain(&keyword.hits).chain(&hybrid.hits) {
//!     println!("{} {:?} {:?}", hit.id, hit.distance, hit.score);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod asynchronous;
pub mod bench;
pub mod check;
pub mod collection;
pub mod config;
pub mod db;
pub mod demo;
pub mod distance;
pub mod error;
pub mod faults;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod index;
pub mod keyword;
mod memory;
pub mod payload;
pub mod query;
mod rng;
pub mod server;
mod storage;
pub mod sync;
pub mod types;
pub mod vecs;
pub mod vectors;

pub use check::{CheckReport, IndexCheck};
pub use collection::{Collection, CollectionInfo, KeywordStatus, ScrollPage};
pub use config::{
    CollectionConfig, IndexConfig, PayloadField, PayloadKind, TextTokenizer, VectorPrecision,
};
pub use db::{Database, OpenOptions};
pub use error::{Error, Result};
pub use filter::{Condition, FieldPath, Filter};
pub use query::{Fusion, FusionKind, Include, SearchRequest, SearchResponse};
pub use types::{
    DocId, Document, DocumentInput, Hit, HitArms, InternalId, KeywordArm, Metric, Seq, VectorArm,
};
