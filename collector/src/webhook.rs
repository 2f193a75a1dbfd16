//! The collector's audit webhook (`--audit-webhook ADDR`): the API server's
//! webhook backend POSTs `EventList` bodies to `/api/v1/k8s/audit`, and the
//! collector ships them like lines read from files.
//!
//! The answer waits until the batch is durable, acknowledged by the indexer
//! or written to the spool: a 2xx tells the API server it may forget the
//! events, so nothing earlier may say so. 400 (with the reason) for a body
//! that is not audit JSON, 413 over the size bound, 503 when the batch could
//! not be made durable (the API server retries).
//!
//! Like the indexer's listener, it takes TLS (`--audit-webhook-tls-cert`,
//! `--audit-webhook-tls-key`, with `--audit-webhook-client-ca` to require
//! the API server's client certificate) and a bearer token
//! (`--audit-webhook-token-file`, compared in constant time, never
//! logged): without them anyone who reaches the port can add audit events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::metrics::Metrics;
use crate::tail::{Batch, Body};

/// The audit webhook's TLS and token, read at start.
pub(crate) struct Guard {
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    token: Option<Vec<u8>>,
}

impl Guard {
    /// Reads the certificate, key, client CA and token files the config
    /// names (so a bad one fails the start).
    pub(crate) fn load(config: &crate::CollectorConfig) -> Result<Guard, Error> {
        let tls = match &config.audit_webhook_tls {
            Some((cert, key)) => Some(
                ward_tls::server_config(cert, key, config.audit_webhook_client_ca.as_deref())
                    .map_err(|e| Error::Config(format!("audit webhook tls: {e}")))?,
            ),
            None if config.audit_webhook_client_ca.is_some() => {
                return Err(Error::Config(
                    "the audit webhook's client CA needs its tls certificate and key".into(),
                ));
            }
            None => None,
        };
        let token = match &config.audit_webhook_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Error::Config(format!("{} holds no token", path.display())));
                }
                Some(token.as_bytes().to_vec())
            }
            None => None,
        };
        Ok(Guard { tls, token })
    }
}

/// 401 unless the request carries the configured token.
async fn require_token(
    token: std::sync::Arc<Vec<u8>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use subtle::ConstantTimeEq;
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default();
    if bool::from(presented.ct_eq(token.as_slice())) {
        return next.run(request).await;
    }
    tracing::info!("audit webhook request without the configured token refused");
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required\n",
    )
        .into_response()
}

#[derive(Clone)]
struct Hook {
    batches: mpsc::Sender<Batch>,
    cluster: Option<String>,
    node: String,
    metrics: Arc<Metrics>,
}

/// Binds the webhook listener (so that a bad address fails at start).
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))
}

/// Serves the webhook until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    guard: Guard,
    batches: mpsc::Sender<Batch>,
    config: &crate::CollectorConfig,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let hook = Hook {
        batches,
        cluster: config.cluster.clone(),
        node: config.node.clone(),
        metrics,
    };
    let limit = config.webhook_max_body_bytes;
    let mut receive_route = post(receive)
        .layer(DefaultBodyLimit::max(config.webhook_max_body_bytes))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                reject_declared_oversize(limit, request, next)
            },
        ));
    if let Some(token) = guard.token {
        let token = Arc::new(token);
        receive_route = receive_route.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                require_token(token.clone(), request, next)
            },
        ));
    }
    let app = Router::new()
        .route("/api/v1/k8s/audit", receive_route)
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(hook);
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        tls = guard.tls.is_some(),
        "audit webhook listening"
    );
    let stopped = |e: std::io::Error| Error::Stopped(format!("audit webhook: {e}"));
    match guard.tls {
        Some(tls) => {
            let listener = ward_tls::TlsListener::new(listener, tls).map_err(stopped)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(stopped)
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(stopped),
    }
}

/// 413 at once when the declared `Content-Length` is over the bound,
/// rather than after reading that much.
async fn reject_declared_oversize(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {limit} bytes\n"),
        )
            .into_response();
    }
    next.run(request).await
}

async fn receive(State(hook): State<Hook>, body: Bytes) -> (StatusCode, String) {
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n".into());
    };
    let mut writer =
        match ward_event::audit::webhook_batch(text, hook.cluster.as_deref(), Some(&hook.node)) {
            Ok(w) => w,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
    let records = writer.records();
    if records == 0 {
        return (StatusCode::OK, "0 events\n".into());
    }
    let (durable_tx, durable_rx) = oneshot::channel();
    let batch = Batch {
        body: Body::Ndjson(writer.take()),
        records,
        positions: Vec::new(),
        durable: Some(durable_tx),
    };
    if hook.batches.send(batch).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "collector stopping\n".into(),
        );
    }
    match durable_rx.await {
        Ok(true) => {
            hook.metrics
                .webhook_events
                .fetch_add(records as u64, Ordering::Relaxed);
            tracing::debug!(records, "audit webhook batch durable");
            (StatusCode::OK, format!("{records} events\n"))
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "events could not be made durable; send them again\n".into(),
        ),
    }
}

/// Serves `GET /metrics` (Prometheus text) until `shutdown` resolves.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tracing::info!(listen = ?listener.local_addr().ok(), "metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Stopped(format!("metrics: {e}")))
}
