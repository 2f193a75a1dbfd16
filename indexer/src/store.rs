//! The partitioned index on disk, its single writer, and search.
//!
//! Ingest path: the HTTP layer hands a batch's NDJSON to
//! [`Store::ingest_ndjson`] (Ward's own records come decoded, to
//! [`Store::ingest`]). On the blocking pool, each record is parsed once
//! into a tree borrowing from the batch (see [`crate::tree`]); the
//! [`IngestTap`] (detection rules), when there is one, sees the batch's
//! records as they came; then each is redacted when it needs to be and
//! built into a tantivy document. The documents go to the writer thread over a bounded
//! channel (a full channel makes senders wait, then answer "busy" rather
//! than queue without end). The writer adds each document to the partition
//! of its day (see [`crate::partition`]) and commits every partition it
//! touched at most every `commit_interval` (group commit); every batch in a
//! commit is acknowledged only once all of its partitions have committed,
//! so an acknowledged batch is on disk and searchable.
//!
//! Cost of this durability choice: a commit fsyncs new segment files,
//! `meta.json` and the chain entry, so a batch waits for the next commit
//! (`commit_interval`, 250 ms by default) before its ack; senders keep
//! several batches in flight to cover that latency. No write-ahead log is
//! needed because nothing is acknowledged before it is in a committed
//! segment. Replays are recognised per partition (see `replay`); what a
//! crash leaves behind is in ARCHITECTURE.md, "Crash semantics".
//!
//! One concept per module: `api` (the public types), `ingest` (batches →
//! documents → the writer's queue), `writer` (the writer thread and its
//! group commits), `replay` (which records a partition already holds),
//! `retention` (removing old days), `search` (pages over partitions). This
//! file opens the store and ties them together.

mod api;
mod ingest;
mod replay;
mod retention;
mod search;
mod writer;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use api::{
    IngestReceipt, IngestTap, MAX_LIMIT, MemoryBounds, Retention, SearchHit, SearchRequest,
    SearchResponse, StoreConfig, StoreStats,
};
use search::{View, Views, reader_of};
use writer::{Writer, WriterMsg};

use crate::Error;
use crate::chain::{self, ChainFile, EntryBody};
use crate::live_tail::TailFeed;
use crate::partition;
use crate::redact::Redactor;
use crate::schema::WardSchema;

/// The index and its writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    schema: WardSchema,
    views: Views,
    tx: crossbeam_channel::Sender<WriterMsg>,
    queue_timeout: Duration,
    tap: Option<Arc<dyn IngestTap>>,
    redactor: Arc<Redactor>,
    stats: Arc<StoreStats>,
    aggregation_budget: crate::aggregate::AggregationBudget,
    tail: TailFeed,
    writer_thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens the partitions under `config.data_dir`, creating the directory
    /// if needed, and starts the writer thread.
    pub fn open(config: StoreConfig) -> Result<Store, Error> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(partition::partitions_dir(&data_dir))
            .map_err(|source| Error::io(&data_dir, source))?;
        if data_dir.join("index").join("meta.json").exists() {
            tracing::warn!(path = %data_dir.join("index").display(), "an unpartitioned index from an earlier version is ignored");
        }
        let schema = WardSchema::new();
        let mut ledger = ChainFile::open(
            &data_dir.join(partition::LEDGER_FILE),
            None,
            config.hmac_key.clone(),
        )?;
        let ledgered = ledger_partitions(&data_dir)?;
        let mut views = BTreeMap::new();
        let mut indexes = BTreeMap::new();
        for day in partition::list(&data_dir)? {
            if !ledgered.contains(&day.name()) {
                // Created just before a crash, before its ledger entry.
                ledger.append(EntryBody::PartitionCreated {
                    partition: day.name(),
                })?;
            }
            let index = partition::open_index(&data_dir, day, &schema, true)?;
            let reader = reader_of(&index)?;
            views.insert(day, View { reader });
            indexes.insert(day, index);
        }
        let views: Views = Arc::new(RwLock::new(views));
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let tail = TailFeed::start(schema.clone())?;
        let writer = Writer::new(
            schema.clone(),
            config.clone(),
            views.clone(),
            indexes,
            ledger,
            stats.clone(),
            tail.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("ward-index-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::io(&data_dir, source))?;
        tracing::info!(path = %config.data_dir.display(), partitions = views.read().map(|v| v.len()).unwrap_or(0), "index opened");
        Ok(Store {
            inner: Arc::new(Inner {
                schema,
                views,
                tx,
                queue_timeout: config.queue_timeout,
                tap: config.tap.clone(),
                redactor: config.redactor.clone(),
                stats,
                aggregation_budget: config.aggregation_budget,
                tail,
                writer_thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    pub(crate) fn tail_feed(&self) -> &TailFeed {
        &self.inner.tail
    }

    pub(crate) fn schema(&self) -> &WardSchema {
        &self.inner.schema
    }

    pub(crate) fn aggregation_budget(&self) -> crate::aggregate::AggregationBudget {
        self.inner.aggregation_budget
    }

    /// Bounds of the memory the indexer holds that has no counter of its
    /// own (ARCHITECTURE.md, "Memory").
    pub fn memory_bounds(&self) -> MemoryBounds {
        let segments = self.inner.stats.segments.load(Ordering::Relaxed) as usize;
        MemoryBounds {
            docstore_cache_bytes: segments * search::DOC_STORE_CACHE_BYTES,
            live_tail_subscribers: self.inner.tail.broadcast.receiver_count(),
            aggregation_bytes: self.inner.aggregation_budget.memory_bytes,
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Commits what is pending, acknowledges it, and stops the writer.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.inner.tx.send(WriterMsg::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
        let handle = self
            .inner
            .writer_thread
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// The partitions the ledger says were created and not removed.
fn ledger_partitions(data_dir: &Path) -> Result<HashSet<String>, Error> {
    let (entries, _) = chain::read_entries(&data_dir.join(partition::LEDGER_FILE))?;
    let mut live = HashSet::new();
    for (entry, _) in entries {
        match entry.body {
            EntryBody::PartitionCreated { partition } => {
                live.insert(partition);
            }
            EntryBody::PartitionRemoved { partition, .. } => {
                live.remove(&partition);
            }
            EntryBody::Batch { .. } => {}
        }
    }
    Ok(live)
}
