use thiserror::Error;

/// Everything that can go wrong while parsing a line or decoding a batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("not a CRI log line: {0}")]
    Cri(&'static str),
    #[error("not a Docker json-file log line: {0}")]
    Docker(String),
    #[error("not a Kubernetes audit event: {0}")]
    Audit(String),
    #[error("invalid timestamp {value:?}")]
    Timestamp { value: String },
    #[error("batch is not valid zstd: {0}")]
    Compression(String),
    #[error("batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("line {line} of the batch is not a valid record: {reason}")]
    Record { line: usize, reason: String },
}
