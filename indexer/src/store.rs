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

use std::collections::HashSet;
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

use crate::document::ParsedRecord;
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
    /// Sees every batch once parsed, before storage (detection rules).
    pub tap: Option<Arc<dyn IngestTap>>,
}

/// A stage that sees each ingested batch, parsed once, before it is stored.
///
/// Called on the blocking pool, once per batch, possibly from several
/// threads at once; a batch may be seen again if its sender resends it
/// (replays are recognised only later, by the writer), so what a tap
/// derives must be idempotent per record id.
pub trait IngestTap: Send + Sync {
    fn observe(&self, batch: &[ParsedRecord]);
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
            writer_threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            commit_interval: Duration::from_millis(250),
            queue_timeout: Duration::from_secs(10),
            tap: None,
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
    pub duplicates_dropped: AtomicU64,
}

/// What the writer answers for one batch: duplicates dropped, or why it failed.
type Ack = oneshot::Sender<Result<usize, String>>;

enum WriterMsg {
    Batch {
        docs: Vec<(RecordKey, TantivyDocument)>,
        ack: Ack,
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
    tap: Option<Arc<dyn IngestTap>>,
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
        let known = KnownRecords::load(&reader, schema.id)?;
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = crossbeam_channel::bounded(16);
        let thread = {
            let reader: IndexReader = Clone::clone(&reader);
            let stats = stats.clone();
            let interval = config.commit_interval;
            std::thread::Builder::new()
                .name("ward-index-writer".into())
                .spawn(move || writer_loop(writer, reader, rx, interval, known, &stats))
                .map_err(|source| io_error(&index_dir, source))?
        };
        tracing::info!(path = %index_dir.display(), "index opened");
        Ok(Store {
            inner: Arc::new(Inner {
                schema,
                reader,
                tx,
                queue_timeout: config.queue_timeout,
                tap: config.tap.clone(),
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
        let duplicates = acked
            .await
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        self.inner
            .stats
            .batches_acknowledged
            .fetch_add(1, Ordering::Relaxed);
        Ok(IngestReceipt {
            records: count,
            duplicates,
        })
    }

    /// Like [`Store::ingest`], for callers outside an async runtime (benches).
    pub fn ingest_blocking(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        let (ack, acked) = oneshot::channel();
        let count = records.len();
        self.enqueue(records, ack)?;
        let duplicates = acked
            .blocking_recv()
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        Ok(IngestReceipt {
            records: count,
            duplicates,
        })
    }

    fn enqueue(&self, records: Vec<DecodedRecord>, ack: Ack) -> Result<(), Error> {
        let schema = &self.inner.schema;
        let parsed: Vec<ParsedRecord> =
            records.into_iter().map(ParsedRecord::from_record).collect();
        if let Some(tap) = &self.inner.tap {
            tap.observe(&parsed);
        }
        let docs: Vec<(RecordKey, TantivyDocument)> = parsed
            .iter()
            .map(|r| (RecordKey::of(&r.id), document::build_parsed(schema, r)))
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

/// The ids of every record in the index, as 128-bit hashes, so that a
/// replayed record (a collector resending after a crash, an API server
/// retrying a webhook batch) is recognised without a lookup in the index.
///
/// The set is derived from the `_id` terms of the committed index, which
/// are written in the same commit as the records: it is atomic with the
/// data by construction, and rebuilt from the index at start-up. Its cost
/// is about 32 bytes of memory per stored record.
struct KnownRecords {
    committed: HashSet<RecordKey>,
    /// Added since the last commit; folded in on success, dropped on failure.
    pending: HashSet<RecordKey>,
}

/// A record id hashed to 128 bits (two independent 64-bit hashes, so that a
/// collision, which would wrongly drop a record, is out of practical reach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordKey(u64, u64);

impl RecordKey {
    pub(crate) fn of(id: &str) -> RecordKey {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new()` has fixed keys: stable within a build,
        // which is all a set rebuilt at start-up needs.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (0x5eed_u16, id).hash(&mut b);
        RecordKey(a.finish(), b.finish())
    }
}

impl KnownRecords {
    fn load(reader: &IndexReader, id_field: tantivy::schema::Field) -> Result<KnownRecords, Error> {
        let mut committed = HashSet::new();
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(id_field)?;
            let mut terms = inverted
                .terms()
                .stream()
                .map_err(|source| io_error(Path::new("index/_id terms"), source))?;
            while terms.advance() {
                committed.insert(RecordKey::of(&String::from_utf8_lossy(terms.key())));
            }
        }
        tracing::info!(
            records = committed.len(),
            "loaded record ids for replay detection"
        );
        Ok(KnownRecords {
            committed,
            pending: HashSet::new(),
        })
    }

    /// Registers a record; false if it is already known (a replay).
    fn insert(&mut self, key: RecordKey) -> bool {
        !self.committed.contains(&key) && self.pending.insert(key)
    }
}

/// Batches added since the last commit, waiting for it.
#[derive(Default)]
struct PendingCommit {
    acks: Vec<(Ack, usize)>,
    docs: u64,
    /// The first error of an `add_document`: the commit must then fail.
    failure: Option<String>,
    since: Option<Instant>,
}

fn writer_loop(
    mut writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    rx: crossbeam_channel::Receiver<WriterMsg>,
    interval: Duration,
    mut known: KnownRecords,
    stats: &StoreStats,
) {
    let mut pending = PendingCommit::default();
    loop {
        let wait = pending.since.map_or(Duration::from_secs(3600), |t| {
            interval.saturating_sub(t.elapsed())
        });
        match rx.recv_timeout(wait) {
            Ok(WriterMsg::Batch { docs, ack }) => {
                let mut duplicates = 0;
                for (key, doc) in docs {
                    if !known.insert(key) {
                        duplicates += 1;
                        continue;
                    }
                    pending.docs += 1;
                    if let Err(e) = writer.add_document(doc) {
                        pending.failure.get_or_insert_with(|| e.to_string());
                    }
                }
                if duplicates > 0 {
                    stats
                        .duplicates_dropped
                        .fetch_add(duplicates as u64, Ordering::Relaxed);
                    tracing::info!(duplicates, "dropped replayed records");
                }
                pending.acks.push((ack, duplicates));
                let since = *pending.since.get_or_insert_with(Instant::now);
                if since.elapsed() < interval {
                    continue;
                }
            }
            Ok(WriterMsg::Shutdown(done)) => {
                commit(&mut writer, &reader, &mut pending, &mut known, stats);
                let _ = done.send(());
                tracing::info!("index writer stopped");
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                commit(&mut writer, &reader, &mut pending, &mut known, stats);
                return;
            }
        }
        commit(&mut writer, &reader, &mut pending, &mut known, stats);
    }
}

fn commit(
    writer: &mut IndexWriter<TantivyDocument>,
    reader: &IndexReader,
    pending: &mut PendingCommit,
    known: &mut KnownRecords,
    stats: &StoreStats,
) {
    let batch = std::mem::take(pending);
    if batch.acks.is_empty() {
        return;
    }
    let result = match batch.failure {
        Some(e) => Err(e),
        // A batch of replays only: nothing new to make durable.
        None if batch.docs == 0 => Ok(()),
        None => writer.commit().map(|_| ()).map_err(|e| e.to_string()),
    };
    match &result {
        Ok(()) => {
            known.committed.extend(known.pending.drain());
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .records_indexed
                .fetch_add(batch.docs, Ordering::Relaxed);
            if let Err(e) = reader.reload() {
                tracing::warn!(error = %e, "index reader reload failed");
            }
        }
        Err(e) => {
            stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "index commit failed; batches are refused and will be resent");
            // Drop what this commit would have held: nothing was acknowledged.
            known.pending.clear();
            if let Err(e) = writer.rollback() {
                tracing::error!(error = %e, "index rollback failed");
            }
        }
    }
    for (ack, duplicates) in batch.acks {
        let _ = ack.send(result.clone().map(|()| duplicates));
    }
}
