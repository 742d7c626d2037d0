//! Black-box tests of the `quiver` binary: every test runs the real executable in its own
//! temporary directory and checks what it prints against an independent reference computed here
//! (brute-force nearest neighbours in `f64`, documents kept in the test).
//!
//! Distance conventions of the reference: `l2` is the squared Euclidean distance, `cosine` is
//! `1 − cos`, `dot` is `−a·b`; smaller is closer; ties are broken by id (UUID string order).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");
/// Guard against a hanging process: no invocation in this file should take more than a second.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Tolerance on distances: relative to `max(1, |reference|)`.
const DIST_TOL: f64 = 1e-4;
/// Two reference distances closer than this (relatively) may legitimately swap places because
/// the binary computes in `f32`; exactly equal ones (duplicate vectors) may not.
const NEAR_TIE: f64 = 1e-5;

// ----- running the binary ----------------------------------------------------------------------

/// What one invocation did.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    what: String,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "`quiver {}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

fn spawn(args: &[&str], stdin: bool) -> Child {
    Command::new(QUIVER)
        .args(args)
        .env_remove("QUIVER_DB")
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the quiver binary")
}

/// Waits for `child` (reading its output on other threads so it never blocks on a full pipe),
/// killing it and failing the test if it runs longer than `timeout`.
fn finish(mut child: Child, what: String, timeout: Duration) -> Outcome {
    fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).ok();
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = reader(child.stdout.take().expect("stdout is piped"));
    let stderr = reader(child.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            panic!("`quiver {what}` did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        what,
    }
}

/// Runs `quiver ARGS` (no `--db`).
fn run_raw(args: &[&str]) -> Outcome {
    finish(spawn(args, false), args.join(" "), TIMEOUT)
}

fn db_args<'a>(db: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--db", db.to_str().expect("UTF-8 temp path")];
    all.extend_from_slice(args);
    all
}

/// Runs `quiver --db DB ARGS`.
fn run(db: &Path, args: &[&str]) -> Outcome {
    run_raw(&db_args(db, args))
}

/// Runs `quiver --db DB ARGS` with `input` on standard input.
fn run_with_stdin(db: &Path, args: &[&str], input: &str) -> Outcome {
    let all = db_args(db, args);
    let mut child = spawn(&all, true);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_string();
    let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
    let outcome = finish(child, all.join(" "), TIMEOUT);
    writer.join().expect("stdin writer").expect("writing stdin");
    outcome
}

/// Asserts success and returns stdout.
fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(out.status.success(), "expected success: {}", out.describe());
    out.stdout
}

/// Asserts that the command failed the CLI way: non-zero exit, an `error:` line on stderr, and
/// nothing on stdout.
fn assert_cli_error(out: &Outcome) {
    assert!(
        !out.status.success(),
        "expected failure: {}",
        out.describe()
    );
    assert!(
        out.stderr.lines().any(|l| l.starts_with("error:")),
        "stderr has no `error:` line: {}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty(),
        "a failed command printed results: {}",
        out.describe()
    );
}

/// Asserts failure (see [`assert_cli_error`]) and returns the outcome.
fn fail(db: &Path, args: &[&str]) -> Outcome {
    let out = run(db, args);
    assert_cli_error(&out);
    out
}

fn count(db: &Path, name: &str) -> u64 {
    let out = ok(db, &["count", name]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("count printed {out:?}"))
}

fn info(db: &Path, name: &str) -> (Value, Outcome) {
    let out = run(db, &["collection", "info", name]);
    assert!(
        out.status.success(),
        "collection info failed: {}",
        out.describe()
    );
    let value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("collection info is not JSON ({e}): {}", out.describe()));
    (value, out)
}

fn list(db: &Path) -> Vec<String> {
    ok(db, &["collection", "list"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn create(db: &Path, name: &str, dim: usize, metric: &str) {
    let out = ok(
        db,
        &[
            "collection",
            "create",
            name,
            "--dim",
            &dim.to_string(),
            "--metric",
            metric,
        ],
    );
    assert!(out.contains(name), "create printed {out:?}");
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

// ----- test data -------------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic generator, so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// A document as the test knows it.
#[derive(Clone, Debug)]
struct Doc {
    id: Uuid,
    vector: Vec<f32>,
    metadata: Value,
    text: Option<String>,
}

impl Doc {
    fn json_line(&self) -> String {
        let mut line = json!({ "id": self.id.to_string(), "vector": self.vector });
        if !self.metadata.is_null() {
            line["metadata"] = self.metadata.clone();
        }
        if let Some(text) = &self.text {
            line["text"] = json!(text);
        }
        line.to_string()
    }
}

/// `n` random documents; every 50th repeats an earlier vector exactly (an exact tie under every
/// metric) and, for cosine, every 50th (offset 25) is an earlier vector scaled by 2 (an exact tie
/// under cosine). Even documents have text; all have metadata.
fn random_docs(rng: &mut Rng, n: usize, dim: usize, metric: &str) -> Vec<Doc> {
    let mut docs: Vec<Doc> = Vec::with_capacity(n);
    for i in 0..n {
        let vector = if i >= 10 && i % 50 == 0 {
            docs[i - 10].vector.clone()
        } else if metric == "cosine" && i >= 20 && i % 50 == 25 {
            docs[i - 20].vector.iter().map(|x| x * 2.0).collect()
        } else {
            rng.vector(dim)
        };
        docs.push(Doc {
            id: rng.uuid(),
            vector,
            metadata: json!({ "i": i, "tag": format!("t{}", i % 3), "nested": { "odd": i % 2 == 1 } }),
            text: (i % 2 == 0).then(|| format!("document number {i}")),
        });
    }
    docs
}

fn write_jsonl(path: &Path, docs: &[Doc]) {
    let mut text = String::new();
    for doc in docs {
        text.push_str(&doc.json_line());
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

/// Writes `docs` to `file` and imports them into `name`; asserts `imported N`.
fn import_docs(db: &Path, name: &str, file: &Path, docs: &[Doc]) {
    write_jsonl(file, docs);
    let out = ok(db, &["import", name, path_str(file)]);
    assert_eq!(out.trim(), format!("imported {}", docs.len()));
}

// ----- the reference ---------------------------------------------------------------------------

fn reference_distance(metric: &str, q: &[f32], v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    match metric {
        "l2" => q
            .iter()
            .zip(v)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum(),
        "dot" => -dot,
        "cosine" => {
            let nq: f64 = q.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|&b| f64::from(b).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (nq * nv)
        }
        other => panic!("unknown metric {other}"),
    }
}

/// Every document, nearest first, ties by id string.
fn brute_force(docs: &[Doc], metric: &str, q: &[f32]) -> Vec<(Uuid, f64)> {
    let mut all: Vec<(Uuid, f64)> = docs
        .iter()
        .map(|d| (d.id, reference_distance(metric, q, &d.vector)))
        .collect();
    all.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    });
    all
}

/// `(id, distance)` of each hit object.
fn hit_pairs(hits: &[Value]) -> Vec<(Uuid, f64)> {
    hits.iter()
        .map(|h| {
            let id = h["id"]
                .as_str()
                .unwrap_or_else(|| panic!("hit without id: {h}"));
            let distance = h["distance"]
                .as_f64()
                .unwrap_or_else(|| panic!("hit without distance: {h}"));
            (Uuid::parse_str(id).expect("hit id is a UUID"), distance)
        })
        .collect()
}

/// Checks hits against the brute-force top `k`: same length, same ids in the same order (two
/// hits whose reference distances differ by less than `NEAR_TIE` may swap, exact ties may not),
/// and distances within `DIST_TOL`.
fn assert_matches_brute_force(
    got: &[(Uuid, f64)],
    docs: &[Doc],
    metric: &str,
    q: &[f32],
    k: usize,
    context: &str,
) {
    let expected = brute_force(docs, metric, q);
    let reference: HashMap<Uuid, f64> = expected.iter().copied().collect();
    let expected = &expected[..k.min(expected.len())];
    let show =
        || format!("{context}: metric {metric}, k {k}\n got      {got:?}\n expected {expected:?}");
    assert_eq!(
        got.len(),
        expected.len(),
        "wrong number of hits; {}",
        show()
    );
    let distinct: HashSet<Uuid> = got.iter().map(|h| h.0).collect();
    assert_eq!(distinct.len(), got.len(), "duplicate ids; {}", show());
    for (i, (&(id, distance), &(want_id, want_distance))) in got.iter().zip(expected).enumerate() {
        let Some(&truth) = reference.get(&id) else {
            panic!("hit {i} ({id}) is not a document; {}", show());
        };
        assert!(
            (distance - truth).abs() <= DIST_TOL * truth.abs().max(1.0),
            "hit {i} ({id}) has distance {distance}, reference {truth}; {}",
            show()
        );
        if id != want_id {
            let near_tie = truth != want_distance
                && (truth - want_distance).abs() <= NEAR_TIE * want_distance.abs().max(1.0);
            assert!(
                near_tie,
                "hit {i} is {id} (reference {truth}), expected {want_id} ({want_distance}); {}",
                show()
            );
        }
        if i > 0 {
            assert!(
                got[i - 1].1 <= distance,
                "hits are not sorted by distance; {}",
                show()
            );
        }
    }
}

/// Runs `search NAME --vector Q --k K` and checks it against the brute force.
fn assert_search_matches(
    db: &Path,
    name: &str,
    docs: &[Doc],
    metric: &str,
    q: &[f32],
    k: usize,
    context: &str,
) {
    let vector = serde_json::to_string(q).unwrap();
    let out = ok(
        db,
        &["search", name, "--vector", &vector, "--k", &k.to_string()],
    );
    let hits = json_lines(&out);
    for hit in &hits {
        let keys: Vec<&String> = hit.as_object().expect("hit is an object").keys().collect();
        assert!(
            keys.iter()
                .all(|k| ["id", "distance", "strategy", "exhaustive"].contains(&k.as_str())),
            "a hit without --include carries stored fields: {hit}"
        );
        assert!(
            hit["strategy"].is_string() && hit["exhaustive"].is_boolean(),
            "a hit line says how it was found: {hit}"
        );
    }
    assert_matches_brute_force(&hit_pairs(&hits), docs, metric, q, k, context);
}

fn vector_of(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a vector: {value}"))
        .iter()
        .map(|x| x.as_f64().expect("vector component is a number") as f32)
        .collect()
}

/// Asserts `get NAME ID` prints exactly `doc`.
fn assert_stored(db: &Path, name: &str, doc: &Doc) {
    let out = ok(db, &["get", name, &doc.id.to_string()]);
    let got: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("get printed {out:?}: {e}"));
    assert_eq!(got["id"], json!(doc.id.to_string()), "{got}");
    assert_eq!(
        vector_of(&got["vector"]),
        doc.vector,
        "vector of {}",
        doc.id
    );
    let metadata = if doc.metadata.is_null() {
        json!({})
    } else {
        doc.metadata.clone()
    };
    assert_eq!(got["metadata"], metadata, "metadata of {}", doc.id);
    match &doc.text {
        Some(text) => assert_eq!(got["text"], json!(text), "text of {}", doc.id),
        None => assert!(
            got.get("text").is_none_or(Value::is_null),
            "unexpected text: {got}"
        ),
    }
}

fn assert_absent(db: &Path, name: &str, id: Uuid) {
    let out = fail(db, &["get", name, &id.to_string()]);
    assert!(out.stderr.contains("not found"), "{}", out.describe());
}

// ----- 1. collections --------------------------------------------------------------------------

#[test]
fn collection_create_list_info_drop_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    assert!(list(&db).is_empty());

    create(&db, "beta", 4, "l2");
    let out = ok(
        &db,
        &[
            "collection",
            "create",
            "alpha",
            "--dim",
            "3",
            "--metric",
            "cosine",
            "--index",
            "flat",
            "--text",
            "--payload-index",
            "year:integer",
            "--payload-index",
            "author.name:keyword",
        ],
    );
    assert!(out.contains("alpha"));
    assert_eq!(
        list(&db),
        ["alpha", "beta"],
        "list is sorted, one name per line"
    );

    let (alpha, _) = info(&db, "alpha");
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(alpha["count"], 0);
    assert_eq!(alpha["config"]["dim"], 3);
    assert_eq!(alpha["config"]["metric"], "cosine");
    assert_eq!(alpha["config"]["index"]["kind"], "flat");
    assert_eq!(alpha["config"]["text_indexed"], true);
    assert_eq!(
        alpha["config"]["payload_fields"],
        json!([{ "path": "year", "kind": "integer" }, { "path": "author.name", "kind": "keyword" }])
    );
    assert_eq!(alpha["vector_index"]["len"], 0);
    assert_eq!(alpha["vector_index"]["watermark"], 0);
    assert!(
        alpha["vector_index"]["recovery"]["how"].is_string(),
        "{alpha}"
    );

    // Fill beta, then drop it: its documents and index files go with it.
    let mut rng = Rng(1);
    let docs = random_docs(&mut rng, 5, 4, "l2");
    import_docs(&db, "beta", &tmp.path().join("beta.jsonl"), &docs);
    let (beta, _) = info(&db, "beta");
    assert_eq!(beta["count"], 5);
    assert_eq!(beta["config"]["text_indexed"], false);
    assert_eq!(beta["config"]["payload_fields"], json!([]));
    assert_eq!(beta["vector_index"]["len"], 5);
    let folders_before = fs::read_dir(db.join("collections")).unwrap().count();
    assert_eq!(folders_before, 2, "one index folder per collection");

    let out = ok(&db, &["collection", "drop", "beta"]);
    assert!(out.contains("beta"));
    assert_eq!(list(&db), ["alpha"]);
    assert_eq!(
        fs::read_dir(db.join("collections")).unwrap().count(),
        1,
        "drop removes the index folder"
    );
    fail(&db, &["collection", "info", "beta"]);
    fail(&db, &["count", "beta"]);
    fail(&db, &["collection", "drop", "beta"]);

    // Re-created with another configuration: empty, and the old documents are gone.
    create(&db, "beta", 8, "dot");
    assert_eq!(count(&db, "beta"), 0);
    let (beta, _) = info(&db, "beta");
    assert_eq!(beta["config"]["dim"], 8);
    assert_eq!(beta["config"]["metric"], "dot");
    assert_eq!(beta["vector_index"]["len"], 0);
    assert_absent(&db, "beta", docs[0].id);
    let out = ok(
        &db,
        &[
            "search",
            "beta",
            "--vector",
            "[1,0,0,0,0,0,0,0]",
            "--k",
            "5",
        ],
    );
    assert!(
        out.trim().is_empty(),
        "search on a re-created collection found {out}"
    );
    let new_docs = random_docs(&mut rng, 4, 8, "dot");
    import_docs(&db, "beta", &tmp.path().join("beta2.jsonl"), &new_docs);
    assert_eq!(count(&db, "beta"), 4);
    assert_eq!(list(&db), ["alpha", "beta"]);
    assert!(run(&db, &["check"]).status.success());
}

#[test]
fn collection_create_rejects_bad_names_dims_metrics_and_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    create(&db, "docs", 4, "l2");
    let out = fail(
        &db,
        &[
            "collection",
            "create",
            "docs",
            "--dim",
            "4",
            "--metric",
            "l2",
        ],
    );
    assert!(out.stderr.contains("already exists"), "{}", out.describe());
    // A duplicate with another configuration does not replace the original.
    fail(
        &db,
        &[
            "collection",
            "create",
            "docs",
            "--dim",
            "9",
            "--metric",
            "dot",
        ],
    );
    let (docs, _) = info(&db, "docs");
    assert_eq!(docs["config"]["dim"], 4);
    assert_eq!(docs["config"]["metric"], "l2");

    let long = "x".repeat(65);
    for name in ["../x", "a/b", "", long.as_str(), "-a", "a b", "a.b", "é"] {
        let out = fail(
            &db,
            // `--` so that clap passes names such as "-a" through as the positional name.
            &[
                "collection",
                "create",
                "--dim",
                "4",
                "--metric",
                "l2",
                "--",
                name,
            ],
        );
        assert!(
            out.stderr.contains("invalid name"),
            "name {name:?}: {}",
            out.describe()
        );
    }
    assert!(
        !tmp.path().join("x").exists(),
        "a path-like name escaped the database folder"
    );
    assert!(!db.join("x").exists() && !db.join("a").exists());

    for dim in ["0", "65537", "-1", "four"] {
        fail(
            &db,
            &["collection", "create", "d", "--dim", dim, "--metric", "l2"],
        );
    }
    for metric in ["manhattan", "", "cos"] {
        fail(
            &db,
            &[
                "collection",
                "create",
                "m",
                "--dim",
                "4",
                "--metric",
                metric,
            ],
        );
    }
    for index in ["annoy", "nope"] {
        fail(
            &db,
            &[
                "collection",
                "create",
                "i",
                "--dim",
                "4",
                "--metric",
                "l2",
                "--index",
                index,
            ],
        );
    }
    // IVF-PQ: bytes per code must divide the dimension.
    fail(
        &db,
        &[
            "collection",
            "create",
            "i",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--index",
            "ivfpq",
            "--pq-m",
            "3",
        ],
    );
    for field in ["year", "year:date", ":integer", "a..b:keyword"] {
        fail(
            &db,
            &[
                "collection",
                "create",
                "p",
                "--dim",
                "4",
                "--metric",
                "l2",
                "--payload-index",
                field,
            ],
        );
    }
    fail(
        &db,
        &[
            "collection",
            "create",
            "p",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--payload-index",
            "a:keyword",
            "--payload-index",
            "a:integer",
        ],
    );
    assert_eq!(
        list(&db),
        ["docs"],
        "a rejected create left a collection behind"
    );

    // The boundaries themselves are accepted.
    let longest = "y".repeat(64);
    create(&db, &longest, 1, "cosine");
    create(&db, "wide", 65_536, "dot");
    create(&db, "L2-Upper_0", 2, "L2");
    assert_eq!(list(&db), ["L2-Upper_0", "docs", "wide", longest.as_str()]);
    let (wide, _) = info(&db, "wide");
    assert_eq!(wide["config"]["dim"], 65_536);
    let (upper, _) = info(&db, "L2-Upper_0");
    assert_eq!(upper["config"]["metric"], "l2");

    // Commands on a missing collection fail the same way.
    fail(&db, &["collection", "info", "missing"]);
    fail(&db, &["collection", "drop", "missing"]);
    fail(&db, &["count", "missing"]);
    fail(&db, &["search", "missing", "--vector", "[1,2]"]);
    fail(&db, &["check", "missing"]);
    // --db is required (except for demo).
    assert_cli_error(&run_raw(&["collection", "list"]));
}

/// A collection that was created and never written must reopen cleanly: every later command
/// (in a new process) should not warn about rebuilding its index.
#[test]
fn reopening_an_empty_collection_prints_no_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    create(&db, "empty", 4, "l2");
    for args in [
        &["collection", "list"][..],
        &["count", "empty"],
        &["collection", "info", "empty"],
    ] {
        let out = run(&db, args);
        assert!(out.status.success(), "{}", out.describe());
        assert!(
            out.stderr.is_empty(),
            "a clean reopen printed to stderr: {}",
            out.describe()
        );
    }
    assert!(run(&db, &["check"]).status.success());
}

// ----- 2. documents ----------------------------------------------------------------------------

#[test]
fn import_get_count_upsert_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    create(&db, "c", 6, "l2");
    let mut rng = Rng(2);
    let mut docs = random_docs(&mut rng, 40, 6, "l2");
    docs[3].metadata = Value::Null; // absent metadata reads back as {}
    docs[5].metadata = json!({ "s": "ünïcødé \"quoted\" \n newline", "n": null, "f": 1.5, "big": 9007199254740993u64, "arr": [1, [2], { "x": false }] });
    docs[5].text = Some("text with\ttabs, \"quotes\" and ✓".into());
    let file = tmp.path().join("docs.jsonl");
    write_jsonl(&file, &docs);
    let out = ok(&db, &["import", "c", path_str(&file), "--batch", "7"]);
    assert_eq!(out.trim(), "imported 40");
    assert_eq!(count(&db, "c"), 40);
    for doc in &docs {
        assert_stored(&db, "c", doc);
    }

    // Documents without an id get a fresh one; blank lines are skipped; "-" reads stdin.
    let input = "{\"vector\": [1, 2, 3, 4, 5, 6]}\n\n   \n{\"vector\": [0, 0, 0, 0, 0, 0.5], \"metadata\": {\"k\": 1}}\n";
    let out = run_with_stdin(&db, &["import", "c", "-"], input);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stdout.trim(), "imported 2");
    assert_eq!(count(&db, "c"), 42);
    for (vector, metadata) in [
        (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], json!({})),
        (vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.5], json!({ "k": 1 })),
    ] {
        let query = serde_json::to_string(&vector).unwrap();
        let hits = json_lines(&ok(&db, &["search", "c", "--vector", &query, "--k", "1"]));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0]["distance"].as_f64(), Some(0.0), "{}", hits[0]);
        let id = Uuid::parse_str(hits[0]["id"].as_str().unwrap()).unwrap();
        assert!(docs.iter().all(|d| d.id != id), "a generated id collides");
        assert!(!id.is_nil());
        let doc = Doc {
            id,
            vector,
            metadata,
            text: None,
        };
        assert_stored(&db, "c", &doc);
        docs.push(doc);
    }
    assert_ne!(docs[40].id, docs[41].id);

    // Re-importing an id replaces the whole document (no merge: dropped keys and text vanish).
    let mut replaced = docs[0].clone();
    replaced.vector = vec![9.0, 9.0, 9.0, 9.0, 9.0, 9.0];
    replaced.metadata = json!({ "replaced": true });
    replaced.text = None;
    import_docs(
        &db,
        "c",
        &tmp.path().join("replace.jsonl"),
        std::slice::from_ref(&replaced),
    );
    assert_eq!(count(&db, "c"), 42);
    assert_stored(&db, "c", &replaced);
    let hits = json_lines(&ok(
        &db,
        &["search", "c", "--vector", "[9,9,9,9,9,9]", "--k", "1"],
    ));
    assert_eq!(
        hit_pairs(&hits),
        [(replaced.id, 0.0)],
        "search does not see the replacement"
    );
    docs[0] = replaced;

    // The same id twice in one batch: the last line wins, counted once.
    let mut first = docs[1].clone();
    first.vector = vec![0.5; 6];
    let mut second = docs[1].clone();
    second.vector = vec![-0.5; 6];
    second.text = Some("second".into());
    import_docs(
        &db,
        "c",
        &tmp.path().join("twice.jsonl"),
        &[first, second.clone()],
    );
    assert_eq!(count(&db, "c"), 42);
    assert_stored(&db, "c", &second);
    docs[1] = second;

    // delete counts the ids that existed; missing and repeated ids are ignored.
    let missing = Uuid::from_u128(0xdead_beef);
    let (a, b) = (docs[10].id.to_string(), docs[11].id.to_string());
    let out = ok(&db, &["delete", "c", &a, &missing.to_string(), &b, &a]);
    assert_eq!(out.trim(), "deleted 2");
    assert_eq!(count(&db, "c"), 40);
    assert_absent(&db, "c", docs[10].id);
    assert_absent(&db, "c", docs[11].id);
    assert_eq!(
        ok(&db, &["delete", "c", &a, &missing.to_string()]).trim(),
        "deleted 0"
    );
    // One malformed id: nothing is deleted.
    let c = docs[12].id.to_string();
    let out = fail(&db, &["delete", "c", &c, "not-a-uuid"]);
    assert!(out.stderr.contains("not-a-uuid"), "{}", out.describe());
    assert_eq!(count(&db, "c"), 40);
    assert_stored(&db, "c", &docs[12]);
    fail(&db, &["get", "c", "not-a-uuid"]);
    assert_absent(&db, "c", missing);

    // The remaining documents are exactly what a search over everything returns.
    let remaining: Vec<Doc> = docs
        .iter()
        .filter(|d| d.id != docs[10].id && d.id != docs[11].id)
        .cloned()
        .collect();
    assert_eq!(remaining.len(), 40);
    let q = rng.vector(6);
    assert_search_matches(&db, "c", &remaining, "l2", &q, 100, "after deletes");
    assert!(run(&db, &["check", "c"]).status.success());
}

// ----- 3. import errors ------------------------------------------------------------------------

#[test]
fn import_errors_leave_the_bad_batch_unapplied() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let dim = 4;
    let cases: Vec<(&str, &str, String)> = vec![
        ("malformed", "l2", "{\"vector\": [1, 2, 3, 4]".to_string()),
        ("not_json", "l2", "hello".to_string()),
        ("wrong_dim", "l2", "{\"vector\": [1, 2, 3]}".to_string()),
        (
            "too_long",
            "l2",
            "{\"vector\": [1, 2, 3, 4, 5]}".to_string(),
        ),
        ("empty_vector", "l2", "{\"vector\": []}".to_string()),
        (
            "string_component",
            "l2",
            "{\"vector\": [1, \"NaN\", 3, 4]}".to_string(),
        ),
        (
            "string_vector",
            "l2",
            "{\"vector\": \"1,2,3,4\"}".to_string(),
        ),
        (
            "overflow_to_infinity",
            "l2",
            "{\"vector\": [1, 1e39, 3, 4]}".to_string(),
        ),
        (
            "metadata_array",
            "l2",
            "{\"vector\": [1, 2, 3, 4], \"metadata\": [1, 2]}".to_string(),
        ),
        (
            "metadata_string",
            "l2",
            "{\"vector\": [1, 2, 3, 4], \"metadata\": \"x\"}".to_string(),
        ),
        (
            "unknown_field",
            "l2",
            "{\"vector\": [1, 2, 3, 4], \"colour\": \"red\"}".to_string(),
        ),
        (
            "bad_id",
            "l2",
            "{\"id\": \"nope\", \"vector\": [1, 2, 3, 4]}".to_string(),
        ),
        ("missing_vector", "l2", "{\"metadata\": {}}".to_string()),
        (
            "text_not_string",
            "l2",
            "{\"vector\": [1, 2, 3, 4], \"text\": 5}".to_string(),
        ),
        (
            "zero_vector_cosine",
            "cosine",
            "{\"vector\": [0, 0, 0, 0]}".to_string(),
        ),
    ];
    let mut rng = Rng(3);
    for (name, metric, bad) in &cases {
        create(&db, name, dim, metric);
        let docs = random_docs(&mut rng, 30, dim, metric);
        let mut lines: Vec<String> = docs.iter().map(Doc::json_line).collect();
        lines[24] = bad.clone(); // line 25: the third batch of 10
        let file = tmp.path().join(format!("{name}.jsonl"));
        fs::write(&file, lines.join("\n") + "\n").unwrap();
        let out = fail(&db, &["import", name, path_str(&file), "--batch", "10"]);
        assert!(
            out.stderr.contains("line 25:"),
            "case {name}: stderr does not name line 25: {}",
            out.describe()
        );
        assert_eq!(
            count(&db, name),
            20,
            "case {name}: the first two batches must stay, the third must not"
        );
        for doc in &docs[..20] {
            assert_stored(&db, name, doc);
        }
        for doc in docs[20..24].iter().chain(&docs[25..]) {
            assert_absent(&db, name, doc.id);
        }
        let (value, _) = info(&db, name);
        assert_eq!(
            value["vector_index"]["len"], 20,
            "case {name}: the index holds documents of a failed batch"
        );
        // Searching over everything returns exactly the 20 committed documents.
        let q = serde_json::to_string(&rng.vector(dim)).unwrap();
        let hits = hit_pairs(&json_lines(&ok(
            &db,
            &["search", name, "--vector", &q, "--k", "100"],
        )));
        let ids: HashSet<Uuid> = hits.iter().map(|h| h.0).collect();
        assert_eq!(
            ids,
            docs[..20].iter().map(|d| d.id).collect::<HashSet<_>>(),
            "case {name}"
        );
    }

    // Other import failures.
    fail(
        &db,
        &[
            "import",
            "malformed",
            path_str(&tmp.path().join("missing.jsonl")),
        ],
    );
    fail(
        &db,
        &[
            "import",
            "no_such_collection",
            path_str(&tmp.path().join("malformed.jsonl")),
        ],
    );
    let file = tmp.path().join("malformed.jsonl");
    fail(
        &db,
        &["import", "malformed", path_str(&file), "--batch", "0"],
    );
    assert_eq!(count(&db, "malformed"), 20);
    assert!(run(&db, &["check"]).status.success());
}

// ----- 4. search -------------------------------------------------------------------------------

#[test]
fn search_matches_brute_force_for_every_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(4);
    for (metric, dim) in [
        ("cosine", 16),
        ("l2", 16),
        ("dot", 16),
        ("l2", 7),
        ("cosine", 31),
    ] {
        let name = format!("{metric}_{dim}");
        create(&db, &name, dim, metric);
        let docs = random_docs(&mut rng, 300, dim, metric);
        import_docs(&db, &name, &tmp.path().join(format!("{name}.jsonl")), &docs);
        let mut queries: Vec<Vec<f32>> = (0..4).map(|_| rng.vector(dim)).collect();
        // A stored vector that is repeated exactly (docs 40 and 50): exact ties at the top.
        assert_eq!(docs[40].vector, docs[50].vector);
        queries.push(docs[40].vector.clone());
        for (qi, q) in queries.iter().enumerate() {
            for k in [1, 10, 50] {
                assert_search_matches(
                    &db,
                    &name,
                    &docs,
                    metric,
                    q,
                    k,
                    &format!("{name} query {qi}"),
                );
            }
        }
        // k larger than the collection returns everything.
        assert_search_matches(
            &db,
            &name,
            &docs,
            metric,
            &queries[0],
            10_000,
            &format!("{name} k=10000"),
        );
    }
}

#[test]
fn search_include_returns_stored_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(5);
    create(&db, "c", 16, "cosine");
    let docs = random_docs(&mut rng, 120, 16, "cosine");
    import_docs(&db, "c", &tmp.path().join("c.jsonl"), &docs);
    let by_id: HashMap<Uuid, &Doc> = docs.iter().map(|d| (d.id, d)).collect();
    let q = rng.vector(16);
    let vector = serde_json::to_string(&q).unwrap();
    for include in [
        "metadata,text,vector",
        "metadata",
        "text",
        "vector",
        "vector,metadata",
    ] {
        let out = ok(
            &db,
            &[
                "search",
                "c",
                "--vector",
                &vector,
                "--k",
                "20",
                "--include",
                include,
            ],
        );
        let hits = json_lines(&out);
        assert_matches_brute_force(&hit_pairs(&hits), &docs, "cosine", &q, 20, include);
        for hit in &hits {
            let doc = by_id[&Uuid::parse_str(hit["id"].as_str().unwrap()).unwrap()];
            if include.contains("metadata") {
                assert_eq!(hit["metadata"], doc.metadata, "{include}: {hit}");
            } else {
                assert!(hit.get("metadata").is_none(), "{include}: {hit}");
            }
            if include.contains("vector") {
                // The stored vector as written, not the normalised copy the index holds.
                assert_eq!(vector_of(&hit["vector"]), doc.vector, "{include}: {hit}");
            } else {
                assert!(hit.get("vector").is_none(), "{include}: {hit}");
            }
            match (&doc.text, include.contains("text")) {
                (Some(text), true) => assert_eq!(hit["text"], json!(text), "{include}: {hit}"),
                _ => assert!(
                    hit.get("text").is_none_or(Value::is_null),
                    "{include}: {hit}"
                ),
            }
        }
    }
    fail(
        &db,
        &[
            "search",
            "c",
            "--vector",
            &vector,
            "--include",
            "metadata,colour",
        ],
    );
}

#[test]
fn search_requests_file_answers_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(6);
    create(&db, "c", 12, "l2");
    let docs = random_docs(&mut rng, 200, 12, "l2");
    import_docs(&db, "c", &tmp.path().join("c.jsonl"), &docs);
    let queries: Vec<Vec<f32>> = (0..3).map(|_| rng.vector(12)).collect();
    let requests = [
        json!({ "vector": queries[0], "k": 5 }),
        json!({ "vector": queries[1], "k": 1, "include": ["metadata"] }),
        json!({ "vector": queries[2] }),
    ];
    let ks = [5, 1, 10];
    let file = tmp.path().join("requests.jsonl");
    fs::write(
        &file,
        requests
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n\n",
    )
    .unwrap();
    let out = ok(&db, &["search", "c", "--requests", path_str(&file)]);
    let responses = json_lines(&out);
    assert_eq!(responses.len(), 3, "{out}");
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response["exhaustive"], true, "{response}");
        assert!(
            response["strategy"].as_str().is_some_and(|s| !s.is_empty()),
            "{response}"
        );
        assert_eq!(
            response["examined"], 200,
            "an exhaustive flat scan examines every document"
        );
        let hits = response["hits"].as_array().expect("hits array").clone();
        assert_matches_brute_force(
            &hit_pairs(&hits),
            &docs,
            "l2",
            &queries[i],
            ks[i],
            &format!("request {i}"),
        );
        for hit in &hits {
            assert_eq!(
                hit.get("metadata").is_some(),
                i == 1,
                "include applies per request: {hit}"
            );
        }
    }
    // One bad request: nothing is answered.
    let bad = tmp.path().join("bad.jsonl");
    let lines = [
        requests[0].to_string(),
        json!({ "vector": [1.0, 2.0], "k": 3 }).to_string(),
    ];
    fs::write(&bad, lines.join("\n")).unwrap();
    fail(&db, &["search", "c", "--requests", path_str(&bad)]);
    fs::write(
        &bad,
        format!("{}\n{{\"vector\": [1], \"kk\": 3}}\n", requests[0]),
    )
    .unwrap();
    let out = fail(&db, &["search", "c", "--requests", path_str(&bad)]);
    assert!(out.stderr.contains("line 2"), "{}", out.describe());
    fail(
        &db,
        &[
            "search",
            "c",
            "--requests",
            path_str(&tmp.path().join("missing.jsonl")),
        ],
    );
}

#[test]
fn search_rejects_bad_requests_and_handles_empty_collection() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(7);
    create(&db, "empty", 4, "cosine");
    let out = ok(
        &db,
        &["search", "empty", "--vector", "[1,2,3,4]", "--k", "10"],
    );
    assert!(
        out.is_empty(),
        "search on an empty collection printed {out:?}"
    );
    let file = tmp.path().join("r.jsonl");
    fs::write(&file, "{\"vector\": [1, 2, 3, 4], \"k\": 3}\n").unwrap();
    let responses = json_lines(&ok(
        &db,
        &["search", "empty", "--requests", path_str(&file)],
    ));
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0]["hits"], json!([]));
    assert_eq!(responses[0]["exhaustive"], true);

    create(&db, "c", 4, "cosine");
    let docs = random_docs(&mut rng, 30, 4, "cosine");
    import_docs(&db, "c", &tmp.path().join("c.jsonl"), &docs);
    for name in ["empty", "c"] {
        fail(&db, &["search", name, "--vector", "[1,2,3,4]", "--k", "0"]);
        fail(
            &db,
            &["search", name, "--vector", "[1,2,3,4]", "--k", "10001"],
        );
        let out = fail(&db, &["search", name, "--vector", "[1,2,3]"]);
        assert!(out.stderr.contains("dimension"), "{}", out.describe());
        fail(&db, &["search", name, "--vector", "[1,2,3,4,5]"]);
        fail(&db, &["search", name, "--vector", "[]"]);
        fail(&db, &["search", name, "--vector", "[0,0,0,0]"]); // no direction under cosine
        fail(&db, &["search", name, "--vector", "[1,2,3,\"x\"]"]);
        fail(&db, &["search", name, "--vector", "1,2,3,4"]);
    }
    let q = [0.5f32, -1.0, 0.25, 2.0];
    assert_search_matches(&db, "c", &docs, "cosine", &q, 10_000, "k = MAX_K");
}

// ----- 5. persistence and recovery ------------------------------------------------------------

const PERSIST_DIM: usize = 16;

/// Builds a database in separate processes: create, import 300, delete 30 (+2 missing ids),
/// re-import 10 with new vectors. Returns the documents that remain.
fn persisted_fixture(tmp: &Path, db: &Path, name: &str, seed: u64) -> Vec<Doc> {
    let mut rng = Rng(seed);
    create(db, name, PERSIST_DIM, "cosine");
    let mut docs = random_docs(&mut rng, 300, PERSIST_DIM, "cosine");
    import_docs(db, name, &tmp.join(format!("{name}-all.jsonl")), &docs);
    let mut args: Vec<String> = vec!["delete".into(), name.into()];
    args.extend(docs.iter().skip(3).step_by(10).map(|d| d.id.to_string()));
    args.push(rng.uuid().to_string());
    args.push(rng.uuid().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(ok(db, &args).trim(), "deleted 30");
    docs = docs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 3)
        .map(|(_, d)| d)
        .collect();
    for doc in docs.iter_mut().skip(1).step_by(27) {
        doc.vector = rng.vector(PERSIST_DIM);
    }
    let changed: Vec<Doc> = docs.iter().skip(1).step_by(27).cloned().collect();
    assert_eq!(changed.len(), 10);
    import_docs(
        db,
        name,
        &tmp.join(format!("{name}-changed.jsonl")),
        &changed,
    );
    assert_eq!(docs.len(), 270);
    docs
}

fn assert_searches_match(db: &Path, name: &str, docs: &[Doc], seed: u64, context: &str) {
    let mut rng = Rng(seed);
    for qi in 0..3 {
        let q = rng.vector(PERSIST_DIM);
        assert_search_matches(
            db,
            name,
            docs,
            "cosine",
            &q,
            25,
            &format!("{context}, query {qi}"),
        );
    }
}

/// `check NAME` exits 0 and reports a sound index of `n` documents.
fn assert_check_ok(db: &Path, name: &str, n: u64) -> Value {
    let out = run(db, &["check", name]);
    assert!(out.status.success(), "check failed: {}", out.describe());
    let reports = json_lines(&out.stdout);
    assert_eq!(reports.len(), 1, "{}", out.describe());
    let report = &reports[0];
    assert_eq!(report["collection"], name);
    assert_eq!(report["store_count"], n, "{report}");
    assert_eq!(report["index_count"], n, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(report["watermark"], report["last_seq"], "{report}");
    report.clone()
}

#[test]
fn state_persists_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let docs = persisted_fixture(tmp.path(), &db, "c", 8);
    assert_eq!(count(&db, "c"), 270);
    let report = assert_check_ok(&db, "c", 270);
    assert_eq!(report["checkpoint"], "ok", "{report}");

    let (value, out) = info(&db, "c");
    assert!(
        out.stderr.is_empty(),
        "a clean reopen warned: {}",
        out.describe()
    );
    assert_eq!(value["count"], 270);
    assert_eq!(value["vector_index"]["len"], 270);
    assert_eq!(value["vector_index"]["watermark"], value["last_seq"]);
    assert_eq!(value["vector_index"]["watermark"], report["last_seq"]);
    let recovery = &value["vector_index"]["recovery"];
    assert_eq!(recovery["how"], "loaded", "{value}");
    assert_eq!(
        recovery["replayed"], 0,
        "the closing process should have checkpointed: {value}"
    );
    for doc in docs.iter().step_by(37) {
        assert_stored(&db, "c", doc);
    }
    assert_searches_match(&db, "c", &docs, 80, "after reopening");
    // `check` without a name covers every collection.
    let out = run(&db, &["check"]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(json_lines(&out.stdout).len(), 1);
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipMiddleByte,
    Truncate,
    Garbage,
    Missing,
    /// A valid index file of a collection with another dimension.
    ForeignConfig,
    /// A valid index file of another collection with the same configuration and watermark.
    ForeignSameConfig,
}

/// The index folders of `db`, with the files they hold.
fn index_files(db: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(db.join("collections"))
        .unwrap()
        .map(|e| e.unwrap().path().join("flat.qvi"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    files
}

/// The index file of the collection holding `doc` (found by its UUID bytes in the file).
fn index_file_holding(db: &Path, doc: &Doc) -> PathBuf {
    let files: Vec<PathBuf> = index_files(db)
        .into_iter()
        .filter(|f| {
            fs::read(f)
                .unwrap()
                .windows(16)
                .any(|w| w == doc.id.as_bytes())
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn damaged_checkpoint_is_rebuilt(damage: Damage) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let docs = persisted_fixture(tmp.path(), &db, "c", 9);
    let twin = match damage {
        Damage::ForeignConfig => {
            create(&db, "other", 8, "cosine");
            let other = random_docs(&mut Rng(90), 20, 8, "cosine");
            import_docs(&db, "other", &tmp.path().join("other.jsonl"), &other);
            Some(other)
        }
        // Same configuration and the same number of changes, hence the same watermark.
        Damage::ForeignSameConfig => Some(persisted_fixture(tmp.path(), &db, "twin", 91)),
        _ => None,
    };
    let file = index_file_holding(&db, &docs[0]);
    let good = fs::read(&file).unwrap();
    assert!(
        good.len() > 64 + 270 * PERSIST_DIM * 4,
        "checkpoint of {} bytes",
        good.len()
    );
    match damage {
        Damage::FlipMiddleByte => {
            let mut bad = good.clone();
            bad[good.len() / 2] ^= 0x10;
            fs::write(&file, bad).unwrap();
        }
        Damage::Truncate => fs::write(&file, &good[..good.len() - 7]).unwrap(),
        Damage::Garbage => {
            let mut rng = Rng(99);
            let garbage: Vec<u8> = (0..good.len()).map(|_| rng.next_u64() as u8).collect();
            fs::write(&file, garbage).unwrap();
        }
        Damage::Missing => fs::remove_file(&file).unwrap(),
        Damage::ForeignConfig | Damage::ForeignSameConfig => {
            let twin = twin.as_ref().unwrap();
            let foreign = index_file_holding(&db, &twin[0]);
            assert_ne!(foreign, file);
            fs::copy(&foreign, &file).unwrap();
        }
    }

    let context = format!("{damage:?}");
    let (value, out) = info(&db, "c");
    let recovery = &value["vector_index"]["recovery"];
    assert_eq!(recovery["how"], "rebuilt", "{context}: {value}");
    assert!(
        recovery["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{context}: {value}"
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("rebuild")),
        "{context}: no warning on stderr: {}",
        out.describe()
    );
    assert_eq!(value["count"], 270, "{context}");
    assert_eq!(value["vector_index"]["len"], 270, "{context}");
    assert_eq!(
        value["vector_index"]["watermark"], value["last_seq"],
        "{context}"
    );

    assert_check_ok(&db, "c", 270);
    assert_searches_match(&db, "c", &docs, 81, &context);
    if let (Damage::ForeignSameConfig, Some(twin)) = (damage, &twin) {
        assert_searches_match(&db, "twin", twin, 82, "the twin collection");
    }
    // Recovery heals: the next process loads a good checkpoint instead of rebuilding again.
    let (value, out) = info(&db, "c");
    assert_eq!(
        value["vector_index"]["recovery"]["how"], "loaded",
        "{context}: rebuilt again: {value}"
    );
    assert!(
        out.stderr.is_empty(),
        "{context}: warned again: {}",
        out.describe()
    );
    assert_searches_match(&db, "c", &docs, 83, &context);
}

#[test]
fn checkpoint_with_a_flipped_byte_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::FlipMiddleByte);
}

#[test]
fn truncated_checkpoint_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::Truncate);
}

#[test]
fn garbage_checkpoint_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::Garbage);
}

#[test]
fn missing_checkpoint_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::Missing);
}

#[test]
fn checkpoint_of_another_configuration_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::ForeignConfig);
}

#[test]
fn checkpoint_of_another_collection_with_the_same_configuration_is_rebuilt() {
    damaged_checkpoint_is_rebuilt(Damage::ForeignSameConfig);
}

// ----- 6. a second process ---------------------------------------------------------------------

#[test]
fn second_process_fails_fast_while_the_database_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let held = quiverdb::Database::open(&db).expect("open from the test process");
    held.create_collection(
        "x",
        quiverdb::CollectionConfig::new(4, quiverdb::Metric::L2),
    )
    .unwrap();
    for args in [&["count", "x"][..], &["collection", "list"]] {
        let all = db_args(&db, args);
        let started = Instant::now();
        let out = finish(spawn(&all, false), all.join(" "), Duration::from_secs(10));
        assert_cli_error(&out);
        assert!(out.stderr.contains("already open"), "{}", out.describe());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    held.close().unwrap();
    assert_eq!(
        count(&db, "x"),
        0,
        "the database is usable once the other handle closed"
    );
}

// ----- 7. fvecs --------------------------------------------------------------------------------

fn fvecs_bytes(rows: &[Vec<f32>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for row in rows {
        bytes.extend_from_slice(&(row.len() as i32).to_le_bytes());
        for x in row {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    bytes
}

#[test]
fn fvecs_import_with_row_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(10);
    create(&db, "v", 8, "l2");
    let rows: Vec<Vec<f32>> = (0..25).map(|_| rng.vector(8)).collect();
    let file = tmp.path().join("base.fvecs");
    fs::write(&file, fvecs_bytes(&rows)).unwrap();
    let out = ok(
        &db,
        &[
            "import",
            "v",
            "--fvecs",
            path_str(&file),
            "--row-ids",
            "--batch",
            "4",
        ],
    );
    assert_eq!(out.trim(), "imported 25");
    assert_eq!(count(&db, "v"), 25);
    let docs: Vec<Doc> = rows
        .iter()
        .enumerate()
        .map(|(row, vector)| Doc {
            id: Uuid::from_u128(row as u128),
            vector: vector.clone(),
            metadata: Value::Null,
            text: None,
        })
        .collect();
    for doc in &docs {
        assert_stored(&db, "v", doc);
    }
    let got = ok(&db, &["get", "v", "00000000-0000-0000-0000-000000000007"]);
    assert_eq!(
        vector_of(&serde_json::from_str::<Value>(&got).unwrap()["vector"]),
        rows[7]
    );
    for qi in 0..3 {
        let q = rng.vector(8);
        assert_search_matches(&db, "v", &docs, "l2", &q, 10, &format!("fvecs query {qi}"));
    }
    // Row ids make a re-import an upsert of the same documents.
    assert_eq!(
        ok(
            &db,
            &["import", "v", "--fvecs", path_str(&file), "--row-ids"]
        )
        .trim(),
        "imported 25"
    );
    assert_eq!(count(&db, "v"), 25);
    // Without --row-ids every vector gets a fresh id.
    assert_eq!(
        ok(&db, &["import", "v", "--fvecs", path_str(&file)]).trim(),
        "imported 25"
    );
    assert_eq!(count(&db, "v"), 50);
    // --row-ids needs --fvecs.
    assert_cli_error(&run(&db, &["import", "v", path_str(&file), "--row-ids"]));
    assert!(run(&db, &["check", "v"]).status.success());
}

#[test]
fn fvecs_truncated_or_mismatched_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(11);
    let rows: Vec<Vec<f32>> = (0..6).map(|_| rng.vector(8)).collect();
    let full = fvecs_bytes(&rows);
    let record = 4 + 8 * 4;

    // Cut inside the sixth record's body: with batches of 2, records 1–4 are committed.
    create(&db, "body", 8, "l2");
    let file = tmp.path().join("body.fvecs");
    fs::write(&file, &full[..5 * record + 4 + 10]).unwrap();
    let out = fail(
        &db,
        &[
            "import",
            "body",
            "--fvecs",
            path_str(&file),
            "--row-ids",
            "--batch",
            "2",
        ],
    );
    assert!(out.stderr.contains("truncated"), "{}", out.describe());
    assert_eq!(count(&db, "body"), 4);
    for row in 0..4u128 {
        assert_stored(
            &db,
            "body",
            &Doc {
                id: Uuid::from_u128(row),
                vector: rows[row as usize].clone(),
                metadata: Value::Null,
                text: None,
            },
        );
    }
    assert_absent(&db, "body", Uuid::from_u128(4));

    // Cut inside a header: nothing of the pending batch is committed.
    create(&db, "head", 8, "l2");
    let file = tmp.path().join("head.fvecs");
    fs::write(&file, &full[..3 * record + 2]).unwrap();
    let out = fail(
        &db,
        &["import", "head", "--fvecs", path_str(&file), "--row-ids"],
    );
    assert!(out.stderr.contains("truncated"), "{}", out.describe());
    assert_eq!(count(&db, "head"), 0);

    // A record of another dimension.
    create(&db, "dim", 8, "l2");
    let file = tmp.path().join("dim.fvecs");
    let mut bytes = fvecs_bytes(&rows[..2]);
    bytes.extend(fvecs_bytes(&[rng.vector(7)]));
    fs::write(&file, bytes).unwrap();
    fail(
        &db,
        &["import", "dim", "--fvecs", path_str(&file), "--row-ids"],
    );
    assert_eq!(count(&db, "dim"), 0);
    fail(
        &db,
        &[
            "import",
            "dim",
            "--fvecs",
            path_str(&tmp.path().join("missing.fvecs")),
        ],
    );
    assert!(run(&db, &["check"]).status.success());
}

// ----- 8. demo ---------------------------------------------------------------------------------

#[test]
fn demo_runs_and_reports_agreement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = run_raw(&["demo", path_str(&dir)]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stdout.contains("every index agrees"),
        "{}",
        out.describe()
    );
    // The database it leaves behind is a normal one.
    assert_eq!(list(&dir), ["articles"]);
    assert_eq!(count(&dir, "articles"), 2_999);
    assert!(run(&dir, &["check"]).status.success());
    // Running it again replaces the collection.
    let out = run_raw(&["demo", path_str(&dir)]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(count(&dir, "articles"), 2_999);
}

/// Filters end to end: count, scroll, search (single and --requests), delete, a payload index
/// added later, and located errors; expected sets come from the generator's known metadata.
#[test]
fn filters_count_scroll_search_delete_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let mut rng = Rng(77);
    let docs = random_docs(&mut rng, 300, 4, "l2");
    ok(
        &db,
        &[
            "collection",
            "create",
            "f",
            "--dim",
            "4",
            "--metric",
            "l2",
            "--index",
            "hnsw",
            "--payload-index",
            "tag:keyword",
        ],
    );
    import_docs(&db, "f", &tmp.path().join("f.jsonl"), &docs);
    let i_of = |d: &Doc| d.metadata["i"].as_u64().unwrap();
    type Expected = Box<dyn Fn(&Doc) -> bool>;
    let cases: Vec<(&str, Expected)> = vec![
        (r#"{"tag": "t1"}"#, Box::new(move |d| i_of(d) % 3 == 1)),
        (
            r#"{"i": {"$gte": 100, "$lt": 150}}"#,
            Box::new(move |d| (100..150).contains(&i_of(d))),
        ),
        (
            r#"{"nested.odd": true, "tag": {"$ne": "t0"}}"#,
            Box::new(move |d| i_of(d) % 2 == 1 && i_of(d) % 3 != 0),
        ),
        (
            r#"{"$or": [{"tag": {"$in": ["t2"]}}, {"i": {"$lt": 5}}]}"#,
            Box::new(move |d| i_of(d) % 3 == 2 || i_of(d) < 5),
        ),
    ];
    let check_cases = |db: &Path| {
        for (filter, expected) in &cases {
            let matching: Vec<Doc> = docs.iter().filter(|d| expected(d)).cloned().collect();
            let counted = ok(db, &["count", "f", "--filter", filter]);
            assert_eq!(counted.trim(), matching.len().to_string(), "count {filter}");
            // Scroll in pages of 7.
            let mut ids = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut args = vec!["scroll", "f", "--filter", filter, "--limit", "7"];
                if let Some(c) = &cursor {
                    args.extend(["--cursor", c.as_str()]);
                }
                let lines = json_lines(&ok(db, &args));
                let (last, page) = lines.split_last().expect("a next_cursor line");
                ids.extend(page.iter().map(|d| d["id"].as_str().unwrap().to_string()));
                match last["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            let mut want: Vec<Uuid> = matching.iter().map(|d| d.id).collect();
            want.sort();
            let want: Vec<String> = want.iter().map(Uuid::to_string).collect();
            assert_eq!(ids, want, "scroll {filter}");
            // Search: the k nearest among the matches, saying how.
            let q = rng_query(filter.len());
            let vector = serde_json::to_string(&q).unwrap();
            let out = ok(
                db,
                &[
                    "search", "f", "--vector", &vector, "--k", "5", "--filter", filter,
                ],
            );
            let hits = json_lines(&out);
            for hit in &hits {
                assert!(
                    hit["strategy"].is_string() && hit["exhaustive"].is_boolean(),
                    "{hit}"
                );
                assert_eq!(hit["filter_matches"], matching.len(), "{hit}");
            }
            assert_matches_brute_force(&hit_pairs(&hits), &matching, "l2", &q, 5, filter);
            // The same through a requests file.
            let requests = tmp.path().join("requests.jsonl");
            let line = json!({"vector": q, "k": 5, "filter": serde_json::from_str::<Value>(filter).unwrap()});
            fs::write(&requests, format!("{line}\n")).unwrap();
            let responses =
                json_lines(&ok(db, &["search", "f", "--requests", path_str(&requests)]));
            assert_eq!(responses.len(), 1);
            assert!(responses[0]["strategy"].is_string());
            assert!(responses[0]["exhaustive"].is_boolean());
            let hits = responses[0]["hits"].as_array().unwrap();
            assert_matches_brute_force(&hit_pairs(hits), &matching, "l2", &q, 5, filter);
        }
    };
    check_cases(&db);
    // A payload index added later changes no answer.
    let out = ok(&db, &["collection", "index", "f", "i:integer"]);
    assert!(out.contains("i:integer"), "{out}");
    let (value, _) = info(&db, "f");
    assert_eq!(
        value["config"]["payload_fields"].as_array().unwrap().len(),
        2
    );
    check_cases(&db);
    // Located errors, and nothing changes.
    let out = fail(&db, &["count", "f", "--filter", r#"{"i": {"$foo": 1}}"#]);
    assert!(out.stderr.contains("filter.i.$foo"), "{}", out.describe());
    fail(
        &db,
        &[
            "search",
            "f",
            "--vector",
            "[0,0,0,0]",
            "--filter",
            "not json",
        ],
    );
    fail(&db, &["delete", "f", "--filter", r#"{"$or": []}"#]);
    fail(&db, &["collection", "index", "f", "tag:keyword"]);
    fail(&db, &["collection", "index", "f", "x:colour"]);
    let both = run(
        &db,
        &["delete", "f", &docs[0].id.to_string(), "--filter", "{}"],
    );
    assert!(!both.status.success(), "{}", both.describe());
    assert_eq!(count(&db, "f"), 300);
    // delete --filter removes exactly the matches, in one transaction.
    let out = ok(
        &db,
        &[
            "delete",
            "f",
            "--filter",
            r#"{"tag": "t2", "i": {"$gte": 30}}"#,
        ],
    );
    let expected = docs
        .iter()
        .filter(|d| i_of(d) % 3 == 2 && i_of(d) >= 30)
        .count();
    assert_eq!(out.trim(), format!("deleted {expected}"));
    assert_eq!(count(&db, "f"), (300 - expected) as u64);
    let check = json_lines(&ok(&db, &["check", "f"]));
    assert_eq!(check.len(), 2, "vector index and payload index: {check:?}");
    assert!(check
        .iter()
        .all(|c| c["problems"].as_array().unwrap().is_empty()));
    assert_eq!(check[1]["index"], "payload");
}

/// A deterministic 4-D query per test case.
fn rng_query(seed: usize) -> Vec<f32> {
    Rng(seed as u64).vector(4)
}

#[test]
fn keyword_and_hybrid_search_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    ok(
        &db,
        &[
            "collection",
            "create",
            "t",
            "--dim",
            "2",
            "--metric",
            "l2",
            "--text",
            "--payload-index",
            "lang:keyword",
        ],
    );
    let lines = [
        r#"{"id":"00000000-0000-0000-0000-000000000001","vector":[0,0],"text":"Running shoes: run faster","metadata":{"lang":"en"}}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000002","vector":[1,0],"text":"A cookbook of soups","metadata":{"lang":"en"}}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000003","vector":[0,1],"text":"chaussures de course: running","metadata":{"lang":"fr"}}"#,
    ];
    let file = tmp.path().join("t.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    ok(&db, &["import", "t", path_str(&file)]);
    let id = |n: u32| format!("00000000-0000-0000-0000-00000000000{n}");

    // Keyword: stemmed match, scores (higher first) instead of distances.
    let hits = json_lines(&ok(&db, &["search", "t", "--text", "run"]));
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["id"], id(1), "two stemmed matches beat one");
    assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());
    assert!(hits[0].get("distance").is_none());
    assert_eq!(hits[0]["strategy"], "keyword_bm25");

    // Hybrid with a filter inside both arms: only English documents, with arms.
    let hits = json_lines(&ok(
        &db,
        &[
            "search",
            "t",
            "--text",
            "running",
            "--vector",
            "[0,1]",
            "--filter",
            r#"{"lang":"en"}"#,
            "--k",
            "3",
        ],
    ));
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["id"], id(1), "in both arms");
    assert_eq!(hits[0]["arms"]["keyword"]["rank"], 1);
    assert!(hits[0]["arms"]["vector"]["distance"].is_number());
    assert!(hits[1]["arms"].get("keyword").is_none());
    assert_eq!(hits[0]["filter_matches"], 2);
    assert!(hits[0]["strategy"]
        .as_str()
        .unwrap()
        .starts_with("hybrid_rrf("));
    let weighted = json_lines(&ok(
        &db,
        &[
            "search", "t", "--text", "soups", "--vector", "[0,0]", "--fusion", "weighted",
            "--alpha", "0",
        ],
    ));
    assert_eq!(weighted[0]["id"], id(2), "alpha 0: the keyword arm decides");

    // Request lines accept text, fusion and alpha.
    let requests = tmp.path().join("r.jsonl");
    std::fs::write(
        &requests,
        "{\"text\":\"cookbook\",\"k\":1}\n{\"text\":\"course\",\"vector\":[0,1],\"fusion\":\"weighted\",\"alpha\":0.5}\n",
    )
    .unwrap();
    let responses = json_lines(&ok(
        &db,
        &["search", "t", "--requests", path_str(&requests)],
    ));
    assert_eq!(responses[0]["hits"][0]["id"], id(2));
    assert_eq!(responses[1]["hits"][0]["id"], id(3));

    // Errors: a bad fusion, alpha out of range, text on a collection without a text index.
    for args in [
        vec![
            "search", "t", "--text", "x", "--vector", "[0,0]", "--fusion", "max",
        ],
        vec![
            "search", "t", "--text", "x", "--vector", "[0,0]", "--alpha", "2",
        ],
        vec!["search", "t"],
    ] {
        assert_cli_error(&fail(&db, &args));
    }
    create(&db, "plain", 2, "l2");
    assert_cli_error(&fail(&db, &["search", "plain", "--text", "x"]));
    assert_cli_error(&fail(
        &db,
        &[
            "collection",
            "create",
            "w",
            "--dim",
            "2",
            "--metric",
            "l2",
            "--text",
            "--tokenizer",
            "fancy",
        ],
    ));

    // Whitespace tokenizer: exact tokens; the keyword index shows in check and info.
    ok(
        &db,
        &[
            "collection",
            "create",
            "codes",
            "--dim",
            "2",
            "--metric",
            "l2",
            "--text",
            "--tokenizer",
            "whitespace",
        ],
    );
    let codes = tmp.path().join("codes.jsonl");
    std::fs::write(&codes, r#"{"vector":[0,0],"text":"ERR-42 timeout"}"#).unwrap();
    ok(&db, &["import", "codes", path_str(&codes)]);
    assert_eq!(
        json_lines(&ok(&db, &["search", "codes", "--text", "ERR-42"])).len(),
        1
    );
    assert!(json_lines(&ok(&db, &["search", "codes", "--text", "err"])).is_empty());
    let (info, _) = info(&db, "codes");
    assert_eq!(info["config"]["text_tokenizer"], "whitespace");
    assert_eq!(info["keyword_index"]["documents"], 1);
    let report = json_lines(&ok(&db, &["check"]));
    assert!(report.iter().filter(|r| r["index"] == "keyword").count() == 2);
}

// ----- DiskANN ---------------------------------------------------------------------------------

#[test]
fn diskann_collections_are_created_merged_by_train_and_searched_with_search_l_and_beam() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path();
    let mut args = vec!["collection", "create", "d", "--dim", "8", "--metric", "l2"];
    args.extend([
        "--index",
        "diskann",
        "--R",
        "8",
        "--L",
        "16",
        "--pq-bytes",
        "4",
    ]);
    ok(db, &args);
    let (value, _) = info(db, "d");
    let index = &value["config"]["index"];
    assert_eq!(
        (&index["kind"], &index["r"], &index["l"], &index["pq_bytes"]),
        (&json!("diskann"), &json!(8), &json!(16), &json!(4)),
        "{value}"
    );
    let mut rng = Rng(31);
    let docs = random_docs(&mut rng, 400, 8, "l2");
    import_docs(db, "d", &dir.path().join("docs.jsonl"), &docs);
    ok(db, &["collection", "train", "d"]);
    let (value, _) = info(db, "d");
    let disk = &value["vector_index"]["disk"];
    assert_eq!(
        (&disk["disk_nodes"], &disk["delta"]),
        (&json!(400), &json!(0)),
        "{value}"
    );

    let query = rng.vector(8);
    let vector = serde_json::to_string(&query).unwrap();
    let mut search = vec!["search", "d", "--vector", &vector, "--k", "5"];
    search.extend(["--search-l", "64", "--beam", "2"]);
    let hits = json_lines(&ok(db, &search));
    assert_eq!(hits.len(), 5);
    let exact: Vec<String> = brute_force(&docs, "l2", &query)
        .iter()
        .take(5)
        .map(|(id, _)| id.to_string())
        .collect();
    let found = hits
        .iter()
        .filter(|h| exact.contains(&h["id"].as_str().unwrap().to_string()))
        .count();
    assert!(found >= 4, "{found} of the exact top 5 in {hits:?}");
    for hit in &hits {
        assert_eq!(hit["strategy"], json!("diskann"));
        assert!(hit["disk"]["hops"].as_u64().unwrap() >= 1, "{hit}");
    }
    let mut bad = vec!["collection", "create", "e", "--dim", "8", "--metric", "l2"];
    bad.extend(["--index", "diskann", "--pq-bytes", "3"]);
    fail(db, &bad);
    fail(db, &["search", "d", "--vector", &vector, "--search-l", "0"]);
}
