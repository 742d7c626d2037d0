//! A tantivy [`Directory`] whose writes go through the collection's [`IndexIo`], so that the
//! keyword index's files are written the same way as every other index file (and fault-injection
//! tests reach them). Reads, locks and change notifications are tantivy's memory-mapped
//! directory's own.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite,
    WatchCallback, WatchHandle, WritePtr,
};

use crate::index::io::{replace_file, IndexIo};

/// tantivy's memory-mapped directory with its writes sent through an [`IndexIo`].
#[derive(Clone, Debug)]
pub(crate) struct IoDirectory {
    reads: MmapDirectory,
    root: PathBuf,
    io: Arc<dyn IndexIo>,
}

impl IoDirectory {
    /// The directory at `root` (which must exist), written through `io`.
    pub(crate) fn open(root: &Path, io: Arc<dyn IndexIo>) -> tantivy::Result<Self> {
        Ok(IoDirectory {
            reads: MmapDirectory::open(root)?,
            root: root.to_path_buf(),
            io,
        })
    }
}

/// A file being written by tantivy: every write, and the final sync, through the [`IndexIo`].
struct IoFile {
    file: File,
    io: Arc<dyn IndexIo>,
}

impl Write for IoFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.write_all(&mut self.file, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TerminatingWrite for IoFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.io.sync(&self.file)
    }
}

impl Directory for IoDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.reads.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.reads.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.reads.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let full = self.root.join(path);
        let file = self.io.create_new(&full).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpenWriteError::FileAlreadyExists(path.to_path_buf())
            } else {
                OpenWriteError::wrap_io_error(e, path.to_path_buf())
            }
        })?;
        let io = self.io.clone();
        // Like tantivy's own directory, the folder is synced by `sync_directory`, not here.
        Ok(BufWriter::new(Box::new(IoFile { file, io })))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.reads.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        replace_file(self.io.as_ref(), &self.root.join(path), data, true)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.io.sync_dir(&self.root)
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.reads.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.reads.watch(callback)
    }
}
