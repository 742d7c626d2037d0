//! The REST routes: each parses its JSON body (strictly: unknown fields are errors), runs the
//! library call on the blocking pool, and answers JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::{openapi, AppState};
use crate::collection::{Collection, MAX_SCROLL_LIMIT};
use crate::config::CollectionConfig;
use crate::error::Error;
use crate::filter::Filter;
use crate::query::SearchRequest;
use crate::types::DocumentInput;

type Shared = State<Arc<AppState>>;
type Answer = Result<Response, ApiError>;
type RawBody = Result<Bytes, BytesRejection>;

/// Every route with its handlers, keyed by the path pattern the OpenAPI document lists.
pub(super) fn routes() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics)),
        ("/openapi.json", get(openapi_json)),
        ("/collections", get(list_collections)),
        (
            "/collections/{name}",
            get(describe_collection)
                .put(create_collection)
                .delete(drop_collection),
        ),
        ("/collections/{name}/documents", post(upsert_documents)),
        (
            "/collections/{name}/documents/{id}",
            get(get_document)
                .patch(patch_document)
                .delete(delete_document),
        ),
        ("/collections/{name}/delete", post(delete_documents)),
        ("/collections/{name}/search", post(search)),
        ("/collections/{name}/search/batch", post(search_batch)),
        ("/collections/{name}/count", post(count)),
        ("/collections/{name}/scroll", post(scroll)),
    ]
}

/// Runs library work off the async executor. A panic inside answers 500; the server stays up.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        if e.is_panic() {
            ApiError::internal("the request panicked; the server is still running")
        } else {
            ApiError::internal("the request was cancelled")
        }
    })?
}

/// Parses a JSON body (an empty body counts as `{}` when `T` allows it).
fn parse<T: DeserializeOwned>(body: RawBody) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                rejection.body_text(),
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(Json(value).into_response())
}

fn collection(state: &AppState, name: &str) -> Result<Collection, ApiError> {
    Ok(state.db.collection(name)?)
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("{id:?} is not a UUID"),
        )
    })
}

async fn healthz() -> Answer {
    ok(json!({"status": "ok"}))
}

async fn metrics(State(state): Shared) -> Answer {
    let text = blocking(move || Ok(state.metrics.render(&state.db))).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi_json() -> Answer {
    ok(openapi::document())
}

async fn list_collections(State(state): Shared) -> Answer {
    ok(json!({"collections": state.db.list_collections()}))
}

async fn create_collection(
    State(state): Shared,
    Path(name): Path<String>,
    body: RawBody,
) -> Answer {
    let config: CollectionConfig = parse(body)?;
    let info = blocking(move || Ok(state.db.create_collection(&name, config)?.info()?)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn describe_collection(State(state): Shared, Path(name): Path<String>) -> Answer {
    ok(blocking(move || Ok(collection(&state, &name)?.info()?)).await?)
}

async fn drop_collection(State(state): Shared, Path(name): Path<String>) -> Answer {
    let dropped = name.clone();
    blocking(move || Ok(state.db.drop_collection(&name)?)).await?;
    ok(json!({"dropped": dropped}))
}

/// Body of `POST /collections/{name}/documents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentsBody {
    documents: Vec<DocumentInput>,
}

async fn upsert_documents(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: DocumentsBody = parse(body)?;
    let ids = blocking(move || Ok(collection(&state, &name)?.upsert(body.documents)?)).await?;
    ok(json!({"ids": ids}))
}

async fn get_document(State(state): Shared, Path((name, id)): Path<(String, String)>) -> Answer {
    let id = parse_id(&id)?;
    let doc = blocking(move || Ok(collection(&state, &name)?.get(id)?)).await?;
    ok(doc.ok_or(Error::DocumentNotFound(id))?)
}

/// Body of `PATCH /collections/{name}/documents/{id}`: a JSON merge patch of the metadata
/// (`null` removes a key) and/or a new vector.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    vector: Option<Vec<f32>>,
}

async fn patch_document(
    State(state): Shared,
    Path((name, id)): Path<(String, String)>,
    body: RawBody,
) -> Answer {
    let id = parse_id(&id)?;
    let patch: PatchBody = parse(body)?;
    if patch.metadata.is_none() && patch.vector.is_none() {
        return Err(ApiError::from(Error::InvalidArgument(
            "a patch needs \"metadata\" and/or \"vector\"".into(),
        )));
    }
    let doc = blocking(move || {
        let c = collection(&state, &name)?;
        if let Some(vector) = patch.vector {
            c.update_vector(id, vector)?;
        }
        if let Some(metadata) = patch.metadata {
            c.update_metadata(id, metadata)?;
        }
        Ok(c.get(id)?)
    })
    .await?;
    ok(doc.ok_or(Error::DocumentNotFound(id))?)
}

async fn delete_document(State(state): Shared, Path((name, id)): Path<(String, String)>) -> Answer {
    let id = parse_id(&id)?;
    let deleted = blocking(move || Ok(collection(&state, &name)?.delete(&[id])?)).await?;
    if deleted == 0 {
        return Err(Error::DocumentNotFound(id).into());
    }
    ok(json!({"deleted": deleted}))
}

/// Body of `POST /collections/{name}/delete`: ids, or a filter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    #[serde(default)]
    ids: Option<Vec<Uuid>>,
    #[serde(default)]
    filter: Option<Value>,
}

async fn delete_documents(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: DeleteBody = parse(body)?;
    let deleted = blocking(move || {
        let c = collection(&state, &name)?;
        Ok(match (body.ids, body.filter) {
            (Some(ids), None) => c.delete(&ids)?,
            (None, Some(filter)) => c.delete_where(&Filter::from_json(&filter)?)?,
            _ => {
                return Err(Error::InvalidArgument(
                    "give exactly one of \"ids\" and \"filter\"".into(),
                )
                .into())
            }
        })
    })
    .await?;
    ok(json!({"deleted": deleted}))
}

async fn search(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let request: SearchRequest = parse(body)?;
    ok(blocking(move || Ok(collection(&state, &name)?.search(&request)?)).await?)
}

/// Body of `POST /collections/{name}/search/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    requests: Vec<SearchRequest>,
}

async fn search_batch(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: BatchBody = parse(body)?;
    let responses =
        blocking(move || Ok(collection(&state, &name)?.search_batch(&body.requests)?)).await?;
    ok(json!({"responses": responses}))
}

/// Body of `POST /collections/{name}/count`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountBody {
    #[serde(default)]
    filter: Option<Value>,
}

async fn count(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: CountBody = parse(body)?;
    let count = blocking(move || {
        let c = collection(&state, &name)?;
        Ok(match body.filter {
            Some(filter) => c.count_where(&Filter::from_json(&filter)?)?,
            None => c.count()?,
        })
    })
    .await?;
    ok(json!({"count": count}))
}

/// Body of `POST /collections/{name}/scroll`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScrollBody {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default = "default_scroll_limit")]
    limit: usize,
    #[serde(default)]
    cursor: Option<String>,
}

fn default_scroll_limit() -> usize {
    100.min(MAX_SCROLL_LIMIT)
}

async fn scroll(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: ScrollBody = parse(body)?;
    ok(blocking(move || {
        let c = collection(&state, &name)?;
        let filter = match body.filter {
            Some(filter) => Filter::from_json(&filter)?,
            None => Filter::all(),
        };
        Ok(c.scroll_where(&filter, body.limit, body.cursor.as_deref())?)
    })
    .await?)
}
