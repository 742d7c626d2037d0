//! `quiver`: the command-line interface. Parses arguments, calls the library, prints results
//! (JSON where a program may read them); errors go to stderr with a non-zero exit code.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quiverdb::bench;
use quiverdb::import::{self, FvecsIds};
use quiverdb::{
    CollectionConfig, Database, Error, Filter, IndexConfig, Metric, OpenOptions, PayloadField,
    SearchRequest, VectorPrecision,
};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "QuiverDB: an embedded document vector store"
)]
struct Cli {
    /// Database directory (created if missing). Also read from QUIVER_DB.
    #[arg(long, global = true, env = "QUIVER_DB")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, describe or drop collections.
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Upsert documents from JSON lines ({"id"?, "vector", "metadata"?, "text"?}) or an .fvecs file.
    Import {
        /// Collection name.
        name: String,
        /// JSON-lines file ("-" for standard input).
        #[arg(required_unless_present = "fvecs", conflicts_with = "fvecs")]
        file: Option<PathBuf>,
        /// Import raw vectors from an .fvecs file instead.
        #[arg(long)]
        fvecs: Option<PathBuf>,
        /// With --fvecs: use the row number as the id (00000000-0000-0000-0000-000000000007 for row 7).
        #[arg(long, requires = "fvecs")]
        row_ids: bool,
        /// Documents per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Print one document as JSON.
    Get {
        /// Collection name.
        name: String,
        /// Document id (UUID).
        id: String,
    },
    /// Delete documents by id, or every document matching --filter; prints how many.
    Delete {
        /// Collection name.
        name: String,
        /// Document ids (UUIDs).
        #[arg(required_unless_present = "filter", conflicts_with = "filter")]
        ids: Vec<String>,
        /// Delete the documents matching this JSON filter (one transaction).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print the number of documents (matching --filter, if given).
    Count {
        /// Collection name.
        name: String,
        /// JSON filter, e.g. '{"year": {"$gte": 2020}}'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print documents in id order, one JSON line each, then {"next_cursor": ...}.
    Scroll {
        /// Collection name.
        name: String,
        /// Only documents matching this JSON filter.
        #[arg(long)]
        filter: Option<String>,
        /// Documents per page (1..=10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this cursor (the next_cursor of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Vector, keyword or hybrid search; prints one JSON line per hit (or per request with
    /// --requests).
    Search {
        /// Collection name.
        name: String,
        /// Query vector as a JSON array.
        #[arg(long, conflicts_with = "requests")]
        vector: Option<String>,
        /// Keyword query (BM25; collections created with --text). With --vector: hybrid search.
        #[arg(long, conflicts_with = "requests")]
        text: Option<String>,
        /// Hybrid: how the two arms are fused, rrf (default) or weighted.
        #[arg(long)]
        fusion: Option<String>,
        /// Hybrid, weighted fusion: weight of the vector arm in [0, 1] (default 0.5).
        #[arg(long)]
        alpha: Option<f32>,
        /// JSON-lines file of requests ({"vector"?: [...], "text"?: "...", "k": 10, ...}).
        #[arg(long)]
        requests: Option<PathBuf>,
        /// Number of hits (default 10).
        #[arg(long)]
        k: Option<usize>,
        /// Stored fields to return: any of metadata,text,vector.
        #[arg(long, default_value = "")]
        include: String,
        /// HNSW: candidate-list size (higher = better recall, slower).
        #[arg(long)]
        ef: Option<usize>,
        /// IVF-PQ: inverted lists probed (higher = better recall, slower).
        #[arg(long)]
        nprobe: Option<usize>,
        /// IVF-PQ: candidates re-ranked with full vectors per hit (0 = none).
        #[arg(long)]
        refine: Option<usize>,
        /// DiskANN: candidate-list size of the beam search (higher = better recall, slower).
        #[arg(long)]
        search_l: Option<usize>,
        /// DiskANN: beam width, node blocks read per hop.
        #[arg(long)]
        beam: Option<usize>,
        /// Only documents matching this JSON filter, e.g. '{"lang": "en"}'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Verify the store's page checksums and every derived index against the store; exits
    /// non-zero on any damage or disagreement.
    Check {
        /// Only this collection.
        name: Option<String>,
    },
    /// Measure recall@k, QPS and latency on .fvecs/.ivecs files (builds in a temporary database).
    Bench {
        /// Base vectors (.fvecs).
        #[arg(long)]
        base: PathBuf,
        /// Query vectors (.fvecs).
        #[arg(long)]
        query: PathBuf,
        /// Ground truth (.ivecs): row numbers of the exact neighbours of each query.
        #[arg(long)]
        gt: PathBuf,
        /// Distance metric: cosine, l2 or dot.
        #[arg(long)]
        metric: String,
        #[command(flatten)]
        index: IndexArgs,
        /// HNSW: the ef values to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,20,40,80,160,320")]
        ef: Vec<usize>,
        /// IVF-PQ: the nprobe values to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
        nprobe: Vec<usize>,
        /// IVF-PQ: re-ranking factor for every point (0 = none; default: the index's).
        #[arg(long)]
        refine: Option<usize>,
        /// DiskANN: the search_l values to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "20,40,80,160")]
        search_l: Vec<usize>,
        /// DiskANN: beam width for every point.
        #[arg(long, default_value_t = quiverdb::index::diskann::DEFAULT_BEAM)]
        beam: usize,
        /// DiskANN: read node blocks with O_DIRECT (bypassing the page cache) while searching.
        #[arg(long)]
        direct: bool,
        /// Neighbours per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Run at most this many queries.
        #[arg(long)]
        queries: Option<usize>,
        /// Threads for building and searching (queries are issued one at a time).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also measure filtered search at these selectivities (a synthetic attribute drawn at
        /// random, with an integer payload index), e.g. 0.5,0.1,0.01,0.001.
        #[arg(long, value_delimiter = ',')]
        filter_selectivity: Vec<f64>,
    },
    /// Serve the database over HTTP (REST API, see /openapi.json) until SIGTERM or ctrl-c.
    Serve {
        /// Address to listen on (port 0: any free port; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:7700")]
        addr: std::net::SocketAddr,
        /// Require this key (Authorization: Bearer KEY) on every route but /healthz.
        #[arg(long, env = "QUIVER_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = quiverdb::server::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// Also serve the gRPC API (proto/quiver.proto) on this address.
        #[arg(long)]
        grpc_addr: Option<std::net::SocketAddr>,
        /// Seconds a request may take before the server answers 408 (fractions allowed).
        #[arg(long, default_value_t = quiverdb::server::DEFAULT_TIMEOUT.as_secs_f64())]
        timeout: f64,
    },
    /// Build a small demo database and run example searches.
    Demo {
        /// Keep the demo database in this directory (default: a temporary one, removed after).
        dir: Option<PathBuf>,
    },
}

/// Vector-index options shared by `collection create` and `bench`.
#[derive(clap::Args)]
struct IndexArgs {
    /// Vector index kind: flat, hnsw, ivfpq or diskann.
    #[arg(long, default_value = "flat")]
    index: String,
    /// HNSW: links per node per layer.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW: candidate-list size while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW: how the index stores vectors, f32 or f16 (half the memory, faster; distances on
    /// vectors rounded to half precision, components within ±65504).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: VectorPrecision,
    /// IVF-PQ: inverted lists (default: 4·√n at training time).
    #[arg(long)]
    nlist: Option<usize>,
    /// IVF-PQ: bytes per code; must divide the dimension (default: largest divisor ≤ dim/8).
    #[arg(long)]
    pq_m: Option<usize>,
    /// DiskANN: maximum out-degree R.
    #[arg(long = "R", default_value_t = quiverdb::config::DEFAULT_DISKANN_R)]
    r: usize,
    /// DiskANN: candidate-list size L while building (and the default search_l).
    #[arg(long = "L", default_value_t = quiverdb::config::DEFAULT_DISKANN_L)]
    l: usize,
    /// DiskANN: PQ code bytes per vector kept in RAM; must divide the dimension (default: the
    /// largest divisor ≤ dim/4).
    #[arg(long)]
    pq_bytes: Option<usize>,
    /// DiskANN: nodes around the entry point cached in RAM.
    #[arg(long, default_value_t = quiverdb::config::DEFAULT_DISKANN_CACHE_NODES)]
    cache_nodes: usize,
    /// DiskANN: RAM a build may use, in MiB; larger builds are partitioned.
    #[arg(
        long,
        alias = "ram-budget",
        default_value_t = quiverdb::config::DEFAULT_DISKANN_BUILD_RAM_MB
    )]
    build_ram_budget: usize,
}

/// Parses `--precision` (`f32` or `f16`).
fn parse_precision(name: &str) -> Result<VectorPrecision, String> {
    VectorPrecision::from_name(name).map_err(|e| e.to_string())
}

impl IndexArgs {
    fn config(&self) -> Result<IndexConfig, Error> {
        let kind = IndexConfig::from_kind_name(&self.index)?;
        if !matches!(kind, IndexConfig::Hnsw { .. }) && !self.precision.is_f32() {
            return Err(Error::InvalidConfig(format!(
                "--precision {} applies to hnsw only ({} stores f32)",
                self.precision.name(),
                kind.kind_name()
            )));
        }
        match kind {
            IndexConfig::Hnsw { .. } => Ok(IndexConfig::Hnsw {
                m: self.m,
                ef_construction: self.ef_construction,
                precision: self.precision,
            }),
            IndexConfig::IvfPq { .. } => Ok(IndexConfig::IvfPq {
                nlist: self.nlist,
                pq_m: self.pq_m,
            }),
            IndexConfig::DiskAnn { .. } => Ok(IndexConfig::DiskAnn {
                r: self.r,
                l: self.l,
                pq_bytes: self.pq_bytes,
                cache_nodes: self.cache_nodes,
                build_ram_mb: self.build_ram_budget,
            }),
            other => Ok(other),
        }
    }
}

#[derive(Subcommand)]
enum CollectionCommand {
    /// Create a collection.
    Create {
        /// Collection name: letters, digits, '_' and '-'.
        name: String,
        /// Vector dimension (1..=65536).
        #[arg(long)]
        dim: usize,
        /// Distance metric: cosine, l2 or dot.
        #[arg(long)]
        metric: String,
        #[command(flatten)]
        index: IndexArgs,
        /// Index the text field for keyword (BM25) and hybrid search.
        #[arg(long)]
        text: bool,
        /// With --text: english (default: lower-case + stemming), simple (lower-case) or
        /// whitespace (exact tokens).
        #[arg(long, requires = "text")]
        tokenizer: Option<String>,
        /// Declare a payload index, as path:keyword|integer|float|bool (repeatable).
        #[arg(long = "payload-index")]
        payload_index: Vec<String>,
    },
    /// List collection names.
    List,
    /// Add a payload index to an existing collection (rows are built from the stored documents).
    Index {
        /// Collection name.
        name: String,
        /// The field, as path:keyword|integer|float|bool.
        field: String,
    },
    /// Train an IVF-PQ collection's quantisers now, on the vectors it holds (at least 256), or
    /// merge a DiskANN collection's in-RAM delta and delete list into a new node file.
    Train {
        /// Collection name.
        name: String,
    },
    /// Describe a collection as JSON.
    Info {
        /// Collection name.
        name: String,
    },
    /// Drop a collection and all its documents.
    Drop {
        /// Collection name.
        name: String,
    },
}

fn main() -> ExitCode {
    log::set_logger(&STDERR_LOGGER).ok();
    log::set_max_level(log::LevelFilter::Warn);
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo { dir } => return demo(dir.as_deref()),
        Command::Bench {
            base,
            query,
            gt,
            metric,
            index,
            ef,
            nprobe,
            refine,
            search_l,
            beam,
            direct,
            k,
            queries,
            threads,
            json,
            filter_selectivity,
        } => {
            let options = bench::BenchOptions {
                base,
                queries: query,
                ground_truth: gt,
                metric: metric.parse()?,
                index: index.config()?,
                ef,
                nprobe,
                refine,
                search_l,
                beam,
                direct,
                k,
                max_queries: queries,
                threads,
                work_dir: cli.db,
                filter_selectivity,
            };
            return bench_report(&options, json.as_deref());
        }
        _ => {}
    }
    let dir = cli
        .db
        .ok_or("--db DIR (or QUIVER_DB) is required for this command")?;
    let creates = matches!(
        cli.command,
        Command::Collection(CollectionCommand::Create { .. })
            | Command::Import { .. }
            | Command::Serve { .. }
    );
    if !creates && !dir.join("quiver.redb").exists() {
        if matches!(cli.command, Command::Collection(CollectionCommand::List)) {
            return Ok(ExitCode::SUCCESS); // nothing to list, and nothing created
        }
        return Err(format!(
            "no QuiverDB database at {} (`collection create` makes one)",
            dir.display()
        )
        .into());
    }
    // `check` also verifies the checksum of every page of the store.
    let verify_store = matches!(cli.command, Command::Check { .. });
    let db = Database::open_with(&dir, OpenOptions::new().verify_store(verify_store))?;
    if let Command::Serve {
        addr,
        api_key,
        body_limit,
        grpc_addr,
        timeout,
    } = cli.command
    {
        let mut config = quiverdb::server::ServerConfig::new(addr);
        config.api_key = api_key;
        config.body_limit = body_limit;
        config.grpc_addr = grpc_addr;
        return serve(db, config, timeout);
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let code = match cli.command {
        Command::Collection(command) => collection(&db, command, &mut out)?,
        Command::Import {
            name,
            file,
            fvecs,
            row_ids,
            batch,
        } => {
            let collection = db.collection(&name)?;
            let show_progress = io::stderr().is_terminal();
            let progress = |n: usize| {
                if show_progress {
                    eprint!("\rimported {n}");
                }
            };
            let imported = match (fvecs, file) {
                (Some(path), _) => {
                    let ids = if row_ids {
                        FvecsIds::Row
                    } else {
                        FvecsIds::Generated
                    };
                    if let Some(n) = quiverdb::vecs::fvecs_count(&path, collection.config().dim) {
                        collection.reserve(n)?;
                    }
                    let input =
                        BufReader::new(File::open(&path).map_err(|e| open_error(&path, e))?);
                    import::import_fvecs(&collection, input, batch, ids, progress)
                }
                (None, Some(path)) if path.as_os_str() == "-" => {
                    import::import_json_lines(&collection, io::stdin().lock(), batch, progress)
                }
                (None, Some(path)) => {
                    let input =
                        BufReader::new(File::open(&path).map_err(|e| open_error(&path, e))?);
                    import::import_json_lines(&collection, input, batch, progress)
                }
                (None, None) => return Err("give a JSON-lines FILE or --fvecs FILE".into()),
            };
            if show_progress {
                eprintln!();
            }
            let imported = imported?;
            // A training the import started (IVF-PQ) runs in the background: see it through
            // rather than lose it when the process ends.
            collection.wait_for_background_work(Duration::MAX)?;
            writeln!(out, "imported {imported}")?;
            ExitCode::SUCCESS
        }
        Command::Get { name, id } => {
            let id = parse_id(&id)?;
            let doc = db
                .collection(&name)?
                .get(id)?
                .ok_or(Error::DocumentNotFound(id))?;
            serde_json::to_writer(&mut out, &doc)?;
            writeln!(out)?;
            ExitCode::SUCCESS
        }
        Command::Delete { name, ids, filter } => {
            let collection = db.collection(&name)?;
            let deleted = match filter {
                Some(filter) => collection.delete_where(&filter.parse()?)?,
                None => {
                    let ids = ids
                        .iter()
                        .map(|s| parse_id(s))
                        .collect::<Result<Vec<_>, _>>()?;
                    collection.delete(&ids)?
                }
            };
            writeln!(out, "deleted {deleted}")?;
            ExitCode::SUCCESS
        }
        Command::Count { name, filter } => {
            let collection = db.collection(&name)?;
            let count = match filter {
                Some(filter) => collection.count_where(&filter.parse()?)?,
                None => collection.count()?,
            };
            writeln!(out, "{count}")?;
            ExitCode::SUCCESS
        }
        Command::Scroll {
            name,
            filter,
            limit,
            cursor,
        } => {
            let filter: Filter = match filter {
                Some(filter) => filter.parse()?,
                None => Filter::all(),
            };
            let page = db
                .collection(&name)?
                .scroll_where(&filter, limit, cursor.as_deref())?;
            for doc in &page.documents {
                serde_json::to_writer(&mut out, doc)?;
                writeln!(out)?;
            }
            serde_json::to_writer(
                &mut out,
                &serde_json::json!({ "next_cursor": page.next_cursor }),
            )?;
            writeln!(out)?;
            ExitCode::SUCCESS
        }
        Command::Search {
            name,
            vector,
            text,
            fusion,
            alpha,
            requests,
            k,
            include,
            ef,
            nprobe,
            refine,
            search_l,
            beam,
            filter,
        } => {
            let collection = db.collection(&name)?;
            match (vector.is_some() || text.is_some(), requests) {
                (true, _) => {
                    let vector: Option<Vec<f32>> = vector
                        .map(|v| serde_json::from_str(&v))
                        .transpose()
                        .map_err(|e| format!("--vector must be a JSON array of numbers: {e}"))?;
                    let request = SearchRequest {
                        vector,
                        text,
                        k: k.unwrap_or(10),
                        include: include.parse()?,
                        ef,
                        nprobe,
                        refine,
                        search_l,
                        beam,
                        filter: filter.map(|f| f.parse()).transpose()?,
                        fusion: fusion.map(|f| f.parse()).transpose()?,
                        alpha,
                        rrf_k: None,
                        candidates: None,
                    };
                    let response = collection.search(&request)?;
                    for hit in &response.hits {
                        let line = HitLine {
                            hit,
                            strategy: &response.strategy,
                            exhaustive: response.exhaustive,
                            filter_matches: response.filter_matches,
                            disk: response.disk,
                        };
                        serde_json::to_writer(&mut out, &line)?;
                        writeln!(out)?;
                    }
                }
                (false, Some(path)) => {
                    if k.is_some()
                        || ef.is_some()
                        || nprobe.is_some()
                        || refine.is_some()
                        || search_l.is_some()
                        || beam.is_some()
                        || !include.is_empty()
                        || filter.is_some()
                        || fusion.is_some()
                        || alpha.is_some()
                    {
                        return Err("--k, --ef, --nprobe, --refine, --search-l, --beam, --include, --filter, --fusion and --alpha apply to --vector/--text; with --requests, put them in each request line".into());
                    }
                    let requests = read_requests(&path, &collection.config())?;
                    for response in collection.search_batch(&requests)? {
                        serde_json::to_writer(&mut out, &response)?;
                        writeln!(out)?;
                    }
                }
                (false, None) => {
                    return Err(
                        "give --vector JSON, --text QUERY (or both), or --requests FILE".into(),
                    )
                }
            }
            ExitCode::SUCCESS
        }
        Command::Check { name } => {
            let report = db.check(name.as_deref())?;
            for index in &report.indexes {
                serde_json::to_writer(&mut out, index)?;
                writeln!(out)?;
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                out.flush()?;
                eprintln!("check failed: some index disagrees with the store");
                ExitCode::FAILURE
            }
        }
        Command::Demo { .. } | Command::Bench { .. } | Command::Serve { .. } => {
            unreachable!("handled above")
        }
    };
    out.flush()?;
    drop(out);
    db.close()?;
    Ok(code)
}

/// Runs the HTTP server; logs go to stderr (filter with `QUIVER_LOG`, e.g. `info` or `debug`).
fn serve(db: Database, mut config: quiverdb::server::ServerConfig, timeout: f64) -> CliResult {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err(
            format!("--timeout must be a positive number of seconds, got {timeout}").into(),
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .finish();
    tracing::subscriber::set_global_default(subscriber).ok();
    config.timeout = std::time::Duration::from_secs_f64(timeout);
    quiverdb::server::serve(db, config, |bound| {
        println!("listening on http://{}", bound.http);
        if let Some(grpc) = bound.grpc {
            println!("gRPC on {grpc}");
        }
        io::stdout().flush().ok();
    })?;
    Ok(ExitCode::SUCCESS)
}

fn collection(db: &Database, command: CollectionCommand, out: &mut impl Write) -> CliResult {
    match command {
        CollectionCommand::Create {
            name,
            dim,
            metric,
            index,
            text,
            tokenizer,
            payload_index,
        } => {
            let mut config = CollectionConfig::new(dim, metric.parse::<Metric>()?)
                .with_index(index.config()?)
                .with_text_index(text);
            if let Some(tokenizer) = tokenizer {
                config = config.with_text_tokenizer(tokenizer.parse()?);
            }
            for field in payload_index {
                let field: PayloadField = field.parse()?;
                config = config.with_payload_field(field.path, field.kind);
            }
            db.create_collection(&name, config)?;
            writeln!(out, "created collection {name}")?;
        }
        CollectionCommand::Index { name, field } => {
            let field: PayloadField = field.parse()?;
            db.collection(&name)?.create_payload_index(field.clone())?;
            writeln!(
                out,
                "created payload index {}:{}",
                field.path,
                field.kind.name()
            )?;
        }
        CollectionCommand::List => {
            for name in db.list_collections() {
                writeln!(out, "{name}")?;
            }
        }
        CollectionCommand::Train { name } => {
            let collection = db.collection(&name)?;
            if collection.train()? {
                writeln!(out, "trained {name}")?;
            } else {
                writeln!(out, "{name}: its index has nothing to train")?;
            }
        }
        CollectionCommand::Info { name } => {
            serde_json::to_writer_pretty(&mut *out, &db.collection(&name)?.info()?)?;
            writeln!(out)?;
        }
        CollectionCommand::Drop { name } => {
            db.drop_collection(&name)?;
            writeln!(out, "dropped collection {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(dir: Option<&Path>) -> CliResult {
    let (dir, temporary) = match dir {
        Some(dir) => (dir.to_path_buf(), false),
        None => (
            std::env::temp_dir().join(format!("quiver-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = quiverdb::demo::run(&dir, &mut io::stdout().lock());
    if temporary {
        std::fs::remove_dir_all(&dir).ok();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

fn bench_report(options: &bench::BenchOptions, json: Option<&Path>) -> CliResult {
    let report = bench::run(options)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{} index: {} x {}-D, {} queries, {} thread(s); build {:.2} s, peak RSS {:.1} MiB (+{:.1} MiB over the build), index memory {:.1} MiB, index files {:.1} MiB",
        report.index,
        report.n,
        report.dim,
        report.queries,
        report.threads,
        report.build_s,
        report.peak_rss_bytes as f64 / 1048576.0,
        report.build_rss_growth_bytes as f64 / 1048576.0,
        report.index_memory_bytes as f64 / 1048576.0,
        report.index_bytes as f64 / 1048576.0
    )?;
    if let Some(q) = &report.quantization {
        writeln!(
            out,
            "  quantisation: trained {}, nlist {:?}, {:?} bytes per code, list entries {:.2} MiB + quantisers {:.2} MiB = 1/{:.1} of the raw vectors, reconstruction MSE {:.4} ({:.2}% of the mean squared norm)",
            q.trained,
            q.nlist,
            q.code_bytes,
            q.code_memory_bytes as f64 / 1048576.0,
            q.quantiser_memory_bytes as f64 / 1048576.0,
            (report.n * report.dim * 4) as f64
                / (q.code_memory_bytes + q.quantiser_memory_bytes).max(1) as f64,
            q.reconstruction_mse.unwrap_or(f64::NAN),
            100.0 * q.relative_reconstruction_error.unwrap_or(f64::NAN)
        )?;
    }
    for point in &report.points {
        let knobs = point.knobs.label();
        write!(
            out,
            "  {knobs:<16}  recall@{} {:.4}  QPS {:.1}  p50 {:.3} ms  p99 {:.3} ms",
            options.k, point.recall, point.qps, point.p50_ms, point.p99_ms
        )?;
        match &point.disk {
            Some(d) => writeln!(
                out,
                "  hops {:.1}  blocks {:.1}  cache hits {:.1}",
                d.hops, d.blocks_read, d.cache_hits
            )?,
            None => writeln!(out)?,
        }
    }
    for point in &report.filtered {
        let knobs = point.knobs.label();
        writeln!(
            out,
            "  filter {:>6.2}% ({} match)  {knobs:<16}  recall@{} {:.4}  QPS {:.1}  p50 {:.3} ms  p99 {:.3} ms  exhaustive {}/{}  {:?}",
            point.selectivity * 100.0,
            point.matches,
            options.k,
            point.recall,
            point.qps,
            point.p50_ms,
            point.p99_ms,
            point.exhaustive,
            report.queries,
            point.strategies
        )?;
    }
    if let Some(d) = &report.delete_where {
        writeln!(
            out,
            "  delete_where of {:.0}%: {} documents in {:.3} s",
            d.selectivity * 100.0,
            d.deleted,
            d.seconds
        )?;
    }
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One hit of `search --vector/--text`, with how the search was served (so that a short answer is
/// never silent).
#[derive(serde::Serialize)]
struct HitLine<'a> {
    #[serde(flatten)]
    hit: &'a quiverdb::Hit,
    strategy: &'a str,
    exhaustive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_matches: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<quiverdb::index::diskann::disk::DiskSearchStats>,
}

/// Reads and validates a JSON-lines request file; errors name the file's line.
fn read_requests(
    path: &Path,
    config: &CollectionConfig,
) -> Result<Vec<SearchRequest>, Box<dyn std::error::Error>> {
    let input = BufReader::new(File::open(path).map_err(|e| open_error(path, e))?);
    let mut requests = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: &dyn std::fmt::Display| format!("{}: line {}: {e}", path.display(), i + 1);
        let request: SearchRequest =
            serde_json::from_str(&line).map_err(|e| at(&format!("bad request: {e}")))?;
        request.validate(config).map_err(|e| at(&e))?;
        requests.push(request);
    }
    Ok(requests)
}

fn parse_id(s: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(s).map_err(|_| Error::InvalidArgument(format!("{s:?} is not a UUID")))
}

fn open_error(path: &Path, e: io::Error) -> String {
    format!("cannot open {}: {e}", path.display())
}

/// Prints library warnings to stderr.
struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "{}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}
