//! Damaged derived files: thousands of seeded bit flips, overwrites, truncations, appended
//! garbage and forged headers and counts (with valid checksums) on every vector index file and
//! on the keyword index folder. Opening must rebuild from the store (or fail with
//! `Error::Corrupted`): never a panic, never a wrong answer, never a giant allocation.
//!
//! `QUIVER_DAMAGE_TRIALS=<n>` sets the number of random trials per index kind (default
//! [`DEFAULT_TRIALS`]) for a soak run; each kind prints one summary line.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quiverdb::sync::Recovery;
use quiverdb::{
    CollectionConfig, Database, DocumentInput, Error, Filter, IndexConfig, Metric, PayloadKind,
    SearchRequest,
};
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

use crate::common::{assert_matches_brute_force, brute_force, copy_dir, scratch_dir, Rng};

// ----- allocation tracking ---------------------------------------------------------------------

/// The system allocator, noting the largest single allocation made by a thread that armed it
/// (other threads, and the other tests of this binary, pay one thread-local read per
/// allocation).
struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only touches const-initialised
// thread-locals without destructors (no allocation, no re-entry).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
/// (Opening a database loads its indexes on the calling thread.)
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

/// No open of these small databases needs a single allocation this large (the biggest honest
/// one is tantivy's indexing arena, 32 MiB); a forged count that got through would ask for far
/// more (or abort the process).
const ALLOCATION_LIMIT: usize = 256 << 20;

// ----- the fixture -----------------------------------------------------------------------------

/// Random trials per index kind (CI); `QUIVER_DAMAGE_TRIALS` overrides.
const DEFAULT_TRIALS: usize = 800;
const DIM: usize = 12;
const GROUPS: i64 = 5;
const WORDS: &[&str] = &[
    "amber", "basil", "cedar", "dune", "ember", "fjord", "grove", "heath", "iris", "juniper",
    "kelp", "lichen", "moss", "nettle", "oak", "pine",
];
/// Payload offset in an index file (after the container header).
const P: usize = 64;

fn trials() -> usize {
    std::env::var("QUIVER_DAMAGE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TRIALS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Flat,
    Hnsw,
    IvfPq,
}

impl Kind {
    fn file_name(self) -> &'static str {
        match self {
            Kind::Flat => "flat.qvi",
            Kind::Hnsw => "hnsw.qvi",
            Kind::IvfPq => "ivfpq.qvi",
        }
    }

    fn config(self) -> IndexConfig {
        match self {
            Kind::Flat => IndexConfig::Flat {},
            Kind::Hnsw => IndexConfig::hnsw(),
            Kind::IvfPq => IndexConfig::IvfPq {
                nlist: Some(8),
                pq_m: Some(4),
            },
        }
    }

    /// Knobs that make a search exact: HNSW with ef ≥ the slots, IVF-PQ probing every list and
    /// re-ranking every candidate.
    fn exact(self, request: SearchRequest) -> SearchRequest {
        match self {
            Kind::Flat => request,
            Kind::Hnsw => request.with_ef(2_000),
            Kind::IvfPq => request.with_nprobe(8).with_refine(100),
        }
    }
}

/// A search and its exact answer.
struct Expected {
    what: String,
    request: SearchRequest,
    top: Vec<(Uuid, f64)>,
    all: Vec<(Uuid, f64)>,
}

/// A closed database of one collection `d` (vectors, texts, an indexed payload field) whose
/// documents are known, with the good bytes of its derived files.
struct Fixture {
    _dir: TempDir,
    root: PathBuf,
    kind: Kind,
    collection_dir: PathBuf,
    count: u64,
    expected: Vec<Expected>,
    /// Keyword queries and the documents containing the term.
    terms: Vec<(String, BTreeSet<Uuid>)>,
    /// Good bytes of the vector index file.
    good: Vec<u8>,
    /// A copy of the good keyword folder.
    good_keyword: TempDir,
    /// The largest single allocation any open made so far.
    largest: Cell<usize>,
}

impl Fixture {
    /// Writes ~430 documents in four batches (a keyword search after each, so that the
    /// keyword index holds several segments), trains IVF-PQ, deletes and re-embeds a few (so
    /// that the files hold vacant slots and deletes), closes.
    fn build(kind: Kind, seed: u64) -> Fixture {
        let dir = scratch_dir();
        let root = dir.path().to_path_buf();
        let mut rng = Rng(seed);
        let mut docs: BTreeMap<Uuid, (Vec<f32>, i64, String)> = BTreeMap::new();
        {
            let db = Database::open(&root).unwrap();
            let config = CollectionConfig::new(DIM, Metric::L2)
                .with_index(kind.config())
                .with_text_index(true)
                .with_payload_field("group", PayloadKind::Integer);
            let c = db.create_collection("d", config).unwrap();
            for _batch in 0..4 {
                let mut inputs = Vec::new();
                for _ in 0..110 {
                    let id = Uuid::from_u128(u128::from(rng.next_u64()));
                    let vector = rng.vector(DIM);
                    let group = rng.below(GROUPS as usize) as i64;
                    let text = (0..3)
                        .map(|_| WORDS[rng.below(WORDS.len())])
                        .collect::<Vec<_>>()
                        .join(" ");
                    inputs.push(
                        DocumentInput::new(vector.clone())
                            .with_id(id)
                            .with_metadata(json!({ "group": group }))
                            .with_text(text.clone()),
                    );
                    docs.insert(id, (vector, group, text));
                }
                c.upsert(inputs).unwrap();
                c.search(&SearchRequest::text("amber", 1)).unwrap();
            }
            if kind == Kind::IvfPq {
                assert!(c.train().unwrap());
            }
            let ids: Vec<Uuid> = docs.keys().copied().collect();
            let gone: Vec<Uuid> = ids.iter().step_by(11).copied().collect();
            assert_eq!(c.delete(&gone).unwrap(), gone.len());
            for id in &gone {
                docs.remove(id);
            }
            let moved_ids: Vec<Uuid> = ids
                .iter()
                .skip(3)
                .step_by(17)
                .filter(|id| docs.contains_key(id))
                .copied()
                .collect();
            let moved: Vec<DocumentInput> = moved_ids
                .iter()
                .map(|id| {
                    let entry = docs.get_mut(id).unwrap();
                    entry.0 = rng.vector(DIM);
                    entry.2 = format!("{} moved", entry.2);
                    DocumentInput::new(entry.0.clone())
                        .with_id(*id)
                        .with_metadata(json!({ "group": entry.1 }))
                        .with_text(entry.2.clone())
                })
                .collect();
            c.upsert(moved).unwrap();
            if kind == Kind::IvfPq {
                assert!(c.info().unwrap().vector_index.quantization.unwrap().trained);
            }
            drop(c);
            db.close().unwrap();
        }
        let all: Vec<(Uuid, Vec<f32>)> = docs.iter().map(|(id, d)| (*id, d.0.clone())).collect();
        let mut expected = Vec::new();
        for q in 0..3 {
            let query = rng.vector(DIM);
            let all_d = brute_force(Metric::L2, &all, &query, all.len());
            expected.push(Expected {
                what: format!("query {q}"),
                request: kind.exact(SearchRequest::new(query.clone(), 10)),
                top: all_d[..10].to_vec(),
                all: all_d,
            });
            let group = q as i64;
            let in_group: Vec<(Uuid, Vec<f32>)> = docs
                .iter()
                .filter(|(_, d)| d.1 == group)
                .map(|(id, d)| (*id, d.0.clone()))
                .collect();
            let all_g = brute_force(Metric::L2, &in_group, &query, in_group.len());
            expected.push(Expected {
                what: format!("query {q} in group {group}"),
                request: kind.exact(
                    SearchRequest::new(query, 10).with_filter(Filter::field("group").eq(group)),
                ),
                top: all_g[..10].to_vec(),
                all: all_g,
            });
        }
        let terms = ["amber", "moss", "pine", "moved"]
            .iter()
            .map(|term| {
                let ids = docs
                    .iter()
                    .filter(|(_, d)| d.2.split(' ').any(|w| w == *term))
                    .map(|(id, _)| *id)
                    .collect::<BTreeSet<Uuid>>();
                assert!(!ids.is_empty());
                (term.to_string(), ids)
            })
            .collect();
        let folders: Vec<PathBuf> = std::fs::read_dir(root.join("collections"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(folders.len(), 1);
        let collection_dir = folders[0].clone();
        let good = std::fs::read(collection_dir.join(kind.file_name())).unwrap();
        let good_keyword = scratch_dir();
        copy_dir(&collection_dir.join("keyword"), good_keyword.path());
        let fixture = Fixture {
            _dir: dir,
            root,
            kind,
            collection_dir,
            count: docs.len() as u64,
            expected,
            terms,
            good,
            good_keyword,
            largest: Cell::new(0),
        };
        // The undamaged files load as they are.
        let (vector, keyword) = fixture.verify("undamaged").expect("opens");
        assert_eq!(vector, Recovery::Loaded { replayed: 0 });
        assert_eq!(keyword, Recovery::Loaded { replayed: 0 });
        fixture
    }

    fn index_file(&self) -> PathBuf {
        self.collection_dir.join(self.kind.file_name())
    }

    fn keyword_dir(&self) -> PathBuf {
        self.collection_dir.join("keyword")
    }

    fn restore(&self) {
        std::fs::write(self.index_file(), &self.good).unwrap();
        let keyword = self.keyword_dir();
        if keyword.exists() {
            std::fs::remove_dir_all(&keyword).unwrap();
        }
        copy_dir(self.good_keyword.path(), &keyword);
    }

    /// Opens the database and checks every answer; `Err` if the open failed with
    /// `Error::Corrupted`. Returns how the vector and keyword indexes came back.
    fn verify(&self, ctx: &str) -> Result<(Recovery, Recovery), String> {
        let (opened, largest) = largest_allocation(|| Database::open(&self.root));
        assert!(
            largest <= ALLOCATION_LIMIT,
            "{ctx}: opening made a single allocation of {largest} bytes"
        );
        self.largest.set(self.largest.get().max(largest));
        let db = match opened {
            Ok(db) => db,
            Err(Error::Corrupted { file, detail }) => {
                return Err(format!("{}: {detail}", file.display()))
            }
            Err(e) => panic!("{ctx}: open failed with a non-corruption error: {e}"),
        };
        let c = db.collection("d").unwrap();
        let info = c.info().unwrap();
        assert_eq!(info.count, self.count, "{ctx}");
        assert_eq!(info.vector_index.len as u64, self.count, "{ctx}");
        assert_eq!(c.count().unwrap(), self.count, "{ctx}");
        for e in &self.expected {
            let hits = c
                .search(&e.request)
                .unwrap_or_else(|err| panic!("{ctx}, {}: {err}", e.what))
                .hits;
            assert!(
                hits.windows(2).all(|p| p[0].distance <= p[1].distance),
                "{ctx}, {}: unsorted",
                e.what
            );
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert_matches_brute_force(&hits, &e.top, &e.all)
            }));
            if caught.is_err() {
                panic!("{ctx}, {}: wrong answer {hits:?}", e.what);
            }
            // The index's own approximate path (graph, probed lists) over what was loaded: k
            // distinct hits, each at its document's exact distance.
            let mut approximate = SearchRequest::new(e.request.vector.clone().unwrap(), 10);
            approximate.filter = e.request.filter.clone();
            let hits = c
                .search(&approximate)
                .unwrap_or_else(|err| panic!("{ctx}, {} (default knobs): {err}", e.what))
                .hits;
            let distinct: BTreeSet<Uuid> = hits.iter().map(|h| h.id).collect();
            assert!(
                hits.len() == 10 && distinct.len() == 10,
                "{ctx}, {} (default knobs): {hits:?}",
                e.what
            );
            for hit in &hits {
                let exact = e.all.iter().find(|(id, _)| *id == hit.id).map(|p| p.1);
                let d = f64::from(hit.distance.unwrap());
                assert!(
                    exact.is_some_and(|x| (x - d).abs() <= 1e-4 * x.abs().max(1.0)),
                    "{ctx}, {} (default knobs): {} at {d}, exactly {exact:?}",
                    e.what,
                    hit.id
                );
            }
        }
        let keyword = info.keyword_index.expect("text index");
        assert_eq!(keyword.documents, self.count, "{ctx}");
        for (term, ids) in &self.terms {
            let hits = c
                .search(&SearchRequest::text(term.as_str(), 1_000))
                .unwrap_or_else(|err| panic!("{ctx}, keyword {term}: {err}"))
                .hits;
            let got: BTreeSet<Uuid> = hits.iter().map(|h| h.id).collect();
            assert_eq!(
                got.len(),
                hits.len(),
                "{ctx}, keyword {term}: a repeated hit"
            );
            assert_eq!(&got, ids, "{ctx}, keyword {term}");
        }
        let report = db.check(None).unwrap();
        assert!(report.ok(), "{ctx}: check failed: {report:#?}");
        drop(c);
        db.close().unwrap();
        Ok((info.vector_index.recovery, keyword.recovery))
    }
}

// ----- damage ----------------------------------------------------------------------------------

/// What a trial may lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The bytes are unchanged: the checkpoint must load.
    NoOp,
    /// The checkpoint must not be used: rebuilt (or an `Error::Corrupted` from open).
    Reject,
    /// Forged but possibly valid (e.g. another graph entry point): loaded or rebuilt, the
    /// answers must be right either way.
    Either,
}

/// A number field of a file that can be forged.
#[derive(Clone, Debug)]
struct Field {
    name: String,
    at: usize,
    width: usize,
    /// Whether any other value must make the loader reject the file.
    reject: bool,
}

impl Field {
    fn new(name: impl Into<String>, at: usize, width: usize, reject: bool) -> Field {
        Field {
            name: name.into(),
            at,
            width,
            reject,
        }
    }

    fn read(&self, bytes: &[u8]) -> u64 {
        let mut b = [0u8; 8];
        b[..self.width].copy_from_slice(&bytes[self.at..self.at + self.width]);
        u64::from_le_bytes(b)
    }

    fn write(&self, bytes: &mut [u8], value: u64) {
        bytes[self.at..self.at + self.width].copy_from_slice(&value.to_le_bytes()[..self.width]);
    }

    /// Values worth forging: absurd sizes, off-by-ones, zero.
    fn values(&self, original: u64) -> Vec<u64> {
        let max = if self.width == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.width)) - 1
        };
        let mut v = vec![
            max,
            max >> 1,
            max >> 2,
            0,
            original.wrapping_add(1) & max,
            original.wrapping_sub(1) & max,
            original.wrapping_mul(2) & max,
        ];
        if self.width == 8 {
            v.extend([1 << 62, 1 << 40, 1 << 32, u64::from(u32::MAX), 1 << 31]);
        }
        if self.width >= 4 {
            v.extend([1 << 24, 1 << 16]);
        }
        v
    }
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Recomputes the payload and header checksums, so that only the loader's own checks can
/// catch a forged field.
fn reseal(bytes: &mut [u8]) {
    let payload = crc32c::crc32c(&bytes[P..]);
    bytes[48..52].copy_from_slice(&payload.to_le_bytes());
    let header = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&header.to_le_bytes());
}

/// The forgeable fields of a good index file of `kind` (header and payload counts), read
/// from the file itself.
fn fields(kind: Kind, good: &[u8]) -> Vec<Field> {
    let mut f = vec![
        Field::new("container version", 8, 4, true),
        Field::new("index kind", 12, 2, true),
        Field::new("kind version", 14, 2, true),
        Field::new("dimension", 16, 4, true),
        Field::new("metric", 20, 1, true),
        Field::new("config fingerprint", 24, 8, true),
        // The checkpoint was written at close: any other watermark is ahead of the store or
        // older than the trimmed log.
        Field::new("watermark", 32, 8, true),
        Field::new("payload length", 40, 8, true),
    ];
    let n = le_u64(good, P) as usize;
    let stored = P + 64 + n * (DIM * 4 + 4 + 16);
    match kind {
        Kind::Flat => f.push(Field::new("vector count", P, 8, true)),
        Kind::Hnsw => {
            let m = le_u32(good, P + 8) as usize;
            f.extend([
                Field::new("slot count", P, 8, true),
                Field::new("M", P + 8, 4, true),
                Field::new("efConstruction", P + 12, 4, true),
                Field::new("seed", P + 16, 8, true),
                Field::new("entry point", P + 24, 8, false),
                Field::new("keep_pruned", P + 32, 1, false),
                Field::new("vector precision", P + 33, 1, true),
            ]);
            // Levels (one byte per slot), then layer-0 blocks of 1 + 2M words.
            for node in [0, 1, n / 2, n - 1] {
                f.push(Field::new(
                    format!("level of node {node}"),
                    stored + node,
                    1,
                    true,
                ));
            }
            let level0 = stored + n.next_multiple_of(4);
            for node in [0, n / 3, n - 1] {
                let block = level0 + node * (1 + 2 * m) * 4;
                f.push(Field::new(
                    format!("link count of node {node}"),
                    block,
                    4,
                    false,
                ));
                f.push(Field::new(
                    format!("first link of node {node}"),
                    block + 4,
                    4,
                    false,
                ));
            }
        }
        Kind::IvfPq => {
            let nlist = le_u64(good, P + 16) as usize;
            let m = le_u64(good, P + 24) as usize;
            assert_eq!(le_u64(good, P + 8), 1, "the fixture is trained");
            f.extend([
                Field::new("slot count", P, 8, true),
                Field::new("trained flag", P + 8, 8, false),
                Field::new("list count", P + 16, 8, true),
                Field::new("code size", P + 24, 8, true),
                Field::new("trained on", P + 32, 8, false),
                Field::new("indexed count", P + 40, 8, true),
            ]);
            let lengths = stored + nlist * DIM * 4 + m * 256 * (DIM / m) * 4;
            for list in [0, nlist / 2, nlist - 1] {
                f.push(Field::new(
                    format!("length of list {list}"),
                    lengths + list * 8,
                    8,
                    true,
                ));
            }
            // The slots slab starts at the next 64-byte file offset; zero padding before it.
            let slots = (lengths + nlist * 8).next_multiple_of(64);
            f.push(Field::new("first slot of list 0", slots, 4, false));
            if slots > lengths + nlist * 8 {
                f.push(Field::new("slab padding", lengths + nlist * 8, 1, true));
            }
        }
    }
    f
}

/// A forged copy of `good` (`field` set to `value`, checksums recomputed) and what to expect.
fn forge(good: &[u8], field: &Field, value: u64) -> (Vec<u8>, Expect) {
    let mut bytes = good.to_vec();
    field.write(&mut bytes, value);
    reseal(&mut bytes);
    let expect = if bytes == good {
        Expect::NoOp
    } else if field.reject {
        Expect::Reject
    } else {
        Expect::Either
    };
    (bytes, expect)
}

/// One random damage of an index file: its description, the new bytes (`None`: deleted) and
/// what to expect.
fn damage_index_file(
    rng: &mut Rng,
    good: &[u8],
    fields: &[Field],
) -> (String, Option<Vec<u8>>, Expect) {
    let len = good.len();
    // Positions favour the two headers (128 bytes), where the sizes live.
    let position = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            rng.below(len.min(2 * P))
        } else {
            rng.below(len)
        }
    };
    let (what, bytes) = match rng.below(100) {
        0..=29 => {
            let (at, bit) = (position(rng), rng.below(8));
            let mut b = good.to_vec();
            b[at] ^= 1 << bit;
            (format!("bit {bit} of byte {at} flipped"), Some(b))
        }
        30..=44 => {
            let at = position(rng);
            let n = 1 + rng.below(64.min(len - at));
            let mut b = good.to_vec();
            for x in &mut b[at..at + n] {
                *x = rng.next_u64() as u8;
            }
            (format!("{n} bytes at {at} overwritten"), Some(b))
        }
        45..=59 => {
            let cut = rng.below(len + 1);
            (
                format!("truncated to {cut} of {len} bytes"),
                Some(good[..cut].to_vec()),
            )
        }
        60..=61 => ("emptied".to_string(), Some(Vec::new())),
        62..=63 => ("deleted".to_string(), None),
        64..=69 => {
            let n = 1 + rng.below(200);
            let mut b = good.to_vec();
            b.extend((0..n).map(|_| rng.next_u64() as u8));
            (format!("{n} bytes of garbage appended"), Some(b))
        }
        _ => {
            let field = &fields[rng.below(fields.len())];
            let original = field.read(good);
            let values = field.values(original);
            let value = if rng.below(4) == 0 {
                rng.next_u64()
            } else {
                values[rng.below(values.len())]
            };
            let (b, expect) = forge(good, field, value);
            return (
                format!(
                    "{} forged {original} -> {value} (checksums valid)",
                    field.name
                ),
                Some(b),
                expect,
            );
        }
    };
    let expect = match &bytes {
        Some(b) if b == good => Expect::NoOp,
        _ => Expect::Reject,
    };
    (what, bytes, expect)
}

/// Trial outcomes of one kind.
#[derive(Default)]
struct Tally {
    trials: usize,
    rebuilt: usize,
    errors: usize,
    noop: usize,
    /// Forged files that loaded (with right answers), by field.
    accepted: BTreeMap<String, usize>,
}

impl Tally {
    /// Counts a trial; `key` names the damage among the accepted ones.
    fn record(&mut self, ctx: &str, key: &str, expect: Expect, outcome: &Result<Recovery, String>) {
        self.trials += 1;
        match (expect, outcome) {
            (_, Err(_)) if expect != Expect::NoOp => self.errors += 1,
            (Expect::NoOp, Ok(Recovery::Loaded { replayed: 0 })) => self.noop += 1,
            (Expect::Reject | Expect::Either, Ok(Recovery::Rebuilt { .. })) => self.rebuilt += 1,
            (Expect::Either, Ok(Recovery::Loaded { .. })) => {
                *self.accepted.entry(key.to_string()).or_default() += 1;
            }
            (expect, outcome) => panic!("{ctx}: expected {expect:?}, got {outcome:?}"),
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} trials: {} rebuilt, {} Corrupted errors, {} no-op (loaded)",
            self.trials, self.rebuilt, self.errors, self.noop
        )?;
        if !self.accepted.is_empty() {
            let n: usize = self.accepted.values().sum();
            write!(f, ", {n} changed but valid (loaded): {:?}", self.accepted)?;
        }
        Ok(())
    }
}

/// Random damage to the vector index file of `kind`, `trials()` times.
fn damage_vector_index(kind: Kind, seed: u64) {
    let started = Instant::now();
    let fixture = Fixture::build(kind, seed);
    let fields = fields(kind, &fixture.good);
    let file = fixture.index_file();
    let mut rng = Rng(seed ^ 0xda3a);
    let mut tally = Tally::default();
    for trial in 0..trials() {
        let (what, bytes, expect) = damage_index_file(&mut rng, &fixture.good, &fields);
        let key = what.split(" forged").next().unwrap_or(&what).to_string();
        let ctx = format!("{kind:?} seed {seed} trial {trial}: {what}");
        match &bytes {
            Some(b) => std::fs::write(&file, b).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
        let outcome = fixture.verify(&ctx).map(|(vector, keyword)| {
            assert_eq!(keyword, Recovery::Loaded { replayed: 0 }, "{ctx}");
            vector
        });
        tally.record(&ctx, &key, expect, &outcome);
        if let Ok(Recovery::Rebuilt { .. }) = outcome {
            // The rebuilt index replaced the damaged file with a good checkpoint.
            assert!(file.exists(), "{ctx}: no new checkpoint");
        }
        fixture.restore();
    }
    eprintln!(
        "damage {kind:?} ({}): {tally}; largest allocation while opening {} KiB; {:.1?}",
        kind.file_name(),
        fixture.largest.get() >> 10,
        started.elapsed()
    );
    assert_eq!(tally.trials, trials());
}

#[test]
fn damaged_flat_files_are_rebuilt() {
    damage_vector_index(Kind::Flat, 9_100);
}

#[test]
fn damaged_hnsw_files_are_rebuilt() {
    damage_vector_index(Kind::Hnsw, 9_200);
}

#[test]
fn damaged_ivfpq_files_are_rebuilt() {
    damage_vector_index(Kind::IvfPq, 9_300);
}

/// Every forgeable size or count, set to every absurd value, with valid checksums: each open
/// fails over to a rebuild quickly, without a large allocation.
#[test]
fn absurd_sizes_fail_fast_without_allocating() {
    for (kind, seed) in [
        (Kind::Flat, 9_410),
        (Kind::Hnsw, 9_420),
        (Kind::IvfPq, 9_430),
    ] {
        let started = Instant::now();
        let fixture = Fixture::build(kind, seed);
        let file = fixture.index_file();
        let mut tally = Tally::default();
        let mut slowest = Duration::ZERO;
        for field in fields(kind, &fixture.good) {
            let original = field.read(&fixture.good);
            for value in field.values(original) {
                let (bytes, expect) = forge(&fixture.good, &field, value);
                let what = format!("{} forged {original} -> {value}", field.name);
                let ctx = format!("{kind:?}: {what}");
                std::fs::write(&file, &bytes).unwrap();
                let opened = Instant::now();
                let outcome = fixture.verify(&ctx).map(|(vector, _)| vector);
                slowest = slowest.max(opened.elapsed());
                tally.record(&ctx, &field.name, expect, &outcome);
                fixture.restore();
            }
        }
        eprintln!(
            "absurd sizes {kind:?}: {tally}; slowest open + checks {slowest:.1?}, largest \
             allocation while opening {} KiB; {:.1?}",
            fixture.largest.get() >> 10,
            started.elapsed()
        );
        assert!(
            slowest < Duration::from_secs(10),
            "{kind:?}: a forged file took {slowest:?} to open and check"
        );
    }
}

// ----- the keyword folder ----------------------------------------------------------------------

/// The files of a keyword folder, in an order that does not depend on the (random) segment
/// ids: by the position of their segment in meta.json, then by extension.
fn keyword_files(dir: &Path) -> Vec<String> {
    let segments = committed_segments(dir);
    let mut names: Vec<(usize, String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            let position = segments
                .iter()
                .position(|id| name.starts_with(&format!("{id}.")))
                .unwrap_or(segments.len());
            let rest = name.split_once('.').map_or("", |(_, r)| r).to_string();
            (position, rest, name)
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, _, name)| name).collect()
}

/// The segment ids (as in file names) the last commit (meta.json in `dir`) names.
fn committed_segments(dir: &Path) -> Vec<String> {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    meta["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["segment_id"].as_str().unwrap().replace('-', ""))
        .collect()
}

/// Files of the segments the last commit (meta.json in `dir`) names: they carry a checksum,
/// and any change to one must be caught. (Files of segments merged away, until tantivy
/// collects them, and tantivy's bookkeeping files are not needed.)
fn checksummed(dir: &Path, name: &str) -> bool {
    committed_segments(dir)
        .iter()
        .any(|id| name.starts_with(&format!("{id}.")))
}

/// One random damage of the keyword folder `dir` (restored to the good copy before).
/// Returns the description, a short key (file type and damage) and what to expect.
fn damage_keyword_folder(rng: &mut Rng, good: &Path, dir: &Path) -> (String, String, Expect) {
    let names = keyword_files(good);
    // meta.json decides what tantivy trusts: damage it a third of the time.
    let name = if rng.below(3) == 0 {
        "meta.json".to_string()
    } else {
        names[rng.below(names.len())].clone()
    };
    let path = dir.join(&name);
    let original = std::fs::read(&path).unwrap();
    let len = original.len();
    let mut bytes = original.clone();
    // Where the change starts: tantivy's footer (a JSON version and checksum, its length, a
    // magic number) is not covered by the checksum, and a changed version number is harmless.
    let mut from = 0;
    let footer = footer_start(&original);
    let (what, damage) = match rng.below(100) {
        // A flip of the lowest bit of a digit keeps it a digit: meta.json stays valid JSON
        // with another number in it.
        0..=29 if name == "meta.json" => {
            let digits: Vec<usize> = (0..len).filter(|&i| bytes[i].is_ascii_digit()).collect();
            let at = digits[rng.below(digits.len())];
            bytes[at] ^= 1;
            from = at;
            (format!("digit at {at} of {name} changed"), "digit changed")
        }
        0..=44 if len > 0 => {
            let (at, bit) = (rng.below(len), rng.below(8));
            bytes[at] ^= 1 << bit;
            from = at;
            (
                format!("bit {bit} of byte {at} of {name} flipped"),
                "bit flip",
            )
        }
        45..=59 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below(32.min(len - at));
            for x in &mut bytes[at..at + n] {
                *x = rng.next_u64() as u8;
            }
            from = at;
            (
                format!("{n} bytes at {at} of {name} overwritten"),
                "overwrite",
            )
        }
        60..=79 => {
            let cut = rng.below(len + 1);
            bytes.truncate(cut);
            (
                format!("{name} truncated to {cut} of {len} bytes"),
                "truncation",
            )
        }
        80..=84 => {
            bytes.clear();
            (format!("{name} emptied"), "emptied")
        }
        85..=89 => {
            std::fs::remove_file(&path).unwrap();
            let expect = if checksummed(good, &name) {
                Expect::Reject
            } else {
                Expect::Either
            };
            return (
                format!("{name} deleted"),
                format!("{} deleted", ext(&name)),
                expect,
            );
        }
        _ => {
            let n = 1 + rng.below(100);
            bytes.extend((0..n).map(|_| rng.next_u64() as u8));
            (
                format!("{n} bytes of garbage appended to {name}"),
                "garbage",
            )
        }
    };
    std::fs::write(&path, &bytes).unwrap();
    let key = format!("{} {damage}", ext(&name));
    let expect = if bytes == original {
        Expect::NoOp
    } else if checksummed(good, &name) && (bytes.len() != len || from < footer) {
        Expect::Reject
    } else {
        Expect::Either
    };
    (what, key, expect)
}

/// Where the footer of a tantivy file starts (`len - 8 - footer length`).
fn footer_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    if len < 8 {
        return 0;
    }
    let footer = u32::from_le_bytes(bytes[len - 8..len - 4].try_into().unwrap()) as usize;
    len.saturating_sub(8 + footer)
}

/// A tantivy file's type: its extension, or its name for the special files.
fn ext(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !name.ends_with(".json") => ext,
        _ => name,
    }
}

/// Random damage to the tantivy folder: the keyword index comes back rebuilt (or loaded, when
/// the damage touched nothing it uses) and answers exactly.
#[test]
fn damaged_keyword_folders_are_rebuilt() {
    let started = Instant::now();
    let seed = 9_500;
    let fixture = Fixture::build(Kind::Flat, seed);
    let mut rng = Rng(seed ^ 0x7e97);
    let mut tally = Tally::default();
    // Keyword trials rebuild tantivy indexes, which costs more than a vector index: half.
    let trials = trials().div_ceil(2).max(1);
    for trial in 0..trials {
        let (what, key, expect) = damage_keyword_folder(
            &mut rng,
            fixture.good_keyword.path(),
            &fixture.keyword_dir(),
        );
        let ctx = format!("keyword seed {seed} trial {trial}: {what}");
        let outcome = fixture.verify(&ctx).map(|(vector, keyword)| {
            assert_eq!(vector, Recovery::Loaded { replayed: 0 }, "{ctx}");
            keyword
        });
        tally.record(&ctx, &key, expect, &outcome);
        fixture.restore();
    }
    eprintln!(
        "damage keyword (tantivy folder): {tally}; largest allocation while opening {} KiB; \
         {:.1?}",
        fixture.largest.get() >> 10,
        started.elapsed()
    );
}

/// Each file of the keyword folder in turn deleted, emptied, cut in half and flipped in the
/// middle. Regression: a deleted positions file (`.pos`) used to load (tantivy reads a missing
/// one as empty) and then fail every keyword search with "Data corrupted".
#[test]
fn every_keyword_file_deleted_truncated_or_flipped_is_rebuilt() {
    let fixture = Fixture::build(Kind::Flat, 9_600);
    let names = keyword_files(fixture.good_keyword.path());
    assert!(names.iter().any(|n| n.ends_with(".pos")), "{names:?}");
    let mut tally = Tally::default();
    for name in &names {
        let path = fixture.keyword_dir().join(name);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        if let Some(b) = flipped.get_mut(good.len() / 2) {
            *b ^= 0x20;
        }
        let damages: [(&str, Option<Vec<u8>>); 4] = [
            ("deleted", None),
            ("emptied", Some(Vec::new())),
            ("cut in half", Some(good[..good.len() / 2].to_vec())),
            ("flipped in the middle", Some(flipped)),
        ];
        for (what, bytes) in damages {
            let ctx = format!("keyword file {name} {what}");
            match &bytes {
                Some(b) => std::fs::write(&path, b).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let changed = bytes.as_ref() != Some(&good);
            let expect = match (changed, checksummed(fixture.good_keyword.path(), name)) {
                (false, _) => Expect::NoOp,
                (true, true) => Expect::Reject,
                (true, false) => Expect::Either,
            };
            let outcome = fixture.verify(&ctx).map(|(vector, keyword)| {
                assert_eq!(vector, Recovery::Loaded { replayed: 0 }, "{ctx}");
                keyword
            });
            tally.record(&ctx, &format!("{} {what}", ext(name)), expect, &outcome);
            fixture.restore();
        }
    }
    eprintln!("keyword files ({} files): {tally}", names.len());
}

/// Regression: tantivy's meta.json has no checksum; garbled so that it still parses (a
/// segment's `deletes` key renamed), it used to load with that segment's deleted documents
/// alive again (a keyword search found texts the documents no longer have). It is now checked
/// against the checksum recorded at its commit, and rebuilt.
#[test]
fn a_garbled_but_parseable_meta_json_is_rebuilt() {
    let fixture = Fixture::build(Kind::Flat, 9_700);
    let meta = fixture.keyword_dir().join("meta.json");
    let good = std::fs::read_to_string(&meta).unwrap();
    assert!(good.contains("\"num_deleted_docs\""), "{good}");
    let garbled = good.replacen("\"deletes\"", "\"delftes\"", 1);
    let bumped = good.replacen("\"max_doc\": 1", "\"max_doc\": 9", 1);
    for (what, text) in [
        ("deletes key renamed", garbled),
        ("max_doc changed", bumped),
    ] {
        assert_ne!(text, good, "{what}");
        std::fs::write(&meta, text).unwrap();
        let (vector, keyword) = fixture.verify(what).expect("opens");
        assert_eq!(vector, Recovery::Loaded { replayed: 0 }, "{what}");
        assert!(
            matches!(&keyword, Recovery::Rebuilt { reason } if reason.contains("checksum")),
            "{what}: {keyword:?}"
        );
        fixture.restore();
    }
}
