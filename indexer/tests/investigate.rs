//! Investigation features of the store on real indexes: cursor pagination
//! while ingest goes on, aggregations within a budget, and live tail.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use ward_event::wire::DecodedRecord;
use ward_event::{Record, SourceKind};
use ward_indexer::aggregate::{AggregateRequest, AggregationBudget, Interval};
use ward_indexer::live_tail::TailEvent;
use ward_indexer::{Error, SearchRequest, SortOrder, Store, StoreConfig};

/// 2026-11-23T23:00:00Z: an hour before midnight, so that records spread
/// over two days (two partitions).
const T0: i64 = 1_795_474_800;

fn record(id: &str, secs: i64, nanos: u32, verb: &str, ns: &str) -> DecodedRecord {
    let event = json!({
        "verb": verb,
        "user": {"username": format!("user-{}", id.len() % 3)},
        "objectRef": {"resource": "pods", "namespace": ns},
        "sourceIPs": ["10.0.0.1"],
    });
    Record {
        id: id.into(),
        source: SourceKind::Audit,
        timestamp: DateTime::from_timestamp(secs, nanos).unwrap(),
        cluster: None,
        node: None,
        flags: vec![],
        parse_error: None,
        file: None,
        offset: None,
        event: event.as_object().unwrap().clone(),
    }
}

fn id_of(hit: &serde_json::value::RawValue) -> (String, DateTime<Utc>) {
    let v: Value = serde_json::from_str(hit.get()).unwrap();
    (
        v["ward"]["id"].as_str().unwrap().to_owned(),
        v["timestamp"].as_str().unwrap().parse().unwrap(),
    )
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.commit_interval = Duration::from_millis(20);
    c
}

/// Pages through every match with the cursor while another task ingests
/// older and newer records: every record present at the start is seen
/// exactly once, no record is seen twice, and the order holds across pages
/// and partitions, ties (same nanosecond) included.
async fn walk_while_ingesting(order: SortOrder) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // 600 records over two hours and two days, ten per second: many ties.
    let initial: Vec<DecodedRecord> = (0..600)
        .map(|i| record(&format!("r{i}"), T0 + i / 10 * 120, 0, "get", "a"))
        .collect();
    let initial_ids: BTreeSet<String> = initial.iter().map(|r| r.id.clone()).collect();
    store.ingest(initial).await.unwrap();
    assert!(store.partitions().len() >= 2);

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..40i64 {
                let batch = vec![
                    // Older than everything, newer than everything, and a
                    // tie with existing records.
                    record(&format!("old{round}"), T0 - 1_000 - round, 0, "get", "a"),
                    record(&format!("new{round}"), T0 + 100_000 + round, 0, "get", "a"),
                    record(
                        &format!("tie{round}"),
                        T0 + (round % 60) * 120,
                        0,
                        "get",
                        "a",
                    ),
                ];
                store.ingest(batch).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    let mut last_total = 0;
    loop {
        let page = store
            .search(SearchRequest {
                query: "verb:get".into(),
                limit: 7,
                order,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.hits.len() <= 7);
        assert!(page.total >= last_total, "totals keep counting every match");
        last_total = page.total;
        seen.extend(page.hits.iter().map(|h| id_of(h)));
        pages += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    writer.await.unwrap();
    assert!(pages > 80, "{pages} pages");
    let ids: Vec<&String> = seen.iter().map(|(id, _)| id).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no record is returned twice");
    for id in &initial_ids {
        assert!(unique.contains(id), "{id} skipped");
    }
    let in_order = seen.windows(2).all(|w| match order {
        SortOrder::Newest => w[0].1 >= w[1].1,
        SortOrder::Oldest => w[0].1 <= w[1].1,
    });
    assert!(in_order, "pages are in time order");
    // Concurrent records past the cursor's side are picked up: in a
    // newest-first walk the older ones, in an oldest-first walk the newer.
    let late = match order {
        SortOrder::Newest => "old",
        SortOrder::Oldest => "new",
    };
    let late_seen = ids.iter().filter(|id| id.starts_with(late)).count();
    assert!(
        late_seen > 0,
        "records ingested behind the cursor are reached"
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pages_neither_skip_nor_repeat_newest_first() {
    walk_while_ingesting(SortOrder::Newest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pages_neither_skip_nor_repeat_oldest_first() {
    walk_while_ingesting(SortOrder::Oldest).await;
}

#[tokio::test]
async fn last_page_has_no_cursor_and_bad_cursors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store
        .ingest(
            (0..10)
                .map(|i| record(&format!("r{i}"), T0 + i, 0, "get", "a"))
                .collect(),
        )
        .await
        .unwrap();
    let page = |cursor: Option<String>, order| {
        store.search(SearchRequest {
            query: "*".into(),
            limit: 5,
            order,
            cursor,
            ..Default::default()
        })
    };
    let first = page(None, SortOrder::Oldest).await.unwrap();
    assert_eq!(first.total, 10);
    assert_eq!(id_of(&first.hits[0]).0, "r0");
    let second = page(first.cursor.clone(), SortOrder::Oldest).await.unwrap();
    assert_eq!(second.hits.len(), 5);
    assert_eq!(second.cursor, None, "exactly two pages");
    assert_eq!(id_of(&second.hits[0]).0, "r5");
    assert!(matches!(
        page(first.cursor, SortOrder::Newest).await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        page(Some("garbage".into()), SortOrder::Newest).await,
        Err(Error::InvalidRequest(_))
    ));
    store.shutdown().await;
}

#[tokio::test]
async fn histograms_and_top_terms_merge_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    // 23:00 to 01:00 over midnight: 120 records a minute apart.
    let records: Vec<DecodedRecord> = (0..120)
        .map(|i| {
            let verb = match i % 6 {
                0..=2 => "get",
                3 | 4 => "list",
                _ => "delete",
            };
            record(&format!("r{i}"), T0 + i * 60, 0, verb, "a")
        })
        .collect();
    store.ingest(records).await.unwrap();
    assert_eq!(store.partitions().len(), 2);
    let start: DateTime<Utc> = DateTime::from_timestamp(T0, 0).unwrap();
    let end = start + chrono::Duration::hours(2);
    let response = store
        .aggregate(AggregateRequest {
            query: "*".into(),
            start: Some(start),
            end: Some(end),
            histogram: Some(Interval::Fixed(Duration::from_secs(1800))),
            terms: Some(("verb".into(), 2)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(response.total, 120);
    let h = response.histogram.unwrap();
    assert_eq!(h.interval, "30m");
    let counts: Vec<u64> = h.buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, vec![30, 30, 30, 30]);
    assert_eq!(h.buckets[2].start, "2026-11-24T00:00:00Z");
    let t = response.terms.unwrap();
    let top: Vec<(&str, u64)> = t
        .buckets
        .iter()
        .map(|b| (b.key.as_str(), b.count))
        .collect();
    assert_eq!(top, vec![("get", 60), ("list", 40)]);
    assert_eq!(t.other, 20);

    // Automatic interval: at most 200 buckets over the range.
    let auto = store
        .aggregate(AggregateRequest {
            query: "verb:delete".into(),
            start: Some(start),
            end: Some(end),
            histogram: Some(Interval::Auto),
            ..Default::default()
        })
        .await
        .unwrap();
    let h = auto.histogram.unwrap();
    assert_eq!(h.interval, "1m");
    assert_eq!(h.buckets.len(), 120);
    assert_eq!(h.buckets.iter().map(|b| b.count).sum::<u64>(), 20);

    // A field without a keyword column, too many buckets: clear errors.
    let err = store
        .aggregate(AggregateRequest {
            terms: Some(("requestURI".into(), 5)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("keyword column")),
        "{err}"
    );
    let err = store
        .aggregate(AggregateRequest {
            start: Some(start),
            end: Some(start + chrono::Duration::days(30)),
            histogram: Some(Interval::Fixed(Duration::from_secs(1))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Budget(_)), "{err}");
    store.shutdown().await;
}

#[tokio::test]
async fn an_aggregation_over_its_memory_budget_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.aggregation_budget = AggregationBudget {
        memory_bytes: 1_000,
        buckets: 65_000,
    };
    let store = Store::open(c).unwrap();
    store
        .ingest(
            (0..2_000)
                .map(|i| record(&format!("r{i}"), T0 + i, 0, &format!("verb{i}"), "a"))
                .collect(),
        )
        .await
        .unwrap();
    let err = store
        .aggregate(AggregateRequest {
            terms: Some(("verb".into(), 1_000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Budget(_)), "{err}");
    store.shutdown().await;
}

#[tokio::test]
async fn tail_sees_committed_matches_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut tail = store
        .tail("verb:delete AND objectRef.namespace:b", None)
        .unwrap();
    let mut scoped = store.tail("verb:delete", Some(&["a".to_owned()])).unwrap();
    assert!(store.tail("verb:(", None).is_err());
    store
        .ingest(vec![
            record("x1", T0, 0, "get", "b"),
            record("x2", T0 + 1, 0, "delete", "b"),
            record("x3", T0 + 2, 0, "delete", "a"),
        ])
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap();
    let TailEvent::Hits(hits) = event else {
        panic!("{event:?}")
    };
    let ids: Vec<String> = hits.iter().map(|h| id_of(h).0).collect();
    assert_eq!(ids, vec!["x2"]);
    let TailEvent::Hits(hits) = tokio::time::timeout(Duration::from_secs(10), scoped.next())
        .await
        .unwrap()
    else {
        panic!()
    };
    let ids: Vec<String> = hits.iter().map(|h| id_of(h).0).collect();
    assert_eq!(ids, vec!["x3"], "the namespace scope applies to tails");
    // A replay is not shown again.
    store
        .ingest(vec![record("x2", T0 + 1, 0, "delete", "b")])
        .await
        .unwrap();
    store
        .ingest(vec![record("x4", T0 + 3, 0, "delete", "b")])
        .await
        .unwrap();
    let TailEvent::Hits(hits) = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(id_of(&hits[0]).0, "x4");
    store.shutdown().await;
}

/// A cancelled request stops with `Error::Cancelled` (counted), whether it
/// was cancelled before it started, by its deadline, or while it ran; an
/// uncancelled one gives the full answer. (A cancel from another thread
/// mid-run made this test depend on thread scheduling; the API tests
/// cancel through a dropped request.)
#[tokio::test]
async fn cancelled_queries_stop_early() {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    use ward_indexer::Cancel;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    const RECORDS: u64 = 100_000;
    for chunk in 0..20 {
        let batch = (0..5_000)
            .map(|i| {
                let n = chunk * 5_000 + i;
                let verb = ["get", "list", "watch", "create"][n as usize % 4];
                record(&format!("c{n}"), T0 + n, 0, verb, "a")
            })
            .collect();
        store.ingest(batch).await.unwrap();
    }
    let terms = |cancel: Cancel| AggregateRequest {
        query: "*".into(),
        terms: Some(("verb".into(), 10)),
        histogram: Some(Interval::Fixed(Duration::from_secs(60))),
        cancel,
        ..AggregateRequest::default()
    };
    // The uncancelled time, warm (the first run also opens the columns).
    let mut uncancelled = Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let full = store.aggregate_blocking(&terms(Cancel::new())).unwrap();
        uncancelled = uncancelled.min(t0.elapsed());
        assert_eq!(full.total, RECORDS);
    }
    assert_eq!(store.stats().queries_cancelled.load(Ordering::Relaxed), 0);

    let cancelled = Cancel::new();
    cancelled.cancel();
    assert!(matches!(
        store.aggregate_blocking(&terms(cancelled.clone())),
        Err(Error::Cancelled)
    ));
    let search = SearchRequest {
        query: "verb:get".into(),
        limit: 10,
        cancel: cancelled,
        ..SearchRequest::default()
    };
    assert!(matches!(
        store.search_blocking(&search),
        Err(Error::Cancelled)
    ));
    let past = Cancel::with_deadline(Instant::now());
    assert!(matches!(
        store.aggregate_blocking(&terms(past)),
        Err(Error::Cancelled)
    ));
    assert_eq!(store.stats().queries_cancelled.load(Ordering::Relaxed), 3);

    // Cancelled once the aggregation is under way (by its match budget,
    // which trips at a look at the flag like a cancel from another thread
    // would, without depending on when that thread runs): it stops soon
    // after, having collected only part of the matches.
    let budget = 10_000;
    let cancel = Cancel::with_match_budget(budget);
    let outcome = store.aggregate_blocking(&terms(cancel.clone()));
    assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
    assert!(
        cancel.visited() >= budget && cancel.visited() < RECORDS / 2,
        "collected {} of {RECORDS} matches (full run: {uncancelled:?})",
        cancel.visited()
    );
    assert_eq!(store.stats().queries_cancelled.load(Ordering::Relaxed), 4);
    store.shutdown().await;
}
