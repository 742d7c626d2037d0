//! The small I/O layer index checkpoints are written through.
//!
//! Production code uses [`OsIo`], the operating system's calls. Tests substitute an
//! implementation that fails on demand ([`crate::faults::FaultyIndexIo`]) to prove that a failed
//! checkpoint never damages the previous one nor loses an acknowledged write.

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diskann::nodefile::ReadMode;

/// The file operations a checkpoint needs. Every method has the operating system's behaviour
/// as its default, so an implementation overrides only what it wants to intercept.
pub trait IndexIo: Debug + Send + Sync {
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<File> {
        File::create(path)
    }

    /// Creates a file for writing that must not exist yet.
    fn create_new(&self, path: &Path) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// Writes all of `bytes` at the file's current position.
    fn write_all(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    /// Writes all of `bytes` at `offset` (used to fill in a header last).
    fn write_all_at(&self, file: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    /// Makes a file's contents durable.
    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// Makes a directory's entries (a rename, a new file) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// `path` with `suffix` appended to its file name (e.g. `flat.qvi` → `flat.qvi.tmp`), for
/// temporary siblings that are renamed over it.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `data` through `io`: written to a temporary sibling, synced if
/// `durable`, then renamed over it (the temporary file is removed on failure). Directory sync is
/// the caller's.
pub fn replace_file(io: &dyn IndexIo, path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let written = (|| {
        let mut file = io.create(&tmp)?;
        io.write_all(&mut file, data)?;
        if durable {
            io.sync(&file)?;
        }
        io.rename(&tmp, path)
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

/// The operating system's file operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsIo;

impl IndexIo for OsIo {}

/// The folder of a collection's index files, with the I/O its checkpoints are written through
/// and how disk-resident indexes read their node files.
#[derive(Clone, Debug)]
pub struct IndexDir {
    path: PathBuf,
    io: Arc<dyn IndexIo>,
    read_mode: ReadMode,
}

impl IndexDir {
    /// `path`, written through `io`, node files read through the page cache.
    pub fn new(path: PathBuf, io: Arc<dyn IndexIo>) -> Self {
        IndexDir {
            path,
            io,
            read_mode: ReadMode::default(),
        }
    }

    /// The same folder, with node files read in `mode`.
    pub fn with_read_mode(mut self, mode: ReadMode) -> Self {
        self.read_mode = mode;
        self
    }

    /// How disk-resident indexes read their node files.
    pub fn read_mode(&self) -> ReadMode {
        self.read_mode
    }

    /// `path`, written through the operating system's calls.
    pub fn os(path: PathBuf) -> Self {
        IndexDir::new(path, Arc::new(OsIo))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The I/O checkpoints are written through.
    pub fn io(&self) -> &dyn IndexIo {
        self.io.as_ref()
    }

    /// A shared handle to the same I/O, for writers that outlive the borrow.
    pub(crate) fn io_handle(&self) -> Arc<dyn IndexIo> {
        self.io.clone()
    }
}
