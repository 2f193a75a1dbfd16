//! Search over partitions: queries compiled with the request's time range
//! and namespace scope, run on the partitions the range touches, merged
//! into one time-ordered page.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use tantivy::query::{BooleanQuery, Occur, Query as TantivyQuery, RangeQuery};
use tantivy::schema::Value as _;
use tantivy::{DocAddress, Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use super::{MAX_LIMIT, SearchRequest, SearchResponse, Store};
use crate::cancel::{Cancel, Cancellable};
use crate::page::{Cursor, PageCollector, SortOrder};
use crate::partition::Day;
use crate::schema::WardSchema;
use crate::{Error, compile, query};

/// A partition as search sees it.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) reader: IndexReader,
}

pub(super) type Views = Arc<RwLock<BTreeMap<Day, View>>>;

impl Store {
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
/// What those blocks take at most per segment.
pub(super) const DOC_STORE_CACHE_BYTES: usize =
    DOC_STORE_CACHE_BLOCKS * crate::partition::DOCSTORE_BLOCK_BYTES;

pub(super) fn reader_of(index: &Index) -> Result<IndexReader, Error> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
        .try_into()?)
}
