//! Retro-hunts: rules over already indexed audit events in a time range.
//!
//! The range is cut into windows of record time; each window is read from
//! the index newest first in pages ([`Store::page_blocking`] with the
//! store's cursor, which pages by the index's own (time, `_tie`) order, so
//! no record is skipped or seen twice even when many share a timestamp or
//! a record's own `timestamp` field differs from its indexed time), then
//! evaluated oldest first through one [`Engine`], so correlations see the
//! events in time order across windows and memory is bounded by one
//! window.
//!
//! A hunt reads only what its caller may search (the namespace scope), and
//! stops when its [`Cancel`] is cancelled (the request timed out, the
//! client left). Its window and alert count are bounded ([`MAX_WINDOW`],
//! [`MAX_ALERTS`]).
//!
//! Alerts are returned, not stored.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use ward_indexer::tree::{self, Node, Object};
use ward_indexer::{Cancel, SearchHit, SearchRequest, SortOrder, Store};
use ward_rules::{Alert, Engine, RuleSet};

use crate::error::Error;

/// Records read per page.
const PAGE: usize = 5_000;

/// What to hunt.
#[derive(Debug, Clone)]
pub struct HuntRequest {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Length of one window of record time.
    pub window: TimeDelta,
    /// Stop after this many alerts (the answer says it was truncated).
    pub max_alerts: usize,
    /// The caller's namespace scope: only these namespaces' events are read.
    pub namespaces: Option<Vec<String>>,
    /// Stops the hunt between pages and events once cancelled.
    pub cancel: Cancel,
}

/// Longest window (a window's events are held in memory at once).
pub const MAX_WINDOW: TimeDelta = TimeDelta::days(1);

/// Most alerts one hunt may return.
pub const MAX_ALERTS: usize = 100_000;

/// One alert of a hunt, with the record that raised it.
#[derive(Debug, Clone, Serialize)]
pub struct HuntAlert {
    #[serde(flatten)]
    pub alert: Alert,
    pub event_id: String,
}

/// Most windows one hunt searches (a year of one-minute windows).
pub const MAX_WINDOWS: i64 = 525_600;

/// What a hunt found.
#[derive(Debug, Clone, Serialize)]
pub struct HuntReport {
    /// Audit records evaluated.
    pub events: u64,
    pub alerts: Vec<HuntAlert>,
    /// True when `max_alerts` stopped the hunt early.
    pub truncated: bool,
}

/// Runs `rules` over the audit records indexed in `[start, end)`. Blocking.
pub fn hunt(index: &Store, rules: RuleSet, request: &HuntRequest) -> Result<HuntReport, Error> {
    if request.end <= request.start {
        return Err(Error::InvalidRequest("end must be after start".into()));
    }
    if request.window <= TimeDelta::zero() || request.window > MAX_WINDOW {
        return Err(Error::InvalidRequest(format!(
            "window must be positive and at most {} seconds",
            MAX_WINDOW.num_seconds()
        )));
    }
    if request.max_alerts > MAX_ALERTS {
        return Err(Error::InvalidRequest(format!(
            "max_alerts must be at most {MAX_ALERTS}"
        )));
    }
    // Each window is one search: a tiny window over a long range would keep
    // a blocking thread busy long after the request timed out.
    let windows = (request.end - request.start).num_seconds() / request.window.num_seconds().max(1);
    if windows > MAX_WINDOWS {
        return Err(Error::InvalidRequest(format!(
            "the range holds {windows} windows; at most {MAX_WINDOWS}: use a longer window"
        )));
    }
    let mut engine = Engine::new(rules);
    let mut report = HuntReport {
        events: 0,
        alerts: Vec::new(),
        truncated: false,
    };
    let mut out = Vec::new();
    let mut from = request.start;
    while from < request.end {
        let to = from
            .checked_add_signed(request.window)
            .map_or(request.end, |t| t.min(request.end));
        let mut events = read_window(index, request, from, to)?;
        events.reverse();
        for (n, raw) in events.iter().enumerate() {
            if n % 1024 == 1023 && request.cancel.is_cancelled() {
                return Err(ward_indexer::Error::Cancelled.into());
            }
            // A window keeps text; the tree is built when its turn comes.
            let Ok(event) = serde_json::from_str::<Object>(raw.get()) else {
                continue;
            };
            report.events += 1;
            let Some(time) = ward_rules::tree_event_time(&event).or_else(|| record_time(&event))
            else {
                continue;
            };
            let id = event
                .get("ward")
                .and_then(Node::as_members)
                .and_then(|w| tree::get(w, "id"))
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_owned();
            out.clear();
            engine.process_tree(&event, time, &mut out);
            for alert in out.drain(..) {
                if report.alerts.len() >= request.max_alerts {
                    report.truncated = true;
                    return Ok(report);
                }
                report.alerts.push(HuntAlert {
                    alert,
                    event_id: id.clone(),
                });
            }
        }
        from = to;
    }
    Ok(report)
}

/// Every audit record in `[from, to)` the caller may read, newest first,
/// as stored text (parsed into a tree when its turn comes, so that a
/// window holds text, not trees).
fn read_window(
    index: &Store,
    request: &HuntRequest,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<SearchHit>, Error> {
    let mut records = Vec::new();
    let mut page_request = SearchRequest {
        query: "source:audit".into(),
        start: Some(from),
        end: Some(to),
        limit: PAGE,
        order: SortOrder::Newest,
        cursor: None,
        namespaces: request.namespaces.clone(),
        cancel: request.cancel.clone(),
    };
    loop {
        if request.cancel.is_cancelled() {
            return Err(ward_indexer::Error::Cancelled.into());
        }
        let page = index.page_blocking(&page_request, false)?;
        records.extend(page.hits);
        match page.cursor {
            Some(cursor) => page_request.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(records)
}

/// The stored record's own time (`timestamp`), for an event whose rule
/// time cannot be read.
fn record_time(event: &Object<'_>) -> Option<DateTime<Utc>> {
    let text = event.get("timestamp")?.as_str()?;
    Some(DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use super::*;

    /// Regression: a one-second window over centuries (what an API fuzzer
    /// sends) ran billions of searches on a blocking thread.
    #[test]
    fn a_range_of_too_many_windows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ward_indexer::StoreConfig::new(dir.path())).unwrap();
        let (rules, _) = ward_rules::RuleSet::builtin();
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let request = |years: i64, window_secs: i64| HuntRequest {
            start,
            end: start + TimeDelta::days(365 * years),
            window: TimeDelta::seconds(window_secs),
            max_alerts: 10,
            namespaces: None,
            cancel: Cancel::new(),
        };
        let refused = hunt(&store, rules.clone(), &request(100, 1));
        assert!(
            matches!(&refused, Err(Error::InvalidRequest(m)) if m.contains("windows")),
            "{refused:?}"
        );
        let report = hunt(&store, rules, &request(2, 86_400)).unwrap();
        assert_eq!(report.events, 0);
        assert!(!report.truncated);
    }

    fn get_rule() -> RuleSet {
        let text = "title: Any get\nid: any-get\nlevel: low\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s: {verb: get}\n  condition: s\n";
        let (rules, errors) = RuleSet::from_sources(&[("get.yml".to_owned(), text.to_owned())]);
        assert!(errors.is_empty(), "{errors:?}");
        rules
    }

    /// An audit record at `at` whose own `timestamp` is cut to the second
    /// (as the API server's `metadata`-level events often are).
    fn audit_at(i: usize, at: DateTime<Utc>, namespace: &str) -> ward_event::wire::DecodedRecord {
        let second = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let event = serde_json::json!({
            "kind": "Event", "auditID": format!("a-{i}"), "stage": "ResponseComplete",
            "verb": "get", "timestamp": second,
            "objectRef": {"resource": "pods", "namespace": namespace, "name": format!("p{i}")},
            "user": {"username": format!("user-{namespace}")},
        });
        let record = serde_json::json!({
            "id": format!("audit:a-{i}"), "source": "audit", "timestamp": at, "event": event,
        });
        serde_json::from_value(record).unwrap()
    }

    fn whole_range(namespaces: Option<Vec<String>>) -> HuntRequest {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        HuntRequest {
            start,
            end: start + TimeDelta::days(1),
            window: TimeDelta::hours(1),
            max_alerts: MAX_ALERTS,
            namespaces,
            cancel: Cancel::new(),
        }
    }

    /// Issue 15: pages that ended at a record's own second-truncated
    /// `timestamp` skipped records (16 of 20,000) indexed later within
    /// that second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hunt_paging_skips_no_event_sharing_a_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ward_indexer::StoreConfig::new(dir.path())).unwrap();
        let request = whole_range(None);
        let n = 20_000;
        let records: Vec<_> = (0..n)
            .map(|i| {
                // 7 records a second, 100 ms apart: their own times share
                // the second, their indexed times differ, and a page
                // (5,000) ends within a second.
                let at = request.start
                    + TimeDelta::seconds((i / 7) as i64)
                    + TimeDelta::milliseconds((i % 7) as i64 * 100);
                audit_at(i, at, "shop")
            })
            .collect();
        for chunk in records.chunks(5_000) {
            store.ingest(chunk.to_vec()).await.unwrap();
        }
        let index = store.clone();
        let report = tokio::task::spawn_blocking(move || hunt(&index, get_rule(), &request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.events, n as u64);
        let ids: HashSet<&str> = report.alerts.iter().map(|a| a.event_id.as_str()).collect();
        assert_eq!(ids.len(), n, "every event once");
        store.shutdown().await;
    }

    /// Issue 15: a hunt reads only the caller's namespaces, and stops once
    /// its request is cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hunt_reads_only_the_scope_and_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ward_indexer::StoreConfig::new(dir.path())).unwrap();
        let start = whole_range(None).start;
        let records = vec![
            audit_at(1, start + TimeDelta::seconds(1), "shop"),
            audit_at(2, start + TimeDelta::seconds(2), "payments"),
        ];
        store.ingest(records).await.unwrap();
        let index = store.clone();
        let (scoped, cancelled) = tokio::task::spawn_blocking(move || {
            let scoped = hunt(&index, get_rule(), &whole_range(Some(vec!["shop".into()])));
            let request = whole_range(None);
            request.cancel.cancel();
            (scoped, hunt(&index, get_rule(), &request))
        })
        .await
        .unwrap();
        let scoped = scoped.unwrap();
        assert_eq!(scoped.events, 1);
        assert_eq!(scoped.alerts[0].event_id, "audit:a-1");
        assert!(
            matches!(cancelled, Err(Error::Index(ward_indexer::Error::Cancelled))),
            "{cancelled:?}"
        );
        store.shutdown().await;
    }

    #[test]
    fn hunt_bounds_are_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ward_indexer::StoreConfig::new(dir.path())).unwrap();
        let mut wide = whole_range(None);
        wide.window = MAX_WINDOW + TimeDelta::seconds(1);
        let mut many = whole_range(None);
        many.max_alerts = MAX_ALERTS + 1;
        for request in [wide, many] {
            let refused = hunt(&store, get_rule(), &request);
            assert!(
                matches!(refused, Err(Error::InvalidRequest(_))),
                "{refused:?}"
            );
        }
    }
}
