//! Retro-hunts: rules over already indexed audit events in a time range.
//!
//! The range is cut into windows of record time; each window is read from
//! the index newest first in pages ([`Store::search_blocking`]), then
//! evaluated oldest first through one [`Engine`], so correlations see the
//! events in time order across windows and memory is bounded by one
//! window. Pages overlap by one timestamp: the next page ends just after
//! the oldest timestamp of the previous one, and the records already taken
//! at that instant (by `ward.id`) are skipped, so none is missed or seen
//! twice even when many records share a timestamp.
//!
//! Alerts are returned, not stored.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use ward_indexer::tree::Object;
use ward_indexer::{SearchRequest, Store};
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
}

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
    if request.window <= TimeDelta::zero() {
        return Err(Error::InvalidRequest("window must be positive".into()));
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
        let to = (from + request.window).min(request.end);
        let mut events = read_window(index, from, to)?;
        events.reverse();
        for (time, id, raw) in &events {
            // A window keeps text; the tree is built when its turn comes.
            let Ok(event) = serde_json::from_str::<Object>(raw.get()) else {
                continue;
            };
            report.events += 1;
            let time = ward_rules::tree_event_time(&event).unwrap_or(*time);
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

/// A stored record's time, id, and text (parsed into a tree when its turn
/// comes, so that a window holds text, not trees).
type Record = (DateTime<Utc>, String, Box<RawValue>);

/// Every audit record in `[from, to)`, newest first.
fn read_window(
    index: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Record>, Error> {
    let mut records = Vec::new();
    let mut upper = to;
    // Records already taken at the oldest timestamp of the previous page.
    let mut boundary: Option<DateTime<Utc>> = None;
    let mut taken_at_boundary: HashSet<String> = HashSet::new();
    let mut skipped = 0u64;
    loop {
        let page = index.search_blocking(&SearchRequest {
            query: "source:audit".into(),
            start: Some(from),
            end: Some(upper),
            limit: PAGE,
            ..SearchRequest::default()
        })?;
        let n = page.hits.len();
        let mut progressed = false;
        let mut oldest = None;
        for raw in page.hits {
            let Some((time, id)) = time_and_id(&raw) else {
                skipped += 1;
                continue;
            };
            if boundary == Some(time) && !taken_at_boundary.insert(id.clone()) {
                continue;
            }
            progressed = true;
            oldest = Some(oldest.map_or(time, |o: DateTime<Utc>| o.min(time)));
            records.push((time, id, raw));
        }
        if n < PAGE {
            break;
        }
        let Some(oldest) = oldest.filter(|_| progressed) else {
            return Err(Error::InvalidRequest(format!(
                "more than {PAGE} records share the timestamp {upper}; narrow the range"
            )));
        };
        if boundary != Some(oldest) {
            boundary = Some(oldest);
            taken_at_boundary = records
                .iter()
                .filter(|(t, _, _)| *t == oldest)
                .map(|(_, id, _)| id.clone())
                .collect();
        }
        upper = oldest + TimeDelta::nanoseconds(1);
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "hunt skipped stored records without a time or not a JSON object"
        );
    }
    // Pages came newest first; the overlap can leave equal times out of
    // order, so sort (stable) to be sure.
    records.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(records)
}

/// A stored record's time and record id (`ward.id`), read without building
/// the record's tree: the tree is built once, when the record's turn comes.
fn time_and_id(raw: &RawValue) -> Option<(DateTime<Utc>, String)> {
    /// The fields paging needs; serde skips the others.
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        timestamp: Option<Cow<'a, str>>,
        #[serde(borrow)]
        ward: Option<WardHead<'a>>,
    }
    #[derive(Deserialize)]
    struct WardHead<'a> {
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
    }
    let head: Head = serde_json::from_str(raw.get()).ok()?;
    let time = DateTime::parse_from_rfc3339(&head.timestamp?)
        .ok()?
        .with_timezone(&Utc);
    let id = head
        .ward
        .and_then(|w| w.id)
        .unwrap_or_default()
        .into_owned();
    Some((time, id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
}
