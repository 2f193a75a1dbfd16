//! `POST /api/v1/ingest`: one zstd-compressed NDJSON batch of records.
//!
//! Answers 200 only once the batch is committed (see the store's crash
//! semantics); 400 for a body that is not a batch, 413 for one over the
//! size bounds, 503 when the writer cannot take it now. On any non-2xx the
//! sender keeps the batch.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use ward_event::wire;
use ward_indexer::IngestReceipt;

use crate::{ApiError, AppState};

pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IngestReceipt>, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    let limit = state.config.max_batch_bytes;
    let ndjson = tokio::task::spawn_blocking(move || match encoding.as_deref() {
        Some(wire::CONTENT_ENCODING) => Ok(wire::decompress(&body, limit)?),
        None | Some("identity") => {
            if body.len() > limit {
                return Err(ward_event::Error::TooLarge { limit }.into());
            }
            Ok(body.to_vec())
        }
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_owned())),
    })
    .await
    .map_err(|e| ApiError::BadRequest(e.to_string()))??;
    // The store refuses lines that are not records, and records with
    // source "ward": Ward's own events are written only by Ward.
    let receipt = state.store.ingest_ndjson(ndjson).await?;
    Ok(Json(receipt))
}

impl From<ward_event::Error> for ApiError {
    fn from(e: ward_event::Error) -> Self {
        ApiError::Store(ward_indexer::Error::Wire(e))
    }
}
