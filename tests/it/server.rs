//! `quiver serve`, black box: the binary on an ephemeral loopback port, spoken to by a minimal
//! HTTP/1.1 client. Every route and every error status; the OpenAPI document against the
//! router; parallel clients; SIGTERM shutdown; kill -9 during concurrent upserts.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiverdb::{Database, Filter};
use serde_json::{json, Value};
use uuid::Uuid;

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");

/// A running `quiver serve`; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    /// The gRPC address, when started with `--grpc-addr`.
    grpc: Option<String>,
}

impl Server {
    fn start(db: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(QUIVER)
            .arg("--db")
            .arg(db)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .env_remove("QUIVER_API_KEY")
            .env("QUIVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let grpc = extra.contains(&"--grpc-addr").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let grpc = line.trim().strip_prefix("gRPC on ");
            grpc.unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_string()
        });
        Server { child, addr, grpc }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_with(method, path, body, &[])
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let (status, text) = http(&self.addr, method, path, body.map(str::as_bytes), headers);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Asserts that the request fails with this status and error code.
    fn expect_error(&self, method: &str, path: &str, body: Option<&str>, status: u16, code: &str) {
        let (got, answer) = self.call(method, path, body);
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {path} {body:?}: {answer}"
        );
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// One request over a fresh connection; returns the status and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body: a failed write is fine then.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

/// Decodes a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or("")
}

fn doc(i: u32, vector: [f32; 2], text: &str, tag: &str) -> Value {
    json!({
        "id": Uuid::from_u128(u128::from(i) + 1),
        "vector": vector,
        "text": text,
        "metadata": {"tag": tag, "i": i}
    })
}

#[test]
fn every_route_and_every_error_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--body-limit", "20000"]);
    assert_eq!(
        server.call("GET", "/healthz", None),
        (200, json!({"status": "ok"}))
    );

    // Collections.
    let (status, info) = server.call(
        "PUT",
        "/collections/notes",
        Some(r#"{"dim": 2, "metric": "l2", "text_indexed": true, "payload_fields": [{"path": "tag", "kind": "keyword"}]}"#),
    );
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["config"]["text_indexed"], true);
    server.expect_error(
        "PUT",
        "/collections/notes",
        Some(r#"{"dim": 2, "metric": "l2"}"#),
        409,
        "collection_exists",
    );
    server.expect_error(
        "PUT",
        "/collections/bad",
        Some(r#"{"dim": 0, "metric": "l2"}"#),
        422,
        "invalid_config",
    );
    let (status, body) = server.call(
        "PUT",
        "/collections/bad",
        Some(r#"{"dim": 2, "metric": "l2", "colour": 1}"#),
    );
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_request"),
        "unknown field"
    );
    server.expect_error(
        "PUT",
        "/collections/b@d",
        Some(r#"{"dim": 2, "metric": "l2"}"#),
        422,
        "invalid_name",
    );
    assert_eq!(
        server.call("GET", "/collections", None).1,
        json!({"collections": ["notes"]})
    );
    assert_eq!(server.call("GET", "/collections/notes", None).1["count"], 0);
    server.expect_error(
        "GET",
        "/collections/nope",
        None,
        404,
        "collection_not_found",
    );

    // Documents.
    let docs = json!({"documents": [
        doc(0, [0.0, 0.0], "red apples and pears", "fruit"),
        doc(1, [1.0, 0.0], "green pears", "fruit"),
        doc(2, [0.0, 1.0], "blue whales", "animal"),
    ]});
    let (status, body) = server.call(
        "POST",
        "/collections/notes/documents",
        Some(&docs.to_string()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"].as_array().unwrap().len(), 3);
    let id1 = Uuid::from_u128(2).to_string();
    let (status, body) = server.call("GET", &format!("/collections/notes/documents/{id1}"), None);
    assert_eq!((status, body["text"].clone()), (200, json!("green pears")));
    for (bad, status_code, error_code) in [
        (
            r#"{"documents": [{"vector": [1, 2, 3]}]}"#,
            422,
            "dimension_mismatch",
        ),
        (
            r#"{"documents": [{"vector": ["a", 2]}]}"#,
            400,
            "invalid_request",
        ),
        (
            r#"{"documents": [{"vector": [1e39, 2]}]}"#,
            400,
            "invalid_vector",
        ),
        (
            r#"{"documents": [{"vector": [1, 2], "metadata": [1]}]}"#,
            422,
            "invalid_metadata",
        ),
        (r#"{"documents": "#, 400, "invalid_request"),
        (r#"{"docs": []}"#, 400, "invalid_request"),
    ] {
        let (status, body) = server.call("POST", "/collections/notes/documents", Some(bad));
        assert_eq!(
            (status, code(&body)),
            (status_code, error_code),
            "{bad}: {body}"
        );
    }
    let big = json!({"documents": [{"vector": [0.5, 0.5], "text": "x".repeat(30_000)}]});
    server.expect_error(
        "POST",
        "/collections/notes/documents",
        Some(&big.to_string()),
        413,
        "payload_too_large",
    );
    assert_eq!(
        server.call("POST", "/collections/notes/count", None).1["count"],
        3,
        "nothing half-written"
    );

    let (status, body) = server.call(
        "PATCH",
        &format!("/collections/notes/documents/{id1}"),
        Some(r#"{"metadata": {"tag": null, "ripe": true}}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"], json!({"i": 1, "ripe": true}));
    let (status, body) = server.call(
        "PATCH",
        &format!("/collections/notes/documents/{id1}"),
        Some(r#"{"vector": [2, 2]}"#),
    );
    assert_eq!((status, body["vector"].clone()), (200, json!([2.0, 2.0])));
    let missing = Uuid::from_u128(999).to_string();
    server.expect_error(
        "PATCH",
        &format!("/collections/notes/documents/{missing}"),
        Some(r#"{"metadata": {}}"#),
        404,
        "document_not_found",
    );
    server.expect_error(
        "GET",
        "/collections/notes/documents/not-a-uuid",
        None,
        400,
        "invalid_id",
    );
    server.expect_error(
        "GET",
        &format!("/collections/notes/documents/{missing}"),
        None,
        404,
        "document_not_found",
    );

    // Search: vector, keyword, hybrid with a filter, batch; errors.
    let (status, body) = server.call(
        "POST",
        "/collections/notes/search",
        Some(r#"{"vector": [0, 0], "k": 2}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["id"], Uuid::from_u128(1).to_string());
    assert_eq!(body["strategy"], "flat_exact");
    let (_, body) = server.call(
        "POST",
        "/collections/notes/search",
        Some(r#"{"text": "pears"}"#),
    );
    assert_eq!(body["hits"].as_array().unwrap().len(), 2);
    assert!(body["hits"][0]["score"].is_number());
    let (_, body) = server.call(
        "POST",
        "/collections/notes/search",
        Some(r#"{"text": "pears whales", "vector": [0, 1], "filter": {"tag": "fruit"}, "include": ["text"]}"#),
    );
    assert_eq!(body["filter_matches"], 1, "doc 1 lost its tag");
    assert_eq!(body["hits"].as_array().unwrap().len(), 1);
    assert_eq!(body["hits"][0]["text"], "red apples and pears");
    assert!(body["hits"][0]["arms"]["keyword"]["rank"].is_number());
    let (status, body) = server.call(
        "POST",
        "/collections/notes/search/batch",
        Some(r#"{"requests": [{"vector": [0, 0], "k": 1}, {"text": "whales", "k": 1}]}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(
        body["responses"][1]["hits"][0]["id"],
        Uuid::from_u128(3).to_string()
    );
    for (bad, status_code, error_code) in [
        (r#"{"vector": [0, 0, 0]}"#, 422, "dimension_mismatch"),
        (r#"{"vector": [0, 0], "k": 0}"#, 422, "invalid_argument"),
        (
            r#"{"vector": [0, 0], "filter": {"tag": {"$regex": "x"}}}"#,
            400,
            "invalid_request",
        ),
        (r#"{"vector": [0, 0], "colour": 1}"#, 400, "invalid_request"),
        (r#"{"k": 3}"#, 422, "invalid_argument"),
        (
            r#"{"text": "x", "vector": [0, 0], "alpha": 3}"#,
            422,
            "invalid_argument",
        ),
    ] {
        let (status, body) = server.call("POST", "/collections/notes/search", Some(bad));
        assert_eq!(
            (status, code(&body)),
            (status_code, error_code),
            "{bad}: {body}"
        );
    }
    server.expect_error(
        "POST",
        "/collections/nope/search",
        Some(r#"{"vector": [0, 0]}"#),
        404,
        "collection_not_found",
    );

    // Count, scroll, delete by filter and by ids.
    let (_, body) = server.call(
        "POST",
        "/collections/notes/count",
        Some(r#"{"filter": {"tag": "fruit"}}"#),
    );
    assert_eq!(body["count"], 1);
    server.expect_error(
        "POST",
        "/collections/notes/count",
        Some(r#"{"filter": {"tag": {"$bad": 1}}}"#),
        422,
        "invalid_filter",
    );
    let (_, page) = server.call("POST", "/collections/notes/scroll", Some(r#"{"limit": 2}"#));
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, page) = server.call(
        "POST",
        "/collections/notes/scroll",
        Some(&json!({"limit": 2, "cursor": cursor}).to_string()),
    );
    assert_eq!(page["documents"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);
    server.expect_error(
        "POST",
        "/collections/notes/scroll",
        Some(r#"{"limit": 0}"#),
        422,
        "invalid_argument",
    );
    let (_, body) = server.call(
        "POST",
        "/collections/notes/delete",
        Some(r#"{"filter": {"tag": "animal"}}"#),
    );
    assert_eq!(body["deleted"], 1);
    server.expect_error(
        "POST",
        "/collections/notes/delete",
        Some(r#"{"ids": [], "filter": {}}"#),
        422,
        "invalid_argument",
    );
    let (_, body) = server.call(
        "POST",
        "/collections/notes/delete",
        Some(&json!({"ids": [Uuid::from_u128(1), Uuid::from_u128(77)]}).to_string()),
    );
    assert_eq!(body["deleted"], 1);
    let (status, _) = server.call(
        "DELETE",
        &format!("/collections/notes/documents/{id1}"),
        None,
    );
    assert_eq!(status, 200);
    server.expect_error(
        "DELETE",
        &format!("/collections/notes/documents/{id1}"),
        None,
        404,
        "document_not_found",
    );
    assert_eq!(
        server.call("POST", "/collections/notes/count", None).1["count"],
        0
    );

    // Unknown route, metrics, drop.
    server.expect_error("GET", "/nothing", None, 404, "not_found");
    let (status, metrics) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains(r#"quiver_http_requests_total{method="POST",route="/collections/{name}/search",status="422"}"#), "{metrics}");
    assert!(metrics.contains("quiver_http_request_duration_seconds_bucket"));
    assert!(
        metrics.contains(r#"quiver_collection_documents{collection="notes"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"quiver_keyword_index_documents{collection="notes"}"#));
    assert_eq!(server.call("DELETE", "/collections/notes", None).0, 200);
    assert_eq!(server.call("DELETE", "/collections/notes", None).0, 404);
}

#[test]
fn the_api_key_guards_every_route_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-key", "s3cret"]);
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
    server.expect_error("GET", "/collections", None, 401, "unauthorized");
    let wrong = [("Authorization", "Bearer s3creT")];
    assert_eq!(server.call_with("GET", "/collections", None, &wrong).0, 401);
    let longer = [("Authorization", "Bearer s3cret!")];
    assert_eq!(
        server.call_with("GET", "/collections", None, &longer).0,
        401
    );
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(
        server.call_with("GET", "/collections", None, &bearer).0,
        200
    );
    let header = [("x-api-key", "s3cret")];
    assert_eq!(server.call_with("GET", "/metrics", None, &header).0, 200);
    assert_eq!(
        server
            .call_with("POST", "/collections/x/search", Some("{}"), &[])
            .0,
        401
    );
}

#[test]
fn the_openapi_document_lists_exactly_the_methods_each_route_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, spec) = server.call("GET", "/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 12);
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "c")
            .replace("{id}", &Uuid::from_u128(5).to_string());
        let documented: BTreeSet<String> = item.as_object().unwrap().keys().cloned().collect();
        for method in ["get", "put", "post", "patch", "delete"] {
            let (status, _) = server.call(&method.to_uppercase(), &concrete, None);
            assert_eq!(
                status != 405,
                documented.contains(method),
                "{method} {path}: status {status}, documented {documented:?}"
            );
        }
    }
}

#[test]
fn parallel_clients_upsert_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, _) = server.call(
        "PUT",
        "/collections/p",
        Some(r#"{"dim": 2, "metric": "l2", "index": {"kind": "hnsw"}, "text_indexed": true}"#),
    );
    assert_eq!(status, 201);
    let addr = server.addr.clone();
    let started = Instant::now();
    let clients: Vec<_> = (0..8u32)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for b in 0..20u32 {
                    let docs: Vec<Value> = (0..5)
                        .map(|j| {
                            let i = c * 1000 + b * 10 + j;
                            doc(i, [i as f32, 1.0], &format!("client{c} word{j}"), "t")
                        })
                        .collect();
                    let body = json!({ "documents": docs }).to_string();
                    let (status, _) = http(
                        &addr,
                        "POST",
                        "/collections/p/documents",
                        Some(body.as_bytes()),
                        &[],
                    );
                    assert_eq!(status, 200);
                    let search = format!(r#"{{"text": "client{c}", "k": 100}}"#);
                    let (status, text) = http(
                        &addr,
                        "POST",
                        "/collections/p/search",
                        Some(search.as_bytes()),
                        &[],
                    );
                    assert_eq!(status, 200);
                    let hits = serde_json::from_str::<Value>(&text).unwrap()["hits"]
                        .as_array()
                        .unwrap()
                        .len();
                    assert_eq!(
                        hits,
                        ((b + 1) * 5).min(100) as usize,
                        "client {c} sees its own writes"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(
        server.call("POST", "/collections/p/count", None).1["count"],
        800
    );
}

#[test]
fn sigterm_finishes_requests_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    server.call(
        "PUT",
        "/collections/s",
        Some(r#"{"dim": 2, "metric": "l2", "text_indexed": true}"#),
    );
    let docs = json!({"documents": (0..50).map(|i| doc(i, [i as f32, 0.0], "hello", "t")).collect::<Vec<_>>()});
    assert_eq!(
        server
            .call("POST", "/collections/s/documents", Some(&docs.to_string()))
            .0,
        200
    );
    let status = Command::new("kill")
        .args(["-TERM", &server.pid()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("s").unwrap();
    let info = c.info().unwrap();
    assert_eq!(
        serde_json::to_value(&info.vector_index.recovery).unwrap(),
        json!({"how": "loaded", "replayed": 0}),
        "closed cleanly: checkpoints cover every write"
    );
    assert_eq!(c.count().unwrap(), 50);
    assert!(db.check(None).unwrap().ok());
}

#[test]
fn kill_9_during_concurrent_upserts_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    server.call(
        "PUT",
        "/collections/k",
        Some(r#"{"dim": 2, "metric": "l2", "index": {"kind": "hnsw"}, "text_indexed": true, "payload_fields": [{"path": "tag", "kind": "keyword"}]}"#),
    );
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let (addr, acknowledged) = (server.addr.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                for b in 0..10_000u32 {
                    let ids: Vec<u32> = (0..10).map(|j| c * 1_000_000 + b * 10 + j).collect();
                    let docs: Vec<Value> = ids.iter().map(|&i| doc(i, [i as f32, 0.0], "common", "t")).collect();
                    let body = json!({ "documents": docs }).to_string();
                    let Ok(mut stream) = TcpStream::connect(&addr) else { return };
                    drop(stream.set_read_timeout(Some(Duration::from_secs(10))));
                    let request = format!(
                        "POST /collections/k/documents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(request.as_bytes()).is_err() {
                        return;
                    }
                    let mut response = String::new();
                    if stream.read_to_string(&mut response).is_err() || !response.starts_with("HTTP/1.1 200") {
                        return;
                    }
                    acknowledged.lock().unwrap().extend(ids);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 10,
        "the clients barely wrote ({})",
        acknowledged.len()
    );
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("k").unwrap();
    let ids: Vec<Uuid> = acknowledged
        .iter()
        .map(|&i| Uuid::from_u128(u128::from(i) + 1))
        .collect();
    let docs = c.get_many(&ids).unwrap();
    let lost = docs.iter().filter(|d| d.is_none()).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged documents lost",
        ids.len()
    );
    let count = c.count().unwrap();
    assert!(
        count >= ids.len() as u64 && count.is_multiple_of(10),
        "batches are all or nothing: {count}"
    );
    assert_eq!(c.count_where(&Filter::field("tag").eq("t")).unwrap(), count);
    let keyword = c
        .search(&quiverdb::SearchRequest::text("common", 1))
        .unwrap();
    assert_eq!(keyword.examined as u64, count);
    assert!(db.check(None).unwrap().ok());
    eprintln!(
        "kill -9 of the server: {} acknowledged documents, all present",
        ids.len()
    );
}

#[test]
fn slow_requests_time_out_with_408_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let config = quiverdb::CollectionConfig::new(64, quiverdb::Metric::L2).with_text_index(true);
    drop(db.create_collection("t", config).unwrap());
    db.close().unwrap();
    let server = Server::start(dir.path(), &["--timeout", "0.001"]);
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
    // A 5,000-document upsert with text (a durable commit) never takes under 1 ms.
    let docs: Vec<Value> = (0..5000)
        .map(|i| json!({"vector": vec![i as f32; 64], "text": format!("document number {i}")}))
        .collect();
    let body = json!({ "documents": docs }).to_string();
    let (status, _) = server.call("POST", "/collections/t/documents", Some(&body));
    assert_eq!(status, 408);
    assert_eq!(server.call("GET", "/healthz", None).0, 200);
}

#[test]
fn grpc_serves_the_same_operations() {
    use quiverdb::server::grpc::proto;
    use quiverdb::server::grpc::proto::quiver_client::QuiverClient;
    use tonic::Code;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--grpc-addr", "127.0.0.1:0", "--api-key", "k3y"],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!(
            "http://{}",
            server.grpc.as_deref().unwrap()
        ))
        .unwrap()
        .connect()
        .await
        .unwrap();
        let mut anonymous = QuiverClient::new(channel.clone());
        let status = anonymous
            .list_collections(proto::ListCollectionsRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let mut client =
            QuiverClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", "Bearer k3y".parse().unwrap());
                Ok(request)
            });

        let info = client
            .create_collection(proto::CreateCollectionRequest {
                name: "g".into(),
                config_json: r#"{"dim": 2, "metric": "l2", "text_indexed": true}"#.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let info: Value = serde_json::from_str(&info.info_json).unwrap();
        assert_eq!(info["config"]["dim"], 2);
        let exists = client
            .create_collection(proto::CreateCollectionRequest {
                name: "g".into(),
                config_json: r#"{"dim": 2, "metric": "l2"}"#.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(exists.code(), Code::AlreadyExists);
        assert!(
            exists.message().starts_with("collection_exists:"),
            "{}",
            exists.message()
        );

        let documents = (0..5u32)
            .map(|i| proto::DocumentInput {
                id: Some(Uuid::from_u128(u128::from(i) + 1).to_string()),
                vector: vec![i as f32, 0.0],
                metadata_json: format!(r#"{{"i": {i}}}"#),
                text: Some(format!("item number{i}")),
            })
            .collect();
        let ids = client
            .upsert(proto::UpsertRequest {
                collection: "g".into(),
                documents,
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(ids.len(), 5);
        let bad = client
            .upsert(proto::UpsertRequest {
                collection: "g".into(),
                documents: vec![proto::DocumentInput {
                    vector: vec![1.0],
                    ..Default::default()
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().starts_with("dimension_mismatch:"));

        let search =
            |vector: Vec<f32>, text: Option<&str>, filter: Option<&str>| proto::SearchRequest {
                collection: "g".into(),
                vector,
                text: text.map(str::to_string),
                k: 3,
                filter_json: filter.map(str::to_string),
                include: vec!["metadata".into()],
                ..Default::default()
            };
        let response = client
            .search(search(vec![0.1, 0.0], None, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.hits[0].id, ids[0]);
        assert_eq!(response.strategy, "flat_exact");
        assert!(response.hits[0].distance.is_some());
        let response = client
            .search(search(
                vec![0.0, 0.0],
                Some("number3"),
                Some(r#"{"i": {"$gte": 2}}"#),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.filter_matches, Some(3));
        assert_eq!(response.hits[0].id, ids[3], "in both arms");
        assert_eq!(response.hits[0].keyword_arm.as_ref().unwrap().rank, 1);
        let batch = client
            .search_batch(proto::SearchBatchRequest {
                collection: "g".into(),
                requests: vec![
                    search(vec![4.0, 0.0], None, None),
                    search(vec![], Some("number1"), None),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.responses[0].hits[0].id, ids[4]);
        assert_eq!(batch.responses[1].hits[0].id, ids[1]);
        let bad_filter = client
            .search(search(vec![0.0, 0.0], None, Some(r#"{"i": {"$nope": 1}}"#)))
            .await
            .unwrap_err();
        assert!(
            bad_filter.message().starts_with("invalid_filter:"),
            "{}",
            bad_filter.message()
        );

        let doc = client
            .patch(proto::PatchRequest {
                collection: "g".into(),
                id: ids[0].clone(),
                metadata_patch_json: Some(r#"{"i": null, "tag": "x"}"#.into()),
                vector: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            serde_json::from_str::<Value>(&doc.metadata_json).unwrap(),
            json!({"tag": "x"})
        );
        let got = client
            .get(proto::DocumentRef {
                collection: "g".into(),
                id: ids[0].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, doc);
        let count = client
            .count(proto::CountRequest {
                collection: "g".into(),
                filter_json: Some(r#"{"tag": "x"}"#.into()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(count.count, 1);
        let page = client
            .scroll(proto::ScrollRequest {
                collection: "g".into(),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.documents.len(), 4);
        assert!(page.next_cursor.is_some());
        let deleted = client
            .delete(proto::DeleteRequest {
                collection: "g".into(),
                ids: vec![],
                filter_json: Some(r#"{"i": {"$gte": 3}}"#.into()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(deleted.deleted, 2);
        let missing = client
            .get(proto::DocumentRef {
                collection: "g".into(),
                id: ids[4].clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let names = client
            .list_collections(proto::ListCollectionsRequest {})
            .await
            .unwrap()
            .into_inner()
            .names;
        assert_eq!(names, vec!["g".to_string()]);
        client
            .drop_collection(proto::CollectionRef { name: "g".into() })
            .await
            .unwrap();
        let gone = client
            .get_collection(proto::CollectionRef { name: "g".into() })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
    // The REST API on the same server saw the same database.
    let header = [("Authorization", "Bearer k3y")];
    assert_eq!(
        server.call_with("GET", "/collections", None, &header).1,
        json!({"collections": []})
    );
}
