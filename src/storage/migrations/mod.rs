//! Upgrade steps of the redb schema, one module per version change (`migrations/README.md`).
//! Each runs inside the write transaction that also stamps the new version.

mod v1_to_v2;

use redb::WriteTransaction;

use crate::error::Result;

/// Runs every step from version `found` up to `target`.
pub fn upgrade(txn: &WriteTransaction, found: u64, target: u64) -> Result<()> {
    for version in found..target {
        match version {
            1 => v1_to_v2::migrate(txn)?,
            // Version 3 adds a checksum to document records; version-1 records stay readable
            // (and are rewritten as their documents are), so no table changes.
            2 => {}
            _ => unreachable!("no migration step from schema version {version}"),
        }
    }
    Ok(())
}
