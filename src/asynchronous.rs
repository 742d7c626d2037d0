//! An async API for applications on tokio: [`AsyncDatabase`] and [`AsyncCollection`] wrap the
//! blocking handles and run every call on tokio's blocking pool, so an async task never blocks
//! its executor on a redb transaction, an fsync or a search.
//!
//! ```no_run
//! # async fn demo() -> quiverdb::Result<()> {
//! use quiverdb::asynchronous::AsyncDatabase;
//! use quiverdb::{CollectionConfig, DocumentInput, Metric, SearchRequest};
//! let db = AsyncDatabase::open("my.quiver").await?;
//! let docs = db.create_collection("docs", CollectionConfig::new(2, Metric::L2)).await?;
//! docs.upsert(vec![DocumentInput::new(vec![0.5, 0.5])]).await?;
//! let hits = docs.search(SearchRequest::new(vec![0.5, 0.4], 5)).await?.hits;
//! db.close().await
//! # }
//! ```

use std::path::PathBuf;

use serde_json::Value;
use uuid::Uuid;

use crate::collection::{Collection, CollectionInfo, ScrollPage};
use crate::config::CollectionConfig;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::query::{SearchRequest, SearchResponse};
use crate::types::{Document, DocumentInput};

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// An async handle to a database; cheap to clone.
#[derive(Clone, Debug)]
pub struct AsyncDatabase {
    db: Database,
}

impl AsyncDatabase {
    /// Opens (or creates) the database in `dir`, recovering its indexes.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<AsyncDatabase> {
        let dir = dir.into();
        Ok(AsyncDatabase {
            db: blocking(move || Database::open(dir)).await?,
        })
    }

    /// Wraps an open blocking handle.
    pub fn from_blocking(db: Database) -> AsyncDatabase {
        AsyncDatabase { db }
    }

    /// The blocking handle (for calls made from blocking code).
    pub fn blocking(&self) -> &Database {
        &self.db
    }

    /// Creates a collection.
    pub async fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
    ) -> Result<AsyncCollection> {
        let (db, name) = (self.db.clone(), name.to_string());
        let inner = blocking(move || db.create_collection(&name, config)).await?;
        Ok(AsyncCollection { inner })
    }

    /// An existing collection.
    pub fn collection(&self, name: &str) -> Result<AsyncCollection> {
        Ok(AsyncCollection {
            inner: self.db.collection(name)?,
        })
    }

    /// Names of all collections.
    pub fn list_collections(&self) -> Vec<String> {
        self.db.list_collections()
    }

    /// Drops a collection and all its documents.
    pub async fn drop_collection(&self, name: &str) -> Result<()> {
        let (db, name) = (self.db.clone(), name.to_string());
        blocking(move || db.drop_collection(&name)).await
    }

    /// Checkpoints every index and closes the database.
    pub async fn close(self) -> Result<()> {
        let db = self.db;
        blocking(move || db.close()).await
    }
}

/// An async handle to a collection; cheap to clone. Each method is the blocking
/// [`Collection`] method of the same name, run on the blocking pool.
#[derive(Clone, Debug)]
pub struct AsyncCollection {
    inner: Collection,
}

macro_rules! async_methods {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $out:ty => |$c:ident| $call:expr;)*) => {
        impl AsyncCollection {
            $(
                $(#[$doc])*
                pub async fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                    let $c = self.inner.clone();
                    blocking(move || $call).await
                }
            )*
        }
    };
}

async_methods! {
    /// Inserts or replaces documents in one transaction; their ids in input order.
    upsert(docs: Vec<DocumentInput>) -> Vec<Uuid> => |c| c.upsert(docs);
    /// Inserts documents in one transaction; fails if any id exists.
    insert(docs: Vec<DocumentInput>) -> Vec<Uuid> => |c| c.insert(docs);
    /// The document with this id, if any.
    get(id: Uuid) -> Option<Document> => |c| c.get(id);
    /// Merges a JSON merge patch into a document's metadata.
    update_metadata(id: Uuid, patch: Value) -> () => |c| c.update_metadata(id, patch);
    /// Replaces a document's vector.
    update_vector(id: Uuid, vector: Vec<f32>) -> () => |c| c.update_vector(id, vector);
    /// Deletes documents by id; how many were deleted.
    delete(ids: Vec<Uuid>) -> usize => |c| c.delete(&ids);
    /// Deletes every document matching `filter`; how many.
    delete_where(filter: Filter) -> usize => |c| c.delete_where(&filter);
    /// Number of documents.
    count() -> u64 => |c| c.count();
    /// Number of documents matching `filter`.
    count_where(filter: Filter) -> u64 => |c| c.count_where(&filter);
    /// A page of documents matching `filter` in id order after `cursor`.
    scroll_where(filter: Filter, limit: usize, cursor: Option<String>) -> ScrollPage
        => |c| c.scroll_where(&filter, limit, cursor.as_deref());
    /// A vector, keyword or hybrid search.
    search(request: SearchRequest) -> SearchResponse => |c| c.search(&request);
    /// Many searches in parallel.
    search_batch(requests: Vec<SearchRequest>) -> Vec<SearchResponse>
        => |c| c.search_batch(&requests);
    /// Configuration, size and index status.
    info() -> CollectionInfo => |c| c.info();
}

impl AsyncCollection {
    /// The blocking handle.
    pub fn blocking(&self) -> &Collection {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Metric;

    #[test]
    fn async_calls_match_the_blocking_api() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        runtime.block_on(async move {
            let db = AsyncDatabase::open(path.clone()).await.unwrap();
            let config = CollectionConfig::new(2, Metric::L2).with_text_index(true);
            let c = db.create_collection("a", config).await.unwrap();
            let docs = (0..20)
                .map(|i| DocumentInput::new(vec![i as f32, 0.0]).with_text(format!("doc{i}")))
                .collect();
            let ids = c.upsert(docs).await.unwrap();
            // Concurrent tasks: searches and metadata updates interleave.
            let tasks: Vec<_> = ids
                .iter()
                .take(5)
                .map(|&id| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        c.update_metadata(id, serde_json::json!({"seen": true}))
                            .await?;
                        c.search(SearchRequest::new(vec![0.0, 0.0], 3)).await
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap().unwrap().hits.len(), 3);
            }
            let seen = Filter::field("seen").eq(true);
            assert_eq!(c.count_where(seen.clone()).await.unwrap(), 5);
            let hit = c.search(SearchRequest::text("doc7", 1)).await.unwrap().hits;
            assert_eq!(hit[0].id, ids[7]);
            assert_eq!(c.delete_where(seen).await.unwrap(), 5);
            assert_eq!(c.count().await.unwrap(), 15);
            assert!(matches!(
                c.search(SearchRequest::new(vec![0.0], 1)).await,
                Err(Error::DimensionMismatch { .. })
            ));
            assert!(db.collection("missing").is_err());
            drop(c); // collection handles keep the database open
            db.close().await.unwrap();
            let reopened = AsyncDatabase::open(path).await.unwrap();
            assert_eq!(reopened.collection("a").unwrap().count().await.unwrap(), 15);
        });
    }
}
