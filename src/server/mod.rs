//! `quiver serve`: the REST API over a [`Database`] (axum on tokio).
//!
//! Library calls run on tokio's blocking pool, never on the async executor. Every answer is
//! JSON; errors are `{"error": {"code", "message"}}` with the status of [`error::ApiError`].
//! Layers, outermost first: request id, tracing, panic → 500, metrics, timeout, API key, body
//! limit. SIGTERM or ctrl-c stop accepting connections, let in-flight requests finish, then
//! close the database (indexes checkpoint).

pub mod error;
pub mod grpc;
mod metrics;
mod openapi;
mod ops;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;

use crate::db::Database;
use crate::error::{Error, Result};
use error::ApiError;
pub use metrics::Metrics;

/// Default largest request body.
pub const DEFAULT_BODY_LIMIT: usize = 32 << 20;
/// Default time a request may take before the server answers 408.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:7700` (port 0: any free port).
    pub addr: SocketAddr,
    /// If set, every route but `/healthz` needs `Authorization: Bearer KEY` (or `x-api-key`).
    pub api_key: Option<String>,
    /// Largest request body in bytes (larger: 413).
    pub body_limit: usize,
    /// Longest a request may take (longer: 408).
    pub timeout: Duration,
    /// If set, the gRPC API (`proto/quiver.proto`) listens here too.
    pub grpc_addr: Option<SocketAddr>,
}

/// Where a started server listens.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// The REST API.
    pub http: SocketAddr,
    /// The gRPC API, if enabled.
    pub grpc: Option<SocketAddr>,
}

impl ServerConfig {
    /// Defaults: no API key, 32 MiB bodies, 30 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        ServerConfig {
            addr,
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            grpc_addr: None,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    db: Database,
    metrics: Metrics,
    api_key: Option<String>,
}

fn app_state(db: Database, config: &ServerConfig) -> Arc<AppState> {
    Arc::new(AppState {
        db,
        metrics: Metrics::default(),
        api_key: config.api_key.clone().filter(|k| !k.is_empty()),
    })
}

/// The application: every route with its layers, over `db`.
pub fn router(db: Database, config: &ServerConfig) -> Router {
    http_router(app_state(db, config), config, routes::routes())
}

/// `routes` with every layer of the server.
fn http_router(
    state: Arc<AppState>,
    config: &ServerConfig,
    routes: Vec<(&'static str, axum::routing::MethodRouter<Arc<AppState>>)>,
) -> Router {
    let mut app = Router::new();
    for (path, methods) in routes {
        app = app.route(path, methods);
    }
    let request_id = HeaderName::from_static("x-request-id");
    app.fallback(not_found)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the request panicked; the server is still running").into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        id,
                        method = %request.method(),
                        uri = %request.uri()
                    )
                })
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Rejects requests without the configured API key (compared in constant time).
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let headers = request.headers();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (Authorization: Bearer KEY)",
        )
        .into_response(),
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// Counts each answered request and its latency under its route pattern.
async fn record_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Serves `db` (REST, and gRPC if configured) until SIGTERM or ctrl-c, then closes it.
/// `ready` is told where the server listens.
pub fn serve(db: Database, config: ServerConfig, ready: impl FnOnce(Bound) + Send) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = app_state(db.clone(), &config);
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let grpc_listener = match config.grpc_addr {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
            None => None,
        };
        ready(Bound {
            http: listener.local_addr()?,
            grpc: grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            // An error means the sender is gone: stop too.
            let _ = stopped.wait_for(|&stop| stop).await;
        };
        let http = axum::serve(
            listener,
            http_router(state.clone(), &config, routes::routes()),
        )
        .with_graceful_shutdown(wait_stop(stopped.clone()));
        let grpc = async {
            let Some(listener) = grpc_listener else {
                return Ok(());
            };
            tonic::transport::Server::builder()
                .timeout(config.timeout)
                .add_service(grpc::service(state.clone(), config.body_limit))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    wait_stop(stopped.clone()),
                )
                .await
                .map_err(|e| Error::Internal(format!("gRPC server: {e}")))
        };
        let signal = async {
            shutdown_signal().await;
            let _ = stop.send(true);
        };
        let (http, grpc, ()) = tokio::join!(http, grpc, signal);
        http?;
        grpc
    })?;
    // In-flight requests have finished; blocking work they started has returned.
    runtime.shutdown_timeout(Duration::from_secs(10));
    db.close()
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn constant_time_eq_compares_bytes_and_lengths() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
    }

    #[test]
    fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        let mut routes = routes::routes();
        routes.push((
            "/panic",
            axum::routing::get(|| async { panic!("boom") as &str }),
        ));
        let app = http_router(app_state(db, &config), &config, routes);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(get("/panic")).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "internal");
            let response = app.oneshot(get("/healthz")).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        });
    }

    #[test]
    fn the_openapi_table_lists_exactly_the_routed_paths() {
        let routed: BTreeSet<&str> = routes::routes().into_iter().map(|(p, _)| p).collect();
        let documented: BTreeSet<&str> = openapi::ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(routed, documented);
    }
}
