//! Fault injection, for proving durability: I/O that fails on demand and a simulated power loss.
//!
//! - [`FaultPlan`] counts write and sync operations and fails the K-th one; afterwards either
//!   every write and sync fails too (the disk is gone) or only that one did (a transient error).
//! - [`StorageFaults`] applies a plan to the redb store file (through redb's `StorageBackend`)
//!   and journals every write not yet followed by a successful sync, so that
//!   [`StorageFaults::lose_unsynced_writes`] can put the file back as a power cut would leave
//!   it.
//! - [`FaultyIndexIo`] applies a plan to index checkpoints (through [`IndexIo`]).
//!
//! Attach them with [`crate::db::OpenOptions`]. Production code never uses this module; the
//! reliability tests (`tests/it/faults.rs`) do, for every K.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use crate::index::io::{IndexIo, OsIo};

/// Which operation a plan fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// None: the plan only counts.
    Never,
    /// The K-th write (1-based).
    NthWrite(u64),
    /// The K-th sync (1-based).
    NthSync(u64),
}

/// What happens after the triggering operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aftermath {
    /// Every later write and sync fails too, as when a disk disappears.
    DiskGone,
    /// Later operations succeed: the failure was transient.
    Transient,
}

/// Counts writes and syncs and fails the one its [`Trigger`] names.
#[derive(Debug)]
pub struct FaultPlan {
    trigger: Trigger,
    aftermath: Aftermath,
    writes: AtomicU64,
    syncs: AtomicU64,
    tripped: AtomicBool,
}

impl FaultPlan {
    /// A plan failing the operation `trigger` names, then behaving as `aftermath` says.
    pub fn new(trigger: Trigger, aftermath: Aftermath) -> Self {
        FaultPlan {
            trigger,
            aftermath,
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
        }
    }

    /// A plan that never fails: for counting a workload's operations.
    pub fn counting() -> Self {
        FaultPlan::new(Trigger::Never, Aftermath::Transient)
    }

    /// Writes attempted so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Syncs attempted so far (failed ones included).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Whether the trigger fired.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Counts one write; the error is the injected fault.
    pub fn on_write(&self) -> io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        self.decide(self.trigger == Trigger::NthWrite(n))
    }

    /// Counts one sync; the error is the injected fault.
    pub fn on_sync(&self) -> io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        self.decide(self.trigger == Trigger::NthSync(n))
    }

    fn decide(&self, fire: bool) -> io::Result<()> {
        if fire {
            self.tripped.store(true, Ordering::SeqCst);
            return Err(io::Error::other("injected I/O fault"));
        }
        if self.aftermath == Aftermath::DiskGone && self.tripped() {
            return Err(io::Error::other("injected I/O fault: the disk is gone"));
        }
        Ok(())
    }
}

/// A [`FaultPlan`] for the redb store, with a journal of the writes a power cut would lose.
#[derive(Debug)]
pub struct StorageFaults {
    plan: FaultPlan,
    journal: Mutex<Vec<Unsynced>>,
}

/// One change to the store file since its last successful sync.
#[derive(Debug)]
enum Unsynced {
    /// `after` was written at `offset` over `before` (the part inside the file then, whose
    /// length was `len_before`).
    Write {
        offset: u64,
        len_before: u64,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    /// The length changed from `from` to `to`; `tail` holds the bytes a shrink cut off.
    SetLen { from: u64, to: u64, tail: Vec<u8> },
}

impl StorageFaults {
    /// Store faults following `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        StorageFaults {
            plan,
            journal: Mutex::new(Vec::new()),
        }
    }

    /// The plan (for its counters).
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Puts the store file of the database in `db_dir` back to its state at the last successful
    /// sync, as a power cut that lost every unsynced write would leave it. Call it once the
    /// database is closed; returns how many writes were lost.
    pub fn lose_unsynced_writes(&self, db_dir: &Path) -> io::Result<usize> {
        self.power_cut(db_dir, || false)
    }

    /// A power cut that tears the unsynced writes: each one independently reached the disk or
    /// not (a seeded coin), in any order, as a disk that reorders its write cache would leave
    /// them. Length changes are kept. Returns how many writes were lost.
    pub fn tear_unsynced_writes(&self, db_dir: &Path, seed: u64) -> io::Result<usize> {
        let mut coin = crate::rng::SplitMix(seed);
        self.power_cut(db_dir, move || coin.next() & 1 == 1)
    }

    /// Rebuilds the file from its synced image plus the unsynced writes `keep` accepts.
    fn power_cut(&self, db_dir: &Path, mut keep: impl FnMut() -> bool) -> io::Result<usize> {
        let path = crate::storage::store_path(db_dir);
        let mut image = std::fs::read(&path)?;
        let mut journal = self.journal.lock();
        // Back to the last sync...
        for change in journal.iter().rev() {
            match change {
                Unsynced::Write {
                    offset,
                    len_before,
                    before,
                    after,
                } => {
                    let at = *offset as usize;
                    image[at..at + before.len()].copy_from_slice(before);
                    if offset + after.len() as u64 > *len_before {
                        image.truncate(*len_before as usize);
                    }
                }
                Unsynced::SetLen { from, to, tail } => {
                    image.resize(*from as usize, 0);
                    let at = *to as usize;
                    image[at..at + tail.len()].copy_from_slice(tail);
                }
            }
        }
        // ...then forward with the survivors.
        let mut lost = 0;
        for change in journal.iter() {
            match change {
                Unsynced::Write { offset, after, .. } if keep() => {
                    let at = *offset as usize;
                    if image.len() < at + after.len() {
                        image.resize(at + after.len(), 0);
                    }
                    image[at..at + after.len()].copy_from_slice(after);
                }
                Unsynced::Write { .. } => lost += 1,
                Unsynced::SetLen { to, .. } => image.resize(*to as usize, 0),
            }
        }
        journal.clear();
        let mut file = OpenOptions::new().write(true).truncate(true).open(&path)?;
        OsIo.write_all(&mut file, &image)?;
        file.sync_all()?;
        Ok(lost)
    }
}

/// redb's file backend with a [`StorageFaults`] in front of its writes and syncs.
#[derive(Debug)]
pub(crate) struct FaultyStorage {
    inner: FileBackend,
    faults: std::sync::Arc<StorageFaults>,
}

impl FaultyStorage {
    /// Wraps redb's backend for `file`. The journal starts empty: it describes this file only.
    pub(crate) fn new(
        file: File,
        faults: std::sync::Arc<StorageFaults>,
    ) -> Result<Self, redb::DatabaseError> {
        faults.journal.lock().clear();
        Ok(FaultyStorage {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyStorage {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.plan.on_write()?;
        let from = self.inner.len()?;
        let mut tail = vec![0u8; from.saturating_sub(len) as usize];
        if !tail.is_empty() {
            self.inner.read(len, &mut tail)?;
        }
        self.inner.set_len(len)?;
        self.faults.journal.lock().push(Unsynced::SetLen {
            from,
            to: len,
            tail,
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.plan.on_sync()?;
        self.inner.sync_data()?;
        self.faults.journal.lock().clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.plan.on_write()?;
        let len = self.inner.len()?;
        let inside = len.saturating_sub(offset).min(data.len() as u64) as usize;
        let mut before = vec![0u8; inside];
        if inside > 0 {
            self.inner.read(offset, &mut before)?;
        }
        self.inner.write(offset, data)?;
        self.faults.journal.lock().push(Unsynced::Write {
            offset,
            len_before: len,
            before,
            after: data.to_vec(),
        });
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
}

/// Index-checkpoint I/O that follows a [`FaultPlan`]: writes, header writes and renames count
/// as writes; file and directory syncs count as syncs.
#[derive(Debug)]
pub struct FaultyIndexIo {
    plan: FaultPlan,
}

impl FaultyIndexIo {
    /// Index I/O following `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        FaultyIndexIo { plan }
    }

    /// The plan (for its counters).
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }
}

impl IndexIo for FaultyIndexIo {
    fn create(&self, path: &Path) -> io::Result<File> {
        self.plan.on_write()?;
        OsIo.create(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        self.plan.on_write()?;
        OsIo.create_new(path)
    }

    fn write_all(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        self.plan.on_write()?;
        OsIo.write_all(file, bytes)
    }

    fn write_all_at(&self, file: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.plan.on_write()?;
        OsIo.write_all_at(file, offset, bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        self.plan.on_sync()?;
        OsIo.sync(file)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.on_write()?;
        OsIo.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.on_sync()?;
        OsIo.sync_dir(dir)
    }
}
