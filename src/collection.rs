//! A collection handle and its write path: validate, one redb transaction, then apply the
//! committed changes to every derived index before returning.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::{CollectionConfig, PayloadField};
use crate::error::{Error, Result};
use crate::filter::{FieldPath, Filter};
use crate::index::io::IndexDir;
use crate::index::{new_vector_index, DerivedIndex, IndexSearch, SearchKnobs, VectorIndex};
use crate::keyword::{KeywordIndex, KeywordSearch};
use crate::payload::{PayloadIndex, PayloadSchema};
use crate::query::{self, SearchRequest, SearchResponse};
use crate::storage::{
    CollectionReader, CollectionRecord, CollectionWriter, Committed, MetadataSource, Store,
};
use crate::sync::{self, CheckpointPolicy, Recovery};
use crate::types::{
    merge_patch, metadata_object, validate_metadata, Change, ChangeOp, DocView, Document,
    DocumentInput,
};

/// Most documents one write call (one transaction) accepts.
pub const MAX_BATCH_DOCS: usize = 100_000;
/// Most encoded bytes one write call accepts.
pub const MAX_BATCH_BYTES: usize = 512 << 20;
/// Most documents one scroll page returns.
pub const MAX_SCROLL_LIMIT: usize = 10_000;

/// A cheap, clonable, thread-safe handle to one collection.
#[derive(Clone)]
pub struct Collection {
    inner: Arc<CollectionInner>,
}

struct CollectionInner {
    /// As registered at open; its `config` may lack payload fields added since (see `config`).
    record: CollectionRecord,
    /// The current configuration.
    config: RwLock<Arc<CollectionConfig>>,
    /// Payload indexes: the schema writes follow and the bitmaps filters read. Changed only
    /// under `write_lock`, right after the transaction that changed the rows commits.
    payload: RwLock<Payload>,
    store: Arc<Store>,
    /// Folder of the derived index files.
    dir: IndexDir,
    /// One writer at a time: transaction + index application happen under it.
    write_lock: Mutex<()>,
    vector_index: RwLock<Box<dyn VectorIndex>>,
    recovery: Recovery,
    /// The keyword index, for collections created with a text index.
    keyword: Option<KeywordState>,
    dropped: AtomicBool,
    /// Set (with what failed) when an index could not be brought back in line with the store
    /// (a failed rebuild): searches and checkpoints then refuse to run until the database is
    /// reopened.
    poisoned: Mutex<Option<String>>,
    /// Changes applied since the last checkpoint.
    dirty_changes: AtomicU64,
    last_checkpoint: Mutex<Instant>,
}

/// The keyword index of a collection and how it came back at open.
struct KeywordState {
    index: RwLock<Box<KeywordIndex>>,
    recovery: Recovery,
}

/// The payload indexes of a collection.
struct Payload {
    /// Shared, so that a write takes it without copying the field list.
    schema: Arc<PayloadSchema>,
    index: PayloadIndex,
}

impl Payload {
    /// Loads the payload indexes of a collection from its rows in the store.
    fn load(config: &CollectionConfig, reader: Option<&CollectionReader>) -> Result<Payload> {
        let schema = PayloadSchema::new(&config.payload_fields);
        let mut index = PayloadIndex::new(&schema);
        if let Some(reader) = reader {
            reader.for_each_internal_id(|id| index.set_live(id, true))?;
            reader.for_each_payload_row(|field, key, id| {
                index.apply_row(field, key, id, true);
                Ok(())
            })?;
        }
        Ok(Payload {
            schema: Arc::new(schema),
            index,
        })
    }

    /// Brings the bitmaps in line with a committed transaction.
    fn apply(&mut self, committed: &Committed) {
        for change in &committed.changes {
            self.index
                .set_live(change.id, change.op == ChangeOp::Upsert);
        }
        for row in &committed.rows {
            self.index.apply_row(row.field, &row.key, row.id, row.added);
        }
    }
}

/// Writes a validated document (replacing any with its id); true if one existed.
fn put_document(writer: &mut CollectionWriter<'_>, doc: &Document) -> Result<bool> {
    let (_, existed) = writer.put(doc.id, &doc.vector, &doc.metadata, doc.text.as_deref())?;
    Ok(existed)
}

/// One page of a scroll.
#[derive(Clone, Debug, Serialize)]
pub struct ScrollPage {
    /// Documents in id order.
    pub documents: Vec<Document>,
    /// Pass this to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A description of a collection: configuration, size and index status.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionInfo {
    /// Name.
    pub name: String,
    /// Configuration.
    pub config: CollectionConfig,
    /// Number of documents.
    pub count: u64,
    /// Last change-log sequence number.
    pub last_seq: u64,
    /// Entries still in the change log (trimmed after checkpoints).
    pub changelog_entries: u64,
    /// Status of the vector index.
    pub vector_index: IndexStatus,
    /// Approximate bytes of memory the payload-index bitmaps hold.
    pub payload_index_bytes: usize,
    /// Status of the keyword index, for collections with a text index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword_index: Option<KeywordStatus>,
}

/// The state of a collection's keyword index.
#[derive(Clone, Debug, Serialize)]
pub struct KeywordStatus {
    /// Documents with a text, as indexed.
    pub documents: u64,
    /// Bytes the index's files take on disk.
    pub disk_bytes: u64,
    /// Last change reflected.
    pub watermark: u64,
    /// How it was restored when the collection was opened.
    pub recovery: Recovery,
}

/// The state of one derived index.
#[derive(Clone, Debug, Serialize)]
pub struct IndexStatus {
    /// Index name, e.g. `"flat"`.
    pub name: String,
    /// Vectors held.
    pub len: usize,
    /// Approximate bytes of memory the index holds.
    pub memory_bytes: usize,
    /// Last change reflected.
    pub watermark: u64,
    /// How it was restored when the collection was opened.
    pub recovery: Recovery,
    /// For quantising indexes (IVF-PQ): training state, code size, reconstruction error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<crate::index::QuantizationStatus>,
    /// For disk-resident indexes (DiskANN): node file, delta, delete list, cache, reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::index::diskann::DiskStatus>,
    /// For graph indexes (HNSW): vector precision, slots, tombstones, background compaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<crate::index::GraphStatus>,
}

impl Collection {
    /// Opens a collection: creates its folder if needed and brings its indexes up to date.
    pub(crate) fn open(
        record: CollectionRecord,
        store: Arc<Store>,
        dir: IndexDir,
        created: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.path())?;
        let mut index = new_vector_index(&record.config, record.instance, &dir);
        let mut keyword = record
            .config
            .text_indexed
            .then(|| Box::new(KeywordIndex::new(&dir, &record.config, record.instance)));
        let reader = if created {
            None
        } else {
            Some(store.read(record.id)?)
        };
        let payload = Payload::load(&record.config, reader.as_ref())?;
        let bring_up = |index: &mut dyn DerivedIndex| -> Result<Recovery> {
            match &reader {
                Some(reader) => sync::recover(index, &dir, reader),
                None => {
                    // An empty checkpoint, so that the next open loads instead of rebuilding.
                    index.reset(0);
                    index.finish_batch()?;
                    index.checkpoint(&dir)?;
                    Ok(Recovery::Created)
                }
            }
        };
        let recovery = bring_up(index.as_mut())?;
        let keyword = match keyword.as_mut() {
            Some(k) => Some(bring_up(k.as_mut())?),
            None => None,
        }
        .zip(keyword)
        .map(|(recovery, index)| KeywordState {
            index: RwLock::new(index),
            recovery,
        });
        // Replayed changes are not in the checkpoints yet: count them as pending.
        let replayed = [Some(&recovery), keyword.as_ref().map(|k| &k.recovery)]
            .into_iter()
            .flatten()
            .map(|r| match r {
                Recovery::Loaded { replayed } => *replayed,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Collection {
            inner: Arc::new(CollectionInner {
                config: RwLock::new(Arc::new(record.config.clone())),
                payload: RwLock::new(payload),
                record,
                store,
                dir,
                write_lock: Mutex::new(()),
                vector_index: RwLock::new(index),
                recovery,
                keyword,
                dropped: AtomicBool::new(false),
                dirty_changes: AtomicU64::new(replayed as u64),
                poisoned: Mutex::new(None),
                last_checkpoint: Mutex::new(Instant::now()),
            }),
        })
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.inner.record.name
    }

    /// The collection's configuration (payload indexes added later included).
    pub fn config(&self) -> Arc<CollectionConfig> {
        self.inner.config.read().clone()
    }

    /// A new, empty vector index of this collection (e.g. to verify a checkpoint file).
    pub(crate) fn new_vector_index(&self) -> Box<dyn VectorIndex> {
        new_vector_index(
            &self.inner.record.config,
            self.inner.record.instance,
            &self.inner.dir,
        )
    }

    pub(crate) fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    fn ensure_live(&self) -> Result<()> {
        if self.inner.dropped.load(Ordering::Acquire) {
            return Err(Error::CollectionNotFound(self.name().to_string()));
        }
        Ok(())
    }

    /// Fails if an index could not be kept in line with the store (see `poisoned`), or a
    /// search found its files damaged.
    fn ensure_index_sound(&self) -> Result<()> {
        let poisoned = self.inner.poisoned.lock().clone();
        let damaged = || {
            self.inner
                .vector_index
                .read_recursive()
                .damage()
                .map(|d| format!("the vector index is damaged ({d})"))
        };
        match poisoned.or_else(damaged) {
            Some(detail) => Err(Error::IndexUnavailable {
                collection: self.name().to_string(),
                detail: format!("{detail}; reopen the database to rebuild it"),
            }),
            None => Ok(()),
        }
    }

    /// Runs `drop_store` under the writer lock (after any in-flight write) and, if it succeeds,
    /// marks every handle to this collection dropped.
    pub(crate) fn retire(&self, drop_store: impl FnOnce() -> Result<()>) -> Result<()> {
        let _writer = self.inner.write_lock.lock();
        self.ensure_live()?;
        drop_store()?;
        self.inner.dropped.store(true, Ordering::Release);
        Ok(())
    }

    // ----- writes -------------------------------------------------------------------------

    /// Inserts or replaces documents, in one transaction. Returns their ids in input order.
    pub fn upsert(&self, docs: Vec<DocumentInput>) -> Result<Vec<Uuid>> {
        self.write_documents(docs, false)
    }

    /// Inserts documents, in one transaction; fails with [`Error::DocumentExists`] (writing
    /// nothing) if any id is already present or repeated in the batch.
    pub fn insert(&self, docs: Vec<DocumentInput>) -> Result<Vec<Uuid>> {
        self.write_documents(docs, true)
    }

    fn write_documents(&self, docs: Vec<DocumentInput>, insert_only: bool) -> Result<Vec<Uuid>> {
        let prepared = self.prepare(docs)?;
        let written = self.commit(
            move |w| {
                for doc in &prepared {
                    if put_document(w, doc)? && insert_only {
                        return Err(Error::DocumentExists(doc.id));
                    }
                    if w.bytes_written() > MAX_BATCH_BYTES {
                        return Err(Error::BatchTooLarge {
                            detail: format!("more than {MAX_BATCH_BYTES} bytes in one batch"),
                        });
                    }
                }
                Ok(prepared)
            },
            |prepared, _| prepared.iter().map(|p| Some(p.view())).collect(),
        )?;
        Ok(written.iter().map(|p| p.id).collect())
    }

    fn prepare(&self, docs: Vec<DocumentInput>) -> Result<Vec<Document>> {
        if docs.len() > MAX_BATCH_DOCS {
            return Err(Error::BatchTooLarge {
                detail: format!(
                    "{} documents, at most {MAX_BATCH_DOCS} per batch",
                    docs.len()
                ),
            });
        }
        let mut prepared = Vec::with_capacity(docs.len());
        for (position, doc) in docs.into_iter().enumerate() {
            let at = |e: Error| match e {
                Error::InvalidVector(m) => {
                    Error::InvalidVector(format!("document {position}: {m}"))
                }
                Error::InvalidMetadata(m) => {
                    Error::InvalidMetadata(format!("document {position}: {m}"))
                }
                other => other,
            };
            self.validate_document(&doc).map_err(at)?;
            let metadata = metadata_object(doc.metadata)?;
            prepared.push(Document {
                id: doc.id.unwrap_or_else(Uuid::now_v7),
                vector: doc.vector,
                metadata,
                text: doc.text,
            });
        }
        Ok(prepared)
    }

    /// Pre-allocates index memory for `additional` more documents, ahead of a bulk import of a
    /// known size (avoids growing the index's arrays step by step).
    pub fn reserve(&self, additional: usize) -> Result<()> {
        self.ensure_live()?;
        let _writer = self.inner.write_lock.lock();
        self.inner.vector_index.write().reserve(additional);
        Ok(())
    }

    /// Checks a document against the collection (dimension, finite values, metadata object)
    /// without writing it.
    pub fn validate_document(&self, doc: &DocumentInput) -> Result<()> {
        self.inner
            .record
            .config
            .validate_document_vector(&doc.vector)?;
        validate_metadata(&doc.metadata)
    }

    /// Replaces the metadata of `id` by merging `patch` into it (JSON merge patch: `null`
    /// removes a key).
    pub fn update_metadata(&self, id: Uuid, patch: Value) -> Result<()> {
        validate_metadata(&patch)?;
        let patch = metadata_object(patch)?;
        self.update_one(id, |doc| {
            merge_patch(&mut doc.metadata, &patch);
            Ok(())
        })
    }

    /// Replaces the vector of `id`.
    pub fn update_vector(&self, id: Uuid, vector: Vec<f32>) -> Result<()> {
        self.inner.record.config.validate_document_vector(&vector)?;
        self.update_one(id, move |doc| {
            doc.vector = vector;
            Ok(())
        })
    }

    fn update_one(&self, id: Uuid, change: impl FnOnce(&mut Document) -> Result<()>) -> Result<()> {
        self.commit(
            |w| {
                let internal = w.internal_id(&id)?.ok_or(Error::DocumentNotFound(id))?;
                let mut doc = w.document(internal)?.ok_or(Error::DocumentNotFound(id))?;
                change(&mut doc)?;
                put_document(w, &doc)?;
                Ok(doc)
            },
            |doc, _| vec![Some(doc.view())],
        )?;
        Ok(())
    }

    /// Deletes documents by id, in one transaction. Ids not present are ignored; returns how
    /// many documents were deleted.
    pub fn delete(&self, ids: &[Uuid]) -> Result<usize> {
        if ids.len() > MAX_BATCH_DOCS {
            return Err(Error::BatchTooLarge {
                detail: format!("{} ids, at most {MAX_BATCH_DOCS} per batch", ids.len()),
            });
        }
        let deleted = self.commit(
            |w| {
                let mut deleted = 0;
                for id in ids {
                    deleted += usize::from(w.remove(id)?.is_some());
                }
                Ok(deleted)
            },
            |_, changes| vec![None; changes],
        )?;
        Ok(deleted)
    }

    /// Deletes every document matching `filter`, in one transaction; returns how many.
    pub fn delete_where(&self, filter: &Filter) -> Result<usize> {
        filter.validate()?;
        self.commit(
            |w| {
                // Under the writer lock the bitmaps describe exactly what this transaction sees.
                let candidates = self.inner.payload.read().index.candidates(filter);
                let ids = query::resolve(candidates, filter, &*w)?;
                for id in &ids {
                    w.remove_internal(id)?;
                }
                Ok(ids.len() as usize)
            },
            |_, changes| vec![None; changes],
        )
    }

    /// Adds a payload index on an existing collection: its rows are written for every document
    /// in one transaction (writes wait meanwhile; searches go on), then filters use it.
    pub fn create_payload_index(&self, field: PayloadField) -> Result<()> {
        let _writer = self.inner.write_lock.lock();
        self.ensure_live()?;
        let mut config = (*self.config()).clone();
        config.payload_fields.push(field.clone());
        config.validate()?;
        let schema = PayloadSchema::new(&config.payload_fields);
        let number = u16::try_from(config.payload_fields.len() - 1)
            .map_err(|_| Error::InvalidConfig("too many payload fields".into()))?;
        let record = CollectionRecord {
            config: config.clone(),
            ..self.inner.record.clone()
        };
        let rows = self
            .inner
            .store
            .add_payload_field(&record, &schema, number)?;
        let mut payload = self.inner.payload.write();
        payload.schema = Arc::new(schema);
        payload
            .index
            .add_field(FieldPath::trusted(&field.path), field.kind);
        payload.apply(&Committed {
            changes: Vec::new(),
            rows,
        });
        *self.inner.config.write() = Arc::new(config);
        Ok(())
    }

    /// Trains the vector index's quantisers now (IVF-PQ), merges its in-RAM delta into a new
    /// node file (DiskANN), or compacts away its tombstones when they are due (HNSW, which
    /// otherwise does it in the background by itself); `false` when there is nothing to do. Then
    /// checkpoints so the result survives a restart. Writes wait meanwhile; searches wait
    /// only for the swap.
    pub fn train(&self) -> Result<bool> {
        {
            let _writer = self.inner.write_lock.lock();
            self.ensure_live()?;
            self.ensure_index_sound()?;
            let index = self.inner.vector_index.read();
            if !index.train()? {
                return Ok(false);
            }
            drop(index);
            self.inner.vector_index.write().publish()?;
        }
        self.checkpoint()?;
        Ok(true)
    }

    /// Runs `write` in one transaction under the writer lock, then applies the committed
    /// changes to every index. `views(value, n)` gives the document after each of the `n`
    /// changes (`None` for a deletion).
    fn commit<T>(
        &self,
        write: impl FnOnce(&mut CollectionWriter<'_>) -> Result<T>,
        views: impl for<'v> FnOnce(&'v T, usize) -> Vec<Option<DocView<'v>>>,
    ) -> Result<T> {
        let _writer = self.inner.write_lock.lock();
        self.ensure_live()?;
        let schema = self.inner.payload.read().schema.clone();
        let (value, committed) = self
            .inner
            .store
            .write(self.inner.record.id, &schema, write)?;
        self.inner.payload.write().apply(&committed);
        let changes = committed.changes;
        if changes.is_empty() {
            return Ok(value);
        }
        let docs = views(&value, changes.len());
        self.apply_to(&self.inner.vector_index, &changes, &docs)?;
        if let Some(keyword) = &self.inner.keyword {
            self.apply_to(&keyword.index, &changes, &docs)?;
        }
        self.inner
            .dirty_changes
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        Ok(value)
    }

    /// Applies committed changes to one index; if that fails, rebuilds it from the store (the
    /// write is durable: never serve from an index that disagrees with the store), and if even
    /// that fails, poisons the collection.
    fn apply_to<I: DerivedIndex + ?Sized>(
        &self,
        lock: &RwLock<Box<I>>,
        changes: &[Change],
        docs: &[Option<DocView<'_>>],
    ) -> Result<()> {
        let applied = {
            let mut index = lock.write();
            sync::apply_committed(index.as_mut(), changes, docs).and_then(|()| {
                // Deferred work (linking graph nodes, preparing a compaction) runs while
                // searches proceed; what it prepared is then installed with a brief write lock.
                let index = RwLockWriteGuard::downgrade(index);
                index.finish_batch()?;
                if index.needs_publish() {
                    drop(index);
                    lock.write().publish()?;
                }
                Ok(())
            })
        };
        let Err(e) = applied else {
            return Ok(());
        };
        let mut index = lock.write();
        log::error!(
            "applying changes to the {} index failed ({e}); rebuilding it",
            index.name()
        );
        let rebuilt = self
            .inner
            .store
            .read(self.inner.record.id)
            .and_then(|reader| sync::rebuild(index.as_mut(), &reader));
        if let Err(e) = rebuilt {
            // The write is durable, so it is acknowledged; searches refuse to run on an index
            // that disagrees with the store until a reopen rebuilds it.
            log::error!(
                "the {} index of {:?} could not be rebuilt ({e}); searches fail until the \
                 database is reopened",
                index.name(),
                self.name()
            );
            *self.inner.poisoned.lock() = Some(format!("the {} index: {e}", index.name()));
        }
        Ok(())
    }

    // ----- reads --------------------------------------------------------------------------

    /// The document with this id, if any.
    pub fn get(&self, id: Uuid) -> Result<Option<Document>> {
        self.ensure_live()?;
        self.inner
            .store
            .read(self.inner.record.id)?
            .document_by_id(&id)
    }

    /// The documents with these ids, in order (`None` where absent), from one snapshot.
    pub fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Option<Document>>> {
        self.ensure_live()?;
        let reader = self.inner.store.read(self.inner.record.id)?;
        ids.iter().map(|id| reader.document_by_id(id)).collect()
    }

    /// Number of documents.
    pub fn count(&self) -> Result<u64> {
        self.ensure_live()?;
        self.inner.store.read(self.inner.record.id)?.count()
    }

    /// Number of documents matching `filter`.
    pub fn count_where(&self, filter: &Filter) -> Result<u64> {
        self.ensure_live()?;
        filter.validate()?;
        let reader = self.inner.store.read(self.inner.record.id)?;
        Ok(self.matching_ids(filter, &reader)?.len())
    }

    /// Internal ids of the documents matching `filter` (checked), as of `docs`.
    fn matching_ids(&self, filter: &Filter, docs: &dyn MetadataSource) -> Result<RoaringBitmap> {
        let candidates = self.inner.payload.read().index.candidates(filter);
        query::resolve(candidates, filter, docs)
    }

    /// Up to `limit` documents in id order after `cursor` (from a previous page).
    pub fn scroll(&self, limit: usize, cursor: Option<&str>) -> Result<ScrollPage> {
        self.scroll_where(&Filter::all(), limit, cursor)
    }

    /// Up to `limit` documents matching `filter`, in id order after `cursor` (from a previous
    /// page of the same filter).
    pub fn scroll_where(
        &self,
        filter: &Filter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<ScrollPage> {
        self.ensure_live()?;
        filter.validate()?;
        if limit == 0 || limit > MAX_SCROLL_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "limit must be in 1..={MAX_SCROLL_LIMIT}, got {limit}"
            )));
        }
        let after = cursor
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| Error::InvalidArgument(format!("invalid scroll cursor {c:?}")))
            })
            .transpose()?;
        let reader = self.inner.store.read(self.inner.record.id)?;
        let documents = if filter.is_match_all() {
            reader.scroll_where(after, limit, |_| true)?
        } else {
            let ids = self.matching_ids(filter, &reader)?;
            reader.scroll_where(after, limit, |id| ids.contains(id))?
        };
        let next_cursor = (documents.len() == limit)
            .then(|| documents.last().map(|d| d.id.to_string()))
            .flatten();
        Ok(ScrollPage {
            documents,
            next_cursor,
        })
    }

    /// Searches for the nearest neighbours of the request's vector.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        self.ensure_live()?;
        self.ensure_index_sound()?;
        request.validate(&self.inner.record.config)?;
        self.run_validated(request)
    }

    /// Runs many searches in parallel; fails without searching if any request is invalid.
    pub fn search_batch(&self, requests: &[SearchRequest]) -> Result<Vec<SearchResponse>> {
        self.ensure_live()?;
        self.ensure_index_sound()?;
        for (i, request) in requests.iter().enumerate() {
            request
                .validate(&self.inner.record.config)
                .map_err(|e| Error::InvalidArgument(format!("request {i}: {e}")))?;
        }
        if requests
            .iter()
            .any(|r| r.filter.is_some() || r.text.is_some())
        {
            return requests
                .par_iter()
                .map(|request| self.run_validated(request))
                .collect();
        }
        let searches = {
            let _depth = SearchDepth::enter();
            let index = self.read_index_for_search();
            // Validated: without a text, every request has a vector.
            let queries: Vec<&[f32]> = requests
                .iter()
                .map(|r| r.vector.as_deref().unwrap_or_default())
                .collect();
            let ks: Vec<usize> = requests.iter().map(|r| r.k).collect();
            let knobs: Vec<SearchKnobs> = requests.iter().map(query::knobs).collect();
            index.search_many(&queries, &ks, &knobs)
        };
        self.ensure_index_sound()?;
        let reader = if requests.iter().any(|r| r.include.any()) {
            Some(self.inner.store.read(self.inner.record.id)?)
        } else {
            None
        };
        searches
            .into_iter()
            .zip(requests)
            .map(|(search, request)| {
                query::hydrate(search.into(), request.include, reader.as_ref())
            })
            .collect()
    }

    /// The index read lock for a search. A plain read lets a waiting writer go first (no writer
    /// starvation). But a search may run nested inside another search on the same thread
    /// (rayon work stealing during a parallel scan): that one must not queue behind the writer,
    /// which waits for the outer search's lock — it takes a recursive read instead.
    fn read_index_for_search(&self) -> parking_lot::RwLockReadGuard<'_, Box<dyn VectorIndex>> {
        if SearchDepth::nested() {
            self.inner.vector_index.read_recursive()
        } else {
            self.inner.vector_index.read()
        }
    }

    fn run_validated(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let filter = request.filter.as_ref().filter(|f| !f.is_match_all());
        let reader = if request.include.any() || filter.is_some() {
            Some(self.inner.store.read(self.inner.record.id)?)
        } else {
            None
        };
        let allowed = match (filter, &reader) {
            (Some(filter), Some(reader)) => Some(Arc::new(self.matching_ids(filter, reader)?)),
            _ => None,
        };
        let answer = match (&request.vector, &request.text) {
            (Some(vector), None) => {
                let search = self.vector_arm(vector, request.k, request, allowed.as_deref());
                self.ensure_index_sound()?;
                search.into()
            }
            (None, Some(text)) => {
                let keyword = self.keyword_arm(text, request.k, allowed.clone())?;
                let _depth = SearchDepth::enter();
                let index = self.read_index_for_search();
                query::keyword_answer(keyword, &|id| index.document_id(id))
            }
            (Some(vector), Some(text)) => {
                let depth = request.arm_candidates();
                let keyword = self.keyword_arm(text, depth, allowed.clone())?;
                let vector = self.vector_arm(vector, depth, request, allowed.as_deref());
                self.ensure_index_sound()?;
                let _depth = SearchDepth::enter();
                let index = self.read_index_for_search();
                query::hybrid_answer(vector, keyword, request.fusion(), request.k, &|id| {
                    index.document_id(id)
                })
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "a search needs a vector, a text, or both".into(),
                ))
            }
        };
        let mut response = query::hydrate(answer, request.include, reader.as_ref())?;
        response.filter_matches = allowed.map(|ids| ids.len());
        Ok(response)
    }

    /// The `k` nearest neighbours of `vector` (among `allowed`, if given).
    fn vector_arm(
        &self,
        vector: &[f32],
        k: usize,
        request: &SearchRequest,
        allowed: Option<&RoaringBitmap>,
    ) -> IndexSearch {
        let _depth = SearchDepth::enter();
        let index = self.read_index_for_search();
        let knobs = query::knobs(request);
        match allowed {
            Some(ids) => index.search_filtered(vector, k, &knobs, ids),
            None => index.search(vector, k, &knobs),
        }
    }

    /// The `k` best documents for `text` by BM25 (among `allowed`, if given).
    fn keyword_arm(
        &self,
        text: &str,
        k: usize,
        allowed: Option<Arc<RoaringBitmap>>,
    ) -> Result<KeywordSearch> {
        let keyword =
            self.inner.keyword.as_ref().ok_or_else(|| {
                Error::InvalidArgument("this collection has no text index".into())
            })?;
        keyword.index.read().search(text, k, allowed)
    }

    /// Configuration, size and index status.
    pub fn info(&self) -> Result<CollectionInfo> {
        self.ensure_live()?;
        let reader = self.inner.store.read(self.inner.record.id)?;
        let payload_index_bytes = self.inner.payload.read().index.memory_bytes();
        let keyword_index = match &self.inner.keyword {
            Some(keyword) => {
                let index = keyword.index.read();
                Some(KeywordStatus {
                    documents: index.len()?,
                    disk_bytes: index.disk_bytes(),
                    watermark: index.watermark(),
                    recovery: keyword.recovery.clone(),
                })
            }
            None => None,
        };
        let index = self.inner.vector_index.read();
        Ok(CollectionInfo {
            name: self.name().to_string(),
            config: (*self.config()).clone(),
            payload_index_bytes,
            keyword_index,
            count: reader.count()?,
            last_seq: reader.last_seq()?,
            changelog_entries: reader.changelog_len()?,
            vector_index: IndexStatus {
                name: index.name().to_string(),
                len: index.len(),
                memory_bytes: index.memory_bytes(),
                watermark: index.watermark(),
                recovery: self.inner.recovery.clone(),
                quantization: index.quantization(),
                disk: index.disk_status(),
                graph: index.graph_status(),
            },
        })
    }

    // ----- maintenance --------------------------------------------------------------------

    /// Waits until the vector index has no background work left (an IVF-PQ training, an HNSW
    /// compaction, a DiskANN merge), installing and checkpointing each piece as it ends; at
    /// most `timeout` (`Duration::MAX`: no limit). Returns whether it got there in time.
    /// Writes and searches go on meanwhile (so work they start is waited for too).
    pub fn wait_for_background_work(&self, timeout: Duration) -> Result<bool> {
        const POLL: Duration = Duration::from_millis(10);
        // `None`: no deadline representable, so none at all.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.ensure_live()?;
            if self.has_finished_background_work() {
                self.checkpoint()?;
            }
            let busy = self.inner.vector_index.read().background_work();
            if !busy {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Writes checkpoints of every index and trims the change log they make redundant.
    pub fn checkpoint(&self) -> Result<()> {
        let _writer = self.inner.write_lock.lock();
        self.ensure_live()?;
        self.ensure_index_sound()?;
        // Install background work that has ended (an HNSW compaction, a DiskANN merge), so that
        // it lands even when no write follows it.
        if self.has_finished_background_work() {
            self.inner.vector_index.write().publish()?;
        }
        let pending = self.inner.dirty_changes.swap(0, Ordering::Relaxed);
        // Set before trying, so that a failing disk is retried only after the policy's period.
        *self.inner.last_checkpoint.lock() = Instant::now();
        let checkpointed = self
            .inner
            .vector_index
            .read()
            .checkpoint(&self.inner.dir)
            .and_then(|vector| match &self.inner.keyword {
                Some(keyword) => Ok(vector.min(keyword.index.read().checkpoint(&self.inner.dir)?)),
                None => Ok(vector),
            });
        let watermark = match checkpointed {
            Ok(w) => w,
            Err(e) => {
                self.inner
                    .dirty_changes
                    .fetch_add(pending, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.inner
            .store
            .trim_changelog(self.inner.record.id, watermark)
    }

    /// Checkpoints if `policy` says it is due.
    pub(crate) fn checkpoint_if_due(&self, policy: &CheckpointPolicy) -> Result<()> {
        let dirty = self.inner.dirty_changes.load(Ordering::Relaxed);
        let elapsed = self.inner.last_checkpoint.lock().elapsed();
        let due = (dirty > 0 && (dirty >= policy.every_changes || elapsed >= policy.every))
            || self.has_finished_background_work();
        if due && !self.inner.dropped.load(Ordering::Acquire) {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Whether the vector index has background work (a compaction, a merge) that has ended and
    /// waits to be installed, which a checkpoint does.
    /// A probe: `false` while a writer holds the index.
    fn has_finished_background_work(&self) -> bool {
        self.inner
            .vector_index
            .try_read()
            .is_some_and(|index| index.background_done())
    }

    /// Whether changes were applied since the last checkpoint, or background work waits to be
    /// installed.
    pub(crate) fn is_dirty(&self) -> bool {
        self.inner.dirty_changes.load(Ordering::Relaxed) > 0 || self.has_finished_background_work()
    }

    /// Checks the payload indexes against a snapshot taken under the writer lock: the stored rows
    /// are exactly those the documents' metadata give, and the in-memory bitmaps are exactly
    /// those the stored rows give. Returns the live documents the bitmaps count, and problems.
    pub(crate) fn verify_payload(&self, reader: &CollectionReader) -> Result<(u64, Vec<String>)> {
        let payload = self.inner.payload.read();
        let mut expected = std::collections::BTreeSet::new();
        reader.for_each_document(|id, doc| {
            for (field, key) in payload.schema.row_keys(&doc.metadata) {
                expected.insert((field, key, id));
            }
            Ok(())
        })?;
        let mut stored = std::collections::BTreeSet::new();
        reader.for_each_payload_row(|field, key, id| {
            stored.insert((field, key.to_vec(), id));
            Ok(())
        })?;
        let mut problems = Vec::new();
        let missing = expected.difference(&stored).count();
        let extra = stored.difference(&expected).count();
        if missing > 0 || extra > 0 {
            problems.push(format!(
                "payload rows disagree with the documents: {missing} missing, {extra} extra"
            ));
        }
        let reloaded = Payload::load(&self.config(), Some(reader))?;
        if reloaded.index != payload.index {
            problems.push("in-memory payload bitmaps differ from the stored rows".into());
        }
        Ok((payload.index.live().len(), problems))
    }

    /// Runs `f` with the keyword index (if the collection has one) and a store snapshot taken
    /// under the writer lock, so both describe the same state.
    pub(crate) fn with_keyword_view<T>(
        &self,
        f: impl FnOnce(&KeywordIndex, &CollectionReader) -> Result<T>,
    ) -> Option<Result<T>> {
        let keyword = self.inner.keyword.as_ref()?;
        let _writer = self.inner.write_lock.lock();
        let run = || {
            self.ensure_live()?;
            let reader = self.inner.store.read(self.inner.record.id)?;
            f(&keyword.index.read(), &reader)
        };
        Some(run())
    }

    /// Runs `f` with the derived indexes and a store snapshot taken under the writer lock, so
    /// both describe the same state (used by integrity checks).
    pub(crate) fn with_consistent_view<T>(
        &self,
        f: impl FnOnce(&dyn VectorIndex, &CollectionReader, &Path) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.inner.write_lock.lock();
        self.ensure_live()?;
        let reader = self.inner.store.read(self.inner.record.id)?;
        let index = self.inner.vector_index.read();
        f(index.as_ref(), &reader, self.inner.dir.path())
    }
}

thread_local! {
    /// Searches in progress on this thread (more than one when nested by rayon).
    static SEARCH_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Counts a search in progress on this thread for as long as it lives.
struct SearchDepth;

impl SearchDepth {
    fn enter() -> SearchDepth {
        SEARCH_DEPTH.with(|d| d.set(d.get() + 1));
        SearchDepth
    }

    /// Whether another search is already in progress on this thread.
    fn nested() -> bool {
        SEARCH_DEPTH.with(|d| d.get() > 1)
    }
}

impl Drop for SearchDepth {
    fn drop(&mut self) {
        SEARCH_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("name", &self.name())
            .field("config", &self.config())
            .finish()
    }
}
