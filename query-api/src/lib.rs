//! Ward's HTTP API, served by the indexer process: batch ingest from
//! collectors; search, aggregations, export, live tail and timelines for
//! analysts (behind [`access`]: roles, scopes, rate limits, timeouts and
//! the audit trail); alerts and retro-hunts (`alerts`); health, metrics,
//! the rules listing and `whoami` (what a token may do) for the
//! dashboard; the OpenAPI document and the embedded dashboard (served with
//! a Content-Security-Policy that allows nothing from elsewhere).
//!
//! Handlers are thin: they parse parameters, call the store, and turn
//! [`ApiError`] into a status code in one place ([`error`]).

pub mod access;
mod aggregate;
mod alerts;
pub mod auth;
mod error;
mod export;
mod ingest;
mod live_tail;
mod metrics;
mod origin;
mod rules;
mod search;
#[cfg(test)]
mod test_support;
mod timeline;
mod webhook;
mod whoami;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ward_indexer::Store;

pub use alerts::AlertsApi;
pub use error::ApiError;
/// The TLS listener (shared with the collector's audit webhook).
pub use ward_tls as tls;

/// Limits of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, as sent (compressed).
    pub max_body_bytes: usize,
    /// Largest batch accepted after decompression.
    pub max_batch_bytes: usize,
    /// Hits fetched per internal page of an export.
    pub export_page_size: usize,
    /// Longest a search, aggregation or timeline request may run (for
    /// export and tail: until the response starts).
    pub request_timeout: Duration,
    /// Per-token rate limit (requests per second; 0 disables) and burst,
    /// applied when tokens are configured.
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: u32,
    /// Record every API request as a `source:ward` event.
    pub audit_trail: bool,
    /// How many refused requests (401, 403, 429) the audit trail records
    /// one by one; the rest are summarised.
    pub refusal_limits: access::RefusalLimits,
    /// Live tails one caller (token; without tokens, everyone) may hold
    /// open, and all callers together; one more is a 429.
    pub max_tails_per_caller: usize,
    pub max_tails: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 128 * 1024 * 1024,
            export_page_size: 1_000,
            request_timeout: Duration::from_secs(30),
            rate_limit_per_sec: 20.0,
            rate_limit_burst: 40,
            audit_trail: true,
            refusal_limits: access::RefusalLimits::default(),
            max_tails_per_caller: 8,
            max_tails: 64,
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
    /// Serve `/metrics` without a token even when tokens are configured
    /// (`--metrics-open`, for a scraper on a trusted network).
    pub metrics_open: bool,
    /// When set, the `Host`s (`name[:port]`, lower case) browser-facing
    /// endpoints answer; others get a 421 (see [`origin`]).
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    config: Arc<ApiConfig>,
    options: Arc<ApiOptions>,
    limiter: Arc<access::RateLimiter>,
    refusals: Arc<access::RefusalTrail>,
    tails: Arc<live_tail::TailSlots>,
}

impl AppState {
    fn new(store: Store, config: ApiConfig, options: ApiOptions) -> AppState {
        AppState {
            store,
            limiter: Arc::new(access::RateLimiter::new(
                config.rate_limit_per_sec,
                config.rate_limit_burst,
            )),
            refusals: Arc::new(access::RefusalTrail::new(config.refusal_limits)),
            tails: live_tail::TailSlots::new(config.max_tails_per_caller, config.max_tails),
            config: Arc::new(config),
            options: Arc::new(options),
        }
    }
}

/// The whole API as one router.
pub fn router(store: Store, config: ApiConfig) -> Router {
    router_with(store, config, ApiOptions::default())
}

/// The whole API, with ingest authentication and webhook defaults, on one
/// listener: [`ingest_router`] and [`api_router`] merged.
pub fn router_with(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState::new(store, config, options);
    ingest_routes(state.clone())
        .merge(api_routes(state.clone()))
        .fallback(get(dashboard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::check_host,
        ))
        .layer(axum::middleware::from_fn(origin::require_json))
        .with_state(state)
}

/// What collectors and the API server's audit webhook talk to: ingest
/// endpoints and `/healthz`. Served on its own listener (`--listen`, with
/// mutual TLS in a cluster) when the API has one of its own.
pub fn ingest_router(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState::new(store, config, options);
    ingest_routes(state.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .layer(axum::middleware::from_fn(origin::require_json))
        .with_state(state)
}

/// What people and Prometheus talk to: search, metrics, probes and the
/// dashboard (`--api-listen`).
pub fn api_router(store: Store, config: ApiConfig, options: ApiOptions) -> Router {
    let state = AppState::new(store, config, options);
    api_routes(state.clone())
        .fallback(get(dashboard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::check_host,
        ))
        .layer(axum::middleware::from_fn(origin::require_json))
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

fn api_routes(state: AppState) -> Router<AppState> {
    use auth::Action;
    let guard = |action: Action, streaming: bool| {
        axum::middleware::from_fn_with_state(
            state.clone(),
            move |s: axum::extract::State<AppState>,
                  r: axum::extract::Request,
                  n: axum::middleware::Next| access::guard(s, action, streaming, r, n),
        )
    };
    Router::new()
        .route(
            "/api/v1/search",
            get(search::search).layer(guard(Action::Search, false)),
        )
        .route(
            "/api/v1/aggregate",
            get(aggregate::aggregate).layer(guard(Action::Aggregate, false)),
        )
        .route(
            "/api/v1/timeline",
            get(timeline::timeline).layer(guard(Action::Timeline, false)),
        )
        .route(
            "/api/v1/export",
            get(export::export).layer(guard(Action::Export, true)),
        )
        .route(
            "/api/v1/tail",
            get(live_tail::tail).layer(guard(Action::Tail, true)),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/metrics",
            get(metrics::metrics).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::require_token,
            )),
        )
        .route(
            "/api/v1/alerts",
            get(alerts::list).layer(guard(Action::Alerts, false)),
        )
        .route(
            "/api/v1/alerts/sinks",
            get(alerts::sinks).layer(guard(Action::Alerts, false)),
        )
        .route(
            "/api/v1/alerts/export",
            get(alerts::export).layer(guard(Action::Backup, true)),
        )
        .route(
            "/api/v1/alerts/{id}",
            get(alerts::get_one).layer(guard(Action::Alerts, false)),
        )
        .route(
            "/api/v1/alerts/{id}/status",
            post(alerts::set_status).layer(guard(Action::Triage, false)),
        )
        .route(
            "/api/v1/rules/hunt",
            post(alerts::hunt).layer(guard(Action::Triage, false)),
        )
        .route(
            "/api/v1/rules",
            get(rules::list).layer(guard(Action::Alerts, false)),
        )
        .route(
            "/api/v1/whoami",
            get(whoami::whoami).layer(guard(Action::Whoami, false)),
        )
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
            return access::refuse(&state, &request, None, ApiError::Unauthorized);
        }
    }
    next.run(request).await
}

/// The OpenAPI document of this API (hand-written; `tests/api/` checks the
/// live server against it with schemathesis).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// What the dashboard's pages may load: only their own origin's scripts,
/// styles, images and API. Nothing is fetched from elsewhere (the
/// dashboard works without internet access), and an injected inline script
/// or a framing page gets nowhere.
const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn dashboard(uri: axum::http::Uri) -> Response {
    match ward_web::asset(uri.path()) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                // Assets change with the binary; revalidate rather than
                // run a stale script against a newer API.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => ApiError::NotFound(uri.path().to_owned()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use ward_indexer::{Store, StoreConfig};

    use super::*;

    #[tokio::test]
    async fn dashboard_pages_carry_a_strict_content_security_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let app = router_with(store.clone(), ApiConfig::default(), ApiOptions::default());
        for (uri, ty) in [
            ("/", "text/html"),
            ("/alerts", "text/html"),
            ("/assets/app.js", "text/javascript"),
            ("/assets/app.css", "text/css"),
        ] {
            let resp = app
                .clone()
                .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{uri}");
            let h = resp.headers();
            assert!(h["content-type"].to_str().unwrap().starts_with(ty), "{uri}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert_eq!(h["x-content-type-options"], "nosniff");
        }
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/assets/nope.js")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        store.shutdown().await;
    }
}
