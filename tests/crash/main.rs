//! The crash harness: a child process runs a seeded workload (upserts, metadata patches and
//! deletes, in batches, on a collection with a vector index of each kind plus a keyword and a
//! payload index) and reports every acknowledged write on stdout; the parent SIGKILLs it at a
//! random moment, reopens the database and verifies that every acknowledged write is there,
//! that no batch is partial, that every index agrees with the store (`quiver check`) and that
//! search still finds the right documents.
//!
//! The child is this test binary, re-run with `QUIVER_CRASH_CHILD` set so that only
//! [`workload::crash_child_writer`] does anything.
//!
//! CI runs [`kills_per_kind`] kill points per index kind (64 in all). A soak run sets
//! `QUIVER_CRASH_SOAK=N` for N kills per kind, e.g.
//! `QUIVER_CRASH_SOAK=1000 cargo test --release --test crash -- --nocapture`; each kind prints
//! how many kills it survived.

#[path = "../it/common.rs"]
#[allow(dead_code)]
mod common;
mod verify;
mod workload;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Rng;
use verify::{Acks, Verifier};

/// Kill points per index kind in CI; `QUIVER_CRASH_SOAK` overrides it.
fn kills_per_kind(ci: u64) -> u64 {
    std::env::var("QUIVER_CRASH_SOAK")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ci)
}

#[test]
fn killed_flat_writers_lose_no_acknowledged_write() {
    killed_writers("flat", kills_per_kind(24), 2024);
}

#[test]
fn killed_hnsw_writers_lose_no_acknowledged_write() {
    killed_writers("hnsw", kills_per_kind(24), 2025);
}

#[test]
fn killed_ivfpq_writers_lose_no_acknowledged_write() {
    killed_writers("ivfpq", kills_per_kind(16), 2026);
}

#[test]
fn killed_diskann_writers_lose_no_acknowledged_write() {
    killed_writers("diskann", kills_per_kind(16), 2027);
}

/// Kill rounds sharing one database; a soak starts a fresh one after this many, so that
/// verification time stays flat however long it runs.
const ROUNDS_PER_DATABASE: u64 = 64;

/// Runs `kills` rounds: start a writer, kill it, verify.
fn killed_writers(kind: &str, kills: u64, seed: u64) {
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(seed);
    let mut verifier = Verifier::new(kind, seed);
    let mut dir = tempfile::tempdir().unwrap();
    for round in 0..kills {
        if round > 0 && round % ROUNDS_PER_DATABASE == 0 {
            dir = tempfile::tempdir().unwrap();
            verifier.start_new_database();
        }
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "workload::crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("QUIVER_CRASH_CHILD", dir.path())
            .env("QUIVER_CRASH_ROUND", round.to_string())
            .env("QUIVER_CRASH_INDEX", kind)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.starts_with("ACK "))
                .collect::<Vec<_>>()
        });
        // Kill at a random moment: sometimes during open/recovery, mostly mid-writes.
        std::thread::sleep(Duration::from_millis(5 + rng.below(300) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = Acks::parse(&reader.join().unwrap());
        verifier.verify_round(dir.path(), round, &acks, &mut rng);
    }
    verifier.report(kills);
}
