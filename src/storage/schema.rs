//! The schema version in the `meta` table, and the upgrade rule.
//!
//! Version 1 is the first schema; version 2 adds the `payload` table of each collection; version
//! 3 adds a checksum to document records (`codec.rs`; older records stay readable). When the
//! layout of a table changes, bump [`SCHEMA_VERSION`] and add one migration step as described in
//! `migrations/README.md`.

use redb::{ReadableTable, WriteTransaction};

use super::tables::{META, META_SCHEMA_VERSION};
use crate::error::{Error, Result};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 3;

/// Stamps a new database with [`SCHEMA_VERSION`], or checks an existing one. A database of a
/// newer version is refused with [`Error::UpgradeRequired`] before anything is written; an older
/// one is upgraded step by step in `txn` (all or nothing: the caller commits).
pub fn init_or_check(txn: &WriteTransaction) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
    match found {
        None => {
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            Ok(())
        }
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if (1..SCHEMA_VERSION).contains(&v) => {
            drop(meta);
            super::migrations::upgrade(txn, v, SCHEMA_VERSION)?;
            txn.open_table(META)?
                .insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            log::info!("upgraded the database schema from version {v} to {SCHEMA_VERSION}");
            Ok(())
        }
        Some(v) if v > SCHEMA_VERSION => Err(Error::UpgradeRequired {
            found: v as u32,
            supported: SCHEMA_VERSION as u32,
        }),
        Some(v) => Err(Error::Corrupted {
            file: "quiver.redb".into(),
            detail: format!("schema version {v} is not a version QuiverDB ever wrote"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    #[test]
    fn newer_schema_is_refused_with_upgrade_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quiver.redb");
        drop(Store::open(&path, None, false).unwrap());
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        match Store::open(&path, None, false) {
            Err(Error::UpgradeRequired { found, supported }) => {
                assert_eq!(found as u64, SCHEMA_VERSION + 1);
                assert_eq!(supported as u64, SCHEMA_VERSION);
            }
            other => panic!("expected UpgradeRequired, got {:?}", other.err()),
        }
    }
}
