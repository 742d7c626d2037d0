//! The database: a directory holding `quiver.redb` and one folder of index files per collection.
//!
//! Opening recovers every collection (checkpoint + change-log replay, or rebuild) and starts a
//! background thread that checkpoints indexes; closing (or dropping the last handle) stops it and
//! checkpoints what is pending.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::check::{check_collection, check_keyword, check_payload, CheckReport};
use crate::collection::Collection;
use crate::config::{validate_collection_name, CollectionConfig};
use crate::error::{Error, Result};
use crate::faults::StorageFaults;
use crate::index::diskann::nodefile::ReadMode;
use crate::index::io::{IndexDir, IndexIo, OsIo};
use crate::storage::{store_path, Store};
use crate::sync::CheckpointPolicy;

/// Folder, inside the database directory, holding one sub-folder of index files per collection.
const COLLECTIONS_DIR: &str = "collections";

type Registry = Arc<RwLock<BTreeMap<String, Collection>>>;

/// How [`Database::open_with`] opens a database.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    checkpoint_policy: CheckpointPolicy,
    storage_faults: Option<Arc<StorageFaults>>,
    index_io: Arc<dyn IndexIo>,
    verify_store: bool,
    node_reads: ReadMode,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            checkpoint_policy: CheckpointPolicy::default(),
            storage_faults: None,
            index_io: Arc::new(OsIo),
            verify_store: false,
            node_reads: ReadMode::default(),
        }
    }
}

impl OpenOptions {
    /// The defaults: [`CheckpointPolicy::default`], the operating system's I/O.
    pub fn new() -> Self {
        OpenOptions::default()
    }

    /// How DiskANN collections read their node files (default: through the page cache;
    /// [`ReadMode::Direct`] bypasses it, as a cold-cache benchmark wants).
    pub fn node_reads(mut self, mode: ReadMode) -> Self {
        self.node_reads = mode;
        self
    }

    /// When indexes checkpoint in the background.
    pub fn checkpoint_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoint_policy = policy;
        self
    }

    /// Verifies the checksum of every page of the store before opening it (it reads the whole
    /// file; `quiver check` does this). Damage redb can repair from an intact earlier commit is
    /// repaired (and logged); damage it cannot gives [`Error::Corrupted`].
    pub fn verify_store(mut self, verify: bool) -> Self {
        self.verify_store = verify;
        self
    }

    /// Sends the store's writes and syncs through `faults` (fault-injection tests).
    pub fn storage_faults(mut self, faults: Arc<StorageFaults>) -> Self {
        self.storage_faults = Some(faults);
        self
    }

    /// Writes index checkpoints through `io` (fault-injection tests).
    pub fn index_io(mut self, io: Arc<dyn IndexIo>) -> Self {
        self.index_io = io;
        self
    }
}

/// A cheap, clonable, thread-safe handle to an open database.
#[derive(Clone)]
pub struct Database {
    inner: Arc<DbInner>,
}

struct DbInner {
    dir: PathBuf,
    store: Arc<Store>,
    /// The I/O index checkpoints are written through.
    index_io: Arc<dyn IndexIo>,
    /// How DiskANN node files are read.
    node_reads: ReadMode,
    collections: Registry,
    checkpointer: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl Database {
    /// Opens the database in `dir`, creating it if missing, with the default checkpoint policy.
    ///
    /// Fails with [`Error::DatabaseLocked`] if another process (or handle) has it open, and with
    /// [`Error::UpgradeRequired`] if a newer QuiverDB wrote it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Database> {
        Database::open_with_policy(dir, CheckpointPolicy::default())
    }

    /// Opens the database in `dir` with a custom checkpoint policy.
    pub fn open_with_policy(dir: impl AsRef<Path>, policy: CheckpointPolicy) -> Result<Database> {
        Database::open_with(dir, OpenOptions::new().checkpoint_policy(policy))
    }

    /// Opens the database in `dir` with these options.
    ///
    /// A store file damaged in a way redb does not detect as such can make redb panic while
    /// decoding it (e.g. invalid UTF-8 in a key); that is reported as [`Error::Corrupted`].
    pub fn open_with(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Database> {
        let dir = dir.as_ref();
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::open_unguarded(dir, options)
        }));
        opened.unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Error::corrupted(
                store_path(dir),
                format!("the store could not be decoded: {detail}"),
            ))
        })
    }

    fn open_unguarded(dir: &Path, options: OpenOptions) -> Result<Database> {
        let dir = dir.to_path_buf();
        let new = !store_path(&dir).exists();
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(Store::open(
            &store_path(&dir),
            options.storage_faults.as_ref(),
            options.verify_store,
        )?);
        let collections_dir = dir.join(COLLECTIONS_DIR);
        std::fs::create_dir_all(&collections_dir)?;
        if new {
            // Make the new directory entries durable (redb syncs the file, not its folder).
            for folder in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
                if let Err(e) = OsIo.sync_dir(folder) {
                    log::warn!("could not fsync {}: {e}", folder.display());
                }
            }
        }
        let mut registry = BTreeMap::new();
        for record in store.collections()? {
            let folder = IndexDir::new(
                collection_dir(&collections_dir, record.id),
                options.index_io.clone(),
            )
            .with_read_mode(options.node_reads);
            let name = record.name.clone();
            registry.insert(
                name,
                Collection::open(record, store.clone(), folder, false)?,
            );
        }
        remove_orphan_folders(&collections_dir, &registry)?;
        let collections: Registry = Arc::new(RwLock::new(registry));
        let checkpointer = spawn_checkpointer(collections.clone(), options.checkpoint_policy)?;
        Ok(Database {
            inner: Arc::new(DbInner {
                dir,
                store,
                index_io: options.index_io,
                node_reads: options.node_reads,
                collections,
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a collection. Fails with [`Error::CollectionExists`], [`Error::InvalidName`] or
    /// [`Error::InvalidConfig`].
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Collection> {
        validate_collection_name(name)?;
        config.validate()?;
        let mut collections = self.inner.collections.write();
        if collections.contains_key(name) {
            return Err(Error::CollectionExists(name.to_string()));
        }
        let record = self.inner.store.create_collection(name, &config)?;
        let folder = collection_dir(&self.inner.dir.join(COLLECTIONS_DIR), record.id);
        if folder.exists() {
            std::fs::remove_dir_all(&folder)?;
        }
        let index_dir = IndexDir::new(folder.clone(), self.inner.index_io.clone())
            .with_read_mode(self.inner.node_reads);
        let collection = match Collection::open(record, self.inner.store.clone(), index_dir, true) {
            Ok(collection) => collection,
            Err(e) => {
                // Leave no half-created collection behind (e.g. the disk refused the folder).
                if let Err(undo) = self.inner.store.drop_collection(name) {
                    log::error!("could not undo the creation of {name:?}: {undo}");
                }
                std::fs::remove_dir_all(&folder).ok();
                return Err(e);
            }
        };
        collections.insert(name.to_string(), collection.clone());
        Ok(collection)
    }

    /// A handle to the collection `name`.
    pub fn collection(&self, name: &str) -> Result<Collection> {
        self.inner
            .collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))
    }

    /// Names of every collection, sorted.
    pub fn list_collections(&self) -> Vec<String> {
        self.inner.collections.read().keys().cloned().collect()
    }

    /// Drops a collection: its documents, tables and index files. Existing handles to it then
    /// fail with [`Error::CollectionNotFound`].
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut collections = self.inner.collections.write();
        let collection = collections
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))?;
        collection.retire(|| self.inner.store.drop_collection(name).map(drop))?;
        collections.remove(name);
        match std::fs::remove_dir_all(collection.dir()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                log::warn!("could not remove {}: {e}", collection.dir().display());
            }
            _ => {}
        }
        Ok(())
    }

    /// Verifies the derived indexes of collection `name` (or of every collection) against the
    /// store: ids, counts, vectors, watermarks and checkpoint files; payload rows and bitmaps.
    pub fn check(&self, name: Option<&str>) -> Result<CheckReport> {
        let targets = match name {
            Some(name) => vec![self.collection(name)?],
            None => self.inner.collections.read().values().cloned().collect(),
        };
        let mut indexes = Vec::new();
        for collection in &targets {
            indexes.push(check_collection(collection)?);
            indexes.extend(check_keyword(collection)?);
            indexes.extend(check_payload(collection)?);
        }
        Ok(CheckReport { indexes })
    }

    /// Checkpoints every collection with pending changes.
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint_dirty(&self.inner.collections)
    }

    /// Stops background work and checkpoints every index. Other clones of this handle keep
    /// working (without background checkpoints); the database closes when the last one drops.
    pub fn close(self) -> Result<()> {
        self.inner.stop_checkpointer();
        self.checkpoint()
    }
}

impl DbInner {
    fn stop_checkpointer(&self) {
        if let Some((stop, handle)) = self.checkpointer.lock().take() {
            stop.send(()).ok();
            if handle.join().is_err() {
                log::error!("the checkpoint thread panicked");
            }
        }
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        self.stop_checkpointer();
        if let Err(e) = checkpoint_dirty(&self.collections) {
            log::warn!("checkpoint on close failed: {e}; indexes will replay the change log");
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn collection_dir(collections_dir: &Path, id: u32) -> PathBuf {
    collections_dir.join(format!("c{id}"))
}

/// Checkpoints every collection with pending changes; returns the first error after trying all.
fn checkpoint_dirty(collections: &Registry) -> Result<()> {
    let handles: Vec<Collection> = collections.read().values().cloned().collect();
    let mut first_error = None;
    for collection in handles.iter().filter(|c| c.is_dirty()) {
        if let Err(e) = collection.checkpoint() {
            log::warn!("checkpoint of {:?} failed: {e}", collection.name());
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes index folders left by a drop that crashed half-way (ids are never reused).
fn remove_orphan_folders(
    collections_dir: &Path,
    registry: &BTreeMap<String, Collection>,
) -> Result<()> {
    let live: Vec<&Path> = registry.values().map(Collection::dir).collect();
    for entry in std::fs::read_dir(collections_dir)? {
        let path = entry?.path();
        if !live.contains(&path.as_path()) {
            log::warn!("removing orphaned index folder {}", path.display());
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn spawn_checkpointer(
    collections: Registry,
    policy: CheckpointPolicy,
) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let tick = policy
        .every
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let handle = std::thread::Builder::new()
        .name("quiver-checkpoint".into())
        .spawn(move || loop {
            match stopped.recv_timeout(tick) {
                Err(RecvTimeoutError::Timeout) => {
                    let handles: Vec<Collection> = collections.read().values().cloned().collect();
                    for collection in handles {
                        if let Err(e) = collection.checkpoint_if_due(&policy) {
                            log::warn!(
                                "background checkpoint of {:?} failed: {e}",
                                collection.name()
                            );
                        }
                    }
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
    Ok((stop, handle))
}
