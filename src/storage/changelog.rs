//! The per-collection change log: reading the tail after a watermark, and trimming the head.

use redb::{ReadOnlyTable, ReadableTable, WriteTransaction};

use super::codec;
use super::tables::{CollectionTables, STATE_TRIMMED_THROUGH};
use super::STORE_FILE;
use crate::error::{Error, Result};
use crate::types::{Change, Seq};

/// The changes after `seq`, in order.
pub fn changes_after(log: &ReadOnlyTable<u64, &'static [u8]>, seq: Seq) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for entry in log.range((seq + 1)..)? {
        let (seq, bytes) = entry?;
        let seq = seq.value();
        let (op, id) = codec::decode_change(bytes.value())
            .map_err(|e| Error::corrupted(STORE_FILE, format!("change {seq}: {e}")))?;
        out.push(Change { seq, op, id });
    }
    Ok(out)
}

/// Removes the entries up to and including `through` and records how far the log was trimmed.
pub fn trim(txn: &WriteTransaction, names: &CollectionTables, through: Seq) -> Result<()> {
    let mut log = txn.open_table(names.changelog())?;
    log.retain_in(..=through, |_, _| false)?;
    let mut state = txn.open_table(names.state())?;
    let previous = state.get(STATE_TRIMMED_THROUGH)?.map_or(0, |v| v.value());
    state.insert(STATE_TRIMMED_THROUGH, previous.max(through))?;
    Ok(())
}
