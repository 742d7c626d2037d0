//! `quiver bench`: recall and speed on TEXMEX files, measured through the public API.
//!
//! The base vectors are imported into a temporary database (the real write path, with row
//! numbers as ids so that ground-truth files apply), then every query runs one at a time on a
//! pool of `threads` threads; recall@k is the overlap with the first k ground-truth ids.
//! With `--filter-selectivity`, filtered searches are measured too ([`filtered`]).

pub mod filtered;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{CollectionConfig, IndexConfig, PayloadKind, VectorPrecision};
use crate::db::{Database, OpenOptions};
use crate::error::{Error, Result};
use crate::import::{import_fvecs_with_metadata, FvecsIds};
use crate::index::diskann::nodefile::ReadMode;
use crate::query::SearchRequest;
use crate::types::Metric;
use crate::vecs::{fvecs_count, read_fvecs_file, read_ivecs_file};

/// Documents per import transaction: small enough that a batch in flight adds little to the
/// peak RSS, large enough that parallel graph linking has work to share.
const IMPORT_BATCH: usize = 2_000;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Base vectors (`.fvecs`).
    pub base: PathBuf,
    /// Query vectors (`.fvecs`).
    pub queries: PathBuf,
    /// Ground truth (`.ivecs`): per query, ids (row numbers of `base`) of the exact neighbours.
    pub ground_truth: PathBuf,
    /// Metric of the collection.
    pub metric: Metric,
    /// Index to build.
    pub index: IndexConfig,
    /// HNSW `ef` values to measure (one operating point each; only for HNSW).
    pub ef: Vec<usize>,
    /// IVF-PQ `nprobe` values to measure (one operating point each; only for IVF-PQ).
    pub nprobe: Vec<usize>,
    /// IVF-PQ re-ranking factor for every point (the index's default when `None`).
    pub refine: Option<usize>,
    /// DiskANN `search_l` values to measure (one operating point each; only for DiskANN).
    pub search_l: Vec<usize>,
    /// DiskANN beam width for every point.
    pub beam: usize,
    /// DiskANN: search with `O_DIRECT` reads (page cache bypassed), in a reopened database.
    pub direct: bool,
    /// Neighbours per query.
    pub k: usize,
    /// Run at most this many queries (all when `None`).
    pub max_queries: Option<usize>,
    /// Threads for index building and searching.
    pub threads: usize,
    /// Folder for the temporary database (the system's temp folder when `None`).
    pub work_dir: Option<PathBuf>,
    /// Filter selectivities to measure (fractions of the documents matching), e.g. 0.01.
    pub filter_selectivity: Vec<f64>,
}

/// The search knobs of an operating point (those the index has).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PointKnobs {
    /// HNSW candidate-list size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
    /// IVF-PQ lists probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// IVF-PQ re-ranking factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refine: Option<usize>,
    /// DiskANN candidate-list size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_l: Option<usize>,
    /// DiskANN beam width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam: Option<usize>,
}

impl PointKnobs {
    /// Sets these knobs on `request`.
    pub fn apply(self, request: &mut SearchRequest) {
        request.ef = self.ef;
        request.nprobe = self.nprobe;
        request.refine = self.refine;
        request.search_l = self.search_l;
        request.beam = self.beam;
    }

    /// A short label, e.g. `"ef 24"` or `"nprobe 8 refine 4"`.
    pub fn label(self) -> String {
        [
            ("ef", self.ef),
            ("nprobe", self.nprobe),
            ("refine", self.refine),
            ("search_l", self.search_l),
            ("beam", self.beam),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name} {v}")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// One operating point.
#[derive(Clone, Debug, Serialize)]
pub struct BenchPoint {
    /// The knobs of this point.
    #[serde(flatten)]
    pub knobs: PointKnobs,
    /// Mean recall@k against the ground truth.
    pub recall: f64,
    /// Queries per second, one query at a time.
    pub qps: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// DiskANN: mean disk work per query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskPoint>,
}

/// Mean disk work per query of a DiskANN operating point.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DiskPoint {
    /// Beam steps.
    pub hops: f64,
    /// 4 KiB blocks read.
    pub blocks_read: f64,
    /// Nodes served from the RAM cache.
    pub cache_hits: f64,
}

/// The report, serialised as the JSON `quiver bench --json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Index kind, with the vector precision when not `f32` (e.g. `hnsw-f16`).
    pub index: String,
    /// Base vectors.
    pub n: usize,
    /// Dimension.
    pub dim: usize,
    /// Queries run.
    pub queries: usize,
    /// Threads used.
    pub threads: usize,
    /// Seconds to import the base vectors and build the index (through `upsert`).
    pub build_s: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: u64,
    /// Peak RSS minus the RSS just before the import started (queries and ground truth were
    /// already loaded): what building the collection cost, as hnswlib's "RSS+" measures it.
    pub build_rss_growth_bytes: u64,
    /// Bytes of the index files on disk after a checkpoint.
    pub index_bytes: u64,
    /// Bytes of memory the index holds (vectors, links, id maps), as it reports them.
    pub index_memory_bytes: usize,
    /// DiskANN: resident memory of the process after the database was closed, the memory
    /// returned and the database reopened, then searched: what serving costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_rss_bytes: Option<u64>,
    /// DiskANN: how node blocks were read while searching (`direct` bypasses the page cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_mode: Option<String>,
    /// Quantising indexes (IVF-PQ): training state, code bytes, reconstruction error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<crate::index::QuantizationStatus>,
    /// Operating points.
    pub points: Vec<BenchPoint>,
    /// Filtered operating points (with `--filter-selectivity`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filtered: Vec<filtered::FilteredPoint>,
    /// A `delete_where` of 10% of the documents, timed last (with `--filter-selectivity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_where: Option<filtered::DeleteWhere>,
}

/// Runs the benchmark.
pub fn run(options: &BenchOptions) -> Result<BenchReport> {
    if let Some(s) = options
        .filter_selectivity
        .iter()
        .find(|s| !(**s > 0.0 && **s <= 1.0))
    {
        return Err(Error::InvalidArgument(format!(
            "filter selectivity {s} is not in (0, 1]"
        )));
    }
    let queries = read_fvecs_file(&options.queries)?;
    let truth = read_ivecs_file(&options.ground_truth)?;
    let limit = options.max_queries.unwrap_or(usize::MAX).min(queries.len());
    if limit == 0 || truth.len() < limit {
        return Err(Error::InvalidArgument(format!(
            "{} queries but {} ground-truth rows",
            queries.len(),
            truth.len()
        )));
    }
    if truth.iter().take(limit).any(|row| row.len() < options.k) {
        return Err(Error::InvalidArgument(format!(
            "ground truth has fewer than k = {} ids per query",
            options.k
        )));
    }
    let dim = queries[0].len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
    let work = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = work.join(format!("quiver-bench-{}", std::process::id()));
    let result = pool.install(|| measure(options, &dir, dim, &queries[..limit], &truth[..limit]));
    std::fs::remove_dir_all(&dir).ok();
    result
}

fn measure(
    options: &BenchOptions,
    dir: &Path,
    dim: usize,
    queries: &[Vec<f32>],
    truth: &[Vec<i32>],
) -> Result<BenchReport> {
    let filtering = !options.filter_selectivity.is_empty();
    let filtered_truth = if filtering {
        filtered::ground_truth(
            &options.base,
            options.metric,
            queries,
            &options.filter_selectivity,
            options.k,
        )?
    } else {
        Vec::new()
    };
    let db = Database::open(dir)?;
    let mut config = CollectionConfig::new(dim, options.metric).with_index(options.index.clone());
    if filtering {
        config = config.with_payload_field(filtered::FIELD, PayloadKind::Integer);
    }
    let collection = db.create_collection("bench", config)?;
    if let Some(n) = fvecs_count(&options.base, dim) {
        collection.reserve(n)?;
    }
    let rss_before = proc_status_bytes("VmRSS:");
    let started = Instant::now();
    let input = BufReader::new(File::open(&options.base)?);
    let metadata = |row| {
        if filtering {
            filtered::metadata_of(row)
        } else {
            serde_json::Value::Null
        }
    };
    let n = import_fvecs_with_metadata(
        &collection,
        input,
        IMPORT_BATCH,
        FvecsIds::Row,
        metadata,
        |_| {},
    )
    .map_err(|e| e.error)?;
    // Background work the import started (an IVF-PQ training) is part of the build.
    collection.wait_for_background_work(Duration::MAX)?;
    let diskann = matches!(options.index, IndexConfig::DiskAnn { .. });
    if diskann {
        // Merge the in-RAM delta into the node file: the build a DiskANN bench measures.
        collection.train()?;
    }
    let build_s = started.elapsed().as_secs_f64();
    collection.checkpoint()?;
    let index_bytes = folder_bytes(dir)?;
    let status = collection.info()?.vector_index;
    let index_memory_bytes = status.memory_bytes;
    let quantization = status.quantization;

    let build_peak_rss = peak_rss_bytes();
    let (db, collection, search_rss_before) = if diskann {
        // Serve from a fresh open, as a restarted process would: the build's memory returned.
        drop(collection);
        db.close()?;
        release_free_memory();
        let reads = if options.direct {
            ReadMode::Direct
        } else {
            ReadMode::Buffered
        };
        let db = Database::open_with(dir, OpenOptions::new().node_reads(reads))?;
        let collection = db.collection("bench")?;
        (db, collection, Some(proc_status_bytes("VmRSS:")))
    } else {
        (db, collection, None)
    };
    let settings = operating_points(options);
    let mut points = Vec::with_capacity(settings.len());
    for &knobs in &settings {
        points.push(measure_point(
            &collection,
            options.k,
            knobs,
            queries,
            truth,
        )?);
    }
    let mut filtered_points = Vec::new();
    for &knobs in &settings {
        for (s, truth) in options.filter_selectivity.iter().zip(&filtered_truth) {
            filtered_points.push(filtered::measure(
                &collection,
                options.k,
                knobs,
                *s,
                queries,
                truth,
            )?);
        }
    }
    let search_rss_bytes = search_rss_before.map(|before| before.max(proc_status_bytes("VmRSS:")));
    let read_mode = collection
        .info()?
        .vector_index
        .disk
        .map(|d| d.read_mode.name().to_string());
    let delete_where = if filtering {
        Some(filtered::delete_where(&collection, 0.1)?)
    } else {
        None
    };
    db.close()?;
    Ok(BenchReport {
        index: match options.index.precision() {
            VectorPrecision::F32 => options.index.kind_name().to_string(),
            precision => format!("{}-{}", options.index.kind_name(), precision.name()),
        },
        n,
        dim,
        queries: queries.len(),
        threads: options.threads,
        build_s,
        peak_rss_bytes: peak_rss_bytes(),
        build_rss_growth_bytes: build_peak_rss.saturating_sub(rss_before),
        index_bytes,
        index_memory_bytes,
        search_rss_bytes,
        read_mode,
        quantization,
        points,
        filtered: filtered_points,
        delete_where,
    })
}

/// The operating points to measure: one per `ef` (HNSW), per `nprobe` (IVF-PQ), or one.
fn operating_points(options: &BenchOptions) -> Vec<PointKnobs> {
    match options.index {
        IndexConfig::Hnsw { .. } => options
            .ef
            .iter()
            .map(|&ef| PointKnobs {
                ef: Some(ef),
                ..PointKnobs::default()
            })
            .collect(),
        IndexConfig::IvfPq { .. } => options
            .nprobe
            .iter()
            .map(|&nprobe| PointKnobs {
                nprobe: Some(nprobe),
                refine: options.refine,
                ..PointKnobs::default()
            })
            .collect(),
        IndexConfig::DiskAnn { .. } => options
            .search_l
            .iter()
            .map(|&search_l| PointKnobs {
                search_l: Some(search_l),
                beam: Some(options.beam),
                ..PointKnobs::default()
            })
            .collect(),
        _ => vec![PointKnobs::default()],
    }
}

/// Hands freed heap memory back to the operating system (glibc keeps it otherwise), so that
/// a later RSS reading shows what is in use.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs every query once, one at a time, with these knobs.
fn measure_point(
    collection: &crate::Collection,
    k: usize,
    knobs: PointKnobs,
    queries: &[Vec<f32>],
    truth: &[Vec<i32>],
) -> Result<BenchPoint> {
    let mut latencies = Latencies::with_capacity(queries.len());
    let mut recall_sum = 0.0;
    let mut disk = DiskPoint::default();
    let mut disk_queries = 0usize;
    for (query, expected) in queries.iter().zip(truth) {
        let mut request = SearchRequest::new(query.clone(), k);
        knobs.apply(&mut request);
        let response = latencies.time(|| collection.search(&request))?;
        if let Some(stats) = response.disk {
            disk.hops += f64::from(stats.hops);
            disk.blocks_read += f64::from(stats.blocks_read);
            disk.cache_hits += f64::from(stats.cache_hits);
            disk_queries += 1;
        }
        let expected = &expected[..k];
        let found = response
            .hits
            .iter()
            .filter(|hit| expected.contains(&(hit.id.as_u128() as i32)))
            .count();
        recall_sum += found as f64 / k as f64;
    }
    let summary = latency_summary(latencies);
    Ok(BenchPoint {
        knobs,
        recall: recall_sum / queries.len() as f64,
        qps: summary.qps,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        disk: (disk_queries > 0).then(|| {
            let n = disk_queries as f64;
            DiskPoint {
                hops: disk.hops / n,
                blocks_read: disk.blocks_read / n,
                cache_hits: disk.cache_hits / n,
            }
        }),
    })
}

/// Latencies of queries run one after the other.
struct Latencies {
    started: Instant,
    millis: Vec<f64>,
}

impl Latencies {
    fn with_capacity(n: usize) -> Latencies {
        Latencies {
            started: Instant::now(),
            millis: Vec::with_capacity(n),
        }
    }

    /// Runs and times one query.
    fn time<T>(&mut self, query: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = query();
        self.millis.push(started.elapsed().as_secs_f64() * 1e3);
        out
    }
}

/// Throughput and percentiles of a run.
struct LatencySummary {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn latency_summary(latencies: Latencies) -> LatencySummary {
    let total_s = latencies.started.elapsed().as_secs_f64();
    let mut sorted = latencies.millis;
    sorted.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(rank).copied().unwrap_or(0.0)
    };
    LatencySummary {
        qps: sorted.len() as f64 / total_s,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    }
}

/// Bytes of the files in the database's index folders.
fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for folder in std::fs::read_dir(dir.join("collections"))? {
        for file in std::fs::read_dir(folder?.path())? {
            total += file?.metadata()?.len();
        }
    }
    Ok(total)
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM:")
}

/// A size field of `/proc/self/status` in bytes, 0 where unknown.
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectivities_outside_zero_one_are_refused_before_any_work() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let options = BenchOptions {
                base: "missing.fvecs".into(),
                queries: "missing.fvecs".into(),
                ground_truth: "missing.ivecs".into(),
                metric: Metric::L2,
                index: IndexConfig::Flat {},
                ef: vec![10],
                nprobe: Vec::new(),
                refine: None,
                search_l: Vec::new(),
                beam: 4,
                direct: false,
                k: 10,
                max_queries: None,
                threads: 1,
                work_dir: None,
                filter_selectivity: vec![0.5, bad],
            };
            assert!(
                matches!(run(&options), Err(Error::InvalidArgument(m)) if m.contains("selectivity")),
                "{bad}"
            );
        }
    }
}
