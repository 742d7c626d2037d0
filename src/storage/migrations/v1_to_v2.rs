//! Version 1 → 2: adds each collection's `payload` table and writes the rows of the payload
//! fields declared in version 1 (which stored the declarations but no rows).

use redb::{ReadableTable, WriteTransaction};

use super::super::tables::{CollectionTables, COLLECTIONS};
use super::super::{index_all_documents, CollectionRecord, STORE_FILE};
use crate::error::{Error, Result};
use crate::payload::PayloadSchema;

/// Runs the step inside `txn`.
pub fn migrate(txn: &WriteTransaction) -> Result<()> {
    let records = {
        let collections = txn.open_table(COLLECTIONS)?;
        let mut records = Vec::new();
        for entry in collections.iter()? {
            let (name, bytes) = entry?;
            let record: CollectionRecord = serde_json::from_slice(bytes.value()).map_err(|e| {
                Error::corrupted(STORE_FILE, format!("collection {:?}: {e}", name.value()))
            })?;
            records.push(record);
        }
        records
    };
    for record in records {
        let names = CollectionTables::new(record.id);
        let mut payload = txn.open_table(names.payload())?;
        let schema = PayloadSchema::new(&record.config.payload_fields);
        if schema.is_empty() {
            continue;
        }
        let docs = txn.open_table(names.docs())?;
        index_all_documents(&docs, &mut payload, &schema, |_| true)?;
    }
    Ok(())
}
