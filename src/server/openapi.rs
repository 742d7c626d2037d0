//! The OpenAPI 3.1 document of the REST API, generated from one table of routes ([`ROUTES`]);
//! a test checks that the router serves exactly these paths and methods.

use serde_json::{json, Map, Value};

/// One operation of the API.
pub(super) struct Operation {
    /// Path pattern, as the router spells it (`{name}` is a path parameter).
    pub path: &'static str,
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// One line for humans.
    pub summary: &'static str,
    /// The JSON body it takes, if any (a short schema description).
    pub body: Option<&'static str>,
}

const fn op(
    path: &'static str,
    method: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
) -> Operation {
    Operation {
        path,
        method,
        summary,
        body,
    }
}

/// Every operation the server offers.
pub(super) const ROUTES: &[Operation] = &[
    op("/healthz", "get", "Liveness: {\"status\":\"ok\"} (no API key needed).", None),
    op("/metrics", "get", "Prometheus metrics: requests and latency per route, collection sizes.", None),
    op("/openapi.json", "get", "This document.", None),
    op("/collections", "get", "Names of all collections: {\"collections\":[…]}.", None),
    op("/collections/{name}", "put", "Create a collection (409 if it exists); answers its description.", Some("CollectionConfig: {\"dim\", \"metric\": \"cosine|l2|dot\", \"index\"?: {\"kind\": \"flat|hnsw|ivfpq|diskann\", hnsw: \"m\"?, \"ef_construction\"?, \"precision\"?: \"f32|f16\"; ivfpq: \"nlist\"?, \"pq_m\"?; diskann: \"r\"?, \"l\"?, \"pq_bytes\"?, \"cache_nodes\"?, \"build_ram_mb\"?}, \"text_indexed\"?, \"text_tokenizer\"?: \"english|simple|whitespace\", \"payload_fields\"?: [{\"path\", \"kind\": \"keyword|integer|float|bool\"}]}")),
    op("/collections/{name}", "get", "Describe a collection: configuration, count, index status.", None),
    op("/collections/{name}", "delete", "Drop a collection and all its documents.", None),
    op("/collections/{name}/documents", "post", "Upsert documents in one transaction (all or nothing): {\"ids\":[…]}.", Some("{\"documents\": [{\"id\"?, \"vector\", \"metadata\"?, \"text\"?}]}")),
    op("/collections/{name}/documents/{id}", "get", "One document (404 if absent).", None),
    op("/collections/{name}/documents/{id}", "patch", "Merge a metadata patch (null removes a key) and/or replace the vector; answers the document.", Some("{\"metadata\"?: {…}, \"vector\"?: […]}")),
    op("/collections/{name}/documents/{id}", "delete", "Delete one document (404 if absent).", None),
    op("/collections/{name}/delete", "post", "Delete by ids or by filter, in one transaction: {\"deleted\": n}.", Some("{\"ids\": […]} or {\"filter\": {…}}")),
    op("/collections/{name}/search", "post", "Vector, keyword or hybrid search.", Some("SearchRequest: {\"vector\"?, \"text\"?, \"k\"?, \"filter\"?, \"ef\"?, \"fusion\"?: \"rrf|weighted\", \"alpha\"?, \"rrf_k\"?, \"candidates\"?, \"include\"?: [\"metadata\",\"text\",\"vector\"]}")),
    op("/collections/{name}/search/batch", "post", "Many searches in parallel: {\"responses\":[…]}.", Some("{\"requests\": [SearchRequest, …]}")),
    op("/collections/{name}/count", "post", "Number of (matching) documents: {\"count\": n}.", Some("{\"filter\"?: {…}}")),
    op("/collections/{name}/scroll", "post", "Documents in id order, a page at a time.", Some("{\"filter\"?: {…}, \"limit\"?: 1..10000 (100), \"cursor\"?}")),
];

/// The OpenAPI document.
pub(super) fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        let parameters: Vec<Value> = ["name", "id"]
            .into_iter()
            .filter(|p| route.path.contains(&format!("{{{p}}}")))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "Success (201 for a created collection)."},
                "default": {
                    "description": "An error: 400 bad JSON, 401 API key, 404 not found, 409 exists, 413 too large, 422 invalid request, 500 internal.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({
                "required": true,
                "description": body,
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        item.insert(route.method.to_string(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "QuiverDB",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An embedded document vector store served over HTTP: durable documents with vector, filtered, keyword and hybrid search."
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}}}}
            }}
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    })
}
