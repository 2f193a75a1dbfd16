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

mod checkpoint;
mod config;
mod error;
mod ship;
mod tail;

pub use checkpoint::{Checkpoints, FilePosition};
pub use config::CollectorConfig;
pub use error::Error;
pub use ship::Shipper;
pub use tail::{Batch, Tailer};

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
    let (batches_tx, batches_rx) = mpsc::channel::<Batch>(config.in_flight_batches);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = Tailer::new(config.clone(), &checkpoints)?;
    let tail_stop = stop.clone();
    let tail_task = tokio::task::spawn_blocking(move || tailer.run(batches_tx, &tail_stop));
    let shipper = Shipper::new(&config)?;
    let ship_task = tokio::spawn(shipper.run(batches_rx, checkpoints, stop.clone()));
    tracing::info!(indexer = %config.indexer_url, node = %config.node, "collector started");
    shutdown.await;
    tracing::info!("collector stopping: draining batches");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let tail_result = tail_task.await.map_err(|e| Error::Stopped(e.to_string()))?;
    let ship_result = ship_task.await.map_err(|e| Error::Stopped(e.to_string()))?;
    tail_result?;
    ship_result?;
    tracing::info!("collector stopped");
    Ok(())
}
