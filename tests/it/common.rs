//! Helpers shared by the integration tests: a seeded generator, an f64 brute force, and
//! clustered data with exact-hit checks for the graph indexes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use quiverdb::{Collection, DocumentInput, Hit, Metric};
use uuid::Uuid;

/// SplitMix64: small, seeded, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
}

/// Distance in f64 by the crate's convention (smaller is closer).
pub fn distance_f64(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    match metric {
        Metric::L2 => a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum(),
        Metric::Dot => -dot,
        Metric::Cosine => {
            let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (na * nb)
        }
    }
}

/// Exact top-k by (distance, id) computed in f64.
pub fn brute_force(
    metric: Metric,
    docs: &[(Uuid, Vec<f32>)],
    query: &[f32],
    k: usize,
) -> Vec<(Uuid, f64)> {
    let mut all: Vec<(Uuid, f64)> = docs
        .iter()
        .map(|(id, v)| (*id, distance_f64(metric, query, v)))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// How many of `hits` are among the exact top-`k` of `docs` for `query` (recall's numerator).
pub fn true_hits(
    metric: Metric,
    docs: &[(Uuid, Vec<f32>)],
    query: &[f32],
    k: usize,
    hits: &[Hit],
) -> usize {
    let truth: HashSet<Uuid> = brute_force(metric, docs, query, k)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    hits.iter().filter(|h| truth.contains(&h.id)).count()
}

/// Asserts that `hits` equal the brute force: same length, distances within 1e-4, and the same
/// ids except where two candidates are within 1e-5 of each other (f32 vs f64 rounding).
pub fn assert_matches_brute_force(hits: &[Hit], expected: &[(Uuid, f64)], all: &[(Uuid, f64)]) {
    assert_eq!(hits.len(), expected.len(), "number of hits");
    for (i, (hit, (id, dist))) in hits.iter().zip(expected).enumerate() {
        let tol = 1e-4 * dist.abs().max(1.0);
        assert!(
            (f64::from(hit.distance.unwrap()) - dist).abs() <= tol,
            "hit {i}: distance {} vs exact {dist}",
            hit.distance.unwrap()
        );
        if hit.id != *id {
            // Only acceptable when the two are numerically tied.
            let theirs = all.iter().find(|(u, _)| *u == hit.id).map(|p| p.1).unwrap();
            assert!(
                (theirs - dist).abs() <= 1e-5 * dist.abs().max(1.0),
                "hit {i}: id {} instead of {id}",
                hit.id
            );
        }
    }
}

/// A temporary directory in memory (`/dev/shm`) when there is one: for tests whose subject is
/// not durability, so that fsyncs do not dominate their time on a busy disk.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Copies a directory tree (a database image, as a crash would leave it when taken while idle).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The index file `file_name` of the only collection in the database at `db_dir`.
pub fn index_file(db_dir: &Path, file_name: &str) -> PathBuf {
    let folders: Vec<PathBuf> = std::fs::read_dir(db_dir.join("collections"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    folders[0].join(file_name)
}

/// Overwrites `file` with `bytes`, or deletes it for `None` (damage for recovery tests).
pub fn replace_file(file: &Path, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => std::fs::write(file, bytes).unwrap(),
        None => std::fs::remove_file(file).unwrap(),
    }
}

// ----- clustered data, shared by the graph-index tests ------------------------------------------

pub type Docs = Vec<(Uuid, Vec<f32>)>;

/// Roughly standard normal: the sum of three uniforms on [-1, 1) has variance 1.
pub fn gaussish(rng: &mut Rng) -> f32 {
    rng.unit() + rng.unit() + rng.unit()
}

/// Points around random centres.
pub struct Clusters {
    pub centres: Vec<Vec<f32>>,
    pub spread: f32,
}

impl Clusters {
    pub fn new(rng: &mut Rng, count: usize, dim: usize) -> Self {
        Clusters {
            centres: (0..count).map(|_| rng.vector(dim)).collect(),
            spread: 0.25,
        }
    }

    pub fn point(&self, rng: &mut Rng) -> Vec<f32> {
        let centre = &self.centres[rng.below(self.centres.len())];
        centre
            .iter()
            .map(|x| x + self.spread * gaussish(rng))
            .collect()
    }

    pub fn points(&self, rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
        (0..n).map(|_| self.point(rng)).collect()
    }

    pub fn docs(&self, rng: &mut Rng, n: usize) -> Docs {
        (0..n).map(|_| (seeded_id(rng), self.point(rng))).collect()
    }
}

/// A UUID drawn from the seeded generator (reproducible, unlike v4/v7).
pub fn seeded_id(rng: &mut Rng) -> Uuid {
    Uuid::from_u128((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()))
}

pub fn inputs(docs: &[(Uuid, Vec<f32>)]) -> Vec<DocumentInput> {
    docs.iter()
        .map(|(id, v)| DocumentInput::new(v.clone()).with_id(*id))
        .collect()
}

/// Upserts `docs` in batches of 1,000 (so that linking runs in parallel).
pub fn fill(c: &Collection, docs: &[(Uuid, Vec<f32>)]) {
    for chunk in docs.chunks(1_000) {
        c.upsert(inputs(chunk)).unwrap();
    }
}

/// Asserts that `hits` are sorted by (distance, id), unique, all live, and that each carries the
/// exact distance of that document's current vector.
pub fn assert_hits_exact(
    hits: &[Hit],
    metric: Metric,
    live: &HashMap<Uuid, &[f32]>,
    query: &[f32],
    ctx: &str,
) {
    for (i, pair) in hits.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.distance.unwrap() < b.distance.unwrap()
                || (a.distance.unwrap() == b.distance.unwrap() && a.id < b.id),
            "{ctx}: hits {i} and {} out of order: {} {} then {} {}",
            i + 1,
            a.id,
            a.distance.unwrap(),
            b.id,
            b.distance.unwrap()
        );
    }
    let unique: HashSet<Uuid> = hits.iter().map(|h| h.id).collect();
    assert_eq!(unique.len(), hits.len(), "{ctx}: duplicate ids in {hits:?}");
    for (i, hit) in hits.iter().enumerate() {
        let Some(vector) = live.get(&hit.id) else {
            panic!("{ctx}: hit {i} {} is not a live document", hit.id);
        };
        let exact = distance_f64(metric, query, vector);
        assert!(
            (f64::from(hit.distance.unwrap()) - exact).abs() <= 1e-4 * exact.abs().max(1.0),
            "{ctx}: hit {i} {}: distance {} but the exact distance is {exact}",
            hit.id,
            hit.distance.unwrap()
        );
    }
}
