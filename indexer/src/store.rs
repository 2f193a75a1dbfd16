//! The index on disk, its single writer, and search.
//!
//! Ingest path: the HTTP layer decodes a batch and calls [`Store::ingest`],
//! which builds tantivy documents on the blocking pool and hands them to the
//! writer thread over a bounded channel (a full channel makes senders wait,
//! then answer "busy" rather than queue without end). The writer adds
//! documents as they come and commits at most every `commit_interval`
//! (group commit): every batch in a commit is acknowledged only once that
//! commit has returned, so an acknowledged batch is on disk and searchable.
//!
//! Cost of this durability choice: a commit fsyncs new segment files and
//! `meta.json`, so a batch waits for the next commit (`commit_interval`,
//! 250 ms by default) before its ack; senders keep several batches in
//! flight to cover that latency. No write-ahead log is needed because
//! nothing is acknowledged before it is in a committed segment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{RecvTimeoutError, SendTimeoutError};
use serde::Serialize;
use serde_json::value::RawValue;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query as TantivyQuery, RangeQuery};
use tantivy::schema::Value as _;
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::oneshot;
use ward_event::wire::DecodedRecord;

use crate::schema::{TIMESTAMP, WardSchema};
use crate::{Error, compile, document, query};

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Memory tantivy's writer may buffer before it flushes a segment.
    pub writer_heap_bytes: usize,
    /// Tantivy indexing threads.
    pub writer_threads: usize,
    /// The longest a batch waits for the commit that acknowledges it.
    pub commit_interval: Duration,
    /// How long an ingest call waits for room in the writer's queue before
    /// it gives up with [`Error::Unavailable`].
    pub queue_timeout: Duration,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            writer_heap_bytes: 128 * 1024 * 1024,
            writer_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            commit_interval: Duration::from_millis(250),
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// What an acknowledged batch became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestReceipt {
    pub records: usize,
}

/// A search: query text, optional time range, newest first.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub limit: usize,
}

/// One hit: the stored record, as JSON text.
pub type SearchHit = Box<RawValue>;

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub total: u64,
    pub hits: Vec<SearchHit>,
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
}

enum WriterMsg {
    Batch {
        docs: Vec<TantivyDocument>,
        ack: oneshot::Sender<Result<(), String>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// The index and its writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    schema: WardSchema,
    reader: IndexReader,
    tx: crossbeam_channel::Sender<WriterMsg>,
    queue_timeout: Duration,
    stats: Arc<StoreStats>,
    writer_thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens the index under `config.data_dir`, creating it if needed, and
    /// starts the writer thread.
    pub fn open(config: StoreConfig) -> Result<Store, Error> {
        let index_dir = config.data_dir.join("index");
        std::fs::create_dir_all(&index_dir).map_err(|source| io_error(&index_dir, source))?;
        let schema = WardSchema::new();
        let directory = MmapDirectory::open(&index_dir)
            .map_err(|e| Error::Tantivy(tantivy::TantivyError::from(e)))?;
        let index = Index::open_or_create(directory, schema.schema.clone())?;
        WardSchema::register_tokenizers(&index);
        let writer: IndexWriter<TantivyDocument> = index
            .writer_with_num_threads(config.writer_threads.max(1), config.writer_heap_bytes)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let thread = {
            let reader: IndexReader = Clone::clone(&reader);
            let stats = stats.clone();
            let interval = config.commit_interval;
            std::thread::Builder::new()
                .name("ward-index-writer".into())
                .spawn(move || writer_loop(writer, reader, rx, interval, &stats))
                .map_err(|source| io_error(&index_dir, source))?
        };
        tracing::info!(path = %index_dir.display(), "index opened");
        Ok(Store {
            inner: Arc::new(Inner {
                schema,
                reader,
                tx,
                queue_timeout: config.queue_timeout,
                stats,
                writer_thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Indexes a batch and returns once it is committed: durable and searchable.
    pub async fn ingest(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        let store = self.clone();
        let (ack, acked) = oneshot::channel();
        let count = records.len();
        tokio::task::spawn_blocking(move || store.enqueue(records, ack))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;
        acked
            .await
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        self.inner
            .stats
            .batches_acknowledged
            .fetch_add(1, Ordering::Relaxed);
        Ok(IngestReceipt { records: count })
    }

    /// Like [`Store::ingest`], for callers outside an async runtime (benches).
    pub fn ingest_blocking(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        let (ack, acked) = oneshot::channel();
        let count = records.len();
        self.enqueue(records, ack)?;
        acked
            .blocking_recv()
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        Ok(IngestReceipt { records: count })
    }

    fn enqueue(
        &self,
        records: Vec<DecodedRecord>,
        ack: oneshot::Sender<Result<(), String>>,
    ) -> Result<(), Error> {
        let schema = &self.inner.schema;
        let docs: Vec<TantivyDocument> = records
            .into_iter()
            .map(|r| document::build(schema, r))
            .collect();
        match self
            .inner
            .tx
            .send_timeout(WriterMsg::Batch { docs, ack }, self.inner.queue_timeout)
        {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(Error::Unavailable(
                "the index writer is busy; retry later".into(),
            )),
            Err(SendTimeoutError::Disconnected(_)) => {
                Err(Error::Unavailable("the index writer stopped".into()))
            }
        }
    }

    /// Runs a search on the blocking pool.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchResponse, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.search_blocking(&request))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    }

    pub fn search_blocking(&self, request: &SearchRequest) -> Result<SearchResponse, Error> {
        if request.limit > MAX_LIMIT {
            return Err(Error::InvalidRequest(format!(
                "limit must be at most {MAX_LIMIT}"
            )));
        }
        let schema = &self.inner.schema;
        let parsed = query::parse(&request.query)?;
        let mut query = compile::compile(schema, &parsed)?;
        if request.start.is_some() || request.end.is_some() {
            let to_term = |t: DateTime<Utc>| {
                Term::from_field_date(
                    schema.timestamp,
                    tantivy::DateTime::from_timestamp_nanos(
                        t.timestamp_nanos_opt().unwrap_or(i64::MAX),
                    ),
                )
            };
            let range = RangeQuery::new(
                request.start.map_or(std::ops::Bound::Unbounded, |t| {
                    std::ops::Bound::Included(to_term(t))
                }),
                request.end.map_or(std::ops::Bound::Unbounded, |t| {
                    std::ops::Bound::Excluded(to_term(t))
                }),
            );
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(range) as Box<dyn TantivyQuery>),
            ]));
        }
        let searcher = self.inner.reader.searcher();
        let top = TopDocs::with_limit(request.limit.max(1))
            .order_by_fast_field::<tantivy::DateTime>(TIMESTAMP, Order::Desc);
        let (total, top) = searcher.search(&query, &(Count, top))?;
        let mut hits = Vec::with_capacity(top.len().min(request.limit));
        for (_, address) in top.into_iter().take(request.limit) {
            let doc: TantivyDocument = searcher.doc(address)?;
            let bytes = doc
                .get_first(schema.source_doc)
                .and_then(|v| v.as_bytes())
                .unwrap_or(b"{}");
            let text = String::from_utf8_lossy(bytes).into_owned();
            let raw = RawValue::from_string(text)
                .map_err(|e| Error::InvalidRequest(format!("stored record is not JSON: {e}")))?;
            hits.push(raw);
        }
        Ok(SearchResponse {
            total: total as u64,
            hits,
        })
    }

    /// Number of records visible to search.
    pub fn num_docs(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
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

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn writer_loop(
    mut writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    rx: crossbeam_channel::Receiver<WriterMsg>,
    interval: Duration,
    stats: &StoreStats,
) {
    let mut pending: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut pending_docs = 0u64;
    let mut oldest: Option<Instant> = None;
    let mut failure: Option<String> = None;
    loop {
        let wait = oldest.map_or(Duration::from_secs(3600), |t| {
            interval.saturating_sub(t.elapsed())
        });
        let msg = rx.recv_timeout(wait);
        match msg {
            Ok(WriterMsg::Batch { docs, ack }) => {
                pending_docs += docs.len() as u64;
                for doc in docs {
                    if let Err(e) = writer.add_document(doc) {
                        failure.get_or_insert_with(|| e.to_string());
                    }
                }
                pending.push(ack);
                oldest.get_or_insert_with(Instant::now);
                if oldest.is_some_and(|t| t.elapsed() < interval) {
                    continue;
                }
            }
            Ok(WriterMsg::Shutdown(done)) => {
                commit(
                    &mut writer,
                    &reader,
                    &mut pending,
                    &mut pending_docs,
                    &mut failure,
                    stats,
                );
                let _ = done.send(());
                tracing::info!("index writer stopped");
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(
                    &mut writer,
                    &reader,
                    &mut pending,
                    &mut pending_docs,
                    &mut failure,
                    stats,
                );
                return;
            }
        }
        if !pending.is_empty() {
            commit(
                &mut writer,
                &reader,
                &mut pending,
                &mut pending_docs,
                &mut failure,
                stats,
            );
        }
        oldest = None;
    }
}

fn commit(
    writer: &mut IndexWriter<TantivyDocument>,
    reader: &IndexReader,
    pending: &mut Vec<oneshot::Sender<Result<(), String>>>,
    pending_docs: &mut u64,
    failure: &mut Option<String>,
    stats: &StoreStats,
) {
    if pending.is_empty() {
        return;
    }
    let result = match failure.take() {
        Some(e) => Err(e),
        None => writer.commit().map(|_| ()).map_err(|e| e.to_string()),
    };
    match &result {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .records_indexed
                .fetch_add(*pending_docs, Ordering::Relaxed);
            if let Err(e) = reader.reload() {
                tracing::warn!(error = %e, "index reader reload failed");
            }
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "index commit failed; batches are refused and will be resent");
            // Drop what this commit would have held: nothing was acknowledged.
            if let Err(e) = writer.rollback() {
                tracing::error!(error = %e, "index rollback failed");
            }
        }
    }
    *pending_docs = 0;
    for ack in pending.drain(..) {
        let _ = ack.send(result.clone());
    }
}
