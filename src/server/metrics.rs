//! Prometheus metrics of the HTTP server: requests and latency histograms per route, plus the
//! collections' sizes and index stats, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

use crate::db::Database;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: cumulative counts per bucket, sum and count.
#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// Request counters and latency histograms, keyed by route (the matched path pattern).
#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (method, route) → latency.
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Metrics {
    /// Records one answered request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        self.latency
            .lock()
            .entry((method.to_string(), route.to_string()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics in Prometheus text format, with the collections of `db` described.
    pub fn render(&self, db: &Database) -> String {
        let mut out = String::new();
        out.push_str("# HELP quiver_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE quiver_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "quiver_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP quiver_http_request_duration_seconds Latency of HTTP requests.\n");
        out.push_str("# TYPE quiver_http_request_duration_seconds histogram\n");
        for ((method, route), h) in self.latency.lock().iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (bound, count) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "quiver_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "quiver_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        render_collections(&mut out, db);
        out
    }
}

/// Gauges per collection: documents, vector index size and memory, keyword index size.
fn render_collections(out: &mut String, db: &Database) {
    let gauges = [
        (
            "quiver_collection_documents",
            "Documents in the collection.",
        ),
        (
            "quiver_vector_index_vectors",
            "Vectors held by the vector index.",
        ),
        (
            "quiver_vector_index_memory_bytes",
            "Approximate memory of the vector index.",
        ),
        (
            "quiver_changelog_entries",
            "Change-log entries not yet trimmed by a checkpoint.",
        ),
        (
            "quiver_keyword_index_documents",
            "Documents held by the keyword index.",
        ),
        (
            "quiver_keyword_index_disk_bytes",
            "Disk bytes of the keyword index.",
        ),
    ];
    let infos: Vec<_> = db
        .list_collections()
        .into_iter()
        .filter_map(|name| db.collection(&name).ok()?.info().ok())
        .collect();
    for (metric, help) in gauges {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for info in &infos {
            let value = match metric {
                "quiver_collection_documents" => Some(info.count),
                "quiver_vector_index_vectors" => Some(info.vector_index.len as u64),
                "quiver_vector_index_memory_bytes" => Some(info.vector_index.memory_bytes as u64),
                "quiver_changelog_entries" => Some(info.changelog_entries),
                "quiver_keyword_index_documents" => {
                    info.keyword_index.as_ref().map(|k| k.documents)
                }
                _ => info.keyword_index.as_ref().map(|k| k.disk_bytes),
            };
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "{metric}{{collection=\"{}\"}} {value}",
                    escape(&info.name)
                );
            }
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.0007);
        h.observe(0.3);
        assert_eq!(h.buckets[0], 0, "0.5 ms bucket");
        assert_eq!(h.buckets[1], 1, "1 ms bucket");
        assert_eq!(h.buckets[9], 2, "500 ms bucket");
        assert_eq!(h.count, 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
