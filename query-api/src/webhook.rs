//! `POST /api/v1/k8s/audit`: the Kubernetes API server's audit webhook
//! backend sends `EventList` bodies here (see `deploy/audit/README.md`).
//!
//! Each event becomes a record with source `audit`, the cluster from
//! `?cluster=` (else the indexer's `--cluster`), and the id
//! `audit:<auditID>:<stage>`, so that a body the API server sends again
//! after a lost answer carries the same ids. The answer is 200 only after
//! the store committed the events; 400 with the reason for a body that is
//! not audit JSON, 413 over the body size bound, 503 when the store cannot
//! take them now (the API server retries).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::Deserialize;
use ward_indexer::IngestReceipt;

use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub(crate) struct WebhookParams {
    cluster: Option<String>,
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    params: Result<Query<WebhookParams>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<IngestReceipt>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let cluster = params
        .cluster
        .filter(|c| !c.is_empty())
        .or_else(|| state.options.cluster.clone());
    let ndjson = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
        let mut batch = ward_event::audit::webhook_batch(text, cluster.as_deref(), None)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok::<_, ApiError>(batch.take())
    })
    .await
    .map_err(|e| ApiError::BadRequest(e.to_string()))??;
    let receipt = state.store.ingest_ndjson(ndjson).await?;
    tracing::debug!(events = receipt.records, "audit webhook batch committed");
    Ok(Json(receipt))
}

/// Answers 413 at once when the declared `Content-Length` is over the body
/// bound, instead of reading the body up to the bound first.
pub(crate) async fn reject_declared_oversize(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = state.config.max_body_bytes;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::from(ward_event::Error::TooLarge { limit }).into_response();
    }
    next.run(request).await
}
