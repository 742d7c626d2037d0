//! Bulk import from JSON lines and from `.fvecs` files, in batches of one transaction each.

use std::io::{BufRead, Read};

use serde_json::Value;
use uuid::Uuid;

use crate::collection::{Collection, MAX_BATCH_DOCS};
use crate::error::{Error, Result};
use crate::types::DocumentInput;
use crate::vecs::read_fvecs_record;

/// Where an import stopped, and why. Batches before the failing one are committed.
#[derive(Debug, thiserror::Error)]
#[error(
    "line {line}: {error} ({imported} documents imported before it; its batch was not applied)"
)]
pub struct ImportError {
    /// 1-based line (or record, for fvecs) number of the offending input.
    pub line: usize,
    /// What was wrong.
    #[source]
    pub error: Error,
    /// Documents committed before the failure.
    pub imported: usize,
}

/// Validates documents one by one and upserts them in transactions of `batch`.
struct Batcher<'c, P: FnMut(usize)> {
    collection: &'c Collection,
    batch: usize,
    /// Documents waiting for the next transaction, with their line numbers.
    pending: Vec<(usize, DocumentInput)>,
    imported: usize,
    progress: P,
}

impl<'c, P: FnMut(usize)> Batcher<'c, P> {
    fn new(collection: &'c Collection, batch: usize, progress: P) -> Result<Self, ImportError> {
        let batcher = Batcher {
            collection,
            batch,
            pending: Vec::new(),
            imported: 0,
            progress,
        };
        if batch == 0 || batch > MAX_BATCH_DOCS {
            return Err(batcher.fail(
                0,
                Error::InvalidArgument(format!(
                    "batch size must be in 1..={MAX_BATCH_DOCS}, got {batch}"
                )),
            ));
        }
        Ok(batcher)
    }

    fn fail(&self, line: usize, error: Error) -> ImportError {
        ImportError {
            line,
            error,
            imported: self.imported,
        }
    }

    /// Validates the document of input line `line` and queues it; commits a full batch.
    fn add(&mut self, line: usize, doc: DocumentInput) -> Result<(), ImportError> {
        self.collection
            .validate_document(&doc)
            .map_err(|e| self.fail(line, e))?;
        self.pending.push((line, doc));
        if self.pending.len() == self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ImportError> {
        let first_line = self.pending.first().map_or(0, |(line, _)| *line);
        let docs: Vec<DocumentInput> = self.pending.drain(..).map(|(_, doc)| doc).collect();
        let n = docs.len();
        self.collection
            .upsert(docs)
            .map_err(|e| self.fail(first_line, e))?;
        self.imported += n;
        (self.progress)(self.imported);
        Ok(())
    }

    /// Commits what is queued and returns the number imported.
    fn finish(mut self) -> Result<usize, ImportError> {
        if !self.pending.is_empty() {
            self.flush()?;
        }
        Ok(self.imported)
    }
}

/// Upserts the JSON lines of `input` (`{"id"?, "vector", "metadata"?, "text"?}`; blank lines are
/// skipped) in transactions of `batch` documents. `progress` is called with the running total
/// after each batch. Returns the number of documents imported.
pub fn import_json_lines(
    collection: &Collection,
    input: impl BufRead,
    batch: usize,
    progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let mut batcher = Batcher::new(collection, batch, progress)?;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| batcher.fail(number, Error::Io(e)))?;
        let Some(doc) = parse_json_line(&line).map_err(|e| batcher.fail(number, e))? else {
            continue;
        };
        batcher.add(number, doc)?;
    }
    batcher.finish()
}

/// Parses one JSON line of an import: `Ok(None)` for a blank line (skipped), else the document
/// (not yet validated against the collection).
pub(crate) fn parse_json_line(line: &str) -> Result<Option<DocumentInput>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("bad JSON document: {e}")))
}

/// How documents imported from `.fvecs` get their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FvecsIds {
    /// A fresh UUID v7 per vector.
    Generated,
    /// The UUID whose 128-bit value is the 0-based row number (`…-000000000007` for row 7), so
    /// hits map back to rows of the file and to ground-truth files.
    Row,
}

/// Upserts every vector of an `.fvecs` stream (per record: `i32` dim, then dim × `f32`, LE) in
/// transactions of `batch`; errors name the 1-based record number. Returns the number imported.
pub fn import_fvecs(
    collection: &Collection,
    input: impl Read,
    batch: usize,
    ids: FvecsIds,
    progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    import_fvecs_with_metadata(collection, input, batch, ids, |_| Value::Null, progress)
}

/// Like [`import_fvecs`], with `metadata(row)` as each document's metadata (0-based rows).
pub fn import_fvecs_with_metadata(
    collection: &Collection,
    mut input: impl Read,
    batch: usize,
    ids: FvecsIds,
    metadata: impl Fn(usize) -> Value,
    progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let mut batcher = Batcher::new(collection, batch, progress)?;
    let dim = collection.config().dim;
    for row in 0usize.. {
        let Some(vector) =
            read_fvecs_record(&mut input, dim).map_err(|e| batcher.fail(row + 1, e))?
        else {
            break;
        };
        let mut doc = DocumentInput::new(vector).with_metadata(metadata(row));
        if ids == FvecsIds::Row {
            doc.id = Some(Uuid::from_u128(row as u128));
        }
        batcher.add(row + 1, doc)?;
    }
    batcher.finish()
}
