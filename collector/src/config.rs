//! The collector's typed configuration, built by the CLI from its flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Base URL of the indexer, e.g. `http://127.0.0.1:7171`.
    pub indexer_url: String,
    /// Where checkpoints, the spool and dead letters live.
    pub state_dir: PathBuf,
    /// Glob patterns of container log files.
    pub container_globs: Vec<String>,
    /// API server audit log files (or globs).
    pub audit_logs: Vec<String>,
    pub node: String,
    pub cluster: Option<String>,
    /// A batch is sealed at this many uncompressed bytes…
    pub batch_max_bytes: usize,
    /// …or when its oldest record is this old.
    pub batch_max_age: Duration,
    /// Batches sent concurrently (acknowledged in order).
    pub in_flight_batches: usize,
    /// Files are re-discovered this often even without notify events.
    pub rescan_interval: Duration,
    /// A line (merged or physical) longer than this is split into pieces.
    pub max_line_bytes: usize,
    /// A partial container line with no continuation for this long is flushed.
    pub partial_timeout: Duration,
    pub zstd_level: i32,
    /// A rotated or deleted file not read to its end within this long is
    /// given up on (its unread bytes are counted as abandoned).
    pub orphan_max_age: Duration,
    /// Largest size of the on-disk spool (batches the indexer could not take yet).
    pub spool_max_bytes: u64,
    /// What to do when the spool is full.
    pub spool_full: SpoolFull,
    /// PEM CA bundle that the indexer's certificate must chain to
    /// (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// File holding the bearer token sent to the indexer.
    pub token_file: Option<PathBuf>,
    /// Where to accept API server audit webhook requests.
    pub audit_webhook: Option<SocketAddr>,
    /// TLS of the audit webhook listener: certificate chain and key (PEM),
    /// and a CA the API server's client certificate must chain to.
    pub audit_webhook_tls: Option<(PathBuf, PathBuf)>,
    pub audit_webhook_client_ca: Option<PathBuf>,
    /// A file holding the bearer token the API server must present to the
    /// audit webhook (compared in constant time, never logged).
    pub audit_webhook_token_file: Option<PathBuf>,
    /// Largest audit webhook body accepted.
    pub webhook_max_body_bytes: usize,
    /// Where to serve `GET /metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to list and watch this node's pods for labels, allow-listed
    /// annotations and owners (`--kube-metadata`); None: paths only.
    pub kube_api: Option<crate::kube::KubeApi>,
    /// Annotation keys copied onto records (all others are left out: they
    /// can be large or hold configuration).
    pub kube_annotations: Vec<String>,
}

/// The spool-full policy (`--spool-full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolFull {
    /// Stop reading until the spool drains: nothing is lost (the default).
    #[default]
    Block,
    /// Drop new batches and count their records
    /// (`ward_collector_records_dropped_total`).
    Drop,
}

impl std::str::FromStr for SpoolFull {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(SpoolFull::Block),
            "drop" => Ok(SpoolFull::Drop),
            other => Err(format!("{other:?} is not block or drop")),
        }
    }
}

impl CollectorConfig {
    pub fn new(indexer_url: impl Into<String>, state_dir: impl Into<PathBuf>) -> CollectorConfig {
        CollectorConfig {
            indexer_url: indexer_url.into(),
            state_dir: state_dir.into(),
            container_globs: Vec::new(),
            audit_logs: Vec::new(),
            node: hostname(),
            cluster: None,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_max_age: Duration::from_millis(500),
            in_flight_batches: 4,
            rescan_interval: Duration::from_secs(5),
            max_line_bytes: 2 * 1024 * 1024,
            partial_timeout: Duration::from_secs(5),
            zstd_level: 3,
            orphan_max_age: Duration::from_secs(300),
            spool_max_bytes: 512 * 1024 * 1024,
            spool_full: SpoolFull::Block,
            ca_file: None,
            client_cert: None,
            client_key: None,
            token_file: None,
            audit_webhook: None,
            audit_webhook_tls: None,
            audit_webhook_client_ca: None,
            audit_webhook_token_file: None,
            webhook_max_body_bytes: 16 * 1024 * 1024,
            metrics_listen: None,
            kube_api: None,
            kube_annotations: Vec::new(),
        }
    }
}

fn hostname() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
