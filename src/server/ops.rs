//! The operations both transports serve (REST in `routes.rs`, gRPC in `grpc.rs`): each takes
//! parsed, typed input, runs the library call on tokio's blocking pool, and returns the
//! library's answer or an [`ApiError`]. The transports only translate in and out.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::collection::{Collection, CollectionInfo, ScrollPage};
use crate::config::CollectionConfig;
use crate::error::Error;
use crate::filter::Filter;
use crate::query::{SearchRequest, SearchResponse};
use crate::types::{Document, DocumentInput};

/// Shared server state.
pub(super) type Shared = Arc<AppState>;

/// Runs library work off the async executor. A panic inside answers 500; the server stays up.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) if e.is_panic() => Err(ApiError::internal(
            "the request panicked; the server is still running",
        )),
        Err(_) => Err(ApiError::internal("the request was cancelled")),
    }
}

/// Runs `work` with the named collection.
async fn with_collection<T: Send + 'static>(
    state: Shared,
    name: String,
    work: impl FnOnce(Collection) -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(move || work(state.db.collection(&name)?)).await
}

/// A filter from its JSON, `None` meaning every document.
fn filter_or_all(filter: Option<&Value>) -> Result<Filter, Error> {
    filter.map_or(Ok(Filter::all()), Filter::from_json)
}

/// Names of all collections.
pub(super) fn list_collections(state: &Shared) -> Vec<String> {
    state.db.list_collections()
}

/// Creates a collection and describes it.
pub(super) async fn create_collection(
    state: Shared,
    name: String,
    config: CollectionConfig,
) -> Result<CollectionInfo, ApiError> {
    blocking(move || state.db.create_collection(&name, config)?.info()).await
}

/// Describes a collection.
pub(super) async fn describe_collection(
    state: Shared,
    name: String,
) -> Result<CollectionInfo, ApiError> {
    with_collection(state, name, |c| c.info()).await
}

/// Drops a collection.
pub(super) async fn drop_collection(state: Shared, name: String) -> Result<(), ApiError> {
    blocking(move || state.db.drop_collection(&name)).await
}

/// Upserts documents in one transaction; their ids.
pub(super) async fn upsert(
    state: Shared,
    name: String,
    documents: Vec<DocumentInput>,
) -> Result<Vec<Uuid>, ApiError> {
    with_collection(state, name, move |c| c.upsert(documents)).await
}

/// One document, or 404.
pub(super) async fn get(state: Shared, name: String, id: Uuid) -> Result<Document, ApiError> {
    with_collection(state, name, move |c| {
        c.get(id)?.ok_or(Error::DocumentNotFound(id))
    })
    .await
}

/// Replaces the vector and/or merges a metadata patch; the document after.
pub(super) async fn patch(
    state: Shared,
    name: String,
    id: Uuid,
    metadata: Option<Value>,
    vector: Option<Vec<f32>>,
) -> Result<Document, ApiError> {
    if metadata.is_none() && vector.is_none() {
        return Err(Error::InvalidArgument(
            "a patch needs a metadata patch and/or a vector".into(),
        )
        .into());
    }
    with_collection(state, name, move |c| {
        if let Some(vector) = vector {
            c.update_vector(id, vector)?;
        }
        if let Some(metadata) = metadata {
            c.update_metadata(id, metadata)?;
        }
        c.get(id)?.ok_or(Error::DocumentNotFound(id))
    })
    .await
}

/// Deletes one document, or 404 if absent.
pub(super) async fn delete_one(state: Shared, name: String, id: Uuid) -> Result<usize, ApiError> {
    with_collection(state, name, move |c| match c.delete(&[id])? {
        0 => Err(Error::DocumentNotFound(id)),
        n => Ok(n),
    })
    .await
}

/// Deletes by ids or by filter (exactly one of them), in one transaction; how many.
pub(super) async fn delete(
    state: Shared,
    name: String,
    ids: Option<Vec<Uuid>>,
    filter: Option<Value>,
) -> Result<usize, ApiError> {
    with_collection(state, name, move |c| match (ids, filter) {
        (Some(ids), None) => c.delete(&ids),
        (None, Some(filter)) => c.delete_where(&Filter::from_json(&filter)?),
        _ => Err(Error::InvalidArgument(
            "give exactly one of ids and filter".into(),
        )),
    })
    .await
}

/// One search.
pub(super) async fn search(
    state: Shared,
    name: String,
    request: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    with_collection(state, name, move |c| c.search(&request)).await
}

/// Many searches, in parallel.
pub(super) async fn search_batch(
    state: Shared,
    name: String,
    requests: Vec<SearchRequest>,
) -> Result<Vec<SearchResponse>, ApiError> {
    with_collection(state, name, move |c| c.search_batch(&requests)).await
}

/// Number of documents (matching `filter`).
pub(super) async fn count(
    state: Shared,
    name: String,
    filter: Option<Value>,
) -> Result<u64, ApiError> {
    with_collection(state, name, move |c| match filter {
        Some(filter) => c.count_where(&Filter::from_json(&filter)?),
        None => c.count(),
    })
    .await
}

/// A page of documents (matching `filter`) in id order.
pub(super) async fn scroll(
    state: Shared,
    name: String,
    filter: Option<Value>,
    limit: usize,
    cursor: Option<String>,
) -> Result<ScrollPage, ApiError> {
    with_collection(state, name, move |c| {
        c.scroll_where(&filter_or_all(filter.as_ref())?, limit, cursor.as_deref())
    })
    .await
}

/// The Prometheus text of the server's metrics.
pub(super) async fn metrics(state: Shared) -> Result<String, ApiError> {
    blocking(move || Ok(state.metrics.render(&state.db))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_blocking_work_is_a_500() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let panicked = blocking::<()>(|| panic!("boom")).await.unwrap_err();
            assert_eq!(panicked.status.as_u16(), 500);
            let user = blocking::<()>(|| Err(Error::InvalidArgument("x".into())))
                .await
                .unwrap_err();
            assert_eq!(user.status.as_u16(), 422);
            assert_eq!(blocking(|| Ok(7)).await.unwrap(), 7);
        });
    }
}
