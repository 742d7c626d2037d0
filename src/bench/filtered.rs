//! Filtered search in `quiver bench --filter-selectivity`: every base vector gets a synthetic
//! attribute `bucket`, uniform in `0..BUCKETS` and drawn from its row number, with an integer
//! payload index; selectivity `s` is the filter `{"bucket": {"$lt": s·BUCKETS}}`. Recall is
//! measured against an exact filtered brute force over the base file, computed here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{latency_summary, Latencies};
use crate::collection::Collection;
use crate::distance::MetricDistance;
use crate::error::Result;
use crate::filter::Filter;
use crate::index::{Neighbor, TopK};
use crate::query::SearchRequest;
use crate::rng::SplitMix;
use crate::types::Metric;
use crate::vecs::read_fvecs_record;

/// Distinct values of the synthetic attribute.
pub const BUCKETS: u64 = 10_000;
/// Name of the synthetic attribute.
pub const FIELD: &str = "bucket";

/// The synthetic attribute of base row `row`.
pub fn bucket_of(row: usize) -> u64 {
    // SplitMix64 seeded by the row: uniform, reproducible, independent of the vectors.
    SplitMix(row as u64).next() % BUCKETS
}

/// Metadata of base row `row`.
pub fn metadata_of(row: usize) -> Value {
    json!({ FIELD: bucket_of(row) })
}

/// The bucket bound of selectivity `s` (at least one bucket).
fn bound(selectivity: f64) -> u64 {
    ((selectivity * BUCKETS as f64).round() as u64).clamp(1, BUCKETS)
}

/// The filter of selectivity `s`.
pub fn filter_for(selectivity: f64) -> Filter {
    Filter::field(FIELD).lt(bound(selectivity))
}

/// One filtered operating point.
#[derive(Clone, Debug, Serialize)]
pub struct FilteredPoint {
    /// Fraction of documents the filter matches, as asked.
    pub selectivity: f64,
    /// Documents that actually match.
    pub matches: u64,
    /// The search knobs of this point.
    #[serde(flatten)]
    pub knobs: super::PointKnobs,
    /// Mean recall@k against exact filtered search.
    pub recall: f64,
    /// Queries per second, one query at a time.
    pub qps: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Queries answered exhaustively (exact).
    pub exhaustive: usize,
    /// How many queries each strategy served.
    pub strategies: BTreeMap<String, usize>,
}

/// Exact filtered top-k of every query for every selectivity (`[selectivity][query]` → row
/// numbers), by one streaming pass over the base file.
pub fn ground_truth(
    base: &Path,
    metric: Metric,
    queries: &[Vec<f32>],
    selectivities: &[f64],
    k: usize,
) -> Result<Vec<Vec<Vec<u32>>>> {
    const CHUNK: usize = 16_384;
    let distance = MetricDistance::new(metric);
    let dim = queries[0].len();
    let prepared: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| distance.prepare(q).unwrap_or_else(|| q.clone()))
        .collect();
    let mut tops: Vec<Vec<TopK>> = selectivities
        .iter()
        .map(|_| queries.iter().map(|_| TopK::new(k)).collect())
        .collect();
    let mut input = BufReader::new(File::open(base)?);
    let mut first_row = 0;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            match read_fvecs_record(&mut input, dim)? {
                Some(v) => chunk.push(distance.prepare(&v).unwrap_or(v)),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let buckets: Vec<u64> = (0..chunk.len()).map(|i| bucket_of(first_row + i)).collect();
        for (s, per_query) in selectivities.iter().zip(&mut tops) {
            let limit = bound(*s);
            per_query
                .par_iter_mut()
                .zip(&prepared)
                .for_each(|(top, q)| {
                    for (i, v) in chunk.iter().enumerate() {
                        if buckets[i] < limit {
                            let row = first_row + i;
                            top.push(Neighbor {
                                id: row as u32,
                                uuid: Uuid::from_u128(row as u128),
                                distance: distance.distance(q, v),
                            });
                        }
                    }
                });
        }
        first_row += chunk.len();
    }
    Ok(tops
        .into_iter()
        .map(|per_query| {
            per_query
                .into_iter()
                .map(|top| top.into_sorted().iter().map(|n| n.id).collect())
                .collect()
        })
        .collect())
}

/// Runs every query with the filter of `selectivity` (and `knobs`), one at a time.
pub fn measure(
    collection: &Collection,
    k: usize,
    knobs: super::PointKnobs,
    selectivity: f64,
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
) -> Result<FilteredPoint> {
    let filter = filter_for(selectivity);
    let matches = collection.count_where(&filter)?;
    let mut latencies = Latencies::with_capacity(queries.len());
    let mut recall_sum = 0.0;
    let mut exhaustive = 0;
    let mut strategies = BTreeMap::new();
    for (query, expected) in queries.iter().zip(truth) {
        let mut request = SearchRequest::new(query.clone(), k).with_filter(filter.clone());
        knobs.apply(&mut request);
        let response = latencies.time(|| collection.search(&request))?;
        let found = response
            .hits
            .iter()
            .filter(|hit| expected.contains(&(hit.id.as_u128() as u32)))
            .count();
        recall_sum += found as f64 / expected.len().max(1) as f64;
        exhaustive += usize::from(response.exhaustive);
        *strategies.entry(response.strategy).or_insert(0) += 1;
    }
    let summary = latency_summary(latencies);
    Ok(FilteredPoint {
        selectivity,
        matches,
        knobs,
        recall: recall_sum / queries.len() as f64,
        qps: summary.qps,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        exhaustive,
        strategies,
    })
}

/// Time of one `delete_where` of a fraction of the documents.
#[derive(Clone, Debug, Serialize)]
pub struct DeleteWhere {
    /// Fraction of the documents the filter matches, as asked.
    pub selectivity: f64,
    /// Documents deleted.
    pub deleted: usize,
    /// Seconds the call took (one transaction, indexes updated).
    pub seconds: f64,
}

/// Deletes the documents of selectivity `s` and times it.
pub fn delete_where(collection: &Collection, selectivity: f64) -> Result<DeleteWhere> {
    let started = Instant::now();
    let deleted = collection.delete_where(&filter_for(selectivity))?;
    Ok(DeleteWhere {
        selectivity,
        deleted,
        seconds: started.elapsed().as_secs_f64(),
    })
}
