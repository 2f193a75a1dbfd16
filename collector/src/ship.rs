//! Shipping batches to the indexer, and moving checkpoints on acknowledgement.
//!
//! Up to `in_flight_batches` batches are on the wire at once; their
//! acknowledgements are consumed in the order the batches were built, so a
//! checkpoint never passes a batch that is still unacknowledged. A batch
//! counts as acknowledged once the indexer answered 2xx, or once it is
//! durable in the on-disk spool ([`crate::spool`]): when the indexer is
//! unreachable or answers 401, 403, 408, 429 or 5xx, the batch goes to the spool and
//! a drainer sends spooled batches, oldest first, with jittered exponential
//! backoff until the indexer takes them. While the spool is non-empty new
//! batches queue behind it. A full spool blocks (the acknowledgement waits,
//! the channel to the tailer fills, reading pauses) unless `--spool-full
//! drop` was chosen, in which case the batch is dropped and its records are
//! counted. 401 and 403 are retried too (credentials get fixed; the batch
//! is fine). Any other 4xx means the indexer will never take the batch, so
//! it is written to a dead-letter folder (nothing is silently dropped).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::{mpsc, watch};
use ward_event::wire;

use crate::checkpoint::{Checkpoints, FORGET_AFTER, FilePosition};
use crate::config::SpoolFull;
use crate::metrics::Metrics;
use crate::spool::{Pushed, Spool};
use crate::tail::{Batch, Body};
use crate::{CollectorConfig, Error};

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// After shutdown is asked for, a batch that still cannot be delivered or
/// spooled is given up on (its lines stay unacknowledged and are read again
/// at start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One way to the indexer: the HTTP client (TLS, client certificate) and
/// the bearer token.
struct Link {
    client: reqwest::Client,
    ingest_url: String,
    /// `Bearer <token>`; never logged.
    authorization: Option<reqwest::header::HeaderValue>,
    dead_letter_dir: PathBuf,
    metrics: Arc<Metrics>,
}

/// What one POST came to.
enum Outcome {
    /// The indexer took the batch (2xx), or refused it for good and it is
    /// in the dead-letter folder: either way, done with it.
    Done,
    /// Try again later.
    Retry,
}

pub struct Shipper {
    link: Arc<Link>,
    spool: Arc<Spool>,
    spool_full: SpoolFull,
    zstd_level: i32,
    in_flight: usize,
}

impl Shipper {
    pub fn new(config: &CollectorConfig, metrics: Arc<Metrics>) -> Result<Shipper, Error> {
        let spool = Spool::open(
            &config.state_dir.join("spool"),
            config.spool_max_bytes,
            metrics.clone(),
        )?;
        Ok(Shipper {
            link: Arc::new(Link {
                client: http_client(config)?,
                ingest_url: format!("{}/api/v1/ingest", config.indexer_url.trim_end_matches('/')),
                authorization: authorization(config)?,
                dead_letter_dir: config.state_dir.join("dead-letter"),
                metrics,
            }),
            spool: Arc::new(spool),
            spool_full: config.spool_full,
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
        for p in checkpoints.all() {
            self.link.metrics.set_acked(&p.fingerprint, p.offset);
        }
        let (drain_stop_tx, drain_stop_rx) = watch::channel(false);
        let drainer = tokio::spawn(drain(self.link.clone(), self.spool.clone(), drain_stop_rx));
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
                    Some(Some(positions)) if !gave_up => {
                        for p in &positions {
                            self.link.metrics.set_acked(&p.fingerprint, p.offset);
                        }
                        checkpoints.advance(positions);
                    }
                    Some(_) => gave_up = true,
                    None => break,
                },
                _ = ticker.tick() => {
                    let metrics = &self.link.metrics;
                    checkpoints.prune(|fp| metrics.is_tailed(fp), FORGET_AFTER);
                    if let Err(e) = checkpoints.save() {
                        tracing::error!(error = %e, "cannot save checkpoints");
                    }
                }
            }
        }
        let _ = drain_stop_tx.send(true);
        let _ = drainer.await;
        checkpoints.save()
    }

    /// Delivers or spools one batch; returns the positions it completes, or
    /// None if shutdown came before it was durable anywhere.
    async fn deliver(&self, batch: Batch, stop: &AtomicBool) -> Option<Vec<FilePosition>> {
        let level = self.zstd_level;
        let Batch {
            body,
            records,
            positions,
            durable,
        } = batch;
        let body = match body {
            Body::Zstd(body) => body,
            Body::Ndjson(ndjson) => {
                tokio::task::spawn_blocking(move || wire::compress(&ndjson, level))
                    .await
                    .ok()?
            }
        };
        let body = bytes::Bytes::from(body);
        let done = self.place(&body, records, stop).await;
        if let Some(durable) = durable {
            let _ = durable.send(done == Some(true));
        }
        done.map(|_| positions)
    }

    /// Some(true): acknowledged, dead-lettered or spooled; Some(false):
    /// dropped by policy; None: shutdown came first.
    async fn place(&self, body: &bytes::Bytes, records: usize, stop: &AtomicBool) -> Option<bool> {
        let mut stopping_since: Option<Instant> = None;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            // Straight to the indexer unless older batches wait in the spool.
            if self.spool.is_empty()
                && let Outcome::Done = self.link.post(body, records).await
            {
                return Some(true);
            }
            let spool = self.spool.clone();
            let spooled = {
                let body = body.clone();
                tokio::task::spawn_blocking(move || spool.push(&body)).await
            };
            match spooled {
                Ok(Ok(Pushed::Stored)) => {
                    self.link
                        .metrics
                        .batches_spooled
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(records, bytes = body.len(), "batch spooled");
                    return Some(true);
                }
                Ok(Ok(Pushed::Full)) if self.spool_full == SpoolFull::Drop => {
                    self.link
                        .metrics
                        .records_dropped
                        .fetch_add(records as u64, Ordering::Relaxed);
                    tracing::warn!(records, "spool full; batch dropped (--spool-full drop)");
                    return Some(false);
                }
                Ok(Ok(Pushed::Full)) => {
                    tracing::debug!(records, "spool full; waiting for it to drain");
                    // Woken when the drainer removes an entry; the timeout
                    // covers a wake-up that came before we waited.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.spool.removed.notified())
                            .await;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot write to the spool; retrying");
                    let jitter = rand::rng().random_range(0.5..1.5);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => tracing::error!(error = %e, "spool task failed"),
            }
            if stop.load(Ordering::SeqCst)
                && stopping_since.get_or_insert_with(Instant::now).elapsed() >= SHUTDOWN_GRACE
            {
                tracing::warn!(
                    records,
                    "shutting down with a batch neither acknowledged nor spooled; it will be read again"
                );
                return None;
            }
        }
    }
}

/// Sends spooled batches, oldest first, until `stop` says so.
async fn drain(link: Arc<Link>, spool: Arc<Spool>, mut stop: watch::Receiver<bool>) {
    let mut backoff = INITIAL_BACKOFF;
    while !*stop.borrow() {
        let next = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.oldest()).await
        };
        let pause = match next {
            Ok(Ok(Some((seq, body)))) => {
                let body = bytes::Bytes::from(body);
                match link.post(&body, 0).await {
                    Outcome::Done => {
                        let spool = spool.clone();
                        match tokio::task::spawn_blocking(move || spool.remove(seq)).await {
                            Ok(Ok(())) => {
                                backoff = INITIAL_BACKOFF;
                                continue;
                            }
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot remove spool entry"),
                            Err(e) => tracing::error!(error = %e, "spool task failed"),
                        }
                        Duration::from_secs(1)
                    }
                    Outcome::Retry => {
                        let jitter = rand::rng().random_range(0.5..1.5);
                        let pause = backoff.mul_f64(jitter);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        pause
                    }
                }
            }
            Ok(Ok(None)) => {
                tokio::select! {
                    _ = spool.added.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the spool");
                Duration::from_secs(1)
            }
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

impl Link {
    /// One attempt to hand a batch to the indexer.
    async fn post(&self, body: &bytes::Bytes, records: usize) -> Outcome {
        let mut request = self
            .client
            .post(&self.ingest_url)
            .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .header(reqwest::header::CONTENT_ENCODING, wire::CONTENT_ENCODING)
            .body(body.clone());
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() => {
                self.metrics.batches_sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(records, bytes = body.len(), "batch acknowledged");
                Outcome::Done
            }
            Ok(resp) if retryable(resp.status()) => {
                self.metrics.batch_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "indexer refused batch for now; retrying"
                );
                Outcome::Retry
            }
            Ok(resp) => {
                let status = resp.status();
                let reason = resp.text().await.unwrap_or_default();
                self.metrics
                    .batches_dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                self.dead_letter(body, status, &reason).await;
                Outcome::Done
            }
            Err(e) => {
                self.metrics.batch_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "indexer unreachable; retrying");
                Outcome::Retry
            }
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

/// The HTTP client: system roots, or only the CA of `--ca-file`; a client
/// certificate when `--client-cert`/`--client-key` are given.
fn http_client(config: &CollectorConfig) -> Result<reqwest::Client, Error> {
    // reqwest is built without a bundled crypto provider; Ward uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).map_err(crate::error::io(ca))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Config(format!("--ca-file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "--ca-file {}: no certificate in it",
                ca.display()
            )));
        }
        builder = builder.tls_certs_only(certs);
    }
    match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).map_err(crate::error::io(cert))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(crate::error::io(key))?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::Config(format!("--client-cert/--client-key: {e}")))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "--client-cert and --client-key go together".into(),
            ));
        }
    }
    builder.build().map_err(|e| Error::Http(e.to_string()))
}

/// `Authorization: Bearer <token>` from `--token-file`.
fn authorization(config: &CollectorConfig) -> Result<Option<reqwest::header::HeaderValue>, Error> {
    let Some(path) = &config.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "--token-file {}: the file is empty",
            path.display()
        )));
    }
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::Config(format!(
                "--token-file {}: not a valid token",
                path.display()
            ))
        })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Whether the indexer may take the batch later. 401 and 403 are in: a
/// wrong or expired token or certificate is fixed by an operator, and the
/// batch itself is fine, so it waits in the spool rather than in the
/// dead-letter folder.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
}
