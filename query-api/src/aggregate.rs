//! `GET /api/v1/aggregate?q=&start=&end=&histogram=auto|<interval>&terms=<field>&size=N&include_ward=`.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use ward_indexer::Cancel;
use ward_indexer::aggregate::{AggregateRequest, AggregateResponse, parse_interval};

use crate::auth::Caller;
use crate::search::{parse_time, without_ward_trail};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AggregateParams {
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    histogram: Option<String>,
    terms: Option<String>,
    size: Option<usize>,
    #[serde(default)]
    include_ward: bool,
}

pub(crate) async fn aggregate(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AggregateParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AggregateResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let histogram = params
        .histogram
        .as_deref()
        .map(parse_interval)
        .transpose()?;
    let terms = params
        .terms
        .filter(|t| !t.is_empty())
        .map(|field| (field, params.size.unwrap_or(10)));
    if histogram.is_none() && terms.is_none() && params.size.is_some() {
        return Err(ApiError::BadRequest("size needs terms=<field>".into()));
    }
    let cancel = Cancel::new();
    let _cancel_on_drop = cancel.on_drop();
    let request = AggregateRequest {
        query: without_ward_trail(params.q, params.include_ward)?,
        start: parse_time("start", params.start.as_deref())?,
        end: parse_time("end", params.end.as_deref())?,
        namespaces: caller.namespaces.clone(),
        histogram,
        terms,
        cancel,
    };
    let response = state.store.aggregate(request).await?;
    caller.record_count(response.total);
    Ok(Json(response))
}
