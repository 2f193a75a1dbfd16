//! `GET /api/v1/search?q=&start=&end=&order=&limit=&cursor=&include_ward=`.
//!
//! Ward's own API audit trail (`source:ward`) is kept and searchable, but
//! it is left out of every query that does not ask for it (one that names
//! `source:ward`, or `include_ward=true`): search, aggregations, export,
//! live tail and timelines all run [`without_ward_trail`].

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use ward_indexer::{Cancel, SearchRequest, SearchResponse, SortOrder};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// Page size when the request names none.
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    order: Option<SortOrder>,
    cursor: Option<String>,
    #[serde(default)]
    include_ward: bool,
}

pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // Dropped with this future (the request timed out, the client left):
    // the search on the blocking pool then stops.
    let cancel = Cancel::new();
    let _cancel_on_drop = cancel.on_drop();
    let request = SearchRequest {
        query: without_ward_trail(params.q, params.include_ward)?,
        start: parse_time("start", params.start.as_deref())?,
        end: parse_time("end", params.end.as_deref())?,
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
        order: params.order.unwrap_or_default(),
        cursor: params.cursor,
        namespaces: caller.namespaces.clone(),
        cancel,
    };
    let response = state.store.search(request).await?;
    caller.record_count(response.hits.len() as u64);
    Ok(Json(response))
}

pub(crate) fn parse_time(
    name: &str,
    value: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadRequest(format!("{name}={v:?} is not an RFC 3339 time")))
        })
        .transpose()
}

/// The query as run: `q`, and unless it asks for them (names
/// `source:ward`, in any spelling, or `include` is set), not the
/// `source:ward` records of Ward's API audit trail. A bad query is
/// refused here with its own positions.
pub(crate) fn without_ward_trail(q: String, include: bool) -> Result<String, ApiError> {
    if include {
        return Ok(q);
    }
    let parsed = ward_indexer::query::parse(&q)?;
    if parsed.mentions("source", ward_event::SourceKind::Ward.as_str()) {
        return Ok(q);
    }
    Ok(if parsed == ward_indexer::query::Query::All {
        "NOT source:ward".to_owned()
    } else {
        format!("NOT source:ward AND ({q})")
    })
}
