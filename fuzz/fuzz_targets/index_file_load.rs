//! Fuzzes the index-file loaders (flat, HNSW, IVF-PQ).
//!
//! The first byte picks the loader (bits 0-1: flat, HNSW, IVF-PQ), the metric (bits 2-3) and
//! how the remaining bytes are used (bits 4-5):
//! - 0, 1: as the payload of a file whose header is valid (right kind, configuration, length
//!   and both crc32c checksums), so the loader parses the payload past every header check;
//! - 2: as edits of a valid file written by the index itself (small, or large enough for a
//!   multi-level HNSW graph and trained IVF-PQ quantisers): `(u16 offset, u8 xor)` triples on
//!   its payload, the last odd byte truncating it; the header is then made valid again;
//! - 3: as the whole raw file, header included.
//!
//! Loading must give `Ok` or `Error::Corrupted`, never panic or allocate for sizes the file
//! cannot hold; a loaded index must pass its own integrity check and answer searches sanely.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quiverdb::fuzzing::{index_file_template, load_index_file, with_payload, IndexKind};
use quiverdb::{Error, Metric};

const KINDS: [IndexKind; 3] = [IndexKind::Flat, IndexKind::Hnsw, IndexKind::IvfPq];
const METRICS: [Metric; 3] = [Metric::Cosine, Metric::L2, Metric::Dot];
/// Vectors written to the small and large templates, every third one then deleted: the small
/// one keeps vacant slots, the large one (266 live) has a multi-level HNSW graph, compacted
/// slots and trained IVF-PQ quantisers.
const TEMPLATE_SIZES: [usize; 2] = [12, 400];

struct Fixture {
    dir: tempfile::TempDir,
    /// Valid files by kind, metric and template size.
    templates: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let base = PathBuf::from("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::tempdir_in(base)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let scratch = tempfile::tempdir_in(dir.path()).expect("a scratch directory");
        let mut templates = Vec::new();
        for kind in KINDS {
            for metric in METRICS {
                for size in TEMPLATE_SIZES {
                    let file = index_file_template(kind, metric, size, scratch.path())
                        .expect("a template index file");
                    // The template loads and passes every check.
                    let loaded = load_index_file(kind, metric, scratch.path(), &file)
                        .expect("the template loads");
                    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
                    templates.push(file);
                }
            }
        }
        Fixture { dir, templates }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let k = usize::from(selector & 3) % 3;
    let m = usize::from((selector >> 2) & 3) % 3;
    let (kind, metric) = (KINDS[k], METRICS[m]);
    let template = |size: usize| &fixture.templates[(k * 3 + m) * 2 + size];
    let file = match (selector >> 4) & 3 {
        0 | 1 => with_payload(template(0), rest),
        2 => {
            let Some((&which, edits)) = rest.split_first() else {
                return;
            };
            let base = template(usize::from(which & 1));
            let mut payload = base[64..].to_vec();
            for edit in edits.chunks(3) {
                match *edit {
                    [lo, hi, xor] => {
                        if !payload.is_empty() {
                            let at = usize::from(u16::from_le_bytes([lo, hi])) % payload.len();
                            payload[at] ^= xor;
                        }
                    }
                    [lo, ..] => payload.truncate(payload.len().saturating_sub(usize::from(lo))),
                    [] => {}
                }
            }
            with_payload(base, &payload)
        }
        _ => rest.to_vec(),
    };
    match load_index_file(kind, metric, fixture.dir.path(), &file) {
        Ok(outcome) => assert!(
            outcome.problems.is_empty(),
            "{kind:?}/{metric:?}: a loaded index has problems: {:?}",
            outcome.problems
        ),
        Err(Error::Corrupted { .. }) => {}
        Err(other) => panic!("{kind:?}/{metric:?}: an error other than Corrupted: {other:?}"),
    }
});
