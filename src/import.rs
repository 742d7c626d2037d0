//! Bulk import from JSON lines and from `.fvecs` files, in batches of one transaction each.

use std::io::{BufRead, Read};

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

/// Checks the batch size an import is asked to use.
fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 || batch > MAX_BATCH_DOCS {
        return Err(Error::InvalidArgument(format!(
            "batch size must be in 1..={MAX_BATCH_DOCS}, got {batch}"
        )));
    }
    Ok(())
}

/// Upserts the JSON lines of `input` (`{"id"?, "vector", "metadata"?, "text"?}`; blank lines are
/// skipped) in transactions of `batch` documents. `progress` is called with the running total
/// after each batch. Returns the number of documents imported.
pub fn import_json_lines(
    collection: &Collection,
    input: impl BufRead,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let fail = |line, error, imported| ImportError {
        line,
        error,
        imported,
    };
    check_batch(batch).map_err(|e| fail(0, e, 0))?;
    let mut imported = 0;
    let mut pending: Vec<(usize, DocumentInput)> = Vec::with_capacity(batch);
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| fail(number, Error::Io(e), imported))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: DocumentInput = serde_json::from_str(&line).map_err(|e| {
            fail(
                number,
                Error::InvalidArgument(format!("bad JSON document: {e}")),
                imported,
            )
        })?;
        collection
            .validate_document(&doc)
            .map_err(|e| fail(number, e, imported))?;
        pending.push((number, doc));
        if pending.len() == batch {
            imported += flush(collection, &mut pending, imported)?;
            progress(imported);
        }
    }
    if !pending.is_empty() {
        imported += flush(collection, &mut pending, imported)?;
        progress(imported);
    }
    Ok(imported)
}

fn flush(
    collection: &Collection,
    pending: &mut Vec<(usize, DocumentInput)>,
    imported: usize,
) -> Result<usize, ImportError> {
    let first_line = pending.first().map_or(0, |(line, _)| *line);
    let docs: Vec<DocumentInput> = pending.drain(..).map(|(_, doc)| doc).collect();
    let n = docs.len();
    collection.upsert(docs).map_err(|error| ImportError {
        line: first_line,
        error,
        imported,
    })?;
    Ok(n)
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
/// transactions of `batch`. Returns the number imported.
pub fn import_fvecs(
    collection: &Collection,
    mut input: impl Read,
    batch: usize,
    ids: FvecsIds,
    mut progress: impl FnMut(usize),
) -> Result<usize, ImportError> {
    let fail = |line, error, imported| ImportError {
        line,
        error,
        imported,
    };
    check_batch(batch).map_err(|e| fail(0, e, 0))?;
    let mut imported = 0;
    let mut pending = Vec::with_capacity(batch);
    let mut row = 0usize;
    while let Some(vector) = read_fvecs_record(&mut input, collection.config().dim)
        .map_err(|e| fail(row + 1, e, imported))?
    {
        let mut doc = DocumentInput::new(vector);
        if ids == FvecsIds::Row {
            doc.id = Some(Uuid::from_u128(row as u128));
        }
        row += 1;
        collection
            .validate_document(&doc)
            .map_err(|e| fail(row, e, imported))?;
        pending.push((row, doc));
        if pending.len() == batch {
            imported += flush(collection, &mut pending, imported)?;
            progress(imported);
        }
    }
    if !pending.is_empty() {
        imported += flush(collection, &mut pending, imported)?;
        progress(imported);
    }
    Ok(imported)
}
