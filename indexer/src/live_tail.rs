//! Live tail: the records of each commit, offered to subscribers' queries.
//!
//! Choice: after every successful group commit the writer hands the
//! documents it just committed (replays excluded) to the `ward-tail`
//! thread, which indexes them into a small in-memory tantivy index and
//! broadcasts it. Each subscriber runs its own compiled query against that
//! index. So a tail matches exactly what a search would (same compiler,
//! same analyzers, same `_flat`, `_ip` and column semantics), with no second
//! implementation of the query language over JSON, and only committed
//! records are shown. The cost is paid only while someone tails: the
//! writer clones documents only when there is a subscriber.
//!
//! Polling the partitions with a cursor was the alternative; it misses
//! records that arrive late (older than the cursor) and costs a search per
//! commit per subscriber over the whole day.
//!
//! Bounds: the hand-off to the tail thread holds a few commits; when the
//! thread falls behind, commits are skipped for the tail and counted, and
//! subscribers are told (`lagged`), as they are when they read too slowly
//! for the broadcast channel. Search stays the complete record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tantivy::query::Query as TantivyQuery;
use tantivy::schema::Value as _;
use tantivy::{Index, Searcher, TantivyDocument};
use tokio::sync::broadcast;

use crate::page::{PageCollector, SortOrder};
use crate::schema::WardSchema;
use crate::{Error, SearchHit, Store};

/// One commit's records, indexed in memory.
pub struct TailBatch {
    searcher: Searcher,
    /// Commits skipped for the tail before this one (the tail thread was behind).
    skipped: u64,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum TailEvent {
    /// Matching records of one commit, oldest first.
    Hits(Vec<SearchHit>),
    /// This many commits were not shown (the subscriber or the tail fell behind).
    Lagged(u64),
    /// The store is shutting down.
    Closed,
}

/// The writer's side: where committed documents go.
#[derive(Clone)]
pub(crate) struct TailFeed {
    pub(crate) broadcast: broadcast::Sender<Arc<TailBatch>>,
    tx: crossbeam_channel::Sender<Vec<TantivyDocument>>,
    skipped: Arc<AtomicU64>,
}

impl TailFeed {
    /// Starts the tail thread.
    pub(crate) fn start(schema: WardSchema) -> Result<TailFeed, Error> {
        let (broadcast, _) = broadcast::channel(64);
        let (tx, rx) = crossbeam_channel::bounded::<Vec<TantivyDocument>>(4);
        let skipped = Arc::new(AtomicU64::new(0));
        let feed = TailFeed {
            broadcast: broadcast.clone(),
            tx,
            skipped: skipped.clone(),
        };
        std::thread::Builder::new()
            .name("ward-tail".into())
            .spawn(move || {
                for docs in rx {
                    match index_in_memory(&schema, docs) {
                        Ok(searcher) => {
                            let batch = TailBatch {
                                searcher,
                                skipped: skipped.swap(0, Ordering::Relaxed),
                            };
                            let _ = broadcast.send(Arc::new(batch));
                        }
                        Err(e) => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "tail could not index a commit");
                        }
                    }
                }
            })
            .map_err(|e| Error::io(std::path::Path::new("ward-tail thread"), e))?;
        Ok(feed)
    }

    /// Whether anyone tails (the writer clones documents only then).
    pub(crate) fn wanted(&self) -> bool {
        self.broadcast.receiver_count() > 0
    }

    /// Hands over one commit's documents; never blocks the writer.
    pub(crate) fn publish(&self, docs: Vec<TantivyDocument>) {
        if docs.is_empty() {
            return;
        }
        if self.tx.try_send(docs).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("tail is behind; a commit is not shown to live tails");
        }
    }
}

fn index_in_memory(schema: &WardSchema, docs: Vec<TantivyDocument>) -> Result<Searcher, Error> {
    let index = Index::create_in_ram(schema.schema.clone());
    WardSchema::register_tokenizers(&index);
    // tantivy's smallest writer budget.
    let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, 15_000_000)?;
    for doc in docs {
        writer.add_document(doc)?;
    }
    writer.commit()?;
    Ok(index.reader()?.searcher())
}

/// A live tail of one query.
pub struct TailSubscription {
    rx: broadcast::Receiver<Arc<TailBatch>>,
    query: Box<dyn TantivyQuery>,
    schema: WardSchema,
    /// A batch held back while a `Lagged` was reported.
    pending: Option<Arc<TailBatch>>,
}

impl Store {
    /// Subscribes to the records committed from now on that match `query`
    /// (and the namespace scope).
    pub fn tail(
        &self,
        query: &str,
        namespaces: Option<&[String]>,
    ) -> Result<TailSubscription, Error> {
        let query = self.compile_request(query, None, None, namespaces)?;
        Ok(TailSubscription {
            rx: self.tail_feed().broadcast.subscribe(),
            query,
            schema: self.schema().clone(),
            pending: None,
        })
    }
}

impl TailSubscription {
    /// Waits for the next commit with matching records.
    pub async fn next(&mut self) -> TailEvent {
        loop {
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.rx.recv().await {
                    Ok(batch) if batch.skipped > 0 => {
                        let skipped = batch.skipped;
                        self.pending = Some(batch);
                        return TailEvent::Lagged(skipped);
                    }
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(n)) => return TailEvent::Lagged(n),
                    Err(broadcast::error::RecvError::Closed) => return TailEvent::Closed,
                },
            };
            match self.matches(&batch) {
                Ok(hits) if hits.is_empty() => continue,
                Ok(hits) => return TailEvent::Hits(hits),
                Err(e) => tracing::warn!(error = %e, "tail query failed on a commit"),
            }
        }
    }

    fn matches(&self, batch: &TailBatch) -> Result<Vec<SearchHit>, Error> {
        let searcher = &batch.searcher;
        let limit = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        let collector = PageCollector {
            limit,
            order: SortOrder::Oldest,
            after: None,
        };
        let (_, _, hits) = searcher.search(&self.query, &collector)?;
        let mut out = Vec::with_capacity(hits.len());
        for (_, address) in hits {
            let doc: TantivyDocument = searcher.doc(address)?;
            let bytes = doc
                .get_first(self.schema.source_doc)
                .and_then(|v| v.as_bytes())
                .unwrap_or(b"{}");
            let raw = serde_json::value::RawValue::from_string(
                String::from_utf8_lossy(bytes).into_owned(),
            )
            .map_err(|e| Error::InvalidRequest(format!("stored record is not JSON: {e}")))?;
            out.push(raw);
        }
        Ok(out)
    }
}
