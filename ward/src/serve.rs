//! Running the indexer's HTTP server with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use std::sync::Arc;

use ward_indexer::{IngestTap, Store, StoreConfig};
use ward_query_api::access::ClientAddr;
use ward_query_api::{AlertsApi, ApiConfig, ApiOptions, api_router, ingest_router, router_with};

use crate::detect::{self, Detection};

/// TLS and tokens of the indexer's listeners (`--tls-cert`, `--tls-key`,
/// `--client-ca`, `--tokens`) and the webhook's default cluster.
#[derive(Debug, Default)]
pub struct Security {
    /// TLS of the ingest listener (with client certificates when `--client-ca`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS of the API listener: the same certificate, no client certificates
    /// (people, probes and Prometheus present none).
    pub api_tls: Option<Arc<rustls::ServerConfig>>,
    pub options: ApiOptions,
}

/// Everything `ward indexer` runs with.
pub struct Indexer {
    pub store: StoreConfig,
    /// Ingest (and, without `api_listen`, everything else).
    pub listen: SocketAddr,
    /// Search API, dashboard, probes and `/metrics` on a listener of their own.
    pub api_listen: Option<SocketAddr>,
    pub security: Security,
    /// Detection rules and alert sinks.
    pub detection: Detection,
    /// Limits of the API (rate limit, request timeout).
    pub api: ApiConfig,
    /// Serve without tokens on an address other hosts can reach
    /// (`--insecure-no-auth`); refused otherwise.
    pub insecure_no_auth: bool,
}

/// Serves the API, with the built-in rules, until `shutdown` resolves;
/// then stops accepting, lets requests in flight finish, and commits what
/// the writer holds.
pub async fn indexer(
    data: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_indexer(
        Indexer {
            store: StoreConfig::new(data),
            listen,
            api_listen: None,
            security: Security {
                options: ApiOptions {
                    allowed_hosts: crate::allowed_hosts(std::iter::once(listen), &[])?,
                    ..ApiOptions::default()
                },
                ..Security::default()
            },
            detection: Detection::default(),
            api: ApiConfig::default(),
            insecure_no_auth: false,
        },
        shutdown,
    )
    .await
}

/// [`indexer`], with every option.
pub async fn run_indexer(
    indexer: Indexer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_open_access(&indexer)?;
    let data = indexer.store.data_dir.clone();
    let running = detect::start(&data, &indexer.detection)?;
    let mut config = indexer.store;
    config.tap = running.tap.clone().map(|t| t as Arc<dyn IngestTap>);
    let store = Store::open(config)
        .with_context(|| format!("cannot open the index in {}", data.display()))?;
    // One shutdown for the servers, the delivery loop and the rule watcher.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let delivery = tokio::spawn(running.dispatcher.run(stopped()));
    let watcher = running.tap.clone().map(|tap| {
        tokio::spawn(detect::watch_rules(
            indexer.detection.clone(),
            tap,
            stopped(),
        ))
    });
    let Security {
        tls,
        api_tls,
        mut options,
    } = indexer.security;
    options.alerts = Some(AlertsApi {
        store: running.store.clone(),
        tap: running.tap.clone(),
    });
    let mut servers = tokio::task::JoinSet::new();
    match indexer.api_listen {
        None => {
            let app = router_with(store.clone(), indexer.api.clone(), options);
            servers.spawn(serve(indexer.listen, "api+ingest", app, tls, stopped()));
        }
        Some(api_listen) => {
            let ingest = ingest_router(store.clone(), indexer.api.clone(), options.clone());
            servers.spawn(serve(indexer.listen, "ingest", ingest, tls, stopped()));
            let api = api_router(store.clone(), indexer.api, options);
            servers.spawn(serve(api_listen, "api", api, api_tls, stopped()));
        }
    }
    tracing::info!(data = %data.display(), "indexer running");
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        let outcome = joined.context("server task panicked").and_then(|r| r);
        if let Err(e) = outcome {
            // One listener failing stops the others: a half-served indexer
            // would look healthy to one side and dead to the other.
            servers.abort_all();
            result = Err(e);
        }
    }
    store.shutdown().await;
    let _ = delivery.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    tracing::info!("indexer stopped");
    result
}

/// Without tokens every endpoint is open: said once at start, and refused
/// on an address other hosts can reach unless `--insecure-no-auth`.
fn check_open_access(indexer: &Indexer) -> anyhow::Result<()> {
    if indexer.security.options.tokens.is_some() {
        return Ok(());
    }
    let exposed: Vec<SocketAddr> = std::iter::once(indexer.listen)
        .chain(indexer.api_listen)
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if !exposed.is_empty() && !indexer.insecure_no_auth {
        anyhow::bail!(
            "refusing to serve without --tokens on {}, which other hosts can reach: every \
             endpoint (search, ingest, alerts) would be open to them; give --tokens FILE, \
             listen on a loopback address, or accept it with --insecure-no-auth",
            exposed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    tracing::warn!(
        listen = %indexer.listen,
        api_listen = ?indexer.api_listen,
        "no --tokens: every endpoint (search, ingest, alert triage) is open to anyone who can reach this indexer"
    );
    Ok(())
}

async fn serve(
    listen: SocketAddr,
    role: &'static str,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr().unwrap_or(listen), role, tls = tls.is_some(), "listening");
    match tls {
        Some(tls) => {
            let listener = ward_query_api::tls::TlsListener::new(listener, tls)
                .context("cannot start the tls listener")?;
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ClientAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")
        }
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ClientAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed"),
    }
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
