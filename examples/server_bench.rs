//! Search over the REST API (`quiver serve`'s router, on loopback) against the same searches
//! made in-process: queries per second and latency percentiles with 1 and 8 concurrent clients.
//!
//! Run with `cargo run --release --example server_bench`, optionally followed by
//! `-- --docs N --seconds S --clients C --warmup W --queries Q --seed X --log` (defaults: 100000
//! documents, 10 measured seconds per configuration, 8 clients, 1 s of warm-up per segment, 1000
//! queries, seed 7, no log subscriber).
//!
//! # The collection
//!
//! `--docs` 128-D vectors, L2, HNSW with the default parameters (M = 16, efConstruction = 200),
//! written through the public API (`upsert` in batches of 10,000, one transaction each). The
//! vectors are drawn from the shared seeded generator (`examples/common/rng.rs`): 1,000 Gaussian
//! centroids (N(0, 1) per coordinate) plus N(0, 0.5²) noise per coordinate. The queries are drawn
//! the same way (they are not corpus members) and reused round-robin, each client starting at a
//! different offset. Background checkpoints are disabled, so that none runs while measuring.
//!
//! # The server
//!
//! In-process: a tokio multi-thread runtime (default worker count, as `quiver serve`) on a
//! background thread runs `axum::serve` over `quiverdb::server::router(db, &ServerConfig::new)`
//! on `127.0.0.1:0`: every layer of `quiver serve` (request id, tracing, catch-panic, metrics,
//! timeout, body limit) and searches on tokio's blocking pool, as in production. By default no
//! tracing subscriber is installed, so the per-request INFO line `quiver serve` writes to stderr
//! is not formatted; `--log` installs the same `fmt` subscriber at `info`, writing to a sink
//! (formatting paid, terminal/file write not).
//!
//! # The load generator
//!
//! `C` threads, each with one persistent keep-alive HTTP/1.1 connection (`TcpStream`,
//! `TCP_NODELAY`), sending `POST /collections/bench/search` with
//! `{"vector":[…],"k":10,"ef":64}` back to back (closed loop). The request bytes are built before
//! the run (client-side JSON encoding is not measured); each response is read exactly
//! (status line, headers, then `Content-Length` bytes, or chunks if `Transfer-Encoding: chunked`;
//! `Connection: close` or a missing length is an error). Every response is checked: status 200
//! and 10 `"id":` keys. Before timing, every query is sent once over HTTP and its parsed JSON
//! answer compared with the in-process answer (ids and distances).
//!
//! The in-process baseline: the same threads calling `collection.search(&SearchRequest::new(v,
//! 10).with_ef(64))` directly. Latency is per request, from just before the request is written
//! (or the call made) to the end of the response; QPS is the requests started in the measured
//! window over the window's length. To spread the drift of a shared machine over all four
//! configurations, each runs twice for half the duration, in the order A B C D D C B A, with a
//! warm-up before each half (new connections, not measured). Last, one client sends
//! `GET /healthz` for half the duration: the floor of a round trip through the HTTP stack and
//! the middleware, without the search route's JSON, blocking-pool hand-off and search.
//!
//! CPU per request is the process's user + system time (/proc/self/stat) over the measured
//! window, divided by the requests: load generator, server and search together, since all run in
//! this process; the load generator's share (its threads' /proc/thread-self/schedstat) is shown
//! separately for the HTTP rows.

#[path = "common/rng.rs"]
mod rng;

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use quiverdb::server::{router, ServerConfig};
use quiverdb::sync::CheckpointPolicy;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, IndexConfig, Metric, SearchRequest,
    SearchResponse,
};
use uuid::Uuid;

use rng::SplitMix64;

type AnyError = Box<dyn Error + Send + Sync>;
type AnyResult<T> = Result<T, AnyError>;

/// Vector dimension.
const DIM: usize = 128;
/// Hits per search.
const K: usize = 10;
/// HNSW candidate-list size per search.
const EF: usize = 64;
/// Documents per upsert (one transaction each).
const BATCH: usize = 10_000;
/// Centroids the vectors are drawn around.
const CLUSTERS: usize = 1_000;
/// Standard deviation, per coordinate, of the noise around a centroid.
const NOISE: f32 = 0.5;
/// The collection's name.
const COLLECTION: &str = "bench";
/// High half of every document id ("servbenc"); the low half is the document's number.
const ID_PREFIX: u64 = 0x7365_7276_6265_6e63;
/// Process CPU ticks per second in /proc/self/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

const USAGE: &str = "usage: server_bench [--docs N] [--seconds S] [--clients C] [--warmup W] \
                     [--queries Q] [--seed X] [--log]";

// ----- options -------------------------------------------------------------------------------

struct Options {
    docs: usize,
    seconds: f64,
    clients: usize,
    warmup: f64,
    queries: usize,
    seed: u64,
    log: bool,
}

fn parse_args() -> AnyResult<Options> {
    let mut options = Options {
        docs: 100_000,
        seconds: 10.0,
        clients: 8,
        warmup: 1.0,
        queries: 1_000,
        seed: 7,
        log: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--docs" => options.docs = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--clients" => options.clients = value()?.parse()?,
            "--warmup" => options.warmup = value()?.parse()?,
            "--queries" => options.queries = value()?.parse()?,
            "--seed" => options.seed = value()?.parse()?,
            "--log" => options.log = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if options.docs < K || options.queries == 0 || options.clients == 0 {
        return Err(
            format!("--docs must be at least {K}, --queries and --clients positive").into(),
        );
    }
    if !(options.seconds > 0.0 && options.warmup >= 0.0) {
        return Err("--seconds must be positive and --warmup not negative".into());
    }
    Ok(options)
}

// ----- data ----------------------------------------------------------------------------------

struct Generator {
    centroids: Vec<Vec<f32>>,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::stream(seed, 1);
        let centroids = (0..CLUSTERS)
            .map(|_| (0..DIM).map(|_| rng.gaussian()).collect())
            .collect();
        Generator { centroids }
    }

    fn vector(&self, rng: &mut SplitMix64) -> Vec<f32> {
        rng.pick(&self.centroids)
            .iter()
            .map(|x| x + NOISE * rng.gaussian())
            .collect()
    }
}

/// The body of `POST /collections/{name}/search` for `vector` (f32s in shortest form).
fn http_request(addr: SocketAddr, vector: &[f32]) -> AnyResult<Vec<u8>> {
    let body = format!(
        "{{\"vector\":{},\"k\":{K},\"ef\":{EF}}}",
        serde_json::to_string(vector)?
    );
    let head = format!(
        "POST /collections/{COLLECTION}/search HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    Ok([head.into_bytes(), body.into_bytes()].concat())
}

// ----- the server ----------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    worker_threads: usize,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves `db` on `127.0.0.1:0` from a background thread; returns once it listens.
    fn start(db: Database) -> AnyResult<Server> {
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::Builder::new().name("server".into()).spawn(
            move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(listener) => listener,
                        Err(e) => {
                            ready_tx.send(Err(e)).ok();
                            return Ok(());
                        }
                    };
                    let addr = listener.local_addr()?;
                    let app = router(db, &ServerConfig::new(addr));
                    ready_tx.send(Ok(addr)).ok();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            stopped.await.ok();
                        })
                        .await
                })
            },
        )?;
        let addr = ready_rx
            .recv()
            .map_err(|_| "the server thread ended before listening")??;
        Ok(Server {
            addr,
            // tokio's default: one worker per CPU the process may use.
            worker_threads: thread::available_parallelism().map_or(1, |n| n.get()),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> AnyResult<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().map_err(|_| "the server thread panicked")??;
        }
        Ok(())
    }
}

// ----- the HTTP client -----------------------------------------------------------------------

/// What one response held.
struct Outcome {
    status: u16,
    hits: usize,
    chunked: bool,
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> AnyResult<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::with_capacity(64 << 10, stream),
            line: String::new(),
            body: Vec::with_capacity(4 << 10),
        })
    }

    /// Sends `request` and reads exactly one response (its body is left in `self.body`).
    fn round_trip(&mut self, request: &[u8]) -> AnyResult<Outcome> {
        if !self.reader.buffer().is_empty() {
            return Err("unexpected bytes from the server before the request was sent".into());
        }
        self.reader.get_mut().write_all(request)?;
        let status = self.read_head()?;
        let (length, chunked, close) = self.read_headers()?;
        self.body.clear();
        if chunked {
            self.read_chunks()?;
        } else if let Some(length) = length {
            self.body.resize(length, 0);
            self.reader.read_exact(&mut self.body)?;
        } else {
            return Err("a response with neither Content-Length nor chunked encoding".into());
        }
        if close {
            return Err("the server asked to close the connection (Connection: close)".into());
        }
        Ok(Outcome {
            status,
            hits: count(&self.body, b"\"id\":"),
            chunked,
        })
    }

    fn read_line(&mut self) -> AnyResult<&str> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err("the server closed the connection".into());
        }
        Ok(self.line.trim_end_matches(['\r', '\n']))
    }

    /// The status line: `HTTP/1.1 200 OK`.
    fn read_head(&mut self) -> AnyResult<u16> {
        let line = self.read_line()?;
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next().map(str::parse::<u16>)) {
            (Some("HTTP/1.1"), Some(Ok(status))) => Ok(status),
            _ => Err(format!("unexpected status line {line:?}").into()),
        }
    }

    /// Content-Length, chunked, Connection: close.
    fn read_headers(&mut self) -> AnyResult<(Option<usize>, bool, bool)> {
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok((length, chunked, close));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed header {line:?}"))?;
            let (name, value) = (name.trim(), value.trim().to_ascii_lowercase());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if value.split(',').any(|v| v.trim() == "chunked") {
                    chunked = true;
                } else {
                    return Err(format!("unsupported Transfer-Encoding {value:?}").into());
                }
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.split(',').any(|v| v.trim() == "close");
            }
        }
    }

    /// A chunked body (RFC 9112 §7.1): size lines, data, CRLF; a 0 chunk, trailers, CRLF.
    fn read_chunks(&mut self) -> AnyResult<()> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("malformed chunk size line {line:?}"))?;
            if size == 0 {
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            let start = self.body.len();
            self.body.resize(start + size, 0);
            self.reader.read_exact(&mut self.body[start..])?;
            if !self.read_line()?.is_empty() {
                return Err("a chunk not followed by CRLF".into());
            }
        }
    }
}

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

// ----- the runs ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Http,
    /// `GET /healthz`: the HTTP stack and middleware alone (no body, no blocking pool, no search).
    Healthz,
}

/// What everything shares.
struct Bench {
    collection: Collection,
    requests: Vec<SearchRequest>,
    http_requests: Vec<Vec<u8>>,
    healthz: Vec<u8>,
    addr: SocketAddr,
}

/// What one client thread measured in one segment.
struct WorkerOut {
    latencies: Vec<Duration>,
    /// This thread's CPU seconds over the measured window.
    cpu: Option<f64>,
    last_done: Option<Instant>,
    responses: u64,
    bad_status: u64,
    bad_hits: u64,
    chunked: u64,
}

/// One configuration's measurements, summed over its segments.
struct Tally {
    latencies: Vec<Duration>,
    /// Seconds measured.
    window: f64,
    /// Process CPU seconds over the measured windows.
    cpu: Option<f64>,
    /// Client threads' CPU seconds over the measured windows.
    client_cpu: Option<f64>,
    /// Every response checked (warm-up included).
    responses: u64,
    bad_status: u64,
    bad_hits: u64,
    chunked: u64,
}

struct Summary {
    qps: f64,
    mean_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latencies: Vec::new(),
            window: 0.0,
            cpu: Some(0.0),
            client_cpu: Some(0.0),
            responses: 0,
            bad_status: 0,
            bad_hits: 0,
            chunked: 0,
        }
    }

    fn summary(&mut self) -> Summary {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let rank = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            self.latencies[i].as_secs_f64() * 1e3
        };
        let total: f64 = self.latencies.iter().map(Duration::as_secs_f64).sum();
        let per_request = |cpu: Option<f64>| cpu.map(|c| c / n as f64 * 1e6);
        Summary {
            qps: n as f64 / self.window,
            mean_us: total / n as f64 * 1e6,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            cpu_us: per_request(self.cpu),
            client_cpu_us: per_request(self.client_cpu),
        }
    }
}

/// Runs requests from query `first` on, round-robin, until `end`; those started at or after
/// `measure_from` are timed. Each answer should have `expected_hits` hits.
fn drive(
    expected_hits: usize,
    first: usize,
    queries: usize,
    measure_from: Instant,
    end: Instant,
    mut one: impl FnMut(usize) -> AnyResult<Outcome>,
) -> AnyResult<WorkerOut> {
    let mut out = WorkerOut {
        latencies: Vec::with_capacity(1 << 16),
        cpu: Some(0.0),
        last_done: None,
        responses: 0,
        bad_status: 0,
        bad_hits: 0,
        chunked: 0,
    };
    let mut cpu_start = None;
    let mut j = first % queries;
    loop {
        let mut started = Instant::now();
        if started >= end {
            break;
        }
        let measured = started >= measure_from;
        if measured && cpu_start.is_none() {
            cpu_start = Some(thread_cpu_seconds());
            started = Instant::now();
        }
        let outcome = one(j)?;
        let done = Instant::now();
        if measured {
            out.latencies.push(done - started);
            out.last_done = Some(done);
        }
        out.responses += 1;
        if outcome.status != 200 {
            out.bad_status += 1;
        } else if outcome.hits != expected_hits {
            out.bad_hits += 1;
        }
        out.chunked += u64::from(outcome.chunked);
        j = (j + 1) % queries;
    }
    if let Some(start) = cpu_start {
        out.cpu = start.zip(thread_cpu_seconds()).map(|(s, e)| e - s);
    }
    Ok(out)
}

/// One segment: `clients` threads, `warmup` untimed then `measure` timed; adds to `tally`.
fn run_segment(
    bench: &Bench,
    mode: Mode,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    tally: &mut Tally,
) -> AnyResult<()> {
    let queries = bench.requests.len();
    let measure_from = Instant::now() + warmup;
    let end = measure_from + measure;
    let (outs, cpu) = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let first = i * queries / clients;
                s.spawn(move || match mode {
                    Mode::InProcess => drive(K, first, queries, measure_from, end, |j| {
                        let response = bench.collection.search(&bench.requests[j])?;
                        Ok(Outcome {
                            status: 200,
                            hits: response.hits.len(),
                            chunked: false,
                        })
                    }),
                    Mode::Http => {
                        let mut connection = Connection::open(bench.addr)?;
                        drive(K, first, queries, measure_from, end, |j| {
                            connection.round_trip(&bench.http_requests[j])
                        })
                    }
                    Mode::Healthz => {
                        let mut connection = Connection::open(bench.addr)?;
                        drive(0, first, queries, measure_from, end, |_| {
                            connection.round_trip(&bench.healthz)
                        })
                    }
                })
            })
            .collect();
        thread::sleep(measure_from.saturating_duration_since(Instant::now()));
        let cpu_start = process_cpu_seconds();
        let outs: Vec<AnyResult<WorkerOut>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
            })
            .collect();
        let cpu = cpu_start.zip(process_cpu_seconds()).map(|(s, e)| e - s);
        (outs, cpu)
    });
    let mut last_done = measure_from;
    let mut client_cpu = Some(0.0);
    for out in outs {
        let out = out?;
        tally.latencies.extend_from_slice(&out.latencies);
        last_done = last_done.max(out.last_done.unwrap_or(measure_from));
        client_cpu = client_cpu.zip(out.cpu).map(|(a, b)| a + b);
        tally.responses += out.responses;
        tally.bad_status += out.bad_status;
        tally.bad_hits += out.bad_hits;
        tally.chunked += out.chunked;
    }
    tally.window += (last_done - measure_from).as_secs_f64();
    tally.cpu = tally.cpu.zip(cpu).map(|(a, b)| a + b);
    tally.client_cpu = tally.client_cpu.zip(client_cpu).map(|(a, b)| a + b);
    Ok(())
}

/// Sends every query once over one connection and compares the parsed answer with the
/// in-process one; returns how many were identical (ids and distances).
fn cross_check(bench: &Bench) -> AnyResult<usize> {
    let mut connection = Connection::open(bench.addr)?;
    let mut identical = 0;
    for (request, bytes) in bench.requests.iter().zip(&bench.http_requests) {
        let outcome = connection.round_trip(bytes)?;
        if outcome.status != 200 {
            return Err(format!(
                "the server answered {}: {}",
                outcome.status,
                String::from_utf8_lossy(&connection.body)
            )
            .into());
        }
        let over_http: SearchResponse = serde_json::from_slice(&connection.body)?;
        let direct = bench.collection.search(request)?;
        if over_http.hits.len() != K {
            return Err(format!("{} hits over HTTP, expected {K}", over_http.hits.len()).into());
        }
        identical += usize::from(over_http.hits == direct.hits);
    }
    Ok(identical)
}

// ----- machine -------------------------------------------------------------------------------

/// User + system CPU seconds of this process (all threads, exited ones included).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// CPU seconds of the calling thread (nanoseconds on CPU, /proc/thread-self/schedstat).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unknown (/proc/cpuinfo unreadable)".into();
    };
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} ({cpus} logical CPUs in /proc/cpuinfo)")
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

// ----- main ----------------------------------------------------------------------------------

fn run() -> AnyResult<()> {
    let options = parse_args()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        "cargo run --release --example server_bench".to_string()
    } else {
        format!(
            "cargo run --release --example server_bench -- {}",
            args.join(" ")
        )
    };
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    if options.log {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|e| format!("installing the log subscriber: {e}"))?;
    }

    // The data: documents and queries from independent streams.
    let generator = Generator::new(options.seed);
    let mut rng = SplitMix64::stream(options.seed, 2);
    let vectors: Vec<Vec<f32>> = (0..options.docs)
        .map(|_| generator.vector(&mut rng))
        .collect();
    let mut rng = SplitMix64::stream(options.seed, 3);
    let queries: Vec<Vec<f32>> = (0..options.queries)
        .map(|_| generator.vector(&mut rng))
        .collect();

    // The collection.
    let work = tempfile::Builder::new().prefix("server_bench").tempdir()?;
    let policy = CheckpointPolicy {
        every_changes: u64::MAX,
        every: Duration::from_secs(24 * 3600),
    };
    let db = Database::open_with_policy(work.path(), policy)?;
    let collection = db.create_collection(
        COLLECTION,
        CollectionConfig::new(DIM, Metric::L2).with_index(IndexConfig::hnsw()),
    )?;
    let batches: Vec<Vec<DocumentInput>> = vectors
        .chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let n = (b * BATCH + i) as u64;
                    DocumentInput::new(v.clone()).with_id(Uuid::from_u64_pair(ID_PREFIX, n))
                })
                .collect()
        })
        .collect();
    drop(vectors);
    let build_start = Instant::now();
    for batch in batches {
        collection.upsert(batch)?;
    }
    let build = build_start.elapsed();
    if collection.count()? != options.docs as u64 {
        return Err("the collection does not hold every document".into());
    }

    // The server and the requests.
    let server = Server::start(db.clone())?;
    let bench = Bench {
        requests: queries
            .iter()
            .map(|v| SearchRequest::new(v.clone(), K).with_ef(EF))
            .collect(),
        http_requests: queries
            .iter()
            .map(|v| http_request(server.addr, v))
            .collect::<AnyResult<_>>()?,
        healthz: format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).into_bytes(),
        collection,
        addr: server.addr,
    };
    let request_bytes = bench.http_requests.iter().map(Vec::len).sum::<usize>() / queries.len();
    let identical = cross_check(&bench)?;

    // The runs: A B C D D C B A, half the duration each time.
    let configs = [
        (Mode::InProcess, 1, "in-process, 1 thread".to_string()),
        (Mode::Http, 1, "HTTP, 1 client".to_string()),
        (
            Mode::InProcess,
            options.clients,
            format!("in-process, {} threads", options.clients),
        ),
        (
            Mode::Http,
            options.clients,
            format!("HTTP, {} clients", options.clients),
        ),
    ];
    let mut tallies: Vec<Tally> = configs.iter().map(|_| Tally::new()).collect();
    let warmup = Duration::from_secs_f64(options.warmup);
    let half = Duration::from_secs_f64(options.seconds / 2.0);
    let order: Vec<usize> = (0..configs.len()).chain((0..configs.len()).rev()).collect();
    let runs_start = Instant::now();
    for &c in &order {
        let (mode, clients, _) = &configs[c];
        run_segment(&bench, *mode, *clients, warmup, half, &mut tallies[c])?;
    }
    // The HTTP floor: one client, `GET /healthz`, once for half the duration.
    let mut healthz = Tally::new();
    run_segment(&bench, Mode::Healthz, 1, warmup, half, &mut healthz)?;
    let runs = runs_start.elapsed();
    let server_workers = server.worker_threads;
    server.stop()?;

    // The report.
    println!("# server_bench: search over HTTP (loopback) vs in-process\n");
    println!("command: `{command}`");
    println!(
        "machine: {}; {cores} CPUs available to this process",
        cpu_model()
    );
    println!(
        "collection: {} documents, {DIM}-D, L2, HNSW (M = 16, efConstruction = 200); build {:.1} s \
         (upsert, batches of {}, one transaction each; background checkpoints off)",
        thousands(options.docs as u64),
        build.as_secs_f64(),
        thousands(BATCH as u64)
    );
    println!(
        "searches: k = {K}, ef = {EF}, {} seeded query vectors round-robin; HTTP body ≈ {} bytes \
         per request (pre-encoded)",
        thousands(options.queries as u64),
        thousands(request_bytes as u64)
    );
    println!(
        "server: in-process axum::serve on 127.0.0.1 (quiverdb::server::router, every layer of \
         `quiver serve`), tokio multi-thread runtime with {} worker threads, searches on tokio's \
         blocking pool; request log: {}",
        server_workers,
        if options.log {
            "INFO subscriber formatting into a sink (--log)"
        } else {
            "none (`quiver serve` by default writes one INFO line per request to stderr)"
        }
    );
    println!(
        "load: closed loop, one keep-alive HTTP/1.1 connection per client (TCP_NODELAY); {:.1} s \
         measured per configuration as 2 × {:.1} s in the order A B C D D C B A, each after \
         {:.1} s of warm-up, then {:.1} s of `GET /healthz`; {:.0} s of runs in all",
        options.seconds,
        options.seconds / 2.0,
        options.warmup,
        options.seconds / 2.0,
        runs.as_secs_f64()
    );
    println!(
        "note: only {cores} CPU cores: the {} client threads, the server's threads and the \
         searches all share them, so the {}-client rows measure throughput under CPU contention \
         (HTTP's extra CPU per request is what lowers its QPS), not a client/server split.\n",
        options.clients, options.clients
    );

    let summaries: Vec<Summary> = tallies.iter_mut().map(Tally::summary).collect();
    println!(
        "| run | QPS | p50 ms | p99 ms | CPU µs/request (load generator's share) | QPS HTTP/in-process | \
         p50 HTTP/in-process | p99 HTTP/in-process |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (c, (mode, _, name)) in configs.iter().enumerate() {
        let s = &summaries[c];
        let cpu = match mode {
            Mode::InProcess => opt(s.cpu_us, 0),
            Mode::Http | Mode::Healthz => {
                format!("{} ({})", opt(s.cpu_us, 0), opt(s.client_cpu_us, 0))
            }
        };
        let ratios = match mode {
            Mode::InProcess => "— | — | —".to_string(),
            Mode::Http | Mode::Healthz => {
                let base = &summaries[c - 1];
                format!(
                    "{} | {} | {}",
                    ratio(s.qps, base.qps),
                    ratio(s.p50_ms, base.p50_ms),
                    ratio(s.p99_ms, base.p99_ms)
                )
            }
        };
        println!(
            "| {name} | {} | {:.3} | {:.3} | {cpu} | {ratios} |",
            thousands(s.qps.round() as u64),
            s.p50_ms,
            s.p99_ms
        );
    }

    let (ip1, http1) = (&summaries[0], &summaries[1]);
    println!(
        "\nHTTP + JSON overhead per request, 1 client: +{:.0} µs at p50 ({:.0} → {:.0} µs), \
         +{:.0} µs mean latency ({:.0} → {:.0} µs), +{} µs CPU ({} of it the load generator)",
        (http1.p50_ms - ip1.p50_ms) * 1e3,
        ip1.p50_ms * 1e3,
        http1.p50_ms * 1e3,
        http1.mean_us - ip1.mean_us,
        ip1.mean_us,
        http1.mean_us,
        opt(http1.cpu_us.zip(ip1.cpu_us).map(|(h, i)| h - i), 0),
        opt(http1.client_cpu_us, 0)
    );
    let floor = healthz.summary();
    println!(
        "HTTP floor, 1 client, `GET /healthz` (HTTP/1.1 on loopback and every middleware; no body \
         to parse, no blocking pool, no search): {} QPS, p50 {:.0} µs, mean {:.0} µs, {} µs CPU \
         ({} of it the load generator). So of the +{:.0} µs mean above, ≈ {:.0} µs is that floor \
         and ≈ {:.0} µs the search route's own cost (JSON in and out, the hand-off to tokio's \
         blocking pool and back)",
        thousands(floor.qps.round() as u64),
        floor.p50_ms * 1e3,
        floor.mean_us,
        opt(floor.cpu_us, 0),
        opt(floor.client_cpu_us, 0),
        http1.mean_us - ip1.mean_us,
        floor.mean_us,
        http1.mean_us - ip1.mean_us - floor.mean_us
    );
    let (ipn, httpn) = (&summaries[2], &summaries[3]);
    println!(
        "{} clients: +{} µs CPU per request over HTTP ({} µs in-process → {} µs)",
        options.clients,
        opt(httpn.cpu_us.zip(ipn.cpu_us).map(|(h, i)| h - i), 0),
        opt(ipn.cpu_us, 0),
        opt(httpn.cpu_us, 0)
    );
    if options.clients > cores {
        println!(
            "p99 with {} threads on {cores} cores: in-process threads never block, so one the \
             scheduler preempts mid-search waits for the others' time slices (p99 {:.1} ms against \
             p50 {:.3} ms); HTTP clients block on every response, so the CPU changes hands at \
             request boundaries and the HTTP p99 is the lower one",
            options.clients, ipn.p99_ms, ipn.p50_ms
        );
    }

    tallies.push(healthz);
    let responses: u64 = tallies.iter().map(|t| t.responses).sum();
    let bad_status: u64 = tallies.iter().map(|t| t.bad_status).sum();
    let bad_hits: u64 = tallies.iter().map(|t| t.bad_hits).sum();
    let chunked: u64 = tallies.iter().map(|t| t.chunked).sum();
    let http_responses: u64 = responses - tallies[0].responses - tallies[2].responses;
    println!(
        "\nchecks: {} responses ({} over HTTP, warm-up included): {} not 200, {} with an \
         unexpected number of hits ({K}; 0 for /healthz); {} chunked (all others had Content-Length); before timing, {identical}/{} \
         queries answered identically (ids and distances) over HTTP and in-process",
        thousands(responses),
        thousands(http_responses),
        bad_status,
        bad_hits,
        chunked,
        thousands(options.queries as u64)
    );

    drop(bench);
    drop(db);
    drop(work);
    if bad_status > 0 || bad_hits > 0 {
        return Err("some responses failed the checks (see above)".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
