//! Every redb table QuiverDB uses, in one place.
//!
//! Global tables have fixed names. Per-collection tables are prefixed by the collection's numeric
//! id (`c{id}.docs`), never by its name, so that drops are cheap and names never reach the file.

use redb::TableDefinition;

/// `meta`: schema version and global counters.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `collections`: collection name → JSON [`super::CollectionRecord`].
pub const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");

/// Key in `meta` holding the schema version.
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// Key in `meta` holding the next collection id to hand out.
pub const META_NEXT_COLLECTION_ID: &str = "next_collection_id";

/// Keys in a collection's `state` table.
pub const STATE_NEXT_INTERNAL_ID: &str = "next_internal_id";
/// Next change-log sequence number to assign.
pub const STATE_NEXT_SEQ: &str = "next_seq";
/// Every change with a sequence number up to this one has been trimmed from the log.
pub const STATE_TRIMMED_THROUGH: &str = "trimmed_through";

/// The names of one collection's tables.
pub struct CollectionTables {
    docs: String,
    ids: String,
    changelog: String,
    state: String,
    payload: String,
}

impl CollectionTables {
    /// Table names for collection `id`.
    pub fn new(id: u32) -> Self {
        CollectionTables {
            docs: format!("c{id}.docs"),
            ids: format!("c{id}.ids"),
            changelog: format!("c{id}.changelog"),
            state: format!("c{id}.state"),
            payload: format!("c{id}.payload"),
        }
    }

    /// `docs`: internal id → encoded document record.
    pub fn docs(&self) -> TableDefinition<'_, u32, &'static [u8]> {
        TableDefinition::new(&self.docs)
    }

    /// `ids`: UUID bytes (big-endian, so key order is string order) → internal id.
    pub fn ids(&self) -> TableDefinition<'_, [u8; 16], u32> {
        TableDefinition::new(&self.ids)
    }

    /// `changelog`: sequence number → encoded change.
    pub fn changelog(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.changelog)
    }

    /// `payload`: payload-index rows (see `codec::encode_payload_row`), no values.
    pub fn payload(&self) -> TableDefinition<'_, &'static [u8], ()> {
        TableDefinition::new(&self.payload)
    }

    /// `state`: counters of the collection.
    pub fn state(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.state)
    }
}
