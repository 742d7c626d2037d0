//! The index-file container: a fixed 64-byte header, then the payload.
//!
//! ```text
//! offset size field
//!  0      8   magic b"QUIVERIX"
//!  8      4   container version (1)
//! 12      2   index kind (1 = flat, 2 = hnsw, 3 = ivfpq, 4 = diskann)
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
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::{with_suffix, IndexDir, IndexIo};

use crate::error::{Error, Result};
use crate::types::{Metric, Seq};
use crate::vectors::{Element, VectorArena};

/// Magic bytes at the start of every QuiverDB index file.
pub const MAGIC: [u8; 8] = *b"QUIVERIX";
/// Version of the container layout above.
pub const CONTAINER_VERSION: u32 = 1;
/// Size of the header; the payload starts here.
pub const HEADER_LEN: usize = 64;
/// File offsets of slabs (big arrays a reader could map in place) are multiples of this.
pub const SLAB_ALIGN: usize = 64;

/// Zero bytes that bring file offset `offset` to the next multiple of [`SLAB_ALIGN`].
fn slab_padding(offset: u64) -> usize {
    (SLAB_ALIGN as u64 - offset % SLAB_ALIGN as u64) as usize % SLAB_ALIGN
}

/// The kinds of index file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFileKind {
    /// [`super::flat::FlatIndex`].
    Flat,
    /// [`super::hnsw::HnswIndex`].
    Hnsw,
    /// [`super::ivfpq::IvfPqIndex`].
    IvfPq,
    /// [`super::diskann::DiskAnnIndex`] (its state; the graph is in node files).
    DiskAnn,
}

impl IndexFileKind {
    fn code(self) -> u16 {
        match self {
            IndexFileKind::Flat => 1,
            IndexFileKind::Hnsw => 2,
            IndexFileKind::IvfPq => 3,
            IndexFileKind::DiskAnn => 4,
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

/// Streams a payload into a new index file. Nothing replaces the old file until
/// [`FileWriter::finish`], which fsyncs, renames over it and fsyncs the directory; a writer
/// dropped before that removes its temporary file. Every operation goes through the
/// directory's [`IndexIo`].
pub struct FileWriter {
    /// `None` once finished.
    file: Option<File>,
    io: Arc<dyn IndexIo>,
    buffer: Vec<u8>,
    tmp: PathBuf,
    path: PathBuf,
    header: FileHeader,
    len: u64,
    crc: u32,
}

/// Bytes buffered before a write is issued.
const WRITE_BUFFER: usize = 1 << 20;

impl FileWriter {
    /// Starts writing the file `name` of `dir` (through a temporary file) with this header.
    pub fn create(dir: &IndexDir, name: &str, header: FileHeader) -> Result<Self> {
        let path = dir.path().join(name);
        let tmp = with_suffix(&path, ".tmp");
        let file = dir.io().create(&tmp)?;
        let mut writer = FileWriter {
            file: Some(file),
            io: dir.io_handle(),
            buffer: Vec::with_capacity(WRITE_BUFFER),
            tmp,
            path,
            header,
            len: 0,
            crc: 0,
        };
        // Room for the header, written last.
        writer.buffer.extend_from_slice(&[0u8; HEADER_LEN]);
        Ok(writer)
    }

    /// Appends bytes to the payload.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.len += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Internal("write after finish".into()));
        };
        self.io.write_all(file, &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Appends 32-bit words, little-endian.
    pub fn write_u32s(&mut self, values: impl IntoIterator<Item = u32>) -> Result<()> {
        self.write_words(values.into_iter().map(u32::to_le_bytes))
    }

    /// Appends floats, little-endian.
    pub fn write_f32s(&mut self, values: &[f32]) -> Result<()> {
        self.write_words(values.iter().map(|v| v.to_le_bytes()))
    }

    fn write_words(&mut self, words: impl Iterator<Item = [u8; 4]>) -> Result<()> {
        let mut chunk = Vec::with_capacity(4096);
        for word in words {
            chunk.extend_from_slice(&word);
            if chunk.len() >= 4096 {
                self.write(&chunk)?;
                chunk.clear();
            }
        }
        self.write(&chunk)
    }

    /// Pads the payload with zeros until the next byte's file offset is a multiple of
    /// [`SLAB_ALIGN`], so that the slab written next can be memory-mapped in place.
    pub fn align_slab(&mut self) -> Result<()> {
        let pad = slab_padding(HEADER_LEN as u64 + self.len);
        self.write(&[0u8; SLAB_ALIGN][..pad])
    }

    /// Writes the header, makes the file durable and atomically replaces the old one.
    pub fn finish(mut self) -> Result<()> {
        let durable = (|| -> Result<()> {
            self.flush()?;
            let mut file = self
                .file
                .take()
                .ok_or_else(|| Error::Internal("index file finished twice".into()))?;
            let header = self.header.encode(self.len, self.crc);
            self.io.write_all_at(&mut file, 0, &header)?;
            self.io.sync(&file)?;
            drop(file);
            self.io.rename(&self.tmp, &self.path)?;
            Ok(())
        })();
        if let Err(e) = durable {
            fs::remove_file(&self.tmp).ok();
            return Err(e);
        }
        self.io
            .sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned (an error happened while writing): leave nothing behind.
            fs::remove_file(&self.tmp).ok();
        }
    }
}

/// Reads a payload section by section after validating the header. Sizes are checked against
/// the bytes left before anything is allocated, and [`FileReader::finish`] verifies the
/// checksum: callers must not use what they read until it returns Ok.
pub struct FileReader {
    file: BufReader<File>,
    path: PathBuf,
    header: FileHeader,
    /// Payload bytes read so far.
    position: u64,
    remaining: u64,
    crc: u32,
    expected_crc: u32,
}

impl FileReader {
    /// Opens `path` and validates its header against `expected` (everything but the watermark).
    /// `Ok(None)` if the file does not exist; [`Error::Corrupted`] if it is damaged, foreign, of
    /// another version or written for another configuration.
    pub fn open(path: &Path, expected: &FileHeader) -> Result<Option<Self>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bad = |detail: String| Error::corrupted(path, detail);
        let file_len = file.metadata()?.len();
        if file_len < HEADER_LEN as u64 {
            return Err(bad(format!(
                "file is {file_len} bytes, shorter than its header"
            )));
        }
        let mut h = [0u8; HEADER_LEN];
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
            return Err(bad("written for another collection or configuration".into()));
        }
        let payload_len = le_u64(&h[40..48]);
        if payload_len != file_len - HEADER_LEN as u64 {
            return Err(bad(format!(
                "header announces {payload_len} payload bytes, file holds {}",
                file_len - HEADER_LEN as u64
            )));
        }
        Ok(Some(FileReader {
            file: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            header: FileHeader {
                watermark: le_u64(&h[32..40]),
                ..*expected
            },
            position: 0,
            remaining: payload_len,
            crc: 0,
            expected_crc: le_u32(&h[48..52]),
        }))
    }

    /// The validated header, with the file's watermark.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Payload bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// A [`Error::Corrupted`] naming this file.
    pub fn corrupted(&self, detail: impl Into<String>) -> Error {
        Error::corrupted(&self.path, detail)
    }

    /// Fails unless `bytes` more payload bytes exist (call before allocating for them).
    pub fn ensure_remaining(&self, bytes: u64) -> Result<()> {
        if bytes > self.remaining {
            return Err(self.corrupted(format!(
                "payload needs {bytes} more bytes, {} left",
                self.remaining
            )));
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` payload bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.ensure_remaining(buf.len() as u64)?;
        self.file.read_exact(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.remaining -= buf.len() as u64;
        self.position += buf.len() as u64;
        Ok(())
    }

    /// Skips the zeros [`FileWriter::align_slab`] wrote at this point; anything else there is
    /// corruption.
    pub fn skip_slab_padding(&mut self) -> Result<()> {
        let offset = HEADER_LEN as u64 + self.position;
        let mut pad = [0u8; SLAB_ALIGN];
        let pad = &mut pad[..slab_padding(offset)];
        self.read(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(self.corrupted("slab padding is not zero"));
        }
        Ok(())
    }

    /// Reads one little-endian `u64`.
    pub fn read_u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `n` little-endian 32-bit words.
    pub fn read_u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        self.ensure_remaining((n as u64).saturating_mul(4))?;
        let mut out = Vec::with_capacity(n);
        self.read_words_into(n, |w| out.push(u32::from_le_bytes(w)))?;
        Ok(out)
    }

    /// Reads `n` little-endian floats, passing each to `sink`.
    pub fn read_f32s(&mut self, n: usize, mut sink: impl FnMut(f32)) -> Result<()> {
        self.read_words_into(n, |w| sink(f32::from_le_bytes(w)))
    }

    fn read_words_into(&mut self, n: usize, mut sink: impl FnMut([u8; 4])) -> Result<()> {
        self.ensure_remaining((n as u64).saturating_mul(4))?;
        let mut chunk = vec![0u8; 4096];
        let mut left = n * 4;
        while left > 0 {
            let take = left.min(chunk.len());
            self.read(&mut chunk[..take])?;
            for w in chunk[..take].chunks_exact(4) {
                sink([w[0], w[1], w[2], w[3]]);
            }
            left -= take;
        }
        Ok(())
    }

    /// Checks that the whole payload was read and its checksum matches.
    pub fn finish(self) -> Result<FileHeader> {
        if self.remaining != 0 {
            return Err(self.corrupted(format!(
                "{} unexpected bytes after the payload",
                self.remaining
            )));
        }
        if self.crc != self.expected_crc {
            return Err(self.corrupted("payload checksum mismatch"));
        }
        Ok(self.header)
    }
}

/// Writes every vector of `arena` in slot order, `dim` components each (little-endian).
pub fn write_arena<E: Element>(out: &mut FileWriter, arena: &VectorArena<E>) -> Result<()> {
    let mut bytes = Vec::with_capacity(arena.dim() * E::BYTES);
    for slot in 0..arena.len() {
        bytes.clear();
        for &x in arena.get(slot) {
            x.put_le(&mut bytes);
        }
        out.write(&bytes)?;
    }
    Ok(())
}

/// Reads `n` vectors of `dim` components (written by [`write_arena`]) into a new arena.
pub fn read_arena<E: Element>(
    input: &mut FileReader,
    n: usize,
    dim: usize,
) -> Result<VectorArena<E>> {
    input.ensure_remaining((n as u64).saturating_mul((dim * E::BYTES) as u64))?;
    let mut arena = VectorArena::new(dim);
    arena.reserve_slots(n);
    let mut bytes = vec![0u8; dim * E::BYTES];
    let mut vector = Vec::with_capacity(dim);
    for _ in 0..n {
        input.read(&mut bytes)?;
        vector.clear();
        vector.extend(bytes.chunks_exact(E::BYTES).map(E::get_le));
        arena.push_stored(&vector);
    }
    Ok(arena)
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

    /// Starts a writer for `path` (in its folder, through the operating system).
    fn writer(path: &Path) -> FileWriter {
        let dir = IndexDir::os(path.parent().unwrap().to_path_buf());
        let name = path.file_name().unwrap().to_str().unwrap();
        FileWriter::create(&dir, name, header()).unwrap()
    }

    fn write(path: &Path, payload: &[u8]) {
        let mut w = writer(path);
        w.write(payload).unwrap();
        w.finish().unwrap();
    }

    /// A slab starts at a file offset that is a multiple of 64 whatever came before it; the
    /// reader skips the padding, and refuses padding that is not zero.
    #[test]
    fn slabs_start_at_aligned_file_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slabs.qvi");
        for before in [0usize, 1, 63, 64, 65, 200] {
            let mut w = writer(&path);
            w.write(&vec![7u8; before]).unwrap();
            w.align_slab().unwrap();
            w.write(b"slab").unwrap();
            w.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let at = HEADER_LEN + before.div_ceil(SLAB_ALIGN) * SLAB_ALIGN;
            assert_eq!(&bytes[at..], b"slab", "{before} bytes before");
            let mut r = FileReader::open(&path, &header()).unwrap().unwrap();
            r.read(&mut vec![0u8; before]).unwrap();
            r.skip_slab_padding().unwrap();
            let mut slab = [0u8; 4];
            r.read(&mut slab).unwrap();
            assert_eq!(&slab, b"slab");
            r.finish().unwrap();
        }
        // Non-zero padding (with a valid checksum) is corruption.
        let mut w = writer(&path);
        w.write(&[7u8; 3]).unwrap();
        w.write(&[1u8; 61]).unwrap();
        w.finish().unwrap();
        let mut r = FileReader::open(&path, &header()).unwrap().unwrap();
        r.read(&mut [0u8; 3]).unwrap();
        assert!(matches!(
            r.skip_slab_padding(),
            Err(Error::Corrupted { .. })
        ));
    }

    /// Reads the whole payload, or the first error.
    fn read_all(path: &Path, expected: &FileHeader) -> Result<Option<(FileHeader, Vec<u8>)>> {
        let Some(mut r) = FileReader::open(path, expected)? else {
            return Ok(None);
        };
        let mut payload = vec![0u8; r.remaining() as usize];
        r.read(&mut payload)?;
        Ok(Some((r.finish()?, payload)))
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        assert!(read_all(&path, &header()).unwrap().is_none());
        let mut w = writer(&path);
        w.write(b"ab").unwrap();
        w.write_u32s([1, 2]).unwrap();
        w.write_f32s(&[1.5]).unwrap();
        w.finish().unwrap();
        let mut r = FileReader::open(
            &path,
            &FileHeader {
                watermark: 0,
                ..header()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.header().watermark, 7);
        let mut ab = [0u8; 2];
        r.read(&mut ab).unwrap();
        assert_eq!(&ab, b"ab");
        assert_eq!(r.read_u32s(2).unwrap(), vec![1, 2]);
        let mut floats = Vec::new();
        r.read_f32s(1, |f| floats.push(f)).unwrap();
        assert_eq!(floats, vec![1.5]);
        assert!(r.read_u32s(1).is_err(), "reading past the payload fails");
        assert_eq!(r.finish().unwrap(), header());
        assert!(!with_suffix(&path, ".tmp").exists());
    }

    #[test]
    fn absurd_sizes_fail_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        write(&path, b"tiny");
        let mut r = FileReader::open(&path, &header()).unwrap().unwrap();
        assert!(matches!(
            r.read_u32s(usize::MAX / 8),
            Err(Error::Corrupted { .. })
        ));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        write(&path, b"payload bytes");
        let good = fs::read(&path).unwrap();
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                fs::write(&path, &bad).unwrap();
                // A flip in the reserved or watermark bytes is caught by the header checksum.
                assert!(
                    matches!(read_all(&path, &header()), Err(Error::Corrupted { .. })),
                    "flip at byte {byte} bit {bit} not detected"
                );
            }
        }
        for cut in 0..good.len() {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(matches!(
                read_all(&path, &header()),
                Err(Error::Corrupted { .. })
            ));
        }
    }

    #[test]
    fn foreign_configuration_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.qvi");
        write(&path, b"p");
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
                read_all(&path, &other),
                Err(Error::Corrupted { .. })
            ));
        }
    }
}
