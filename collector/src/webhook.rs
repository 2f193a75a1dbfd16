//! The collector's audit webhook (`--audit-webhook ADDR`): the API server's
//! webhook backend POSTs `EventList` bodies to `/api/v1/k8s/audit`, and the
//! collector ships them like lines read from files.
//!
//! The answer waits until the batch is durable, acknowledged by the indexer
//! or written to the spool: a 2xx tells the API server it may forget the
//! events, so nothing earlier may say so. 400 (with the reason) for a body
//! that is not audit JSON, 413 over the size bound, 503 when the batch could
//! not be made durable (the API server retries).

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
    let app = Router::new()
        .route(
            "/api/v1/k8s/audit",
            post(receive)
                .layer(DefaultBodyLimit::max(config.webhook_max_body_bytes))
                .layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        reject_declared_oversize(limit, request, next)
                    },
                )),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(hook);
    tracing::info!(listen = ?listener.local_addr().ok(), "audit webhook listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Stopped(format!("audit webhook: {e}")))
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
