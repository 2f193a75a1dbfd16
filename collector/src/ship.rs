//! Shipping batches to the indexer, and moving checkpoints on acknowledgement.
//!
//! Up to `in_flight_batches` batches are on the wire at once; their
//! acknowledgements are consumed in the order the batches were built, so a
//! checkpoint never passes a batch that is still unacknowledged. A batch is
//! retried with jittered exponential backoff while the indexer is
//! unreachable or answers 408, 429 or 5xx; any other 4xx means the indexer
//! will never take it, so it is written to a dead-letter folder (nothing is
//! silently dropped) and the collector moves on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::mpsc;
use ward_event::wire;

use crate::checkpoint::{Checkpoints, FilePosition};
use crate::tail::Batch;
use crate::{CollectorConfig, Error};

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// After shutdown is asked for, a batch that still cannot be delivered is
/// given up on (its lines stay unacknowledged and are read again at start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Shipper {
    client: reqwest::Client,
    ingest_url: String,
    dead_letter_dir: PathBuf,
    zstd_level: i32,
    in_flight: usize,
}

impl Shipper {
    pub fn new(config: &CollectorConfig) -> Result<Shipper, Error> {
        // reqwest is built without a bundled crypto provider; Ward uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Shipper {
            client,
            ingest_url: format!("{}/api/v1/ingest", config.indexer_url.trim_end_matches('/')),
            dead_letter_dir: config.state_dir.join("dead-letter"),
            zstd_level: config.zstd_level,
            in_flight: config.in_flight_batches.max(1),
        })
    }

    /// Ships batches until the channel closes, then saves checkpoints.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Batch>,
        mut checkpoints: Checkpoints,
        stop: Arc<AtomicBool>,
    ) -> Result<(), Error> {
        let batches =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (b, rx)) },
            );
        let this = &self;
        let stop = &stop;
        let mut acks = Box::pin(
            batches
                .map(|batch| this.deliver(batch, stop))
                .buffered(self.in_flight),
        );
        let mut ticker = tokio::time::interval(CHECKPOINT_EVERY);
        let mut gave_up = false;
        loop {
            tokio::select! {
                ack = acks.next() => match ack {
                    Some(Some(positions)) if !gave_up => checkpoints.advance(positions),
                    Some(_) => gave_up = true,
                    None => break,
                },
                _ = ticker.tick() => {
                    if let Err(e) = checkpoints.save() {
                        tracing::error!(error = %e, "cannot save checkpoints");
                    }
                }
            }
        }
        checkpoints.save()
    }

    /// Delivers one batch; returns the positions it completes, or None if
    /// shutdown came before the indexer took it.
    async fn deliver(&self, batch: Batch, stop: &AtomicBool) -> Option<Vec<FilePosition>> {
        let level = self.zstd_level;
        let Batch {
            ndjson,
            records,
            positions,
        } = batch;
        let body = tokio::task::spawn_blocking(move || wire::compress(&ndjson, level))
            .await
            .ok()?;
        let body = bytes::Bytes::from(body);
        let mut backoff = INITIAL_BACKOFF;
        let mut stopping_since: Option<Instant> = None;
        loop {
            let result = self
                .client
                .post(&self.ingest_url)
                .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
                .header(reqwest::header::CONTENT_ENCODING, wire::CONTENT_ENCODING)
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(records, bytes = body.len(), "batch acknowledged");
                    return Some(positions);
                }
                Ok(resp) if retryable(resp.status()) => {
                    tracing::warn!(
                        status = resp.status().as_u16(),
                        "indexer refused batch for now; retrying"
                    );
                }
                Ok(resp) => {
                    let status = resp.status();
                    let reason = resp.text().await.unwrap_or_default();
                    self.dead_letter(&body, status, &reason).await;
                    return Some(positions);
                }
                Err(e) => tracing::warn!(error = %e, "indexer unreachable; retrying"),
            }
            if stop.load(Ordering::SeqCst)
                && stopping_since.get_or_insert_with(Instant::now).elapsed() >= SHUTDOWN_GRACE
            {
                tracing::warn!(
                    records,
                    "shutting down with an unacknowledged batch; it will be read again"
                );
                return None;
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn dead_letter(&self, body: &[u8], status: StatusCode, reason: &str) {
        let name = format!(
            "{}-{}.ndjson.zst",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
            status.as_u16()
        );
        let path = self.dead_letter_dir.join(name);
        let write = async {
            tokio::fs::create_dir_all(&self.dead_letter_dir).await?;
            tokio::fs::write(&path, body).await
        };
        match write.await {
            Ok(()) => {
                tracing::error!(status = status.as_u16(), reason, path = %path.display(), "indexer rejected batch; kept in dead-letter folder")
            }
            Err(e) => {
                tracing::error!(status = status.as_u16(), reason, error = %e, "indexer rejected batch and the dead-letter write failed")
            }
        }
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}
