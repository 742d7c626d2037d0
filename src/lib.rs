//! QuiverDB: an embedded document vector store.
//!
//! Documents (a UUID, an `f32` vector, JSON metadata and optional text) live transactionally in
//! [redb](https://docs.rs/redb), which is the source of truth. Vector indexes are derived from it
//! and kept in sync through a change log (see `docs/design.md`).
//!
//! ```no_run
//! use quiverdb::{CollectionConfig, Database, DocumentInput, Metric, SearchRequest};
//! # fn main() -> quiverdb::Result<()> {
//! let db = Database::open("my.quiver")?;
//! let docs = db.create_collection("docs", CollectionConfig::new(3, Metric::Cosine))?;
//! docs.upsert(vec![DocumentInput::new(vec![0.1, 0.2, 0.3]).with_text("hello")])?;
//! let response = docs.search(&SearchRequest::new(vec![0.1, 0.2, 0.25], 5))?;
//! for hit in response.hits {
//!     println!("{} {}", hit.id, hit.distance);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod bench;
pub mod check;
pub mod collection;
pub mod config;
pub mod db;
pub mod demo;
pub mod distance;
pub mod error;
pub mod filter;
pub mod import;
pub mod index;
pub mod payload;
pub mod query;
mod storage;
pub mod sync;
pub mod types;
pub mod vecs;
pub mod vectors;

pub use check::{CheckReport, IndexCheck};
pub use collection::{Collection, CollectionInfo, ScrollPage};
pub use config::{CollectionConfig, IndexConfig, PayloadField, PayloadKind};
pub use db::Database;
pub use error::{Error, Result};
pub use filter::{Condition, FieldPath, Filter};
pub use query::{Include, SearchRequest, SearchResponse};
pub use types::{DocId, Document, DocumentInput, Hit, InternalId, Metric, Seq};
