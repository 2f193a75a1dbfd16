//! The store's public types: its configuration, the ingest tap, receipts,
//! search requests and responses, and the counters it exports.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::cancel::Cancel;
use crate::chain::HmacKey;
use crate::document::ParsedRecord;
use crate::page::SortOrder;
use crate::redact::Redactor;

/// How long data is kept: by age of the day, and by total size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Partitions whose whole day is older than this are removed.
    pub max_age: Option<Duration>,
    /// The oldest partitions are removed while the total is above this
    /// (the current day's partition is never removed for size).
    pub max_bytes: Option<u64>,
}

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Memory tantivy's writer may buffer before it flushes a segment, per
    /// partition being written.
    pub writer_heap_bytes: usize,
    /// Tantivy indexing threads per partition writer.
    pub writer_threads: usize,
    /// The longest a batch waits for the commit that acknowledges it.
    pub commit_interval: Duration,
    /// How long an ingest call waits for room in the writer's queue before
    /// it gives up with [`crate::Error::Unavailable`].
    pub queue_timeout: Duration,
    /// Sees every batch once parsed, before redaction and storage.
    pub tap: Option<Arc<dyn IngestTap>>,
    /// Redaction before storage (on by default).
    pub redactor: Arc<Redactor>,
    pub retention: Retention,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Signs the hash chains.
    pub hmac_key: Option<HmacKey>,
    /// A partition not written for this long has its writer closed (and
    /// its replay window and filters dropped from memory).
    pub idle_writer_timeout: Duration,
    /// Replay keys kept exactly in memory per partition being written (the
    /// latest committed records'); older replays are looked up in the
    /// index (ARCHITECTURE.md, "Replays").
    pub replay_window: usize,
    /// Memory and bucket limits of one aggregation request.
    pub aggregation_budget: crate::aggregate::AggregationBudget,
}

/// A stage that sees each ingested batch, parsed once, before it is stored.
///
/// Called on the blocking pool, once per batch, possibly from several
/// threads at once; a batch may be seen again if its sender resends it
/// (replays are recognised only later, by the writer), so what a tap
/// derives must be idempotent per record id. The records borrow from the
/// batch: a tap copies what it keeps.
pub trait IngestTap: Send + Sync {
    fn observe(&self, batch: &[ParsedRecord<'_>]);
}

impl std::fmt::Debug for dyn IngestTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IngestTap")
    }
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            writer_heap_bytes: 128 * 1024 * 1024,
            // Half the cores: decoding, rules and document building run on
            // the others, and each indexing thread adds a segment per
            // commit, which merges then rewrite (on 2 cores, 1 thread
            // instead of 2 indexed 15% more events per CPU-second at the
            // same throughput, BENCHMARKS.md).
            writer_threads: std::thread::available_parallelism()
                .map(|n| (n.get() / 2).clamp(1, 4))
                .unwrap_or(1),
            commit_interval: Duration::from_millis(250),
            queue_timeout: Duration::from_secs(10),
            tap: None,
            redactor: Arc::new(Redactor::default_on()),
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
            hmac_key: None,
            idle_writer_timeout: Duration::from_secs(300),
            // About 16 MiB per partition being written: several seconds of
            // a busy stream, which is when a collector or an API server
            // resends.
            replay_window: 256 * 1024,
            aggregation_budget: Default::default(),
        }
    }
}

/// What an acknowledged batch became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestReceipt {
    /// Records in the batch.
    pub records: usize,
    /// Of those, records already in the index (replays), not stored again.
    pub duplicates: usize,
    /// Of those, records older than retention, dropped by policy.
    pub expired: usize,
}

/// A search: query text, optional time range (`[start, end)`), order,
/// page size and the cursor of the previous page.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub limit: usize,
    pub order: SortOrder,
    /// The `cursor` of the previous page's response.
    pub cursor: Option<String>,
    /// When set, only records of these namespaces (container logs by
    /// `kubernetes.namespace`, audit events by `objectRef.namespace`).
    pub namespaces: Option<Vec<String>>,
    /// Stops the search early once cancelled (see [`crate::cancel`]).
    pub cancel: Cancel,
}

impl SearchRequest {
    pub fn new(query: impl Into<String>, limit: usize) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            limit,
            ..SearchRequest::default()
        }
    }
}

/// One hit: the stored record, as JSON text.
pub type SearchHit = Box<RawValue>;

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    /// Matches of the query in the range (over all pages).
    pub total: u64,
    pub hits: Vec<SearchHit>,
    /// Continues after the last hit; `null` on the last page.
    pub cursor: Option<String>,
}

/// Largest page a search may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub records_indexed: AtomicU64,
    pub batches_acknowledged: AtomicU64,
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    /// Records older than the retention period when they arrived.
    pub records_expired: AtomicU64,
    pub partitions_removed: AtomicU64,
    pub partition_bytes_removed: AtomicU64,
    pub partition_records_removed: AtomicU64,
    /// Partitions on disk, and their bytes (updated by the retention pass).
    pub partitions: AtomicU64,
    pub disk_bytes: AtomicU64,
    /// Searchable segments over all partitions (after the last commit).
    pub segments: AtomicU64,
    /// Searches, pages and aggregations stopped because their request was
    /// cancelled (timed out, or its client went away).
    pub queries_cancelled: AtomicU64,
    /// Records looked up in the index because they could be replays of
    /// records outside the replay window.
    pub replay_lookups: AtomicU64,
    /// Passes over a segment's records those lookups needed.
    pub replay_lookup_passes: AtomicU64,
    /// Segment filters built for lookups.
    pub replay_filters_built: AtomicU64,
    /// Partitions open for writing, and what their writers may buffer
    /// (`writer_heap_bytes` each).
    pub partitions_open: AtomicU64,
    pub writer_heap_bytes: AtomicU64,
    /// Keys in the replay windows of the partitions open for writing, and
    /// the bytes of those windows and of the segment filters.
    pub replay_window_keys: AtomicU64,
    pub replay_window_bytes: AtomicU64,
    pub replay_filter_bytes: AtomicU64,
}

/// See [`crate::Store::memory_bounds`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryBounds {
    /// Decompressed document-store blocks the segment readers may cache.
    pub docstore_cache_bytes: usize,
    /// Live-tail subscribers (the tail keeps commits' records while any).
    pub live_tail_subscribers: usize,
    /// What one aggregation request may take.
    pub aggregation_bytes: u64,
}

impl StoreStats {
    pub(super) fn note_replay_lookup(&self, cost: super::replay::LookupCost) {
        self.replay_lookups
            .fetch_add(cost.records, Ordering::Relaxed);
        self.replay_lookup_passes
            .fetch_add(cost.passes, Ordering::Relaxed);
        self.replay_filters_built
            .fetch_add(cost.filters_built, Ordering::Relaxed);
    }
}
