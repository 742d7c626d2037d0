//! The one error type of the crate.
//!
//! Variants fall in two groups: errors caused by the caller's input or request (see
//! [`Error::is_user_error`]), which leave the database unchanged, and errors of the environment
//! (I/O, a damaged file, a database held by another process).

use std::path::PathBuf;

use uuid::Uuid;

/// Result alias used throughout QuiverDB.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error QuiverDB returns. Match on the variant; the message is for humans.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request argument is invalid (k out of range, empty batch field, bad cursor, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A collection or field name breaks the naming rules.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A collection configuration is invalid.
    #[error("invalid collection config: {0}")]
    InvalidConfig(String),
    /// A vector does not have the collection's dimension.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The collection's dimension.
        expected: usize,
        /// The length of the given vector.
        got: usize,
    },
    /// A vector is empty, holds NaN or infinity, or cannot be normalised (zero vector, cosine).
    #[error("invalid vector: {0}")]
    InvalidVector(String),
    /// Metadata is not a JSON object, or a patch is malformed.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// A filter is malformed: unknown operator, wrong operand type, bad path, too deep.
    #[error("invalid filter at {location}: {message}")]
    InvalidFilter {
        /// Where in the filter, e.g. `filter.$or[1].tag.$in`.
        location: String,
        /// What is wrong there.
        message: String,
    },
    /// A batch holds more documents or bytes than one transaction accepts.
    #[error("batch too large: {detail}")]
    BatchTooLarge {
        /// What limit was exceeded, with the figures.
        detail: String,
    },
    /// No collection has this name.
    #[error("collection {0:?} not found")]
    CollectionNotFound(String),
    /// A collection with this name already exists.
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    /// No document has this id.
    #[error("document {0} not found")]
    DocumentNotFound(Uuid),
    /// `insert` found a document with this id already present.
    #[error("document {0} already exists")]
    DocumentExists(Uuid),
    /// Another process (or another handle in this process) holds the database open.
    #[error("database {0} is already open by another process or handle")]
    DatabaseLocked(PathBuf),
    /// The database was written by a newer QuiverDB whose schema this build cannot read.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade QuiverDB")]
    UpgradeRequired {
        /// Schema version found on disk.
        found: u32,
        /// Highest schema version this build reads.
        supported: u32,
    },
    /// A file is damaged, truncated, foreign or of an unknown version.
    #[error("corrupted file {file}: {detail}")]
    Corrupted {
        /// The file that failed to validate.
        file: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// The internal id space of a collection is exhausted (2³² − 1 documents ever inserted).
    #[error("the collection has used up its internal id space: {0}")]
    CapacityExhausted(String),
    /// A derived index could not be kept in line with the store (its rebuild failed, e.g. the
    /// disk refused its files): writes still commit, searches fail until a reopen rebuilds it.
    #[error("an index of collection {collection:?} is unavailable: {detail}")]
    IndexUnavailable {
        /// The collection.
        collection: String,
        /// What failed.
        detail: String,
    },
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An error reported by the redb storage engine.
    #[error("storage error: {0}")]
    Storage(String),
    /// A broken internal invariant: a bug, never caused by input. Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True when the error was caused by the caller's input; the database is unchanged.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidArgument(_)
                | Error::InvalidName { .. }
                | Error::InvalidConfig(_)
                | Error::DimensionMismatch { .. }
                | Error::InvalidVector(_)
                | Error::InvalidMetadata(_)
                | Error::InvalidFilter { .. }
                | Error::BatchTooLarge { .. }
                | Error::CollectionNotFound(_)
                | Error::CollectionExists(_)
                | Error::DocumentNotFound(_)
                | Error::DocumentExists(_)
        )
    }

    /// A short stable machine-readable code, e.g. `"dimension_mismatch"` (used by the CLI and
    /// the HTTP layer).
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidConfig(_) => "invalid_config",
            Error::DimensionMismatch { .. } => "dimension_mismatch",
            Error::InvalidVector(_) => "invalid_vector",
            Error::InvalidMetadata(_) => "invalid_metadata",
            Error::InvalidFilter { .. } => "invalid_filter",
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::CollectionNotFound(_) => "collection_not_found",
            Error::CollectionExists(_) => "collection_exists",
            Error::DocumentNotFound(_) => "document_not_found",
            Error::DocumentExists(_) => "document_exists",
            Error::DatabaseLocked(_) => "database_locked",
            Error::UpgradeRequired { .. } => "upgrade_required",
            Error::Corrupted { .. } => "corrupted",
            Error::CapacityExhausted(_) => "capacity_exhausted",
            Error::IndexUnavailable { .. } => "index_unavailable",
            Error::Io(_) => "io",
            Error::Storage(_) => "storage",
            Error::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`Error::Corrupted`].
    pub(crate) fn corrupted(file: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Corrupted {
            file: file.into(),
            detail: detail.into(),
        }
    }
}
