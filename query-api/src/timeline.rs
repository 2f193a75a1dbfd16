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

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ward_indexer::document::lookup;
use ward_indexer::{SearchHit, SearchRequest, SortOrder};

use crate::auth::Caller;
use crate::search::parse_time;
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
}

#[derive(Debug, Serialize)]
pub(crate) struct TimelineResponse {
    entity: String,
    /// Events of the entity in the range (over all pages).
    total: u64,
    events: Vec<SearchHit>,
    cursor: Option<String>,
    related: Related,
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
    let request = SearchRequest {
        query: entity_query(&params.entity)?,
        start: parse_time("start", params.start.as_deref())?,
        end: parse_time("end", params.end.as_deref())?,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
        order: SortOrder::Oldest,
        cursor: params.cursor,
        namespaces: caller.namespaces.clone(),
    };
    let page = state.store.search(request).await?;
    caller.record_count(page.hits.len() as u64);
    let related = related(&page.hits);
    Ok(Json(TimelineResponse {
        entity: params.entity,
        total: page.total,
        events: page.hits,
        cursor: page.cursor,
        related,
    }))
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
