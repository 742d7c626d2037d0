//! The keyword index (DESIGN §3, §6): BM25 over the documents' `text`, with tantivy, one index
//! per collection in `<collection folder>/keyword/`, derived from the store through the sync
//! protocol like every other index.
//!
//! - Each document with a text is one tantivy document: its internal id (indexed, so that an
//!   update or delete removes it by term, and a fast field, so that hits and filters read it) and
//!   its text, analysed by the collection's tokenizer.
//! - Visibility: applied changes go to tantivy's in-memory writer. The first search after a write
//!   commits them and reloads the searcher, so every search sees every acknowledged write, while a
//!   bulk import pays for one commit per burst of searches instead of one per batch.
//! - Durability: redb is the truth. A tantivy commit carries the watermark (and the collection's
//!   fingerprint) in its payload; on open the change log after it is replayed. A missing, damaged
//!   (tantivy's per-file checksums) or foreign index is rebuilt from the store.

mod analyzer;
mod collector;
mod directory;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use tantivy::directory::Directory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, Term,
};

use crate::config::{CollectionConfig, TextTokenizer};
use crate::error::{Error, Result};
use crate::index::io::{replace_file, IndexDir, IndexIo};
use crate::index::DerivedIndex;
use crate::types::{Change, DocView, InternalId, Seq};
use directory::IoDirectory;

pub use analyzer::{terms, MAX_QUERY_TERMS};

/// Folder of the tantivy index inside the collection's folder.
const FOLDER: &str = "keyword";
/// Identifies our commit payload (format and version).
const PAYLOAD_FORMAT: &str = "quiver-keyword/1";
/// More committed segments than this are merged (the smallest ones) after a commit.
const MAX_SEGMENTS: usize = 8;
/// Indexing memory of tantivy's writer (its minimum is 15 MB per thread).
const WRITER_MEMORY_BYTES: usize = 32 << 20;
/// Our record of meta.json's checksum, next to it.
const META_CHECKSUM_FILE: &str = "quiver-meta.crc32c";
/// Schema field names.
const ID_FIELD: &str = "id";
const TEXT_FIELD: &str = "text";

/// What a commit records besides tantivy's own metadata.
#[derive(Serialize, Deserialize)]
struct CommitPayload {
    format: String,
    fingerprint: u64,
    watermark: Seq,
}

/// One keyword hit: a document and its BM25 score (higher is better).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KeywordHit {
    /// Internal id of the document.
    pub id: InternalId,
    /// BM25 score.
    pub score: f32,
}

/// What a keyword search returns.
#[derive(Clone, Debug, Default)]
pub struct KeywordSearch {
    /// Best hits first (equal scores: lower internal id first).
    pub hits: Vec<KeywordHit>,
    /// Documents that contain at least one query term (and pass the filter).
    pub matched: usize,
}

/// The keyword index of one collection.
pub struct KeywordIndex {
    folder: PathBuf,
    /// The I/O tantivy's files are written through.
    io: Arc<dyn IndexIo>,
    tokenizer: TextTokenizer,
    fingerprint: u64,
    /// The open tantivy index; `None` until loaded or reset.
    open: Option<OpenIndex>,
    /// Last change applied to the writer.
    applied: AtomicU64,
    /// Whether the writer holds operations that are not committed yet.
    pending: AtomicBool,
    /// False from a reset until the rebuild that follows it finishes (`finish_batch`): a
    /// half-fed index is never committed.
    complete: AtomicBool,
    /// Set when a commit failed: tantivy's writer is then unusable, every use fails until a
    /// rebuild ([`DerivedIndex::reset`]).
    broken: AtomicBool,
}

/// An open tantivy index with its single writer and a manually reloaded reader.
struct OpenIndex {
    /// The collection's analyzer, built once (queries clone it).
    analyzer: tantivy::tokenizer::TextAnalyzer,
    id: Field,
    text: Field,
    /// The writer and the watermark of its last commit.
    writer: Mutex<(IndexWriter, Seq)>,
    reader: IndexReader,
}

/// tantivy's failures are environment errors ([`Error::Io`]): we build every query and the
/// schema ourselves, so what tantivy reports comes from its files (I/O, locks, damage), often
/// wrapped in its own error types.
fn tantivy_error(e: tantivy::TantivyError) -> Error {
    let kind = match &e {
        tantivy::TantivyError::IoError(io) => io.kind(),
        _ => std::io::ErrorKind::Other,
    };
    Error::Io(std::io::Error::new(kind, format!("keyword index: {e}")))
}

/// The index cannot be used until a rebuild succeeds: an I/O problem, as far as callers know.
fn unavailable(reason: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!(
        "keyword index unavailable: {reason}"
    )))
}

impl KeywordIndex {
    /// The keyword index of the collection whose folder is `collection_dir` (nothing is opened
    /// until [`DerivedIndex::load_checkpoint`] or [`DerivedIndex::reset`]).
    pub fn new(collection_dir: &IndexDir, config: &CollectionConfig, instance: u64) -> Self {
        KeywordIndex {
            folder: collection_dir.path().join(FOLDER),
            io: collection_dir.io_handle(),
            tokenizer: config.text_tokenizer,
            fingerprint: config.text_fingerprint(instance),
            open: None,
            applied: AtomicU64::new(0),
            pending: AtomicBool::new(false),
            complete: AtomicBool::new(true),
            broken: AtomicBool::new(false),
        }
    }

    fn schema(&self) -> Schema {
        let mut builder = Schema::builder();
        builder.add_u64_field(ID_FIELD, INDEXED | FAST);
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(analyzer::ANALYZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqs);
        builder.add_text_field(
            TEXT_FIELD,
            TextOptions::default().set_indexing_options(indexing),
        );
        builder.build()
    }

    fn open_index(&self) -> Result<&OpenIndex> {
        if self.broken.load(Ordering::Acquire) {
            return Err(unavailable("a commit failed; it needs a rebuild"));
        }
        self.open
            .as_ref()
            .ok_or_else(|| unavailable("it could not be created or opened"))
    }

    /// Whether a failed commit left the index unusable until it is rebuilt.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Starts the writer and reader of `index`, whose last commit recorded `watermark`.
    fn start(&self, index: Index, watermark: Seq) -> Result<OpenIndex> {
        index
            .tokenizers()
            .register(analyzer::ANALYZER_NAME, analyzer::analyzer(self.tokenizer));
        let schema = index.schema();
        let id = schema.get_field(ID_FIELD).map_err(tantivy_error)?;
        let text = schema.get_field(TEXT_FIELD).map_err(tantivy_error)?;
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(tantivy_error)?;
        // No background merges: a merge racing deletes could lose a delete across a crash
        // (seen in our kill -9 test). Segments are merged in `commit` instead, while no
        // change can be applied.
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy_error)?;
        Ok(OpenIndex {
            analyzer: analyzer::analyzer(self.tokenizer),
            id,
            text,
            writer: Mutex::new((writer, watermark)),
            reader,
        })
    }

    /// Opens the committed index in the folder, checking it; `Ok(None)` if there is none.
    fn open_committed(&self) -> Result<Option<(Index, Seq)>> {
        if !self.folder.join("meta.json").exists() {
            return Ok(None);
        }
        let corrupted = |detail: String| Error::Corrupted {
            file: self.folder.clone(),
            detail,
        };
        check_meta_checksum(&self.folder).map_err(corrupted)?;
        let index = IoDirectory::open(&self.folder, self.io.clone())
            .and_then(Index::open)
            .map_err(|e| corrupted(e.to_string()))?;
        let damaged = damaged_files(&index).map_err(|e| corrupted(e.to_string()))?;
        if !damaged.is_empty() {
            return Err(corrupted(format!("checksum mismatch in {damaged:?}")));
        }
        if index.schema() != self.schema() {
            return Err(corrupted("unexpected schema".into()));
        }
        let meta = index.load_metas().map_err(|e| corrupted(e.to_string()))?;
        let payload: CommitPayload = meta
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| corrupted("no commit payload".into()))?;
        if payload.format != PAYLOAD_FORMAT {
            return Err(corrupted(format!(
                "format {:?}, expected {PAYLOAD_FORMAT:?}",
                payload.format
            )));
        }
        if payload.fingerprint != self.fingerprint {
            return Err(corrupted(
                "written for another collection or tokenizer".into(),
            ));
        }
        Ok(Some((index, payload.watermark)))
    }

    /// Opens the inverted index of both fields in every segment. Tantivy opens some files
    /// lazily: a missing positions file reads as empty until a query needs it, then every
    /// search fails. Found now, it is a damaged index, rebuilt from the store.
    fn check_segments_readable(&self, open: &OpenIndex) -> Result<()> {
        for segment in open.reader.searcher().segment_readers() {
            for field in [open.id, open.text] {
                segment
                    .inverted_index(field)
                    .map_err(|e| Error::Corrupted {
                        file: self.folder.clone(),
                        detail: format!("segment {}: {e}", segment.segment_id().uuid_string()),
                    })?;
            }
        }
        Ok(())
    }

    /// Commits what the writer holds (with the current watermark) and makes it searchable.
    /// Returns the committed watermark.
    fn commit(&self) -> Result<Seq> {
        let open = self.open_index()?;
        let mut writer = open.writer.lock();
        let watermark = self.applied.load(Ordering::Acquire);
        if writer.1 == watermark && !self.pending.load(Ordering::Acquire) {
            return Ok(watermark);
        }
        if !self.complete.load(Ordering::Acquire) {
            return Err(Error::Internal(
                "keyword index: a rebuild has not finished; nothing is committed".into(),
            ));
        }
        // After a failed commit tantivy's writer has lost its indexing thread: committing
        // again would record documents it silently dropped. Only a rebuild helps.
        let failed = |e: tantivy::TantivyError| {
            self.broken.store(true, Ordering::Release);
            tantivy_error(e)
        };
        let payload = serde_json::to_string(&CommitPayload {
            format: PAYLOAD_FORMAT.to_string(),
            fingerprint: self.fingerprint,
            watermark,
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let mut prepared = writer.0.prepare_commit().map_err(failed)?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(failed)?;
        merge_small_segments(&mut writer.0).map_err(failed)?;
        if let Err(e) = write_meta_checksum(&self.folder, self.io.as_ref()) {
            // The next open then sees a mismatch and rebuilds: safe.
            log::warn!("keyword index: could not record the checksum of meta.json: {e}");
        }
        open.reader.reload().map_err(tantivy_error)?;
        writer.1 = watermark;
        self.pending.store(false, Ordering::Release);
        Ok(watermark)
    }

    /// The `k` best documents for `text` by BM25, among `allowed` (internal ids) if given.
    /// Sees every change applied so far (commits pending ones first).
    pub fn search(
        &self,
        text: &str,
        k: usize,
        allowed: Option<Arc<RoaringBitmap>>,
    ) -> Result<KeywordSearch> {
        let open = self.open_index()?;
        if self.pending.load(Ordering::Acquire) {
            self.commit()?;
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = analyzer::terms_with(&open.analyzer, text)
            .into_iter()
            .map(|term| {
                let query = TermQuery::new(
                    Term::from_field_text(open.text, &term),
                    IndexRecordOption::WithFreqs,
                );
                (Occur::Should, Box::new(query) as Box<dyn Query>)
            })
            .collect();
        if clauses.is_empty() || k == 0 {
            return Ok(KeywordSearch::default());
        }
        let query = BooleanQuery::new(clauses);
        let (hits, matched) = open
            .reader
            .searcher()
            .search(&query, &collector::BestMatches { k, allowed })
            .map_err(tantivy_error)?;
        Ok(KeywordSearch { hits, matched })
    }

    /// Number of documents held (committing pending changes first).
    pub fn len(&self) -> Result<u64> {
        let open = self.open_index()?;
        self.commit()?;
        Ok(open.reader.searcher().num_docs())
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Bytes the committed index takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.folder)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Records the checksum of tantivy's meta.json, which has none of its own (a damaged meta.json
/// that still parses, e.g. a segment's deletes key garbled, would silently bring deleted
/// documents back). Written after meta.json is durable, without fsync: a lost or stale record
/// only makes the next open rebuild.
fn write_meta_checksum(folder: &Path, io: &dyn IndexIo) -> std::io::Result<()> {
    let meta = std::fs::read(folder.join("meta.json"))?;
    let record = format!("{:08x}\n", crc32c::crc32c(&meta));
    replace_file(
        io,
        &folder.join(META_CHECKSUM_FILE),
        record.as_bytes(),
        false,
    )
}

/// Checks meta.json against the checksum recorded at the last commit (none: written by an
/// older version, accepted).
fn check_meta_checksum(folder: &Path) -> std::result::Result<(), String> {
    let recorded = match std::fs::read_to_string(folder.join(META_CHECKSUM_FILE)) {
        Ok(recorded) => recorded,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{META_CHECKSUM_FILE}: {e}")),
    };
    let meta = std::fs::read(folder.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?;
    if recorded.trim() != format!("{:08x}", crc32c::crc32c(&meta)) {
        return Err("meta.json does not match the checksum recorded at its commit".into());
    }
    Ok(())
}

/// Merges the smallest committed segments into one when there are more than
/// [`MAX_SEGMENTS`]: each merge at least halves their number, so a stream of small commits
/// costs logarithmic merge work per document. Runs with the writer held, so no delete races
/// it.
fn merge_small_segments(writer: &mut IndexWriter) -> tantivy::Result<()> {
    let mut segments = writer.index().searchable_segment_metas()?;
    if segments.len() <= MAX_SEGMENTS {
        return Ok(());
    }
    segments.sort_by_key(|s| s.max_doc());
    let smallest: Vec<_> = segments[..segments.len() / 2 + 1]
        .iter()
        .map(|s| s.id())
        .collect();
    writer.merge(&smallest).wait()?;
    Ok(())
}

/// Files of the committed segments whose checksum fails (every file the segments name that
/// exists is read; a missing required file makes opening the reader fail instead).
fn damaged_files(index: &Index) -> tantivy::Result<Vec<PathBuf>> {
    let mut damaged = Vec::new();
    for path in index.load_metas()?.list_segment_files() {
        let exists = index
            .directory()
            .exists(&path)
            .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
        if exists && !index.directory().validate_checksum(&path)? {
            damaged.push(path);
        }
    }
    damaged.sort();
    Ok(damaged)
}

impl DerivedIndex for KeywordIndex {
    fn name(&self) -> &'static str {
        "keyword"
    }

    fn apply(&mut self, change: &Change, doc: Option<DocView<'_>>) -> Result<()> {
        let open = self.open_index()?;
        let writer = open.writer.lock();
        writer
            .0
            .delete_term(Term::from_field_u64(open.id, u64::from(change.id)));
        if let Some(text) = doc.and_then(|d| d.text) {
            let mut document = TantivyDocument::default();
            document.add_u64(open.id, u64::from(change.id));
            document.add_text(open.text, text);
            writer.0.add_document(document).map_err(tantivy_error)?;
        }
        drop(writer);
        self.pending.store(true, Ordering::Release);
        self.applied.fetch_max(change.seq, Ordering::AcqRel);
        Ok(())
    }

    fn watermark(&self) -> Seq {
        self.applied.load(Ordering::Acquire)
    }

    fn reset(&mut self, watermark: Seq) {
        if let Some(open) = self.open.take() {
            // Merge threads outlive the writer: wait for them before the folder goes.
            if let Err(e) = open.writer.into_inner().0.wait_merging_threads() {
                log::warn!("keyword index: merges ended with {e}");
            }
        }
        let created = (|| -> Result<OpenIndex> {
            if self.folder.exists() {
                std::fs::remove_dir_all(&self.folder)?;
            }
            std::fs::create_dir_all(&self.folder)?;
            let index = IoDirectory::open(&self.folder, self.io.clone())
                .and_then(|dir| Index::create(dir, self.schema(), IndexSettings::default()))
                .map_err(tantivy_error)?;
            self.start(index, 0)
        })();
        match created {
            Ok(open) => self.open = Some(open),
            // `apply`, `finish_batch` and `checkpoint` then fail, so the rebuild fails.
            Err(e) => log::error!("could not create the keyword index: {e}"),
        }
        self.applied.store(watermark, Ordering::Release);
        self.pending.store(true, Ordering::Release);
        self.complete.store(false, Ordering::Release);
        self.broken.store(false, Ordering::Release);
    }

    fn finish_batch(&self) -> Result<()> {
        self.open_index()?;
        self.complete.store(true, Ordering::Release);
        Ok(())
    }

    fn checkpoint(&self, _dir: &IndexDir) -> Result<Seq> {
        self.commit()
    }

    fn load_checkpoint(&mut self, _dir: &Path) -> Result<bool> {
        self.open = None;
        // Tantivy's readers are not hardened against every damaged byte: a panic while opening
        // is a damaged index like any other.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Some((index, watermark)) = self.open_committed()? else {
                return Ok(None);
            };
            let open = self.start(index, watermark)?;
            self.check_segments_readable(&open)?;
            Ok(Some((open, watermark)))
        }))
        .unwrap_or_else(|_| {
            Err(Error::Corrupted {
                file: self.folder.clone(),
                detail: "tantivy panicked while opening the index".into(),
            })
        })?;
        let Some((open, watermark)) = opened else {
            return Ok(false);
        };
        self.open = Some(open);
        self.applied.store(watermark, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        Ok(true)
    }

    fn verify(&self) -> Vec<String> {
        let Ok(open) = self.open_index() else {
            return vec!["the keyword index is not open".into()];
        };
        match damaged_files(open.reader.searcher().index()) {
            Ok(damaged) if damaged.is_empty() => Vec::new(),
            Ok(damaged) => vec![format!("checksum mismatch in {damaged:?}")],
            Err(e) => vec![format!("cannot validate the index files: {e}")],
        }
    }

    fn internal_ids(&self) -> Vec<InternalId> {
        let Ok(open) = self.open_index() else {
            return Vec::new();
        };
        if let Err(e) = self.commit() {
            log::warn!("keyword index: {e}");
        }
        let searcher = open.reader.searcher();
        let mut ids = Vec::new();
        for segment in searcher.segment_readers() {
            let Ok(column) = segment.fast_fields().u64(ID_FIELD) else {
                continue;
            };
            ids.extend(
                segment
                    .doc_ids_alive()
                    .filter_map(|doc| column.first(doc))
                    .filter_map(|id| u32::try_from(id).ok()),
            );
        }
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChangeOp, Metric};

    fn index(dir: &Path) -> KeywordIndex {
        let config = CollectionConfig::new(2, Metric::L2).with_text_index(true);
        KeywordIndex::new(&os(dir), &config, 7)
    }

    fn os(dir: &Path) -> IndexDir {
        IndexDir::os(dir.to_path_buf())
    }

    fn upsert(index: &mut KeywordIndex, seq: Seq, id: InternalId, text: &str) {
        let metadata = serde_json::Map::new();
        let doc = DocView {
            id: uuid::Uuid::from_u128(u128::from(id)),
            vector: &[0.0, 0.0],
            metadata: &metadata,
            text: Some(text),
        };
        let change = Change {
            seq,
            op: ChangeOp::Upsert,
            id,
        };
        index.apply(&change, Some(doc)).unwrap();
    }

    #[test]
    fn a_half_fed_rebuild_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut keyword = index(dir.path());
        keyword.reset(5);
        upsert(&mut keyword, 5, 1, "alpha");
        assert!(
            keyword.checkpoint(&os(dir.path())).is_err(),
            "rebuild not finished"
        );
        assert!(keyword.search("alpha", 3, None).is_err());
        keyword.finish_batch().unwrap();
        assert_eq!(keyword.checkpoint(&os(dir.path())).unwrap(), 5);
        assert_eq!(keyword.search("alpha", 3, None).unwrap().hits.len(), 1);
    }

    #[test]
    fn a_commit_records_the_watermark_and_the_collection() {
        let dir = tempfile::tempdir().unwrap();
        let mut keyword = index(dir.path());
        keyword.reset(0);
        keyword.finish_batch().unwrap();
        upsert(&mut keyword, 1, 1, "alpha beta");
        upsert(&mut keyword, 2, 2, "beta");
        assert_eq!(keyword.checkpoint(&os(dir.path())).unwrap(), 2);
        drop(keyword);
        let mut reopened = index(dir.path());
        assert!(reopened.load_checkpoint(dir.path()).unwrap());
        assert_eq!(reopened.watermark(), 2);
        assert_eq!(reopened.internal_ids(), vec![1, 2]);
        drop(reopened);
        // Another collection (instance) or tokenizer: a foreign index, never loaded.
        let config = CollectionConfig::new(2, Metric::L2)
            .with_text_index(true)
            .with_text_tokenizer(TextTokenizer::Whitespace);
        let mut foreign = KeywordIndex::new(&os(dir.path()), &config, 7);
        assert!(matches!(
            foreign.load_checkpoint(dir.path()),
            Err(Error::Corrupted { .. })
        ));
        let mut other = KeywordIndex::new(
            &os(dir.path()),
            &config.with_text_tokenizer(TextTokenizer::English),
            8,
        );
        assert!(matches!(
            other.load_checkpoint(dir.path()),
            Err(Error::Corrupted { .. })
        ));
    }
}
