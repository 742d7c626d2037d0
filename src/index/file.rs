//! The index-file container: a fixed 64-byte header, then the payload.
//!
//! ```text
//! offset size field
//!  0      8   magic b"QUIVERIX"
//!  8      4   container version (1)
//! 12      2   index kind (1 = flat)
//! 14      2   kind format version
//! 16      4   dimension
//! 20      1   metric (1 cosine, 2 l2, 3 dot); 3 bytes zero
//! 24      8   config fingerprint (CollectionConfig::index_fingerprint: config + collection instance)
//! 32      8   watermark: last change-log sequence number reflected
//! 40      8   payload length in bytes
//! 48      4   crc32c of the payload
//! 52      8   zero (reserved)
//! 60      4   crc32c of bytes 0..60
//! ```
//! All numbers little-endian. The payload starts at offset 64, so 64-byte aligned slabs inside it
//! stay aligned in a memory map. Files are written to a temporary name, fsynced, renamed over
//! the old file, and the directory is fsynced: a crash leaves the old file or the new one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::{Metric, Seq};

/// Magic bytes at the start of every QuiverDB index file.
pub const MAGIC: [u8; 8] = *b"QUIVERIX";
/// Version of the container layout above.
pub const CONTAINER_VERSION: u32 = 1;
/// Size of the header; the payload starts here.
pub const HEADER_LEN: usize = 64;

/// The kinds of index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFileKind {
    /// [`super::flat::FlatIndex`].
    Flat,
}

impl IndexFileKind {
    fn code(self) -> u16 {
        match self {
            IndexFileKind::Flat => 1,
        }
    }
}

/// What a file's header says, and what a loader expects it to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Which index wrote the file.
    pub kind: IndexFileKind,
    /// The payload format version of that index kind.
    pub kind_version: u16,
    /// Vector dimension.
    pub dim: u32,
    /// Metric.
    pub metric: Metric,
    /// Config fingerprint of the collection.
    pub config_fingerprint: u64,
    /// Last change reflected in the payload.
    pub watermark: Seq,
}

impl FileHeader {
    fn encode(&self, payload_len: u64, payload_crc: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&CONTAINER_VERSION.to_le_bytes());
        h[12..14].copy_from_slice(&self.kind.code().to_le_bytes());
        h[14..16].copy_from_slice(&self.kind_version.to_le_bytes());
        h[16..20].copy_from_slice(&self.dim.to_le_bytes());
        h[20] = self.metric.code();
        h[24..32].copy_from_slice(&self.config_fingerprint.to_le_bytes());
        h[32..40].copy_from_slice(&self.watermark.to_le_bytes());
        h[40..48].copy_from_slice(&payload_len.to_le_bytes());
        h[48..52].copy_from_slice(&payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Writes `header` and the concatenation of `slabs` to `path` atomically and durably.
pub fn write_atomic(path: &Path, header: &FileHeader, slabs: &[&[u8]]) -> Result<()> {
    let payload_len: u64 = slabs.iter().map(|s| s.len() as u64).sum();
    let crc = slabs
        .iter()
        .fold(0u32, |crc, s| crc32c::crc32c_append(crc, s));
    let tmp = temp_path(path);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&header.encode(payload_len, crc))?;
        for slab in slabs {
            file.write_all(slab)?;
        }
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads and validates the file at `path` against `expected` (everything but the watermark).
/// Returns `Ok(None)` if the file does not exist, [`Error::Corrupted`] if it is damaged, foreign,
/// of another version or written for another configuration; otherwise the header (with its
/// watermark) and the verified payload.
pub fn read_verified(path: &Path, expected: &FileHeader) -> Result<Option<(FileHeader, Vec<u8>)>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |detail: String| Error::corrupted(path, detail);
    let file_len = file.metadata()?.len();
    let mut h = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        return Err(bad(format!(
            "file is {file_len} bytes, shorter than its header"
        )));
    }
    file.read_exact(&mut h)?;
    if h[0..8] != MAGIC {
        return Err(bad("not a QuiverDB index file (bad magic)".into()));
    }
    if crc32c::crc32c(&h[0..60]) != le_u32(&h[60..64]) {
        return Err(bad("header checksum mismatch".into()));
    }
    let version = le_u32(&h[8..12]);
    if version != CONTAINER_VERSION {
        return Err(bad(format!(
            "container version {version}, this build reads {CONTAINER_VERSION}"
        )));
    }
    if le_u16(&h[12..14]) != expected.kind.code() {
        return Err(bad(format!(
            "index kind {} where {:?} was expected",
            le_u16(&h[12..14]),
            expected.kind
        )));
    }
    let kind_version = le_u16(&h[14..16]);
    if kind_version != expected.kind_version {
        return Err(bad(format!(
            "index format version {kind_version}, this build reads {}",
            expected.kind_version
        )));
    }
    if le_u32(&h[16..20]) != expected.dim
        || h[20] != expected.metric.code()
        || le_u64(&h[24..32]) != expected.config_fingerprint
    {
        return Err(bad("written for another collection configuration".into()));
    }
    let payload_len = le_u64(&h[40..48]);
    if payload_len != file_len - HEADER_LEN as u64 {
        return Err(bad(format!(
            "header announces {payload_len} payload bytes, file holds {}",
            file_len - HEADER_LEN as u64
        )));
    }
    let payload_len = usize::try_from(payload_len).map_err(|_| bad("payload too large".into()))?;
    let mut payload = Vec::new();
    payload.try_reserve_exact(payload_len).map_err(|_| {
        bad(format!(
            "cannot allocate {payload_len} bytes for the payload"
        ))
    })?;
    file.read_to_end(&mut payload)?;
    if payload.len() != payload_len {
        return Err(bad("file changed while being read".into()));
    }
    if crc32c::crc32c(&payload) != le_u32(&h[48..52]) {
        return Err(bad("payload checksum mismatch".into()));
    }
    let header = FileHeader {
        watermark: le_u64(&h[32..40]),
        ..*expected
    };
    Ok(Some((header, payload)))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs a directory so that a rename or file creation inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FileHeader {
        FileHeader {
            kind: IndexFileKind::Flat,
            kind_version: 1,
            dim: 3,
            metric: Metric::L2,
            config_fingerprint: 42,
            watermark: 7,
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        assert!(read_verified(&path, &header()).unwrap().is_none());
        write_atomic(&path, &header(), &[b"abc", b"defg"]).unwrap();
        let (h, payload) = read_verified(
            &path,
            &FileHeader {
                watermark: 0,
                ..header()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(h, header());
        assert_eq!(payload, b"abcdefg");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        write_atomic(&path, &header(), &[b"payload bytes"]).unwrap();
        let good = fs::read(&path).unwrap();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                fs::write(&path, &bad).unwrap();
                let result = read_verified(&path, &header());
                // A flip in the reserved or watermark bytes is caught by the header checksum.
                assert!(
                    matches!(result, Err(Error::Corrupted { .. })),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(matches!(
                read_verified(&path, &header()),
                Err(Error::Corrupted { .. })
            ));
        }
    }

    #[test]
    fn foreign_configuration_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        write_atomic(&path, &header(), &[b"p"]).unwrap();
        for other in [
            FileHeader { dim: 4, ..header() },
            FileHeader {
                metric: Metric::Dot,
                ..header()
            },
            FileHeader {
                config_fingerprint: 1,
                ..header()
            },
            FileHeader {
                kind_version: 2,
                ..header()
            },
        ] {
            assert!(matches!(
                read_verified(&path, &other),
                Err(Error::Corrupted { .. })
            ));
        }
    }
}
