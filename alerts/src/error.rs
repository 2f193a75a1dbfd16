//! The crate's one error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything the alert store, the sinks and the hunts can fail with. The
/// HTTP layer maps each variant to a status code in one place.
#[derive(Debug, Error)]
pub enum Error {
    /// The embedded database failed (open, transaction, table, commit).
    #[error("alert store error: {0}")]
    Db(Box<redb::Error>),
    /// A stored value could not be encoded or decoded.
    #[error("alert store encoding error: {0}")]
    Encoding(#[from] serde_json::Error),
    /// An alert refers to rule metadata the store does not hold.
    #[error("alert store is missing rule version {0:016x}")]
    MissingRuleVersion(u64),
    /// No alert has this id.
    #[error("no alert with id {0}")]
    NotFound(u64),
    /// A request parameter is out of range or malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A file (sinks configuration, rules) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The sinks configuration is not valid.
    #[error("invalid sinks configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A retro-hunt could not read the index.
    #[error(transparent)]
    Index(#[from] ward_indexer::Error),
    /// An alerts dump (`AlertStore::import`) is malformed; `line` counts
    /// from 1.
    #[error("alerts dump, line {line}: {reason}")]
    Dump { line: u64, reason: String },
    /// Reading or writing an alerts dump failed.
    #[error("alerts dump i/o error: {0}")]
    DumpIo(#[source] std::io::Error),
    /// A delivery could not be sent or was refused by the sink.
    #[error("delivery to sink {sink:?} failed: {reason}")]
    Delivery { sink: String, reason: String },
}

impl Error {
    /// Whether opening the store failed because another process (a
    /// running indexer) holds it: redb locks the file exclusively.
    pub fn is_in_use(&self) -> bool {
        matches!(self, Error::Db(e) if matches!(**e, redb::Error::DatabaseAlreadyOpen))
    }
}

/// Any redb error type, as an [`Error`].
pub(crate) fn db(e: impl Into<redb::Error>) -> Error {
    Error::Db(Box::new(e.into()))
}
