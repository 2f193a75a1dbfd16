//! Ward's node agent: tails container logs and the API server audit log,
//! turns lines into records, and ships them to the indexer in zstd batches.
//!
//! Pipeline, one small stage per module, joined by bounded channels (a full
//! channel blocks the stage before it: reading slows down, nothing is dropped):
//!
//! ```text
//! discover (glob + notify) → tail (read, parse, merge partials) → batch
//!     → ship (compress, POST, retry) → checkpoint (only what was acknowledged)
//! ```
//!
//! Delivery is at least once: a file's checkpoint moves only when the
//! indexer has acknowledged every record before it, so a crash of either
//! side re-sends, never skips. Every record carries a stable id (file
//! fingerprint + byte offset) so that re-sent records can be recognised.
//! Batches the indexer cannot take go to an on-disk spool ([`spool`]) and
//! count as delivered once they are there; a full spool pauses reading.
//!
//! Beside the files, the collector can receive the API server's audit
//! webhook (`webhook`, `--audit-webhook`), serve Prometheus metrics
//! ([`metrics`], `--metrics-listen`), and add pod labels and owners from
//! the Kubernetes API ([`kube`], `--kube-metadata`).

mod checkpoint;
mod config;
mod encode;
mod error;
pub mod kube;
pub mod metrics;
mod ship;
pub mod spool;
mod tail;
mod webhook;

pub use checkpoint::{Checkpoints, FilePosition};
pub use config::{CollectorConfig, SpoolFull};
pub use error::Error;
pub use metrics::Metrics;
pub use ship::Shipper;
pub use tail::{Batch, Body, Tailer, Waker};

use tokio::sync::mpsc;

/// Runs the collector until `shutdown` resolves, then drains: the batch
/// being built is sent, in-flight batches finish, checkpoints are saved.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| Error::Io {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    let checkpoints = Checkpoints::load(&config.state_dir)?;
    let metrics = std::sync::Arc::new(Metrics::default());
    let (batches_tx, batches_rx) = mpsc::channel::<Batch>(config.in_flight_batches);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (servers_stop_tx, servers_stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Bind before anything starts, so that a bad address fails the start.
    let webhook_listener = match config.audit_webhook {
        Some(addr) => Some((webhook::bind(addr).await?, webhook::Guard::load(&config)?)),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(webhook::bind(addr).await?),
        None => None,
    };
    let shipper = Shipper::new(&config, metrics.clone())?;
    let mut servers = Vec::new();
    if let Some((listener, guard)) = webhook_listener {
        let (tx, config, metrics) = (batches_tx.clone(), config.clone(), metrics.clone());
        let stop = stopped(servers_stop_rx.clone());
        servers.push(tokio::spawn(async move {
            webhook::serve(listener, guard, tx, &config, metrics, stop).await
        }));
    }
    if let Some(listener) = metrics_listener {
        let stop = stopped(servers_stop_rx.clone());
        servers.push(tokio::spawn(webhook::serve_metrics(
            listener,
            metrics.clone(),
            stop,
        )));
    }
    let pods = config.kube_api.clone().map(|api| {
        let pods = kube::SharedPods::default();
        servers.push(tokio::spawn({
            let (node, allow, pods) = (
                config.node.clone(),
                config.kube_annotations.clone(),
                pods.clone(),
            );
            let stop = servers_stop_rx.clone();
            async move {
                kube::run(api, node, allow, pods, stop).await;
                Ok(())
            }
        }));
        pods
    });
    let (tail_task, tail_waker) =
        if config.container_globs.is_empty() && config.audit_logs.is_empty() {
            // Webhook only: nothing to tail.
            drop(batches_tx);
            (None, None)
        } else {
            let tailer = Tailer::new(config.clone(), &checkpoints, metrics.clone(), pods)?;
            let waker = tailer.waker();
            let tail_stop = stop.clone();
            let task = tokio::task::spawn_blocking(move || tailer.run(batches_tx, &tail_stop));
            (Some(task), Some(waker))
        };
    let ship_task = tokio::spawn(shipper.run(batches_rx, checkpoints, stop.clone()));
    tracing::info!(indexer = %config.indexer_url, node = %config.node, "collector started");
    shutdown.await;
    tracing::info!("collector stopping: draining batches");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(waker) = &tail_waker {
        waker.wake();
    }
    let _ = servers_stop_tx.send(true);
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "listener failed"),
            Err(e) => tracing::warn!(error = %e, "listener task failed"),
        }
    }
    let tail_result = match tail_task {
        Some(task) => task.await.map_err(|e| Error::Stopped(e.to_string()))?,
        None => Ok(()),
    };
    let ship_result = ship_task.await.map_err(|e| Error::Stopped(e.to_string()))?;
    tail_result?;
    ship_result?;
    tracing::info!("collector stopped");
    Ok(())
}
