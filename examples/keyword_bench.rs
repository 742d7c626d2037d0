//! What the keyword (BM25, tantivy) index costs, and how fast keyword and hybrid searches are,
//! as ratios against a baseline measured in the same run (the absolute numbers of a shared,
//! noisy machine mean little; the ratios travel better).
//!
//! Run with `cargo run --release --example keyword_bench`, optionally followed by
//! `-- --docs N --queries Q --seed S --dir PATH` (defaults: 100000 documents, 1000 queries,
//! seed 7, a temporary folder in the system's temp folder).
//!
//! # The corpus
//!
//! Generated from the seed by a SplitMix64 generator written here, so everything but the timings
//! is reproducible (each search table prints a digest of the hits to check that), except that
//! the keyword index's size on disk can differ by a few bytes between runs (tantivy's metadata
//! files, and after single-document commits, which background merges have finished). A pseudo
//! vocabulary of 5,000 words ("kadu", "pomaru": consonant–vowel syllables, frequent words
//! shorter) is drawn from a Zipf distribution (exponent 1): the most common word is in about 70%
//! of the documents, most words are rare. A document has 8 to 15 words, a 64-D cosine vector
//! (one of 256 random centroids plus Gaussian noise) and the metadata `{"bucket": i % 100}`
//! (a declared integer payload index). A query has 2 to 4 words from the same distribution and a
//! vector drawn like the documents'.
//!
//! # What is measured
//!
//! Two databases, each with one collection holding the same documents (texts included): (a)
//! without a text index, (b) with one. Both use the flat (exact) vector index, so that the only
//! difference is the keyword index (an HNSW build would dominate both ingests and hide it).
//! Background checkpoints are disabled while measuring (the default policy would checkpoint
//! after 50,000 changes, at a moment that depends on timing). In order:
//!
//! 1. Ingest in batches of 1,000 (one durable redb transaction each). (b)'s time includes one
//!    final keyword search, so that the pending tantivy commit is paid inside the timing.
//! 2. Steady-state search latency on (b), one query at a time from one thread, no writes in
//!    between: vector, keyword, hybrid (RRF), keyword with a 10% filter, and (extra) vector with
//!    the same filter. The modes are interleaved query by query (rotating which goes first), so
//!    that drift on a noisy machine hits them alike. Run before the small writes, so that it
//!    measures the bulk-loaded index.
//! 3. Small writes: 200 × {upsert one document; search} on (a) with a vector search and on (b)
//!    with a keyword search, plus the same search repeated (no write in between) as the
//!    reference. The keyword index commits on the first search after a write, so that search
//!    pays a tantivy commit (fsyncs included) and a reader reload. Keyword and vector latency are
//!    then measured again on (b), now holding the segments those commits made.
//! 4. Disk: the keyword index's files against the raw text bytes.

#[path = "common/rng.rs"]
mod rng;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use quiverdb::sync::CheckpointPolicy;
use quiverdb::{
    Collection, CollectionConfig, Database, DocumentInput, Filter, KeywordStatus, Metric,
    PayloadKind, SearchRequest,
};
use serde_json::json;
use uuid::Uuid;

use rng::{normalise, SplitMix64};

type AnyResult<T> = std::result::Result<T, Box<dyn Error>>;

/// Vector dimension.
const DIM: usize = 64;
/// Words in the pseudo vocabulary.
const VOCAB: usize = 5_000;
/// Exponent of the Zipf distribution words are drawn from.
const ZIPF_S: f64 = 1.0;
/// Centroids document and query vectors are drawn around.
const CLUSTERS: usize = 256;
/// Standard deviation, per dimension, of the noise around a centroid (norm ≈ 0.7).
const NOISE: f32 = 0.09;
/// Documents per ingest transaction.
const BATCH: usize = 1_000;
/// Iterations of {upsert one document; search}.
const SMALL_WRITES: usize = 200;
/// Queries run untimed before each timed series.
const WARMUP: usize = 50;
/// Hits per search.
const K: usize = 10;
/// Distinct values of the `bucket` metadata field.
const BUCKETS: u64 = 100;
/// The filter keeps `bucket < FILTER_BELOW`: 10% of the documents.
const FILTER_BELOW: u64 = 10;
/// High half of every document id ("keybench"); the low half is the document's number.
const ID_PREFIX: u64 = 0x6b65_7962_656e_6368;
/// Process CPU ticks per second in /proc/self/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

const USAGE: &str = "usage: keyword_bench [--docs N] [--queries Q] [--seed S] [--dir PATH]";

// ----- deterministic randomness --------------------------------------------------------------

/// The token only small-write document `j` has ("e" is not among the vocabulary's letters).
fn probe_token(j: usize) -> String {
    format!("probe{j}x")
}

// ----- the corpus ----------------------------------------------------------------------------

/// The word of Zipf rank `rank`: 2 syllables for the 900 most frequent, 3 for the rest; the
/// multiplication by 7 (coprime with 900 and 27,000) only scatters neighbouring ranks.
fn pseudo_word(rank: usize) -> String {
    const CONSONANTS: &[u8] = b"bdklmnprtv";
    const VOWELS: &[u8] = b"aou";
    let (mut code, syllables) = if rank < 900 {
        (rank * 7 % 900, 2)
    } else {
        ((rank - 900) * 7 % 27_000, 3)
    };
    let mut word = String::with_capacity(2 * syllables);
    for _ in 0..syllables {
        let s = code % 30;
        code /= 30;
        word.push(CONSONANTS[s / 3] as char);
        word.push(VOWELS[s % 3] as char);
    }
    word
}

struct Generator {
    words: Vec<String>,
    /// Cumulative Zipf probabilities of the ranks.
    cdf: Vec<f64>,
    centroids: Vec<Vec<f32>>,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..VOCAB)
            .map(|r| {
                acc += 1.0 / ((r + 1) as f64).powf(ZIPF_S);
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        let mut rng = SplitMix64::stream(seed, 1);
        let centroids = (0..CLUSTERS)
            .map(|_| {
                let mut v: Vec<f32> = (0..DIM).map(|_| rng.gaussian()).collect();
                normalise(&mut v);
                v
            })
            .collect();
        Generator {
            words: (0..VOCAB).map(pseudo_word).collect(),
            cdf,
            centroids,
        }
    }

    /// `lo..=hi` words drawn from the Zipf distribution, separated by spaces; `distinct` draws
    /// again a word already picked (queries), documents may repeat words.
    fn text(&self, rng: &mut SplitMix64, lo: usize, hi: usize, distinct: bool) -> String {
        let n = rng.between(lo, hi);
        let mut picked: Vec<&str> = Vec::with_capacity(n);
        while picked.len() < n {
            let u = rng.unit();
            let word = self.words[self.cdf.partition_point(|&c| c <= u).min(VOCAB - 1)].as_str();
            if !(distinct && picked.contains(&word)) {
                picked.push(word);
            }
        }
        picked.join(" ")
    }

    fn vector(&self, rng: &mut SplitMix64) -> Vec<f32> {
        let centroid = &self.centroids[rng.between(0, CLUSTERS - 1)];
        let mut v: Vec<f32> = centroid
            .iter()
            .map(|x| x + NOISE * rng.gaussian())
            .collect();
        normalise(&mut v);
        v
    }

    /// Document number `i`.
    fn document(&self, i: usize, rng: &mut SplitMix64) -> Doc {
        Doc {
            id: Uuid::from_u64_pair(ID_PREFIX, i as u64),
            vector: self.vector(rng),
            text: self.text(rng, 8, 15, false),
            bucket: i as u64 % BUCKETS,
        }
    }

    fn query(&self, rng: &mut SplitMix64) -> Query {
        Query {
            vector: self.vector(rng),
            text: self.text(rng, 2, 4, true),
        }
    }
}

struct Doc {
    id: Uuid,
    vector: Vec<f32>,
    text: String,
    bucket: u64,
}

impl Doc {
    fn input(&self) -> DocumentInput {
        DocumentInput::new(self.vector.clone())
            .with_id(self.id)
            .with_metadata(json!({ "bucket": self.bucket }))
            .with_text(self.text.clone())
    }
}

struct Query {
    vector: Vec<f32>,
    text: String,
}

// ----- measurement helpers -------------------------------------------------------------------

/// Mean and nearest-rank percentiles of latencies, in milliseconds.
#[derive(Clone, Copy)]
struct Stats {
    mean: f64,
    p50: f64,
    p99: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Stats {
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
            p50: rank(0.50),
            p99: rank(0.99),
        }
    }

    /// One query at a time: queries per second is the inverse of the mean latency.
    fn qps(self) -> f64 {
        1e3 / self.mean
    }
}

/// User + system CPU seconds of this process (all threads, tantivy's included).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Bytes of the files under `path`, recursively.
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
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

/// The file system holding `path`, from /proc/mounts (longest matching mount point).
fn filesystem(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind} ({device} on {point})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

// ----- options -------------------------------------------------------------------------------

struct Options {
    docs: usize,
    queries: usize,
    seed: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> AnyResult<Options> {
    let mut options = Options {
        docs: 100_000,
        queries: 1_000,
        seed: 7,
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--docs" => options.docs = value()?.parse()?,
            "--queries" => options.queries = value()?.parse()?,
            "--seed" => options.seed = value()?.parse()?,
            "--dir" => options.dir = Some(value()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if options.docs == 0 || options.queries == 0 {
        return Err("--docs and --queries must be positive".into());
    }
    Ok(options)
}

// ----- the phases ----------------------------------------------------------------------------

struct Ingest {
    wall: Duration,
    cpu: Option<f64>,
    /// (b): the final keyword search, which pays the pending tantivy commit.
    final_search: Option<Duration>,
}

/// Upserts `docs` in batches of [`BATCH`]; with `final_search`, then runs it (inside the timing).
fn ingest(
    collection: &Collection,
    docs: &[Doc],
    final_search: Option<&SearchRequest>,
) -> AnyResult<Ingest> {
    let batches: Vec<Vec<DocumentInput>> = docs
        .chunks(BATCH)
        .map(|chunk| chunk.iter().map(Doc::input).collect())
        .collect();
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    for batch in batches {
        collection.upsert(batch)?;
    }
    let searched = match final_search {
        Some(request) => {
            let t = Instant::now();
            collection.search(request)?;
            Some(t.elapsed())
        }
        None => None,
    };
    let wall = start.elapsed();
    Ok(Ingest {
        wall,
        cpu: cpu_seconds().zip(cpu_start).map(|(end, start)| end - start),
        final_search: searched,
    })
}

/// One search mode: its untimed warm-up requests and its timed requests.
struct Mode {
    name: &'static str,
    warm: Vec<SearchRequest>,
    timed: Vec<SearchRequest>,
}

struct ModeResult {
    stats: Stats,
    mean_hits: f64,
    /// Mean `examined` (distances computed, plus documents matching a query term).
    mean_examined: f64,
    /// Mean `filter_matches`, for filtered modes.
    filter_matches: Option<f64>,
    digest: u64,
}

/// Runs the modes interleaved query by query, rotating which mode goes first.
fn measure(collection: &Collection, modes: &[Mode]) -> AnyResult<Vec<ModeResult>> {
    for mode in modes {
        for request in &mode.warm {
            collection.search(request)?;
        }
    }
    let queries = modes[0].timed.len();
    let mut latencies = vec![Vec::with_capacity(queries); modes.len()];
    let mut hits = vec![0usize; modes.len()];
    let mut examined = vec![0usize; modes.len()];
    let mut matches = vec![None::<u64>; modes.len()];
    let mut digests = vec![FNV_START; modes.len()];
    for i in 0..queries {
        for j in 0..modes.len() {
            let m = (i + j) % modes.len();
            let start = Instant::now();
            let response = collection.search(&modes[m].timed[i])?;
            latencies[m].push(start.elapsed());
            hits[m] += response.hits.len();
            examined[m] += response.examined;
            if let Some(n) = response.filter_matches {
                *matches[m].get_or_insert(0) += n;
            }
            for hit in &response.hits {
                digests[m] = fnv(digests[m], hit.id.as_bytes());
            }
        }
    }
    let n = queries as f64;
    Ok((0..modes.len())
        .map(|m| ModeResult {
            stats: Stats::of(&latencies[m]),
            mean_hits: hits[m] as f64 / n,
            mean_examined: examined[m] as f64 / n,
            filter_matches: matches[m].map(|t| t as f64 / n),
            digest: digests[m],
        })
        .collect())
}

fn print_search_table(modes: &[Mode], results: &[ModeResult]) {
    let vector = results[0].stats;
    println!(
        "| mode | QPS | mean ms | p50 ms | p99 ms | QPS / vector | p50 / vector | hits | examined | filter matches | digest |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (mode, r) in modes.iter().zip(results) {
        println!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} | {:.0} | {} | {:016x} |",
            mode.name,
            r.stats.qps(),
            r.stats.mean,
            r.stats.p50,
            r.stats.p99,
            r.stats.qps() / vector.qps(),
            r.stats.p50 / vector.p50,
            r.mean_hits,
            r.mean_examined,
            r.filter_matches.map_or("–".into(), |m| format!("{m:.0}")),
            r.digest,
        );
    }
}

/// Latencies of one series of {upsert one document; search; same search again}.
struct SmallWrites {
    upsert: Vec<Duration>,
    first: Vec<Duration>,
    again: Vec<Duration>,
    /// Searches right after the write that return the document just written (in the top k).
    found: usize,
    /// ... as their first hit.
    found_first: usize,
}

fn small_writes(
    collection: &Collection,
    docs: &[Doc],
    request_for: impl Fn(usize, &Doc) -> SearchRequest,
) -> AnyResult<SmallWrites> {
    let mut out = SmallWrites {
        upsert: Vec::with_capacity(docs.len()),
        first: Vec::with_capacity(docs.len()),
        again: Vec::with_capacity(docs.len()),
        found: 0,
        found_first: 0,
    };
    for (j, doc) in docs.iter().enumerate() {
        let input = doc.input();
        let request = request_for(j, doc);
        let t = Instant::now();
        collection.upsert(vec![input])?;
        out.upsert.push(t.elapsed());
        let t = Instant::now();
        let response = collection.search(&request)?;
        out.first.push(t.elapsed());
        let t = Instant::now();
        collection.search(&request)?;
        out.again.push(t.elapsed());
        out.found += usize::from(response.hits.iter().any(|h| h.id == doc.id));
        out.found_first += usize::from(response.hits.first().map(|h| h.id) == Some(doc.id));
    }
    Ok(out)
}

fn keyword_status(collection: &Collection) -> AnyResult<KeywordStatus> {
    collection
        .info()?
        .keyword_index
        .ok_or_else(|| "collection (b) has no keyword index".into())
}

// ----- main ----------------------------------------------------------------------------------

fn run() -> AnyResult<()> {
    let options = parse_args()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        "cargo run --release --example keyword_bench".to_string()
    } else {
        format!(
            "cargo run --release --example keyword_bench -- {}",
            args.join(" ")
        )
    };
    let n = options.docs;
    let work = match &options.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("keyword_bench")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("keyword_bench").tempdir()?,
    };

    // The corpus, the small-write documents and the queries: independent streams.
    let generator = Generator::new(options.seed);
    let mut rng = SplitMix64::stream(options.seed, 2);
    let docs: Vec<Doc> = (0..n).map(|i| generator.document(i, &mut rng)).collect();
    let mut rng = SplitMix64::stream(options.seed, 3);
    let extra: Vec<Doc> = (0..SMALL_WRITES)
        .map(|j| {
            let mut doc = generator.document(n + j, &mut rng);
            // So that the search right after the write can check that it sees the write.
            doc.text.push_str(&format!(" {}", probe_token(j)));
            doc
        })
        .collect();
    let mut rng = SplitMix64::stream(options.seed, 4);
    let extra_terms: Vec<String> = (0..SMALL_WRITES)
        .map(|_| generator.text(&mut rng, 1, 3, true))
        .collect();
    let mut rng = SplitMix64::stream(options.seed, 5);
    let queries: Vec<Query> = (0..WARMUP + options.queries)
        .map(|_| generator.query(&mut rng))
        .collect();
    let text_bytes: u64 = docs.iter().map(|d| d.text.len() as u64).sum();
    let extra_text_bytes: u64 = extra.iter().map(|d| d.text.len() as u64).sum();

    println!("# keyword_bench\n");
    println!("command: `{command}`\n");
    println!("- CPU: {}", cpu_model());
    println!(
        "- available parallelism: {}",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "- work folder: {} on {}",
        work.path().display(),
        filesystem(work.path())
    );
    println!(
        "- corpus: {n} documents (seed {}), {DIM}-D cosine vectors, {VOCAB}-word Zipf(s = {ZIPF_S}) \
         vocabulary, 8–15 words each, {} of text ({:.1} bytes per document)",
        options.seed,
        mib(text_bytes),
        text_bytes as f64 / n as f64
    );
    println!(
        "- queries: {} timed (+{WARMUP} warm-up) of 2–4 words, k = {K}",
        options.queries
    );
    println!("- sample document: {:?}", docs[0].text);
    println!("- sample query: {:?}", queries[WARMUP].text);
    println!(
        "- both collections: flat (exact) vector index, payload index `bucket` (integer), \
         background checkpoints disabled"
    );
    if n * DIM >= 1 << 21 {
        println!(
            "- note: the flat index splits scans of ≥ 2 Mi floats over rayon's pool (here \
             {n} × {DIM}), so a vector search may use every core even though queries are sent \
             one at a time from one thread (RAYON_NUM_THREADS={})",
            std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
        );
    }

    let policy = CheckpointPolicy {
        every_changes: u64::MAX,
        every: Duration::from_secs(24 * 3600),
    };
    let db_a = Database::open_with_policy(work.path().join("a"), policy)?;
    let db_b = Database::open_with_policy(work.path().join("b"), policy)?;
    let config = CollectionConfig::new(DIM, Metric::Cosine)
        .with_payload_field("bucket", PayloadKind::Integer);
    let a = db_a.create_collection("plain", config.clone())?;
    let b = db_b.create_collection("text", config.with_text_index(true))?;

    // ----- 1. ingest -----
    let commit_search = SearchRequest::text(generator.words[0].clone(), K);
    let ingest_a = ingest(&a, &docs, None)?;
    let ingest_b = ingest(&b, &docs, Some(&commit_search))?;
    let status_ingested = keyword_status(&b)?;
    let rate = |i: &Ingest| n as f64 / i.wall.as_secs_f64();
    println!("\n## 1. Ingest ({n} documents, batches of {BATCH}, one redb transaction each)\n");
    println!("| collection | wall s | docs/s | process CPU s | docs/s ratio (b)/(a) | CPU ratio (b)/(a) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let cpu = |i: &Ingest| i.cpu.map_or("–".into(), |c| format!("{c:.2}"));
    println!(
        "| (a) flat, no text index | {:.2} | {:.0} | {} | 1.00 | 1.00 |",
        ingest_a.wall.as_secs_f64(),
        rate(&ingest_a),
        cpu(&ingest_a)
    );
    println!(
        "| (b) flat + text index, incl. final keyword search | {:.2} | {:.0} | {} | {:.2} | {} |",
        ingest_b.wall.as_secs_f64(),
        rate(&ingest_b),
        cpu(&ingest_b),
        rate(&ingest_b) / rate(&ingest_a),
        ingest_a
            .cpu
            .zip(ingest_b.cpu)
            .map_or("–".into(), |(ca, cb)| format!("{:.2}", cb / ca))
    );
    println!(
        "\n(b)'s final keyword search (tantivy commit of the whole ingest + reader reload + \
         search): {:.1} ms. Process CPU counts every thread: tantivy indexes on its own writer \
         thread, which overlaps with redb's commits when a second core is free.",
        ingest_b.final_search.unwrap_or_default().as_secs_f64() * 1e3
    );

    // ----- 2. steady-state search -----
    let filter = Filter::field("bucket").lt(FILTER_BELOW);
    let build = |make: &dyn Fn(&Query) -> SearchRequest| {
        let (warm, timed) = queries.split_at(WARMUP);
        (
            warm.iter().map(make).collect::<Vec<_>>(),
            timed.iter().map(make).collect::<Vec<_>>(),
        )
    };
    let mode = |name: &'static str, make: &dyn Fn(&Query) -> SearchRequest| {
        let (warm, timed) = build(make);
        Mode { name, warm, timed }
    };
    let vector_mode = || mode("vector", &|q| SearchRequest::new(q.vector.clone(), K));
    let keyword_mode = || mode("keyword", &|q| SearchRequest::text(q.text.clone(), K));
    let modes = [
        vector_mode(),
        keyword_mode(),
        mode("hybrid RRF", &|q| {
            SearchRequest::hybrid(q.vector.clone(), q.text.clone(), K)
        }),
        mode("keyword + filter 10%", &|q| {
            SearchRequest::text(q.text.clone(), K).with_filter(filter.clone())
        }),
        mode("vector + filter 10% (extra)", &|q| {
            SearchRequest::new(q.vector.clone(), K).with_filter(filter.clone())
        }),
    ];
    let steady = measure(&b, &modes)?;
    println!(
        "\n## 2. Steady-state search on (b), one query at a time ({} queries per mode, interleaved)\n",
        options.queries
    );
    print_search_table(&modes, &steady);
    println!(
        "\nQPS = 1 / mean latency. examined: vectors whose distance was computed, plus documents \
         matching a query term (hybrid: each arm takes 50 candidates). digest: FNV-1a of every \
         hit id, to check runs are deterministic apart from timings."
    );

    // ----- 3. small writes -----
    let small_a = small_writes(&a, &extra, |_, d| SearchRequest::new(d.vector.clone(), K))?;
    let small_b = small_writes(&b, &extra, |j, _| {
        SearchRequest::text(format!("{} {}", extra_terms[j], probe_token(j)), K)
    })?;
    println!(
        "\n## 3. Small writes: {SMALL_WRITES} × {{upsert 1 document (a durable redb commit); \
         search; same search again}}\n"
    );
    println!(
        "| case | upsert mean ms | search after write: mean | p50 | p99 | same search again: mean | p50 | p99 | after-write / again (mean) | new doc in top 10 | new doc first |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, s: &SmallWrites| {
        let (u, f, g) = (
            Stats::of(&s.upsert),
            Stats::of(&s.first),
            Stats::of(&s.again),
        );
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1}× | {}/{} | {}/{} |",
            u.mean,
            f.mean,
            f.p50,
            f.p99,
            g.mean,
            g.p50,
            g.p99,
            f.mean / g.mean,
            s.found,
            s.first.len(),
            s.found_first,
            s.first.len()
        );
        (u, f, g)
    };
    let (upsert_a, first_a, _) = row("(a) vector search", &small_a);
    let (upsert_b, first_b, again_b) = row("(b) keyword search", &small_b);
    println!(
        "\nKeyword query: 1–3 vocabulary words + the new document's unique token. Search right \
         after a write, (b) keyword / (a) vector: mean {:.2}×, p50 {:.2}×, p99 {:.2}×. Commit + \
         reload cost ≈ {:.2} ms per first search (mean after-write − mean again), i.e. {:.2}× the \
         upsert's own redb commit in (b). Upsert mean (b)/(a): {:.2}×.",
        first_b.mean / first_a.mean,
        first_b.p50 / first_a.p50,
        first_b.p99 / first_a.p99,
        first_b.mean - again_b.mean,
        (first_b.mean - again_b.mean) / upsert_b.mean,
        upsert_b.mean / upsert_a.mean
    );
    let after_modes = [vector_mode(), keyword_mode()];
    let after = measure(&b, &after_modes)?;
    println!(
        "\nSteady state again on (b), after those {SMALL_WRITES} single-document commits (their \
         segments, as far as tantivy's background merges have folded them):\n"
    );
    print_search_table(&after_modes, &after);
    println!(
        "\nKeyword p50 after / before the small writes: {:.2}×; mean: {:.2}×.",
        after[1].stats.p50 / steady[1].stats.p50,
        after[1].stats.mean / steady[1].stats.mean
    );

    // ----- 4. disk -----
    let status_end = keyword_status(&b)?;
    let (dir_a, dir_b) = (
        dir_bytes(&work.path().join("a")),
        dir_bytes(&work.path().join("b")),
    );
    println!("\n## 4. Disk\n");
    println!("| | after ingest | after the small writes |");
    println!("|---|---:|---:|");
    println!(
        "| documents in the keyword index | {} | {} |",
        status_ingested.documents, status_end.documents
    );
    let total_text = text_bytes + extra_text_bytes;
    println!(
        "| raw text bytes | {text_bytes} ({}) | {total_text} ({}) |",
        mib(text_bytes),
        mib(total_text)
    );
    println!(
        "| keyword index disk_bytes | {} ({}) | {} ({}) |",
        status_ingested.disk_bytes,
        mib(status_ingested.disk_bytes),
        status_end.disk_bytes,
        mib(status_end.disk_bytes)
    );
    println!(
        "| index / raw text | {:.2} | {:.2} |",
        status_ingested.disk_bytes as f64 / text_bytes as f64,
        status_end.disk_bytes as f64 / total_text as f64
    );
    println!(
        "| index bytes per document | {:.1} | {:.1} |",
        status_ingested.disk_bytes as f64 / status_ingested.documents.max(1) as f64,
        status_end.disk_bytes as f64 / status_end.documents.max(1) as f64
    );
    println!(
        "\nWhole database folders at the end (redb file + index files; flat index checkpoints are \
         only written on close): (a) {}, (b) {} — (b)/(a) {:.2}. disk_bytes can differ by a few \
         bytes between runs (tantivy's metadata; merges still running after the small writes).",
        mib(dir_a),
        mib(dir_b),
        dir_b as f64 / dir_a.max(1) as f64
    );

    drop((a, b));
    db_a.close()?;
    db_b.close()?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyword_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
