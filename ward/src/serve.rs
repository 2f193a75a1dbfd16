//! Running the indexer's HTTP server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use ward_indexer::{IngestTap, Store, StoreConfig};
use ward_query_api::{AlertsApi, ApiConfig, ApiOptions, router_with};

use crate::detect::{self, Detection};

/// TLS and tokens of the indexer's listener (`--tls-cert`, `--tls-key`,
/// `--client-ca`, `--tokens`) and the webhook's default cluster.
#[derive(Debug, Default)]
pub struct Security {
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub options: ApiOptions,
}

/// Serves the API, with the built-in rules, until `shutdown` resolves;
/// then stops accepting, lets requests in flight finish, and commits what
/// the writer holds.
pub async fn indexer(
    data: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    indexer_with(
        data,
        listen,
        Security::default(),
        Detection::default(),
        shutdown,
    )
    .await
}

/// [`indexer`], with TLS, ingest tokens, rules and sinks as configured.
pub async fn indexer_with(
    data: &Path,
    listen: SocketAddr,
    mut security: Security,
    detection: Detection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let running = detect::start(data, &detection)?;
    let mut config = StoreConfig::new(data);
    config.tap = running
        .tap
        .clone()
        .map(|t| t as std::sync::Arc<dyn IngestTap>);
    let store = Store::open(config)
        .with_context(|| format!("cannot open the index in {}", data.display()))?;
    security.options.alerts = Some(AlertsApi {
        store: running.store.clone(),
        tap: running.tap.clone(),
    });
    // One shutdown for the server, the delivery loop and the rule watcher.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let delivery = tokio::spawn(running.dispatcher.run(stopped(stop_rx.clone())));
    let watcher = running.tap.clone().map(|tap| {
        tokio::spawn(detect::watch_rules(
            detection.clone(),
            tap,
            stopped(stop_rx.clone()),
        ))
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr().unwrap_or(listen), data = %data.display(), tls = security.tls.is_some(), tokens = security.options.tokens.is_some(), "indexer listening");
    let app = router_with(store.clone(), ApiConfig::default(), security.options);
    match security.tls {
        Some(tls) => {
            let listener = ward_query_api::tls::TlsListener::new(listener, tls)
                .context("cannot start the tls listener")?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("server failed")?;
        }
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")?,
    }
    store.shutdown().await;
    let _ = delivery.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    tracing::info!("indexer stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
