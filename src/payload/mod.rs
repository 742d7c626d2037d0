//! Payload indexes: metadata fields declared `keyword`, `integer`, `float` or `bool`.
//!
//! Their rows live in redb, written in the same transaction as the document ([`keys`] says what
//! a document contributes); in memory they are roaring bitmaps ([`index`]) that turn a filter into
//! a candidate set, exact or to be checked. They never change results, only speed.

pub mod index;
pub mod keys;

pub use index::{Candidates, PayloadIndex};
pub use keys::PayloadSchema;
