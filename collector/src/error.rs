use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("checkpoint file {path} is corrupt: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("http client: {0}")]
    Http(String),
    #[error("compressing a batch: {0}")]
    Compress(String),
    #[error("collector task stopped: {0}")]
    Stopped(String),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}
