//! Running the indexer's HTTP server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use ward_indexer::{Store, StoreConfig};
use ward_query_api::{ApiConfig, ApiOptions, router_with};

/// TLS and tokens of the indexer's listener (`--tls-cert`, `--tls-key`,
/// `--client-ca`, `--tokens`) and the webhook's default cluster.
#[derive(Debug, Default)]
pub struct Security {
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    pub options: ApiOptions,
}

/// Serves the API until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish, and commits what the writer holds.
pub async fn indexer(
    data: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    indexer_with(data, listen, Security::default(), shutdown).await
}

/// [`indexer`], with TLS and ingest tokens when configured.
pub async fn indexer_with(
    data: &Path,
    listen: SocketAddr,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(StoreConfig::new(data))
        .with_context(|| format!("cannot open the index in {}", data.display()))?;
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
