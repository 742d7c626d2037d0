//! Node files end to end: writing, reading in every mode, damage, and billion-scale addressing.

use std::os::unix::fs::{FileExt, MetadataExt};

use uuid::Uuid;

use super::disk::{BeamParams, DiskGraph, DiskSearchStats};
use super::layout::{self, Geometry, Node, NodeFileHeader, BLOCK};
use super::nodefile::{write_node_file, NodeFile, NodeFileSpec, ReadMode};
use crate::error::Error;
use crate::index::io::IndexDir;
use crate::index::pq::ProductQuantizer;
use crate::index::TopK;
use crate::rng::SplitMix;
use crate::types::Metric;

const FINGERPRINT: u64 = 77;

fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.next_f64() as f32).collect())
        .collect()
}

/// Node `i` of the test files: its vector, a derived UUID and id, a ring of neighbours.
fn test_node(vectors: &[Vec<f32>], i: u32, degree: usize) -> Node {
    let n = vectors.len() as u32;
    Node {
        vector: vectors[i as usize].clone(),
        uuid: Uuid::from_u128(u128::from(i) + 1000),
        id: u64::from(i) * 2,
        neighbors: (1..=degree as u32).map(|d| (i + d) % n).collect(),
    }
}

/// Writes a node file of `vectors` into `dir`; returns its path.
fn write_test_file(dir: &IndexDir, vectors: &[Vec<f32>], degree: usize) -> std::path::PathBuf {
    let dim = vectors[0].len();
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let pq = ProductQuantizer::train(&flat, dim, 4, 1).expect("trains");
    let codes = pq.encode_many(&flat);
    let ids: Vec<u64> = (0..vectors.len() as u64).map(|i| i * 2).collect();
    let spec = NodeFileSpec {
        geometry: Geometry::new(dim, degree),
        metric: Metric::L2,
        nodes: vectors.len() as u32,
        medoid: 0,
        config_fingerprint: FINGERPRINT,
        generation: 5,
        pq: &pq,
        codes: &codes,
        ids: &ids,
    };
    write_node_file(dir, &spec, |slot| Ok(test_node(vectors, slot, degree))).expect("writes");
    dir.path().join(layout::file_name(5))
}

#[test]
fn node_files_round_trip_in_every_read_mode_and_geometry() {
    // 16-D nodes share blocks; 1100-D nodes span two blocks each.
    for (dim, n) in [(16, 700), (1100, 300)] {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = IndexDir::os(tmp.path().to_path_buf());
        let vectors = random_vectors(n, dim, dim as u64);
        let path = write_test_file(&dir, &vectors, 6);
        for mode in [ReadMode::Buffered, ReadMode::Direct, ReadMode::Mmap] {
            let file = NodeFile::open(&path, dim, Metric::L2, FINGERPRINT, mode).expect("opens");
            assert_eq!(file.header().nodes, n as u64);
            file.verify_nodes().expect("every node checks");
            let slots: Vec<u32> = (0..n as u32).rev().step_by(3).collect();
            let mut bufs: Vec<_> = slots.iter().map(|_| file.buffer()).collect();
            file.read_many(&slots, &mut bufs).expect("reads");
            for (&slot, buf) in slots.iter().zip(&bufs) {
                let node = file.node_in(slot, buf).expect("valid").to_node();
                assert_eq!(
                    node,
                    test_node(&vectors, slot, 6),
                    "{mode:?} dim {dim} slot {slot}"
                );
            }
            let trailer = file.read_trailer().expect("trailer");
            assert_eq!(
                trailer.ids,
                (0..n as u64).map(|i| i * 2).collect::<Vec<_>>()
            );
        }
        // Another collection's fingerprint, dimension or metric is refused.
        assert!(
            NodeFile::open(&path, dim, Metric::L2, FINGERPRINT + 1, ReadMode::Buffered).is_err()
        );
        assert!(
            NodeFile::open(&path, dim + 1, Metric::L2, FINGERPRINT, ReadMode::Buffered).is_err()
        );
        assert!(NodeFile::open(&path, dim, Metric::Dot, FINGERPRINT, ReadMode::Buffered).is_err());
    }
}

#[test]
fn damage_is_refused_at_load_or_found_by_the_search_that_reads_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = IndexDir::os(tmp.path().to_path_buf());
    let vectors = random_vectors(400, 16, 3);
    let path = write_test_file(&dir, &vectors, 6);
    let open = |verify_up_to| {
        let file = NodeFile::open(&path, 16, Metric::L2, FINGERPRINT, ReadMode::Buffered)?;
        DiskGraph::open(file, 0, verify_up_to)
    };
    let search = |graph: &DiskGraph| {
        let mut top = TopK::new(10);
        let mut stats = DiskSearchStats::default();
        let params = BeamParams { list: 400, beam: 4 };
        graph
            .search(&vectors[7], params, |_, _| true, &mut top, &mut stats)
            .map(|()| top.into_sorted())
    };
    let healthy = search(&open(u64::MAX).expect("opens")).expect("searches");
    assert_eq!(
        healthy[0].uuid,
        Uuid::from_u128(1007),
        "the query is node 7's vector"
    );

    // Damage node 200's vector: a verifying open refuses the file; a lazy open serves until a
    // search reads that node, which then fails with a Corrupted error naming it.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("opens");
    let (at, within) = Geometry::new(16, 6).locate(200);
    file.write_all_at(&[0xff], at + within as u64 + 3)
        .expect("damages");
    match open(u64::MAX) {
        Err(Error::Corrupted { detail, .. }) => assert!(detail.contains("node 200"), "{detail}"),
        other => panic!("expected Corrupted, got {:?}", other.map(|_| ())),
    }
    let lazy = open(0).expect("a lazy open does not read the nodes");
    match search(&lazy) {
        Err(Error::Corrupted { detail, .. }) => assert!(detail.contains("node 200"), "{detail}"),
        other => panic!("the search visited every node, so it must hit the damage: {other:?}"),
    }

    // A damaged trailer or a truncated file is refused even without node verification.
    let trailer_at = std::fs::metadata(&path).expect("meta").len() - 5;
    file.write_all_at(&[0x55], trailer_at).expect("damages");
    assert!(matches!(open(0), Err(Error::Corrupted { .. })));
    file.set_len(trailer_at).expect("truncates");
    assert!(matches!(open(0), Err(Error::Corrupted { .. })));
}

#[test]
fn node_900_million_of_a_billion_node_file_is_addressed_without_allocating_the_file() {
    const NODES: u64 = 1_000_000_000;
    const SLOT: u32 = 900_000_000;
    let (dim, degree) = (1024, 64);
    let geometry = Geometry::new(dim, degree);
    assert_eq!(geometry.blocks_per_node, 2);
    let mut header = NodeFileHeader {
        geometry,
        metric: Metric::L2,
        nodes: NODES,
        medoid: 0,
        pq_bytes: 64,
        rotated: true,
        config_fingerprint: FINGERPRINT,
        generation: 1,
        trailer_len: 0,
        trailer_crc: 0,
    };
    header.trailer_len = header.expected_trailer_len();
    // 8 TB of node blocks plus 72 GB of trailer: only the two written ranges take space.
    assert!(header.file_len() > 8_000_000_000_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join(layout::file_name(1));
    let file = std::fs::File::create(&path).expect("creates");
    file.set_len(header.file_len())
        .expect("a sparse file of the full size");
    file.write_all_at(&header.encode(), 0).expect("header");
    let node = Node {
        vector: (0..dim).map(|i| i as f32 * 0.25 - 7.0).collect(),
        uuid: Uuid::from_u128(0x900),
        id: u64::from(SLOT),
        neighbors: vec![1, 999_999_999, SLOT - 1],
    };
    let mut record = vec![0u8; geometry.node_bytes];
    layout::encode_node(&geometry, &node, &mut record);
    let (offset, within) = geometry.locate(u64::from(SLOT));
    assert_eq!(
        (offset, within),
        ((1 + 2 * u64::from(SLOT)) * BLOCK as u64, 0)
    );
    file.write_all_at(&record, offset).expect("node");
    drop(file);

    let opened = NodeFile::open(&path, dim, Metric::L2, FINGERPRINT, ReadMode::Buffered)
        .expect("the header and length agree");
    assert_eq!(opened.read_node(SLOT).expect("reads back"), node);
    // Neighbouring slots were never written: zero blocks fail their checksum, never decode.
    assert!(matches!(
        opened.read_node(SLOT + 1),
        Err(Error::Corrupted { .. })
    ));
    let allocated = std::fs::metadata(&path).expect("meta").blocks() * 512;
    assert!(allocated < 1 << 20, "{allocated} bytes allocated");
}
