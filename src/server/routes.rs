//! The REST routes: each parses its JSON body (strictly: unknown fields are errors), runs the
//! shared operation (`ops.rs`), and answers JSON.

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
use super::{openapi, ops, AppState};
use crate::collection::MAX_SCROLL_LIMIT;
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
    let text = ops::metrics(state).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi_json() -> Answer {
    ok(openapi::document())
}

async fn list_collections(State(state): Shared) -> Answer {
    ok(json!({"collections": ops::list_collections(&state)}))
}

async fn create_collection(
    State(state): Shared,
    Path(name): Path<String>,
    body: RawBody,
) -> Answer {
    let info = ops::create_collection(state, name, parse(body)?).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn describe_collection(State(state): Shared, Path(name): Path<String>) -> Answer {
    ok(ops::describe_collection(state, name).await?)
}

async fn drop_collection(State(state): Shared, Path(name): Path<String>) -> Answer {
    ops::drop_collection(state, name.clone()).await?;
    ok(json!({ "dropped": name }))
}

/// Body of `POST /collections/{name}/documents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentsBody {
    documents: Vec<DocumentInput>,
}

async fn upsert_documents(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: DocumentsBody = parse(body)?;
    ok(json!({ "ids": ops::upsert(state, name, body.documents).await? }))
}

async fn get_document(State(state): Shared, Path((name, id)): Path<(String, String)>) -> Answer {
    ok(ops::get(state, name, parse_id(&id)?).await?)
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
    let patch: PatchBody = parse(body)?;
    ok(ops::patch(state, name, parse_id(&id)?, patch.metadata, patch.vector).await?)
}

async fn delete_document(State(state): Shared, Path((name, id)): Path<(String, String)>) -> Answer {
    ok(json!({ "deleted": ops::delete_one(state, name, parse_id(&id)?).await? }))
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
    ok(json!({ "deleted": ops::delete(state, name, body.ids, body.filter).await? }))
}

async fn search(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    ok(ops::search(state, name, parse(body)?).await?)
}

/// Body of `POST /collections/{name}/search/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    requests: Vec<SearchRequest>,
}

async fn search_batch(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: BatchBody = parse(body)?;
    ok(json!({ "responses": ops::search_batch(state, name, body.requests).await? }))
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
    ok(json!({ "count": ops::count(state, name, body.filter).await? }))
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

/// Documents per scroll page when the request does not say.
pub(super) fn default_scroll_limit() -> usize {
    100.min(MAX_SCROLL_LIMIT)
}

async fn scroll(State(state): Shared, Path(name): Path<String>, body: RawBody) -> Answer {
    let body: ScrollBody = parse(body)?;
    ok(ops::scroll(state, name, body.filter, body.limit, body.cursor).await?)
}
