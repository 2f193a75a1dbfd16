use thiserror::Error;

/// Everything the storage engine can fail with. The HTTP layer maps each
/// variant to a status code in one place.
#[derive(Debug, Error)]
pub enum Error {
    /// The query does not parse; `position` is a byte offset into it.
    #[error("query error at position {position}: {message}")]
    Query { message: String, position: usize },
    /// A request parameter is out of range or malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request would exceed its memory or bucket budget; it should be
    /// narrowed (a shorter range, a longer interval, a smaller size).
    #[error("the request exceeds its budget: {0}")]
    Budget(String),
    /// The batch could not be decoded.
    #[error(transparent)]
    Wire(#[from] ward_event::Error),
    /// The writer is shutting down or gone; the sender should retry later.
    #[error("the index writer is not accepting batches: {0}")]
    Unavailable(String),
    /// The request was cancelled (timed out, or its client went away)
    /// before the query finished.
    #[error("the query was cancelled")]
    Cancelled,
    #[error("index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn query(message: impl Into<String>, position: usize) -> Error {
        Error::Query {
            message: message.into(),
            position,
        }
    }
}
