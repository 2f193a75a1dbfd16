//! Ward's HTTP API, served by the indexer process: batch ingest from
//! collectors, search, alerts and retro-hunts (`alerts`), health, and the
//! embedded dashboard.
//!
//! Handlers are thin: they parse parameters, call the store, and turn
//! [`ApiError`] into a status code in one place ([`error`]).

mod alerts;
pub mod auth;
mod error;
mod ingest;
mod metrics;
mod search;
pub mod tls;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ward_indexer::Store;

pub use alerts::AlertsApi;
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

/// Who may send events, and defaults for the audit webhook.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// When set, ingest endpoints need `Authorization: Bearer <token>` of
    /// an ingest (or admin) role; see [`auth`].
    pub tokens: Option<Arc<auth::Tokens>>,
    /// Cluster recorded on webhook events that do not name one (`?cluster=`).
    pub cluster: Option<String>,
    /// The alert store and live rules; alert routes answer 404 without it.
    pub alerts: Option<AlertsApi>,
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    config: Arc<ApiConfig>,
    options: Arc<ApiOptions>,
}

/// The whole API as one router.
pub fn router(store: Store, config: ApiConfig) -> Router {
    router_with(store, config, ApiOptions::default())
}

/// The whole API, with ingest authentication and webhook defaults, on one
/// listener: [`ingest_router`] and [`api_router`] merged.
pub fn router_with(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
        options: Arc::new(options),
    };
    ingest_routes(state.clone())
        .merge(api_routes(state.clone()))
        .fallback(get(dashboard))
        .with_state(state)
}

/// What collectors and the API server's audit webhook talk to: ingest
/// endpoints and `/healthz`. Served on its own listener (`--listen`, with
/// mutual TLS in a cluster) when the API has one of its own.
pub fn ingest_router(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
        options: Arc::new(options),
    };
    ingest_routes(state.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .with_state(state)
}

/// What people and Prometheus talk to: search, metrics, probes and the
/// dashboard (`--api-listen`).
pub fn api_router(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
        options: Arc::new(options),
    };
    api_routes(state.clone())
        .fallback(get(dashboard))
        .with_state(state)
}

fn ingest_routes(state: AppState) -> Router<AppState> {
    let body_limit = state.config.max_body_bytes;
    let ingest_auth = axum::middleware::from_fn_with_state(state.clone(), require_ingest_token);
    let declared_size =
        axum::middleware::from_fn_with_state(state.clone(), webhook::reject_declared_oversize);
    Router::new()
        .route(
            "/api/v1/ingest",
            post(ingest::ingest)
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(declared_size.clone())
                .layer(ingest_auth.clone()),
        )
        .route(
            "/api/v1/k8s/audit",
            post(webhook::audit)
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(declared_size)
                .layer(ingest_auth),
        )
}

fn api_routes(_state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/search", get(search::search))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/sinks", get(alerts::sinks))
        .route("/api/v1/alerts/{id}", get(alerts::get_one))
        .route("/api/v1/alerts/{id}/status", post(alerts::set_status))
        .route("/api/v1/rules/hunt", post(alerts::hunt))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
}

/// With a tokens file configured, only ingest and admin tokens may send events.
async fn require_ingest_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(tokens) = &state.options.tokens {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !tokens
            .role_of_header(header)
            .is_some_and(auth::Role::may_ingest)
        {
            tracing::info!(path = %request.uri().path(), "ingest without a valid token refused");
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn dashboard(uri: axum::http::Uri) -> Response {
    match ward_web::asset(uri.path()) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response(),
        None => ApiError::NotFound(uri.path().to_owned()).into_response(),
    }
}
