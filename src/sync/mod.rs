//! The sync protocol (DESIGN §3): how every [`DerivedIndex`] follows the store.
//!
//! - Write path: after a transaction commits, its changes are applied to each index in sequence
//!   order, under the collection's writer lock, before the call returns ([`apply_committed`]).
//! - Open: each index loads its checkpoint and replays the change log after its watermark; a
//!   missing, damaged, foreign or stale checkpoint is replaced by a rebuild from the store
//!   ([`recover`]).
//! - Checkpoints: written every [`CheckpointPolicy`] and on close; afterwards the change log is
//!   trimmed up to the smallest checkpointed watermark.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::index::io::IndexDir;
use crate::index::DerivedIndex;
use crate::storage::CollectionReader;
use crate::types::{Change, ChangeOp, DocView, Document};

/// When indexes write checkpoints in the background.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Checkpoint once this many changes were applied since the last checkpoint.
    pub every_changes: u64,
    /// Checkpoint pending changes at least this often.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_changes: 50_000,
            every: Duration::from_secs(300),
        }
    }
}

/// How an index came back when the collection was opened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Recovery {
    /// Created empty with the collection.
    Created,
    /// Loaded its checkpoint and replayed this many later changes.
    Loaded {
        /// Changes replayed from the log.
        replayed: usize,
    },
    /// Rebuilt from the store, for this reason.
    Rebuilt {
        /// Why the checkpoint could not be used.
        reason: String,
    },
}

/// Applies committed `changes` to `index`; `docs[i]` is the document after `changes[i]`
/// (`None` for a deletion). The caller then runs `finish_batch` under a shared lock, and
/// `publish` under an exclusive one if the index asks for it.
pub(crate) fn apply_committed<I: DerivedIndex + ?Sized>(
    index: &mut I,
    changes: &[Change],
    docs: &[Option<DocView<'_>>],
) -> Result<()> {
    if changes.len() != docs.len() {
        return Err(Error::Internal(
            "changes and documents differ in number".into(),
        ));
    }
    for (change, doc) in changes.iter().zip(docs) {
        index.apply(change, *doc)?;
    }
    Ok(())
}

/// Finishes a batch with exclusive access (recovery, rebuilds): deferred work, then publishing.
fn finish_exclusive<I: DerivedIndex + ?Sized>(index: &mut I) -> Result<()> {
    index.finish_batch()?;
    if index.needs_publish() {
        index.publish()?;
    }
    Ok(())
}

/// Brings `index` up to date with the store: checkpoint + replay, or rebuild.
pub(crate) fn recover<I: DerivedIndex + ?Sized>(
    index: &mut I,
    dir: &IndexDir,
    reader: &CollectionReader,
) -> Result<Recovery> {
    let last_seq = reader.last_seq()?;
    let reason = match index.load_checkpoint(dir.path()) {
        Ok(false) => "no checkpoint file".to_string(),
        Err(Error::Corrupted { file, detail }) => format!("{}: {detail}", file.display()),
        Err(other) => format!("checkpoint unreadable: {other}"),
        Ok(true) if index.watermark() > last_seq => format!(
            "checkpoint watermark {} is ahead of the store ({last_seq})",
            index.watermark()
        ),
        Ok(true) if index.watermark() < reader.trimmed_through()? => format!(
            "checkpoint watermark {} is older than the trimmed change log",
            index.watermark()
        ),
        Ok(true) => {
            let replayed = replay(index, reader)?;
            return Ok(Recovery::Loaded { replayed });
        }
    };
    log::warn!(
        "rebuilding the {} index from the store: {reason}",
        index.name()
    );
    rebuild(index, reader)?;
    // Replace the unusable file now, so that the next open does not rebuild again.
    if let Err(e) = index.checkpoint(dir) {
        log::warn!(
            "could not checkpoint the rebuilt {} index: {e}",
            index.name()
        );
    }
    Ok(Recovery::Rebuilt { reason })
}

/// Replays the change log after the index's watermark, using the documents' current state.
fn replay<I: DerivedIndex + ?Sized>(index: &mut I, reader: &CollectionReader) -> Result<usize> {
    let changes = reader.changes_after(index.watermark())?;
    for change in &changes {
        // The document's current state decides, whatever the logged op: replay is idempotent.
        let doc = reader.document(change.id)?;
        index.apply(change, doc.as_ref().map(Document::view))?;
    }
    finish_exclusive(index)?;
    Ok(changes.len())
}

/// Empties `index` and feeds it every document of the store.
pub(crate) fn rebuild<I: DerivedIndex + ?Sized>(
    index: &mut I,
    reader: &CollectionReader,
) -> Result<()> {
    let last_seq = reader.last_seq()?;
    index.reset(last_seq);
    reader.for_each_document(|id, doc| {
        let change = Change {
            seq: last_seq,
            op: ChangeOp::Upsert,
            id,
        };
        index.apply(&change, Some(doc.view()))
    })?;
    finish_exclusive(index)
}
