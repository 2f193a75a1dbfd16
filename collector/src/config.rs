//! The collector's typed configuration, built by the CLI from its flags.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Base URL of the indexer, e.g. `http://127.0.0.1:7171`.
    pub indexer_url: String,
    /// Where checkpoints (and later the spool) live.
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
