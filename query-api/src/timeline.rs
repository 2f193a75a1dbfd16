//! `GET /api/v1/timeline?entity=user:NAME|ip:ADDR|pod:NS/NAME&start=&end=&limit=&cursor=`:
//! an entity's activity, oldest first, across audit events and container
//! lines, with the entities it touched.
//!
//! The entity becomes a query (built here, with every value quoted, so a
//! name cannot inject query syntax):
//!
//! - `user:NAME`: `user.username` or `impersonatedUser.username` is NAME;
//! - `ip:ADDR`: `sourceIPs` holds ADDR (an address in any spelling, or a
//!   CIDR block);
//! - `pod:NS/NAME`: the pod's own container lines, and audit events about
//!   the pod (exec, attach, logs, create, delete…).
//!
//! `related` summarizes the events of the page: pods exec'd or attached
//! into, secrets read, source IPs, users, namespaces, each with a count.
//!
//! `alerts` are the stored alerts raised by the events of the page (an
//! alert's record id or one of its `auditID`s is among the page's), oldest
//! first, with rule, level and triage status. Each carries the time of the
//! event that raised it, so a client interleaves them with `events` by
//! `timestamp`; they page with the events that raised them. The alert
//! store is searched within the page's time span (widened by a day, since a
//! rule may take an event's time from another of its timestamps, and a
//! correlation's time from the end of its window), at most
//! [`ward_alerts::MAX_LIMIT`] alerts of that span.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ward_alerts::{AlertFilter, Status, StoredAlert};
use ward_indexer::document::lookup;
use ward_indexer::{Cancel, SearchHit, SearchRequest, SortOrder};

use crate::auth::Caller;
use crate::search::{parse_time, without_ward_trail};
use crate::{ApiError, AppState};

const DEFAULT_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineParams {
    entity: String,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    include_ward: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct TimelineResponse {
    entity: String,
    /// Events of the entity in the range (over all pages).
    total: u64,
    events: Vec<SearchHit>,
    cursor: Option<String>,
    related: Related,
    alerts: Vec<TimelineAlert>,
}

/// An alert raised by an event of the timeline.
#[derive(Debug, Serialize)]
pub(crate) struct TimelineAlert {
    id: u64,
    rule_id: String,
    title: String,
    level: ward_rules::Level,
    status: Status,
    /// Time of the event that raised it.
    timestamp: DateTime<Utc>,
    audit_ids: Vec<String>,
    event_ids: Vec<String>,
}

impl From<StoredAlert> for TimelineAlert {
    fn from(a: StoredAlert) -> Self {
        TimelineAlert {
            id: a.id,
            rule_id: a.rule_id,
            title: a.title,
            level: a.level,
            status: a.status,
            timestamp: a.timestamp,
            audit_ids: a.audit_ids,
            event_ids: a.event_ids,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Related {
    pods_exec: Vec<Count>,
    secrets_read: Vec<Count>,
    source_ips: Vec<Count>,
    users: Vec<Count>,
    namespaces: Vec<Count>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Count {
    value: String,
    count: u64,
}

/// A value as a quoted phrase of the query language.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The query of an entity.
pub(crate) fn entity_query(entity: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "entity={entity:?}: give user:NAME, ip:ADDR or pod:NAMESPACE/NAME"
        ))
    };
    let (kind, value) = entity.split_once(':').ok_or_else(bad)?;
    if value.is_empty() {
        return Err(bad());
    }
    Ok(match kind {
        "user" => format!(
            "user.username:{v} OR impersonatedUser.username:{v}",
            v = quoted(value)
        ),
        "ip" => format!("sourceIPs:{}", quoted(value)),
        "pod" => {
            let (ns, name) = value.split_once('/').ok_or_else(bad)?;
            if ns.is_empty() || name.is_empty() {
                return Err(bad());
            }
            let (ns, name) = (quoted(ns), quoted(name));
            format!(
                "(kubernetes.namespace:{ns} AND kubernetes.pod:{name}) OR \
                 (objectRef.resource:pods AND objectRef.namespace:{ns} AND objectRef.name:{name})"
            )
        }
        _ => return Err(bad()),
    })
}

pub(crate) async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TimelineParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TimelineResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let cancel = Cancel::new();
    let _cancel_on_drop = cancel.on_drop();
    let request = SearchRequest {
        query: without_ward_trail(entity_query(&params.entity)?, params.include_ward)?,
        start: parse_time("start", params.start.as_deref())?,
        end: parse_time("end", params.end.as_deref())?,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
        order: SortOrder::Oldest,
        cursor: params.cursor,
        namespaces: caller.namespaces.clone(),
        cancel,
    };
    let page = state.store.search(request).await?;
    caller.record_count(page.hits.len() as u64);
    let related = related(&page.hits);
    let alerts = alerts_of(&state, &caller, &page.hits).await?;
    Ok(Json(TimelineResponse {
        entity: params.entity,
        total: page.total,
        events: page.hits,
        cursor: page.cursor,
        related,
        alerts,
    }))
}

/// The stored alerts raised by these events, oldest first.
async fn alerts_of(
    state: &AppState,
    caller: &Caller,
    hits: &[SearchHit],
) -> Result<Vec<TimelineAlert>, ApiError> {
    let Some(api) = &state.options.alerts else {
        return Ok(Vec::new());
    };
    let mut ids = HashSet::new();
    let (mut first, mut last) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for hit in hits {
        let Ok(Value::Object(e)) = serde_json::from_str::<Value>(hit.get()) else {
            continue;
        };
        for path in ["ward.id", "auditID"] {
            if let Some(id) = lookup(&e, path).and_then(Value::as_str) {
                ids.insert(id.to_owned());
            }
        }
        let time = lookup(&e, "timestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        if let Some(t) = time {
            first = Some(first.map_or(t, |f| f.min(t)));
            last = Some(last.map_or(t, |l| l.max(t)));
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let filter = AlertFilter {
        start: Some(first - TimeDelta::days(1)),
        end: Some(last + TimeDelta::days(1)),
        limit: ward_alerts::MAX_LIMIT,
        namespaces: caller.namespaces.clone(),
        ..AlertFilter::default()
    };
    let store = api.store.clone();
    let listed = crate::alerts::blocking(move || store.list(&filter)).await?;
    let mut alerts: Vec<TimelineAlert> = listed
        .into_iter()
        .filter(|a| {
            a.event_ids
                .iter()
                .chain(&a.audit_ids)
                .any(|id| ids.contains(id))
        })
        .map(TimelineAlert::from)
        .collect();
    alerts.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    Ok(alerts)
}

fn related(hits: &[SearchHit]) -> Related {
    let mut pods_exec = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let mut ips = BTreeMap::new();
    let mut users = BTreeMap::new();
    let mut namespaces = BTreeMap::new();
    let bump = |m: &mut BTreeMap<String, u64>, k: String| *m.entry(k).or_insert(0) += 1;
    for hit in hits {
        let Ok(Value::Object(e)) = serde_json::from_str::<Value>(hit.get()) else {
            continue;
        };
        let s = |path: &str| lookup(&e, path).and_then(Value::as_str);
        let ns = s("objectRef.namespace").or_else(|| s("kubernetes.namespace"));
        if let Some(ns) = ns {
            bump(&mut namespaces, ns.to_owned());
        }
        if let Some(user) = s("user.username") {
            bump(&mut users, user.to_owned());
        }
        if let Some(Value::Array(list)) = lookup(&e, "sourceIPs") {
            for ip in list.iter().filter_map(Value::as_str) {
                bump(&mut ips, ip.to_owned());
            }
        }
        let object = || {
            format!(
                "{}/{}",
                s("objectRef.namespace").unwrap_or("-"),
                s("objectRef.name").unwrap_or("*")
            )
        };
        match (
            s("objectRef.resource"),
            s("objectRef.subresource"),
            s("verb"),
        ) {
            (Some("pods"), Some("exec" | "attach"), _) => bump(&mut pods_exec, object()),
            (Some("secrets"), None, Some("get" | "list" | "watch")) => bump(&mut secrets, object()),
            _ => {}
        }
    }
    let sorted = |m: BTreeMap<String, u64>| {
        let mut v: Vec<Count> = m
            .into_iter()
            .map(|(value, count)| Count { value, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        v
    };
    Related {
        pods_exec: sorted(pods_exec),
        secrets_read: sorted(secrets),
        source_ips: sorted(ips),
        users: sorted(users),
        namespaces: sorted(namespaces),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_become_quoted_queries() {
        assert_eq!(
            entity_query("user:system:admin").unwrap(),
            r#"user.username:"system:admin" OR impersonatedUser.username:"system:admin""#
        );
        assert_eq!(
            entity_query(r#"ip:1.2.3.4"#).unwrap(),
            r#"sourceIPs:"1.2.3.4""#
        );
        assert!(entity_query("pod:web").is_err());
        assert!(entity_query("host:x").is_err());
        assert!(entity_query("user:").is_err());
        assert_eq!(quoted(r#"a"b\"#), r#""a\"b\\""#);
    }
}
