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
//! segment.
//!
//! Exactly once: each partition remembers the time and `_tie` (a hash of
//! the replay key) of its records, read from its committed fast columns,
//! or for records whose time was inferred their whole key, from `_key`
//! terms; so atomic with the data (see `KnownRecords`). A
//! record always maps to the same day, so a replay meets its original in
//! the same partition and is dropped. If one partition of a batch commits
//! and another fails, the batch is refused; when it is resent, the
//! committed part is recognised as replayed and only the rest is added.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{RecvTimeoutError, SendTimeoutError};
use serde::Serialize;
use serde_json::value::RawValue;
use tantivy::merge_policy::LogMergePolicy;
use tantivy::query::{BooleanQuery, Occur, Query as TantivyQuery, RangeQuery};
use tantivy::schema::Value as _;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::oneshot;
use ward_event::SourceKind;
use ward_event::wire::{self, DecodedRecord};

use crate::cancel::{Cancel, Cancellable};
use crate::chain::{self, ChainFile, CommitPayload, Digest32, EntryBody, HmacKey};
use crate::document::{ParsedRecord, Prepared};
use crate::page::{Cursor, PageCollector, SortOrder};
use crate::partition::{self, Day};
use crate::redact::{Redactor, Tally};
use crate::schema::{TIE, TIMESTAMP, WardSchema};
use crate::tail::TailFeed;
use crate::tree::{Node, Object};
use crate::{Error, compile, document, query};

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
    /// it gives up with [`Error::Unavailable`].
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
    /// A partition not written for this long has its writer closed (its
    /// replay keys are dropped from memory; they are reloaded if it is
    /// written again).
    pub idle_writer_timeout: Duration,
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
}

/// What the writer answers for one batch: (duplicates, expired) or why it failed.
type Ack = oneshot::Sender<Result<(usize, usize), String>>;

/// A document on its way to the writer.
struct Pending {
    key: RecordKey,
    day: Day,
    digest: Digest32,
    doc: TantivyDocument,
}

/// A batch as it reaches the store.
enum Batch {
    /// Records already decoded (Ward's own, tests).
    Records(Vec<DecodedRecord>),
    /// NDJSON records as a sender wrote them.
    Ndjson(Vec<u8>),
}

/// Turns a batch's records into documents. Without a tap, one at a time,
/// so that each record's tree is dropped before the next is parsed; with
/// one, the batch's trees are kept until the tap has seen them all.
struct BatchBuilder<'s, 'b> {
    schema: &'s WardSchema,
    redactor: &'s Redactor,
    tap: Option<&'s dyn IngestTap>,
    /// The batch's records, kept for the tap.
    kept: Vec<Prepared<'b>>,
    docs: Vec<Pending>,
    /// Counted once the writer has taken the batch.
    redactions: Tally,
}

impl<'b> BatchBuilder<'_, 'b> {
    fn add(&mut self, record: Prepared<'b>) {
        if self.tap.is_some() {
            self.kept.push(record);
        } else {
            self.build(record);
        }
    }

    /// Shows the kept records to the tap and builds their documents.
    fn finish(mut self) -> (Vec<Pending>, Tally) {
        if let Some(tap) = self.tap {
            let kept = std::mem::take(&mut self.kept);
            let parsed: Vec<ParsedRecord<'_>> = kept.iter().map(Prepared::parsed).collect();
            tap.observe(&parsed);
            drop(parsed);
            self.docs.reserve(kept.len());
            for record in kept {
                self.build(record);
            }
        }
        (self.docs, self.redactions)
    }

    fn build(&mut self, record: Prepared<'_>) {
        let document::Built {
            doc,
            digest,
            tie,
            time_inferred,
            key,
            timestamp_nanos,
        } = record.build(self.schema, Some((self.redactor, &mut self.redactions)));
        let key = if time_inferred {
            RecordKey::whole(&key)
        } else {
            RecordKey::Timed {
                nanos: timestamp_nanos,
                tie,
            }
        };
        self.docs.push(Pending {
            key,
            day: Day::of_nanos(timestamp_nanos),
            digest,
            doc,
        });
    }
}

enum WriterMsg {
    Batch { docs: Vec<Pending>, ack: Ack },
    Shutdown(oneshot::Sender<()>),
}

/// A partition as search sees it.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) reader: IndexReader,
}

type Views = Arc<RwLock<BTreeMap<Day, View>>>;

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
        let writer = Writer {
            tail: tail.clone(),
            tail_pending: Vec::new(),
            schema: schema.clone(),
            config: config.clone(),
            views: views.clone(),
            indexes,
            open: BTreeMap::new(),
            ledger,
            acks: Vec::new(),
            since: None,
            last_retention: None,
            stats: stats.clone(),
        };
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

    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Indexes a batch and returns once it is committed: durable and searchable.
    pub async fn ingest(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        self.ingest_on_pool(Batch::Records(records)).await
    }

    /// Indexes a batch of NDJSON records as a sender wrote it (see
    /// `ward_event::wire`), parsing each event once into a tree that
    /// borrows from `ndjson`. A line that is not a record fails the batch
    /// with its number; so does a record with source `ward`, which only
    /// Ward itself writes (through [`Store::ingest`]).
    pub async fn ingest_ndjson(&self, ndjson: Vec<u8>) -> Result<IngestReceipt, Error> {
        self.ingest_on_pool(Batch::Ndjson(ndjson)).await
    }

    async fn ingest_on_pool(&self, batch: Batch) -> Result<IngestReceipt, Error> {
        let store = self.clone();
        let (ack, acked) = oneshot::channel();
        let records = tokio::task::spawn_blocking(move || store.enqueue(batch, ack))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;
        let (duplicates, expired) = acked
            .await
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        self.inner
            .stats
            .batches_acknowledged
            .fetch_add(1, Ordering::Relaxed);
        Ok(IngestReceipt {
            records,
            duplicates,
            expired,
        })
    }

    /// Like [`Store::ingest`], for callers outside an async runtime (benches).
    pub fn ingest_blocking(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        self.ingest_here(Batch::Records(records))
    }

    /// Like [`Store::ingest_ndjson`], for callers outside an async runtime.
    pub fn ingest_ndjson_blocking(&self, ndjson: Vec<u8>) -> Result<IngestReceipt, Error> {
        self.ingest_here(Batch::Ndjson(ndjson))
    }

    fn ingest_here(&self, batch: Batch) -> Result<IngestReceipt, Error> {
        let (ack, acked) = oneshot::channel();
        let records = self.enqueue(batch, ack)?;
        let (duplicates, expired) = acked
            .blocking_recv()
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        Ok(IngestReceipt {
            records,
            duplicates,
            expired,
        })
    }

    fn batch_builder(&self) -> BatchBuilder<'_, '_> {
        BatchBuilder {
            schema: &self.inner.schema,
            redactor: &self.inner.redactor,
            tap: self.inner.tap.as_deref(),
            kept: Vec::new(),
            docs: Vec::new(),
            redactions: Tally::default(),
        }
    }

    /// Builds the batch's documents, shows its records to the tap, and
    /// hands the documents to the writer; returns how many records it had.
    fn enqueue(&self, batch: Batch, ack: Ack) -> Result<usize, Error> {
        let (docs, redactions) = match batch {
            Batch::Records(mut records) => {
                let events: Vec<_> = records
                    .iter_mut()
                    .map(|r| std::mem::take(&mut r.event))
                    .collect();
                let mut builder = self.batch_builder();
                for (record, event) in records.into_iter().zip(&events) {
                    builder.add(Prepared::new(record.with_event(Object::of_map(event))));
                }
                builder.finish()
            }
            Batch::Ndjson(ndjson) => {
                let mut builder = self.batch_builder();
                for record in wire::records::<Object>(&ndjson) {
                    let record = record?;
                    // An event's own `source` wins in the hit, so it is
                    // checked too: the trail of `source:ward` records is
                    // evidence, and nobody else may add to it.
                    if record.source == SourceKind::Ward
                        || record.event.get("source").and_then(Node::as_str)
                            == Some(SourceKind::Ward.as_str())
                    {
                        return Err(Error::InvalidRequest(
                            "records with source \"ward\" are written only by Ward itself".into(),
                        ));
                    }
                    builder.add(Prepared::new(record));
                }
                builder.finish()
            }
        };
        let count = docs.len();
        match self
            .inner
            .tx
            .send_timeout(WriterMsg::Batch { docs, ack }, self.inner.queue_timeout)
        {
            Ok(()) => {
                self.inner.redactor.count(&redactions);
                Ok(count)
            }
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

    /// [`Store::page_blocking`] on the blocking pool.
    pub async fn page(
        &self,
        request: SearchRequest,
        count_total: bool,
    ) -> Result<SearchResponse, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.page_blocking(&request, count_total))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    }

    /// Parses and compiles a query without running it (to refuse a bad
    /// query before a stream starts).
    pub fn check_query(&self, text: &str) -> Result<(), Error> {
        self.compile_request(text, None, None, None).map(drop)
    }

    /// The partitions a time range touches, newest first.
    pub(crate) fn views_in(
        &self,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Vec<View> {
        let views = match self.inner.views.read() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        views
            .iter()
            .rev()
            .filter(|(day, _)| day.overlaps(start, end))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn search_blocking(&self, request: &SearchRequest) -> Result<SearchResponse, Error> {
        self.page_blocking(request, true)
    }

    /// The query of a request: its text, its time range and the namespace
    /// scope, compiled.
    pub(crate) fn compile_request(
        &self,
        text: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        namespaces: Option<&[String]>,
    ) -> Result<Box<dyn TantivyQuery>, Error> {
        let schema = &self.inner.schema;
        let parsed = query::parse(text)?;
        let mut clauses: Vec<(Occur, Box<dyn TantivyQuery>)> =
            vec![(Occur::Must, compile::compile(schema, &parsed)?)];
        if start.is_some() || end.is_some() {
            clauses.push((Occur::Must, Box::new(time_range(schema, start, end))));
        }
        if let Some(namespaces) = namespaces {
            clauses.push((Occur::Must, compile::namespace_scope(schema, namespaces)));
        }
        Ok(if clauses.len() == 1 {
            clauses.remove(0).1
        } else {
            Box::new(BooleanQuery::new(clauses))
        })
    }

    /// One page. Without `count_total` (export, tail), the walk skips what
    /// lies before the cursor instead of counting it, and `total` counts
    /// only the matches after the cursor.
    pub fn page_blocking(
        &self,
        request: &SearchRequest,
        count_total: bool,
    ) -> Result<SearchResponse, Error> {
        if request.limit > MAX_LIMIT {
            return Err(Error::InvalidRequest(format!(
                "limit must be at most {MAX_LIMIT}"
            )));
        }
        let schema = &self.inner.schema;
        let cursor = request
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| Cursor::parse(c, request.order))
            .transpose()?;
        let (mut start, mut end) = (request.start, request.end);
        if let (Some(c), false) = (cursor, count_total) {
            // Only what lies after the cursor in the order matters.
            let at = DateTime::<Utc>::from_timestamp_nanos(c.nanos);
            match request.order {
                SortOrder::Newest => {
                    let bound = at + chrono::Duration::nanoseconds(1);
                    end = Some(end.map_or(bound, |e| e.min(bound)));
                }
                SortOrder::Oldest => start = Some(start.map_or(at, |s| s.max(at))),
            }
        }
        let query =
            self.compile_request(&request.query, start, end, request.namespaces.as_deref())?;
        let views = self.views_in(start, end);
        let searchers: Vec<_> = views.iter().map(|v| v.reader.searcher()).collect();
        let collector = PageCollector {
            limit: request.limit,
            order: request.order,
            after: cursor.map(|c| c.rank()),
        };
        let collector = Cancellable {
            inner: collector,
            cancel: &request.cancel,
        };
        let mut fruits = Vec::with_capacity(searchers.len());
        for (i, searcher) in searchers.iter().enumerate() {
            let (count, after, hits) = searcher
                .search(&query, &collector)
                .map_err(|e| self.cancelled_or(&request.cancel, e.into()))?;
            // Each hit keeps the partition it came from.
            fruits.push((
                count,
                after,
                hits.into_iter()
                    .map(|(rank, a)| (rank, DocAddress::new(a.segment_ord, a.doc_id), i))
                    .collect::<Vec<_>>(),
            ));
        }
        let mut total = 0u64;
        let mut remaining = 0u64;
        let mut candidates = Vec::new();
        for (count, after, hits) in fruits {
            total += count;
            remaining += after;
            candidates.extend(hits);
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        candidates.truncate(request.limit);
        let next = (remaining > candidates.len() as u64)
            .then(|| {
                candidates
                    .last()
                    .map(|c| Cursor::from_rank(request.order, c.0).encode())
            })
            .flatten();
        let mut hits = Vec::with_capacity(candidates.len());
        for (n, (_, address, i)) in candidates.into_iter().enumerate() {
            if n % 256 == 255 && request.cancel.is_cancelled() {
                return Err(self.cancelled_or(&request.cancel, Error::Cancelled));
            }
            let doc: TantivyDocument = searchers[i].doc(address)?;
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
            total: if count_total { total } else { remaining },
            hits,
            cursor: next,
        })
    }

    /// `Error::Cancelled` (counted) when the request was cancelled, else `e`.
    pub(crate) fn cancelled_or(&self, cancel: &Cancel, e: Error) -> Error {
        if cancel.is_cancelled() {
            self.inner
                .stats
                .queries_cancelled
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("query cancelled");
            Error::Cancelled
        } else {
            e
        }
    }

    /// Number of records visible to search.
    pub fn num_docs(&self) -> u64 {
        self.views_in(None, None)
            .iter()
            .map(|v| v.reader.searcher().num_docs())
            .sum()
    }

    /// Searchable segments over all partitions.
    pub fn segment_count(&self) -> usize {
        self.views_in(None, None)
            .iter()
            .map(|v| v.reader.searcher().segment_readers().len())
            .sum()
    }

    /// The days that have a partition, oldest first.
    pub fn partitions(&self) -> Vec<Day> {
        match self.inner.views.read() {
            Ok(v) => v.keys().copied().collect(),
            Err(poisoned) => poisoned.into_inner().keys().copied().collect(),
        }
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

/// `[start, end)` on the record time.
pub(crate) fn time_range(
    schema: &WardSchema,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> RangeQuery {
    let to_term = |t: DateTime<Utc>| {
        Term::from_field_date(
            schema.timestamp,
            tantivy::DateTime::from_timestamp_nanos(t.timestamp_nanos_opt().unwrap_or(i64::MAX)),
        )
    };
    RangeQuery::new(
        start.map_or(std::ops::Bound::Unbounded, |t| {
            std::ops::Bound::Included(to_term(t))
        }),
        end.map_or(std::ops::Bound::Unbounded, |t| {
            std::ops::Bound::Excluded(to_term(t))
        }),
    )
}

/// Decompressed document-store blocks a reader keeps per segment. Blocks
/// are 1 MiB (see `partition`), so tantivy's default of 100 would let each
/// open segment hold 100 MiB. With 8, fetching the newest 100 hits of a
/// selective query decompressed blocks again on every repeat (19 ms at p50
/// instead of 0.36 ms with 32, `query_bench --events 1000000`).
const DOC_STORE_CACHE_BLOCKS: usize = 32;

fn reader_of(index: &Index) -> Result<IndexReader, Error> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
        .try_into()?)
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

/// The replay keys of one partition's records, so that a replayed record
/// (a collector resending after a crash, an API server retrying a webhook
/// batch) is recognised without a lookup in the index.
///
/// A record is known by its own time and `_tie`, a 64-bit hash of its
/// replay key ([`crate::schema::tie_of`]); a replay has both the same. Both
/// are fast columns of the committed index, written in the same commit as
/// the records: the set is atomic with the data by construction, and
/// rebuilt from the columns when the partition is opened for writing.
/// Two different records are taken for one only if they have the same
/// nanosecond and the same 64-bit hash.
///
/// A record whose time was inferred (the line had none: it is when the line
/// was read) would have another time when replayed, so it is known by a
/// 128-bit hash of its whole key instead, from the `_key` term that only
/// such records get. (Earlier releases wrote a `_key` term for every record,
/// 0.04 bytes on disk per byte of audit JSON; those partitions' records are
/// known both ways.) The set costs about 32 bytes of memory per record of
/// the partitions being written (normally today's).
struct KnownRecords {
    committed: HashSet<RecordKey>,
    /// Added since the last commit; folded in on success, dropped on failure.
    pending: HashSet<RecordKey>,
}

/// What a record is recognised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecordKey {
    /// Its own time and its tie-breaker.
    Timed { nanos: i64, tie: u64 },
    /// Its whole replay key, hashed to 128 bits (two independent 64-bit
    /// hashes, so that a collision, which would wrongly drop a record, is
    /// out of practical reach).
    Whole(u64, u64),
}

impl RecordKey {
    fn whole(key: &str) -> RecordKey {
        Self::whole_of_bytes(key.as_bytes())
    }

    fn whole_of_bytes(key: &[u8]) -> RecordKey {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new()` has fixed keys: stable within a build,
        // which is all a set rebuilt at start-up needs.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (0x5eed_u16, key).hash(&mut b);
        RecordKey::Whole(a.finish(), b.finish())
    }
}

impl KnownRecords {
    fn load(
        reader: &IndexReader,
        key_field: tantivy::schema::Field,
    ) -> Result<KnownRecords, Error> {
        let mut committed = HashSet::new();
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let times = fast.date(TIMESTAMP)?;
            let ties = fast.u64(TIE)?;
            for doc in 0..segment.max_doc() {
                if segment.is_deleted(doc) {
                    continue;
                }
                if let (Some(time), Some(tie)) = (times.first(doc), ties.first(doc)) {
                    committed.insert(RecordKey::Timed {
                        nanos: time.into_timestamp_nanos(),
                        tie,
                    });
                }
            }
            let inverted = segment.inverted_index(key_field)?;
            let mut terms = inverted
                .terms()
                .stream()
                .map_err(|source| Error::io(Path::new("index/_key terms"), source))?;
            while terms.advance() {
                committed.insert(RecordKey::whole_of_bytes(terms.key()));
            }
        }
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

/// A partition open for writing.
struct OpenPartition {
    writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    known: KnownRecords,
    chain: ChainFile,
    /// Digests of the records added since the last commit.
    digests: Vec<Digest32>,
    /// The first error of an `add_document`: the commit must then fail.
    failure: Option<String>,
    last_write: Instant,
}

/// The writer thread's state.
struct Writer {
    schema: WardSchema,
    config: StoreConfig,
    views: Views,
    /// Every partition on disk, open or not for writing.
    indexes: BTreeMap<Day, Index>,
    open: BTreeMap<Day, OpenPartition>,
    ledger: ChainFile,
    /// Batches waiting for the next commit: (ack, duplicates, expired).
    acks: Vec<(Ack, usize, usize)>,
    since: Option<Instant>,
    last_retention: Option<Instant>,
    stats: Arc<StoreStats>,
    tail: TailFeed,
    /// Copies of the documents added since the last commit, while someone tails.
    tail_pending: Vec<TantivyDocument>,
}

impl Writer {
    fn run(mut self, rx: crossbeam_channel::Receiver<WriterMsg>) {
        self.retention_pass();
        loop {
            let interval = self.config.commit_interval;
            let commit_wait = self
                .since
                .map_or(Duration::MAX, |t| interval.saturating_sub(t.elapsed()));
            let retention_wait = self.last_retention.map_or(Duration::ZERO, |t| {
                self.config.retention_interval.saturating_sub(t.elapsed())
            });
            match rx.recv_timeout(commit_wait.min(retention_wait)) {
                Ok(WriterMsg::Batch { docs, ack }) => {
                    self.add_batch(docs, ack);
                    let since = *self.since.get_or_insert_with(Instant::now);
                    if since.elapsed() < interval {
                        continue;
                    }
                }
                Ok(WriterMsg::Shutdown(done)) => {
                    self.commit();
                    for (_, p) in std::mem::take(&mut self.open) {
                        // Let merges in flight finish rather than leave
                        // half-written files behind.
                        let _ = p.writer.wait_merging_threads();
                    }
                    let _ = done.send(());
                    tracing::info!("index writer stopped");
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    return;
                }
            }
            if self.since.is_some_and(|t| t.elapsed() >= interval) {
                self.commit();
            }
            if self
                .last_retention
                .is_none_or(|t| t.elapsed() >= self.config.retention_interval)
            {
                self.retention_pass();
                self.close_idle_writers();
            }
        }
    }

    /// The first day retention keeps, if retention by age is set.
    fn oldest_kept_day(&self) -> Option<Day> {
        let age = self.config.retention.max_age?;
        let cutoff = Utc::now() - chrono::Duration::from_std(age).ok()?;
        // A day is removed once it has entirely passed the cutoff.
        Some(Day::of(cutoff))
    }

    fn add_batch(&mut self, docs: Vec<Pending>, ack: Ack) {
        let mut duplicates = 0;
        let mut expired = 0;
        let oldest = self.oldest_kept_day();
        let batch_field = self.schema.batch;
        let tail_wanted = self.tail.wanted();
        for Pending {
            key,
            day,
            digest,
            mut doc,
        } in docs
        {
            if oldest.is_some_and(|o| day < o) {
                expired += 1;
                continue;
            }
            let partition = match self.partition_for_write(day) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "cannot open partition for writing");
                    // Refuse the batch: it is resent later.
                    let _ = ack.send(Err(format!("cannot open partition {day}: {e}")));
                    self.forget_pending();
                    return;
                }
            };
            if !partition.known.insert(key) {
                duplicates += 1;
                continue;
            }
            let seq = partition.chain.head().1 + 1;
            doc.add_u64(batch_field, seq);
            partition.digests.push(digest);
            partition.last_write = Instant::now();
            let copy = tail_wanted.then(|| doc.clone());
            if let Err(e) = partition.writer.add_document(doc) {
                partition.failure.get_or_insert_with(|| e.to_string());
            }
            if let Some(copy) = copy {
                self.tail_pending.push(copy);
            }
        }
        if duplicates > 0 {
            self.stats
                .duplicates_dropped
                .fetch_add(duplicates as u64, Ordering::Relaxed);
            tracing::info!(duplicates, "dropped replayed records");
        }
        if expired > 0 {
            self.stats
                .records_expired
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::info!(expired, "dropped records older than the retention period");
        }
        self.acks.push((ack, duplicates, expired));
    }

    /// After a failure in the middle of a batch: what it added to
    /// partitions is rolled back with the next commit's failure.
    fn forget_pending(&mut self) {
        for p in self.open.values_mut() {
            if !p.digests.is_empty() {
                p.failure
                    .get_or_insert_with(|| "a batch could not be placed".into());
            }
        }
    }

    fn partition_for_write(&mut self, day: Day) -> Result<&mut OpenPartition, Error> {
        if !self.open.contains_key(&day) {
            let opened = self.open_for_write(day)?;
            self.open.insert(day, opened);
        }
        self.open
            .get_mut(&day)
            .ok_or_else(|| Error::Unavailable("partition vanished".into()))
    }

    fn open_for_write(&mut self, day: Day) -> Result<OpenPartition, Error> {
        let data_dir = &self.config.data_dir;
        let index = match self.indexes.get(&day) {
            Some(index) => index.clone(),
            None => {
                let index = partition::open_index(data_dir, day, &self.schema, true)?;
                self.ledger.append(EntryBody::PartitionCreated {
                    partition: day.name(),
                })?;
                tracing::info!(partition = %day, "partition created");
                self.indexes.insert(day, index.clone());
                self.stats
                    .partitions
                    .store(self.indexes.len() as u64, Ordering::Relaxed);
                index
            }
        };
        let payload = CommitPayload::parse(index.load_metas()?.payload.as_deref());
        let chain = ChainFile::open(
            &partition::partition_dir(data_dir, day).join(partition::CHAIN_FILE),
            Some(payload.map_or(0, |p| p.chain_seq)),
            self.config.hmac_key.clone(),
        )?;
        let writer: IndexWriter<TantivyDocument> = index.writer_with_num_threads(
            self.config.writer_threads.max(1),
            self.config.writer_heap_bytes,
        )?;
        // Bounded segment counts while ingest goes on. A merge rewrites
        // its segments' term dictionaries, so the fewer times a record is
        // merged the better: 8 segments per level (Quickwit merges 10)
        // instead of 4 indexed 13% more events per CPU-second at 1M events,
        // for a few more segments per search (BENCHMARKS.md).
        let mut policy = LogMergePolicy::default();
        policy.set_min_num_segments(8);
        policy.set_max_docs_before_merge(5_000_000);
        writer.set_merge_policy(Box::new(policy));
        let reader = match self.views.read().ok().and_then(|v| v.get(&day).cloned()) {
            Some(view) => view.reader,
            None => {
                let reader = reader_of(&index)?;
                if let Ok(mut views) = self.views.write() {
                    views.insert(
                        day,
                        View {
                            reader: reader.clone(),
                        },
                    );
                }
                reader
            }
        };
        let known = KnownRecords::load(&reader, self.schema.key)?;
        tracing::debug!(partition = %day, records = known.committed.len(), "partition open for writing");
        Ok(OpenPartition {
            writer,
            reader,
            known,
            chain,
            digests: Vec::new(),
            failure: None,
            last_write: Instant::now(),
        })
    }

    fn commit(&mut self) {
        self.since = None;
        let acks = std::mem::take(&mut self.acks);
        if acks.is_empty() {
            return;
        }
        let mut failure: Option<String> = None;
        let mut added = 0u64;
        for (day, p) in self.open.iter_mut() {
            if p.digests.is_empty() && p.failure.is_none() {
                continue;
            }
            match commit_partition(p) {
                Ok(n) => added += n,
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "partition commit failed; batches are refused and will be resent");
                    failure.get_or_insert(e);
                }
            }
        }
        let tail_docs = std::mem::take(&mut self.tail_pending);
        let result = match failure {
            None => {
                self.tail.publish(tail_docs);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .records_indexed
                    .fetch_add(added, Ordering::Relaxed);
                let segments: usize = self
                    .views
                    .read()
                    .map(|v| {
                        v.values()
                            .map(|v| v.reader.searcher().segment_readers().len())
                            .sum()
                    })
                    .unwrap_or(0);
                self.stats
                    .segments
                    .store(segments as u64, Ordering::Relaxed);
                Ok(())
            }
            Some(e) => {
                self.stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        };
        for (ack, duplicates, expired) in acks {
            let _ = ack.send(result.clone().map(|()| (duplicates, expired)));
        }
    }

    fn close_idle_writers(&mut self) {
        let today = Day::of(Utc::now());
        let timeout = self.config.idle_writer_timeout;
        let idle: Vec<Day> = self
            .open
            .iter()
            .filter(|(day, p)| {
                **day != today && p.digests.is_empty() && p.last_write.elapsed() >= timeout
            })
            .map(|(day, _)| *day)
            .collect();
        for day in idle {
            if let Some(p) = self.open.remove(&day) {
                let _ = p.writer.wait_merging_threads();
                tracing::debug!(partition = %day, "closed idle partition writer");
            }
        }
    }

    /// Removes partitions past retention; updates the size gauges.
    fn retention_pass(&mut self) {
        self.last_retention = Some(Instant::now());
        let data_dir = self.config.data_dir.clone();
        let oldest = self.oldest_kept_day();
        let mut sizes: Vec<(Day, u64)> = self
            .indexes
            .keys()
            .map(|day| {
                (
                    *day,
                    partition::disk_usage(&partition::partition_dir(&data_dir, *day)),
                )
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, s)| s).sum();
        let today = Day::of(Utc::now());
        let mut remove: Vec<(Day, u64, String)> = Vec::new();
        for (day, size) in &sizes {
            if oldest.is_some_and(|o| *day < o) {
                remove.push((*day, *size, "age".into()));
                total -= size;
            }
        }
        if let Some(max) = self.config.retention.max_bytes {
            for (day, size) in &sizes {
                if total <= max || *day >= today {
                    break;
                }
                if remove.iter().any(|(d, _, _)| d == day) {
                    continue;
                }
                remove.push((*day, *size, "size".into()));
                total -= size;
            }
        }
        for (day, size, reason) in remove {
            match self.remove_partition(day, &reason) {
                Ok(records) => {
                    sizes.retain(|(d, _)| *d != day);
                    self.stats
                        .partitions_removed
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .partition_bytes_removed
                        .fetch_add(size, Ordering::Relaxed);
                    self.stats
                        .partition_records_removed
                        .fetch_add(records, Ordering::Relaxed);
                    tracing::info!(partition = %day, reason, bytes = size, records, "retention removed a partition");
                }
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "retention could not remove a partition")
                }
            }
        }
        self.stats
            .partitions
            .store(sizes.len() as u64, Ordering::Relaxed);
        self.stats
            .disk_bytes
            .store(sizes.iter().map(|(_, s)| s).sum::<u64>(), Ordering::Relaxed);
    }

    /// Records the removal in the ledger, then deletes the partition.
    fn remove_partition(&mut self, day: Day, reason: &str) -> Result<u64, Error> {
        if let Some(p) = self.open.remove(&day) {
            let _ = p.writer.wait_merging_threads();
        }
        let data_dir = self.config.data_dir.clone();
        let dir = partition::partition_dir(&data_dir, day);
        let (last_seq, head, records) = match self.indexes.get(&day) {
            Some(index) => {
                let payload = CommitPayload::parse(index.load_metas()?.payload.as_deref())
                    .unwrap_or_default();
                let records = reader_of(index)?.searcher().num_docs();
                (payload.chain_seq, payload.chain_head, records)
            }
            None => (0, chain::GENESIS.to_owned(), 0),
        };
        self.ledger.append(EntryBody::PartitionRemoved {
            partition: day.name(),
            reason: reason.into(),
            records,
            last_seq,
            head,
        })?;
        if let Ok(mut views) = self.views.write() {
            views.remove(&day);
        }
        self.indexes.remove(&day);
        // Rename first so that a crash mid-delete leaves no half partition
        // under `partitions/` (searches holding it keep their mmaps).
        let trash = data_dir.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        let doomed = trash.join(format!(
            "{}-{}",
            day.name(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        Ok(records)
    }
}

/// Commits one partition: chain entry first, then the index with the entry
/// named in its payload. Returns the records it added.
fn commit_partition(p: &mut OpenPartition) -> Result<u64, String> {
    let mut digests = std::mem::take(&mut p.digests);
    let records = digests.len() as u64;
    if let Some(e) = p.failure.take() {
        rollback(p);
        return Err(e);
    }
    let (prev_head, prev_seq) = {
        let (h, s) = p.chain.head();
        (h.to_owned(), s)
    };
    let prev_len = p.chain.len();
    let events_sha256 = hex::encode(chain::batch_digest(&mut digests));
    let entry = p
        .chain
        .append(EntryBody::Batch {
            records,
            events_sha256,
        })
        .map_err(|e| e.to_string())?;
    let payload = serde_json::to_string(&CommitPayload {
        chain_seq: entry.seq,
        chain_head: entry.hash.clone(),
    })
    .unwrap_or_default();
    let committed = p.writer.prepare_commit().and_then(|mut prepared| {
        prepared.set_payload(&payload);
        prepared.commit()
    });
    match committed {
        Ok(_) => {
            p.known.committed.extend(p.known.pending.drain());
            if let Err(e) = p.reader.reload() {
                tracing::warn!(error = %e, "index reader reload failed");
            }
            Ok(records)
        }
        Err(e) => {
            if let Err(e) = p.chain.truncate_to(prev_len, prev_head, prev_seq) {
                tracing::error!(error = %e, "cannot take back a chain entry");
            }
            rollback(p);
            Err(e.to_string())
        }
    }
}

fn rollback(p: &mut OpenPartition) {
    p.known.pending.clear();
    p.digests.clear();
    if let Err(e) = p.writer.rollback() {
        tracing::error!(error = %e, "index rollback failed");
    }
}
