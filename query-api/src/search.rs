//! `GET /api/v1/search?q=&start=&end=&order=&limit=&cursor=`.

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
        query: params.q,
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
