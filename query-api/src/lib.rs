//! Ward's HTTP API, served by the indexer process: batch ingest from
//! collectors, search, health, and the embedded dashboard.
//!
//! Handlers are thin: they parse parameters, call the store, and turn
//! [`ApiError`] into a status code in one place ([`error`]).

mod error;
mod ingest;
mod search;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ward_indexer::Store;

pub use error::ApiError;

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, as sent (compressed).
    pub max_body_bytes: usize,
    /// Largest batch accepted after decompression.
    pub max_batch_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 128 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    config: Arc<ApiConfig>,
}

/// The whole API as one router.
pub fn router(store: Store, config: ApiConfig) -> Router {
    let body_limit = config.max_body_bytes;
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    Router::new()
        .route(
            "/api/v1/ingest",
            post(ingest::ingest).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/api/v1/search", get(search::search))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .fallback(get(dashboard))
        .with_state(state)
}

async fn dashboard(uri: axum::http::Uri) -> Response {
    match ward_web::asset(uri.path()) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response(),
        None => ApiError::NotFound(uri.path().to_owned()).into_response(),
    }
}

/// What `/healthz` answers, for callers that wait for readiness.
pub const HEALTHY: StatusCode = StatusCode::OK;
