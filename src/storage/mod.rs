//! The only module that talks to redb: the source of truth.
//!
//! [`Store`] owns the redb database. Collections write through [`Store::write`], which runs a
//! closure against a [`CollectionWriter`] inside one write transaction and commits it with
//! immediate durability: documents, id map, change log and counters change together or not at
//! all. Reads go through a [`CollectionReader`], an MVCC snapshot.

mod changelog;
mod codec;
mod migrations;
mod schema;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::CollectionConfig;
use crate::error::{Error, Result};
use crate::faults::{FaultyStorage, StorageFaults};
use crate::index::io::{with_suffix, IndexIo, OsIo};
use crate::payload::PayloadSchema;
use crate::types::{Change, ChangeOp, Document, InternalId, Seq};
use tables::{CollectionTables, COLLECTIONS, META, META_NEXT_COLLECTION_ID};

/// redb page-cache size, shared by reads and a transaction's dirty pages (redb holds those to
/// at most half of it and writes out the rest). The indexes keep their own copies of the
/// vectors and a search returning ids reads nothing from the store, so the cache only serves
/// document fetches and the write path, where the operating system's page cache stands behind
/// it: 4 MiB built 100k × 128 as fast as 16 MiB did, with 12 MiB less RSS (BENCHMARKS.md).
const STORE_CACHE_BYTES: usize = 4 << 20;

/// File name of the redb database inside a database directory.
pub const STORE_FILE: &str = "quiver.redb";

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                match redb::Error::from(e) {
                    redb::Error::Corrupted(detail) => Error::corrupted(STORE_FILE, detail),
                    redb::Error::Io(io) => Error::Io(io),
                    other => Error::Storage(other.to_string()),
                }
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A collection as registered in the `collections` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Numeric id: prefixes the collection's tables and names its folder. Never reused.
    pub id: u32,
    /// The collection's name.
    pub name: String,
    /// Its configuration.
    pub config: CollectionConfig,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// A random number drawn at creation: stamped into index files so that a file of another
    /// collection (or database) is never mistaken for this one's.
    pub instance: u64,
}

/// The redb database of one QuiverDB database directory.
pub struct Store {
    db: redb::Database,
}

impl Store {
    /// Opens or creates the store at `path`, stamping or checking the schema version.
    /// A store held open elsewhere gives [`Error::DatabaseLocked`] at once.
    /// With `faults`, every write and sync goes through them (tests only). With `verify`, every
    /// page's checksum is verified first (slow: it reads the whole file).
    pub fn open(path: &Path, faults: Option<&Arc<StorageFaults>>, verify: bool) -> Result<Store> {
        if !path.exists() {
            Store::create_atomically(path, faults)?;
        }
        Store::open_file(path, faults, verify)
    }

    /// Builds a new, initialised store under a temporary name and renames it into place, so
    /// that a crash during creation never leaves a half-written store file behind (redb cannot
    /// open one); a leftover temporary file is replaced by the next attempt.
    fn create_atomically(path: &Path, faults: Option<&Arc<StorageFaults>>) -> Result<()> {
        let tmp = with_suffix(path, ".new");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        drop(Store::open_file(&tmp, faults, false)?);
        std::fs::rename(&tmp, path)?;
        OsIo.sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(())
    }

    fn open_file(path: &Path, faults: Option<&Arc<StorageFaults>>, verify: bool) -> Result<Store> {
        // A small page cache (redb's default of 1 GiB would double RSS on big loads).
        let mut builder = redb::Builder::new();
        builder.set_cache_size(STORE_CACHE_BYTES);
        let opened = match faults {
            None => builder.create(path),
            Some(faults) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(redb::DatabaseError::from)
                .and_then(|file| FaultyStorage::new(file, faults.clone()))
                .and_then(|backend| builder.create_with_backend(backend)),
        };
        let mut db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::DatabaseLocked(
                    path.parent().unwrap_or(path).to_path_buf(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        if verify && !db.check_integrity()? {
            log::warn!(
                "{}: damaged pages found; redb repaired the file from its last intact commit",
                path.display()
            );
        }
        let txn = db.begin_write()?;
        schema::init_or_check(&txn)?;
        txn.open_table(COLLECTIONS)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Every registered collection.
    pub fn collections(&self) -> Result<Vec<CollectionRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COLLECTIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (name, bytes) = entry?;
            let record: CollectionRecord = serde_json::from_slice(bytes.value()).map_err(|e| {
                Error::corrupted(STORE_FILE, format!("collection {:?}: {e}", name.value()))
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Registers a collection and creates its tables, in one transaction.
    pub fn create_collection(
        &self,
        name: &str,
        config: &CollectionConfig,
    ) -> Result<CollectionRecord> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut collections = txn.open_table(COLLECTIONS)?;
            if collections.get(name)?.is_some() {
                return Err(Error::CollectionExists(name.to_string()));
            }
            let mut meta = txn.open_table(META)?;
            let id = meta.get(META_NEXT_COLLECTION_ID)?.map_or(1, |v| v.value());
            let id32 = u32::try_from(id)
                .map_err(|_| Error::Internal("collection id space exhausted".into()))?;
            meta.insert(META_NEXT_COLLECTION_ID, id + 1)?;
            let record = CollectionRecord {
                id: id32,
                name: name.to_string(),
                config: config.clone(),
                created_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                instance: Uuid::new_v4().as_u64_pair().0,
            };
            collections.insert(name, encode_record(&record)?.as_slice())?;
            let names = CollectionTables::new(id32);
            txn.open_table(names.docs())?;
            txn.open_table(names.ids())?;
            txn.open_table(names.changelog())?;
            txn.open_table(names.state())?;
            txn.open_table(names.payload())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// Unregisters a collection and deletes its tables, in one transaction.
    pub fn drop_collection(&self, name: &str) -> Result<CollectionRecord> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut collections = txn.open_table(COLLECTIONS)?;
            let removed = collections.remove(name)?;
            let Some(bytes) = removed else {
                return Err(Error::CollectionNotFound(name.to_string()));
            };
            let record: CollectionRecord = serde_json::from_slice(bytes.value())
                .map_err(|e| Error::corrupted(STORE_FILE, format!("collection {name:?}: {e}")))?;
            drop(bytes);
            let names = CollectionTables::new(record.id);
            txn.delete_table(names.docs())?;
            txn.delete_table(names.ids())?;
            txn.delete_table(names.changelog())?;
            txn.delete_table(names.state())?;
            txn.delete_table(names.payload())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// Runs `f` in one write transaction on collection `id` and commits durably if it returns Ok.
    /// Payload-index rows of the fields of `schema` are kept in step with the documents written.
    /// Returns `f`'s value and what was committed. If `f` fails, nothing is written.
    pub fn write<T>(
        &self,
        id: u32,
        schema: &PayloadSchema,
        f: impl FnOnce(&mut CollectionWriter<'_>) -> Result<T>,
    ) -> Result<(T, Committed)> {
        let names = CollectionTables::new(id);
        let txn = self.db.begin_write()?;
        let (value, committed) = {
            let mut writer = CollectionWriter::open(&txn, &names, schema)?;
            let value = f(&mut writer)?;
            (value, writer.finish()?)
        };
        txn.commit()?;
        Ok((value, committed))
    }

    /// Declares payload field number `field` of `schema` on the collection of `record` (whose
    /// config already lists it) and writes its rows for every document, in one transaction.
    /// Returns the rows added.
    pub fn add_payload_field(
        &self,
        record: &CollectionRecord,
        schema: &PayloadSchema,
        field: u16,
    ) -> Result<Vec<RowDelta>> {
        let names = CollectionTables::new(record.id);
        let txn = self.db.begin_write()?;
        let added = {
            let mut collections = txn.open_table(COLLECTIONS)?;
            if collections.get(record.name.as_str())?.is_none() {
                return Err(Error::CollectionNotFound(record.name.clone()));
            }
            collections.insert(record.name.as_str(), encode_record(record)?.as_slice())?;
            let docs = txn.open_table(names.docs())?;
            let mut payload = txn.open_table(names.payload())?;
            index_all_documents(&docs, &mut payload, schema, |f| f == field)?
        };
        txn.commit()?;
        Ok(added)
    }

    /// A consistent read snapshot of collection `id`.
    pub fn read(&self, id: u32) -> Result<CollectionReader> {
        let names = CollectionTables::new(id);
        let txn = self.db.begin_read()?;
        Ok(CollectionReader {
            docs: txn.open_table(names.docs())?,
            ids: txn.open_table(names.ids())?,
            changelog: txn.open_table(names.changelog())?,
            state: txn.open_table(names.state())?,
            payload: txn.open_table(names.payload())?,
            _txn: txn,
        })
    }

    /// Removes change-log entries up to and including `through` (every index has them).
    pub fn trim_changelog(&self, id: u32, through: Seq) -> Result<()> {
        let names = CollectionTables::new(id);
        let txn = self.db.begin_write()?;
        changelog::trim(&txn, &names, through)?;
        txn.commit()?;
        Ok(())
    }
}

fn corrupt_doc(id: InternalId, detail: String) -> Error {
    Error::corrupted(STORE_FILE, format!("document record {id}: {detail}"))
}

fn encode_record(record: &CollectionRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| Error::Internal(format!("encoding collection record: {e}")))
}

/// What one write transaction committed.
#[derive(Debug, Default)]
pub struct Committed {
    /// The changes logged, in sequence order.
    pub changes: Vec<Change>,
    /// The payload-index rows added and removed, in order.
    pub rows: Vec<RowDelta>,
}

/// One payload-index row added or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowDelta {
    /// Field number in the collection's payload schema.
    pub field: u16,
    /// Row key (see `crate::payload::keys`).
    pub key: Vec<u8>,
    /// The document.
    pub id: InternalId,
    /// Added (true) or removed.
    pub added: bool,
}

/// A visitor of `(internal id, metadata)` pairs.
pub type MetadataVisitor<'a> = dyn FnMut(InternalId, &Map<String, Value>) -> Result<()> + 'a;

/// Reads metadata for filters, from a read snapshot or inside a write transaction.
pub trait MetadataSource {
    /// The metadata of document `internal`, if it exists.
    fn metadata(&self, internal: InternalId) -> Result<Option<Map<String, Value>>>;
    /// Calls `f` with the metadata of every document, in internal-id order.
    fn for_each_metadata(&self, f: &mut MetadataVisitor<'_>) -> Result<()>;
}

fn load_metadata(
    docs: &impl ReadableTable<u32, &'static [u8]>,
    internal: InternalId,
) -> Result<Option<Map<String, Value>>> {
    match docs.get(internal)? {
        Some(bytes) => codec::decode_metadata(bytes.value())
            .map(|(_, metadata)| Some(metadata))
            .map_err(|e| corrupt_doc(internal, e)),
        None => Ok(None),
    }
}

fn scan_metadata(
    docs: &impl ReadableTable<u32, &'static [u8]>,
    f: &mut MetadataVisitor<'_>,
) -> Result<()> {
    for entry in docs.iter()? {
        let (internal, bytes) = entry?;
        let internal = internal.value();
        let (_, metadata) =
            codec::decode_metadata(bytes.value()).map_err(|e| corrupt_doc(internal, e))?;
        f(internal, &metadata)?;
    }
    Ok(())
}

/// Writes the payload rows of every document in `docs` for the fields `keep` selects; returns
/// the rows written.
fn index_all_documents(
    docs: &impl ReadableTable<u32, &'static [u8]>,
    payload: &mut Table<'_, &'static [u8], ()>,
    schema: &PayloadSchema,
    keep: impl Fn(u16) -> bool,
) -> Result<Vec<RowDelta>> {
    let mut added = Vec::new();
    scan_metadata(docs, &mut |id, metadata| {
        for (field, key) in schema.row_keys(metadata) {
            if keep(field) {
                payload.insert(codec::encode_payload_row(field, &key, id).as_slice(), ())?;
                added.push(RowDelta {
                    field,
                    key,
                    id,
                    added: true,
                });
            }
        }
        Ok(())
    })?;
    Ok(added)
}

/// Looks up an internal id in an `ids` table (read or write side).
fn lookup_internal_id(
    ids: &impl ReadableTable<[u8; 16], u32>,
    id: &Uuid,
) -> Result<Option<InternalId>> {
    Ok(ids.get(id.as_bytes())?.map(|v| v.value()))
}

/// Loads and decodes a document from a `docs` table (read or write side).
fn load_document(
    docs: &impl ReadableTable<u32, &'static [u8]>,
    internal: InternalId,
) -> Result<Option<Document>> {
    match docs.get(internal)? {
        Some(bytes) => codec::decode_document(bytes.value())
            .map(Some)
            .map_err(|e| corrupt_doc(internal, e)),
        None => Ok(None),
    }
}

/// Write access to one collection inside a write transaction.
pub struct CollectionWriter<'t> {
    docs: Table<'t, u32, &'static [u8]>,
    ids: Table<'t, [u8; 16], u32>,
    changelog: Table<'t, u64, &'static [u8]>,
    state: Table<'t, &'static str, u64>,
    payload: Table<'t, &'static [u8], ()>,
    schema: &'t PayloadSchema,
    next_internal_id: u64,
    next_seq: u64,
    committed: Committed,
    bytes_written: usize,
}

impl<'t> CollectionWriter<'t> {
    fn open(
        txn: &'t redb::WriteTransaction,
        names: &CollectionTables,
        schema: &'t PayloadSchema,
    ) -> Result<Self> {
        let state = txn.open_table(names.state())?;
        let next_internal_id = state
            .get(tables::STATE_NEXT_INTERNAL_ID)?
            .map_or(0, |v| v.value());
        let next_seq = state.get(tables::STATE_NEXT_SEQ)?.map_or(1, |v| v.value());
        Ok(CollectionWriter {
            docs: txn.open_table(names.docs())?,
            ids: txn.open_table(names.ids())?,
            changelog: txn.open_table(names.changelog())?,
            state,
            payload: txn.open_table(names.payload())?,
            schema,
            next_internal_id,
            next_seq,
            committed: Committed::default(),
            bytes_written: 0,
        })
    }

    /// The internal id of document `id`, if it exists.
    pub fn internal_id(&self, id: &Uuid) -> Result<Option<InternalId>> {
        lookup_internal_id(&self.ids, id)
    }

    /// The document with internal id `internal`, if it exists.
    pub fn document(&self, internal: InternalId) -> Result<Option<Document>> {
        load_document(&self.docs, internal)
    }

    /// Writes a document (replacing any with the same id) and logs an upsert.
    /// Returns its internal id and whether it replaced an existing document.
    pub fn put(
        &mut self,
        id: Uuid,
        vector: &[f32],
        metadata: &serde_json::Map<String, serde_json::Value>,
        text: Option<&str>,
    ) -> Result<(InternalId, bool)> {
        let (internal, existed) = match self.internal_id(&id)? {
            Some(internal) => (internal, true),
            None => {
                // u32::MAX stays free as a sentinel for indexes.
                let internal = u32::try_from(self.next_internal_id)
                    .ok()
                    .filter(|&i| i < u32::MAX)
                    .ok_or_else(|| {
                        Error::CapacityExhausted(format!(
                            "{} internal ids assigned",
                            self.next_internal_id
                        ))
                    })?;
                self.next_internal_id += 1;
                self.ids.insert(id.as_bytes(), internal)?;
                (internal, false)
            }
        };
        let record = codec::encode_document(id, vector, metadata, text);
        self.bytes_written += record.len();
        let old_rows = match self.docs.insert(internal, record.as_slice())? {
            Some(old) if !self.schema.is_empty() => {
                let (_, old_metadata) =
                    codec::decode_metadata(old.value()).map_err(|e| corrupt_doc(internal, e))?;
                self.schema.row_keys(&old_metadata)
            }
            _ => Vec::new(),
        };
        let new_rows = self.schema.row_keys(metadata);
        self.replace_rows(internal, old_rows, new_rows)?;
        self.log(ChangeOp::Upsert, internal)?;
        Ok((internal, existed))
    }

    /// Removes the rows in `old` and not in `new`, adds those in `new` and not in `old` (both
    /// sorted).
    fn replace_rows(
        &mut self,
        id: InternalId,
        old: Vec<(u16, Vec<u8>)>,
        new: Vec<(u16, Vec<u8>)>,
    ) -> Result<()> {
        let has = |rows: &[(u16, Vec<u8>)], field: u16, key: &[u8]| {
            rows.binary_search_by(|(f, k)| (*f, k.as_slice()).cmp(&(field, key)))
                .is_ok()
        };
        for (field, key) in &old {
            if !has(&new, *field, key) {
                self.payload
                    .remove(codec::encode_payload_row(*field, key, id).as_slice())?;
                self.committed.rows.push(RowDelta {
                    field: *field,
                    key: key.clone(),
                    id,
                    added: false,
                });
            }
        }
        for (field, key) in new {
            if !has(&old, field, &key) {
                self.payload
                    .insert(codec::encode_payload_row(field, &key, id).as_slice(), ())?;
                self.committed.rows.push(RowDelta {
                    field,
                    key,
                    id,
                    added: true,
                });
            }
        }
        Ok(())
    }

    /// Bytes of document records written so far in this transaction.
    pub fn bytes_written(&self) -> usize {
        self.bytes_written
    }

    /// Deletes document `id` and logs the deletion. Returns its internal id if it existed.
    pub fn remove(&mut self, id: &Uuid) -> Result<Option<InternalId>> {
        let Some(internal) = self.ids.remove(id.as_bytes())?.map(|v| v.value()) else {
            return Ok(None);
        };
        self.remove_record(internal)?;
        Ok(Some(internal))
    }

    /// Deletes the document with internal id `internal` and logs the deletion. Returns its
    /// public id if it existed.
    pub fn remove_internal(&mut self, internal: InternalId) -> Result<Option<Uuid>> {
        let Some(id) = self.remove_record(internal)? else {
            return Ok(None);
        };
        self.ids.remove(id.as_bytes())?;
        Ok(Some(id))
    }

    /// Removes a document record with its payload rows, and logs the deletion.
    fn remove_record(&mut self, internal: InternalId) -> Result<Option<Uuid>> {
        let (id, old_rows) = match self.docs.remove(internal)? {
            Some(old) => {
                let (id, metadata) =
                    codec::decode_metadata(old.value()).map_err(|e| corrupt_doc(internal, e))?;
                (id, self.schema.row_keys(&metadata))
            }
            None => return Ok(None),
        };
        self.replace_rows(internal, old_rows, Vec::new())?;
        self.log(ChangeOp::Delete, internal)?;
        Ok(Some(id))
    }

    fn log(&mut self, op: ChangeOp, id: InternalId) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.changelog
            .insert(seq, codec::encode_change(op, id).as_slice())?;
        self.committed.changes.push(Change { seq, op, id });
        Ok(())
    }

    fn finish(mut self) -> Result<Committed> {
        self.state
            .insert(tables::STATE_NEXT_INTERNAL_ID, self.next_internal_id)?;
        self.state.insert(tables::STATE_NEXT_SEQ, self.next_seq)?;
        Ok(self.committed)
    }
}

impl MetadataSource for CollectionWriter<'_> {
    fn metadata(&self, internal: InternalId) -> Result<Option<Map<String, Value>>> {
        load_metadata(&self.docs, internal)
    }

    fn for_each_metadata(&self, f: &mut MetadataVisitor<'_>) -> Result<()> {
        scan_metadata(&self.docs, f)
    }
}

/// A read snapshot of one collection.
pub struct CollectionReader {
    docs: ReadOnlyTable<u32, &'static [u8]>,
    ids: ReadOnlyTable<[u8; 16], u32>,
    changelog: ReadOnlyTable<u64, &'static [u8]>,
    state: ReadOnlyTable<&'static str, u64>,
    payload: ReadOnlyTable<&'static [u8], ()>,
    _txn: ReadTransaction,
}

impl CollectionReader {
    /// The internal id of document `id`, if it exists.
    pub fn internal_id(&self, id: &Uuid) -> Result<Option<InternalId>> {
        lookup_internal_id(&self.ids, id)
    }

    /// The document with internal id `internal`, if it exists.
    pub fn document(&self, internal: InternalId) -> Result<Option<Document>> {
        load_document(&self.docs, internal)
    }

    /// The document with public id `id`, if it exists.
    pub fn document_by_id(&self, id: &Uuid) -> Result<Option<Document>> {
        match self.internal_id(id)? {
            Some(internal) => self.document(internal),
            None => Ok(None),
        }
    }

    /// Number of documents.
    pub fn count(&self) -> Result<u64> {
        Ok(self.ids.len()?)
    }

    /// Calls `f` for every document in internal-id order (used to rebuild indexes).
    pub fn for_each_document(
        &self,
        mut f: impl FnMut(InternalId, Document) -> Result<()>,
    ) -> Result<()> {
        for entry in self.docs.iter()? {
            let (internal, bytes) = entry?;
            let internal = internal.value();
            let doc =
                codec::decode_document(bytes.value()).map_err(|e| corrupt_doc(internal, e))?;
            f(internal, doc)?;
        }
        Ok(())
    }

    /// Up to `limit` documents in id order after `after` whose internal id passes `keep`.
    pub fn scroll_where(
        &self,
        after: Option<Uuid>,
        limit: usize,
        keep: impl Fn(InternalId) -> bool,
    ) -> Result<Vec<Document>> {
        let range = match after {
            Some(after) => self.ids.range::<[u8; 16]>((
                std::ops::Bound::Excluded(*after.as_bytes()),
                std::ops::Bound::Unbounded,
            ))?,
            None => self.ids.range::<[u8; 16]>(..)?,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in range {
            if out.len() == limit {
                break;
            }
            let (_, internal) = entry?;
            let internal = internal.value();
            if !keep(internal) {
                continue;
            }
            let doc = self.document(internal)?.ok_or_else(|| {
                Error::corrupted(
                    STORE_FILE,
                    format!("id map points at missing document {internal}"),
                )
            })?;
            out.push(doc);
        }
        Ok(out)
    }

    /// Calls `f` for every payload-index row: field number, row key, internal id.
    pub fn for_each_payload_row(
        &self,
        mut f: impl FnMut(u16, &[u8], InternalId) -> Result<()>,
    ) -> Result<()> {
        for entry in self.payload.iter()? {
            let (key, _) = entry?;
            let key = key.value();
            let (field, row_key, id) =
                codec::decode_payload_row(key).map_err(|e| Error::corrupted(STORE_FILE, e))?;
            f(field, row_key, id)?;
        }
        Ok(())
    }

    /// Calls `f` with the internal id of every document.
    pub fn for_each_internal_id(&self, mut f: impl FnMut(InternalId)) -> Result<()> {
        for entry in self.ids.iter()? {
            f(entry?.1.value());
        }
        Ok(())
    }

    /// Every internal id with its public id, in internal-id order (for integrity checks).
    pub fn id_pairs(&self) -> Result<Vec<(InternalId, Uuid)>> {
        let mut out = Vec::new();
        for entry in self.ids.iter()? {
            let (uuid, internal) = entry?;
            out.push((internal.value(), Uuid::from_bytes(uuid.value())));
        }
        out.sort_unstable_by_key(|&(internal, _)| internal);
        Ok(out)
    }

    /// The changes logged after `seq`, in order. Fails if some of them were already trimmed.
    pub fn changes_after(&self, seq: Seq) -> Result<Vec<Change>> {
        changelog::changes_after(&self.changelog, seq)
    }

    /// Sequence number of the last change ever logged (0 if none).
    pub fn last_seq(&self) -> Result<Seq> {
        Ok(self
            .state
            .get(tables::STATE_NEXT_SEQ)?
            .map_or(1, |v| v.value())
            - 1)
    }

    /// Every change up to and including this sequence number has been trimmed from the log.
    pub fn trimmed_through(&self) -> Result<Seq> {
        Ok(self
            .state
            .get(tables::STATE_TRIMMED_THROUGH)?
            .map_or(0, |v| v.value()))
    }

    /// Number of entries still in the change log.
    pub fn changelog_len(&self) -> Result<u64> {
        Ok(self.changelog.len()?)
    }
}

impl MetadataSource for CollectionReader {
    fn metadata(&self, internal: InternalId) -> Result<Option<Map<String, Value>>> {
        load_metadata(&self.docs, internal)
    }

    fn for_each_metadata(&self, f: &mut MetadataVisitor<'_>) -> Result<()> {
        scan_metadata(&self.docs, f)
    }
}

/// Path of the store inside database directory `dir`.
pub fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}
