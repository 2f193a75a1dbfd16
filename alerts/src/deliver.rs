//! The delivery loop: sends queued deliveries to their sinks and keeps
//! every one that failed, with its next attempt, in the store.
//!
//! Nothing is lost while a sink is down, nor across restarts: a delivery
//! leaves the queue only in the transaction that records the sink's 2xx.
//! The flip side is at-least-once: a crash between the sink's answer and
//! that transaction sends the alert again (Alertmanager merges a repeat of
//! the same labels; webhook receivers can use the alert `id`).
//!
//! A sink that fails is held back as a whole (jittered exponential backoff
//! on its consecutive failures), so one dead receiver neither spins the
//! loop nor delays the others.
//!
//! Alertmanager sinks are also refreshed: every `resend_secs` the loop
//! posts every recent alert the sink takes, in one request, the way
//! Prometheus re-sends firing alerts. Alertmanager keeps alerts in memory
//! only; without this, a restart of Alertmanager would forget alerts that
//! were delivered before it. A failed refresh is logged and tried at the
//! next interval; the queue still guarantees each alert's first delivery.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use tokio::sync::Notify;

use crate::error::Error;
use crate::sink::{SinkConfig, SinkKind, SinksConfig};
use crate::store::{AlertFilter, AlertStore, MAX_LIMIT, StoredAlert};

/// Deliveries read from the queue per pass.
const PASS: usize = 256;
/// Longest sleep when nothing is due (new alerts wake the loop earlier).
const IDLE: Duration = Duration::from_secs(30);

/// Sends queued alerts. Build it, keep its [`Dispatcher::waker`] for the
/// tap, and spawn [`Dispatcher::run`].
pub struct Dispatcher {
    store: AlertStore,
    sinks: Arc<SinksConfig>,
    http: reqwest::Client,
    wake: Arc<Notify>,
}

/// Consecutive failures of one sink and when it may be tried again.
struct Hold {
    failures: u32,
    until: chrono::DateTime<Utc>,
}

impl Dispatcher {
    pub fn new(store: AlertStore, sinks: Arc<SinksConfig>) -> Result<Dispatcher, Error> {
        // reqwest is built without a default TLS provider (as in the
        // collector): ring, unless the process chose one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Delivery {
                sink: "*".into(),
                reason: format!("cannot build the http client: {e}"),
            })?;
        Ok(Dispatcher {
            store,
            sinks,
            http,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Notify this when new deliveries are queued.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `shutdown` resolves. Store errors are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut holds: HashMap<String, Hold> = HashMap::new();
        let mut refreshed: HashMap<String, Instant> = HashMap::new();
        loop {
            let mut sleep = match self.pass(&mut holds).await {
                Ok(sleep) => sleep,
                Err(e) => {
                    tracing::error!(error = %e, "alert delivery pass failed");
                    Duration::from_secs(1)
                }
            };
            if let Some(next) = self.refresh(&mut refreshed).await {
                sleep = sleep.min(next);
            }
            if sleep.is_zero() {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::info!("alert delivery stopped");
    }

    /// One pass over what is due; returns how long to sleep after it.
    async fn pass(&self, holds: &mut HashMap<String, Hold>) -> Result<Duration, Error> {
        let now = Utc::now();
        let store = self.store.clone();
        let (due, next) = blocking(move || store.due_deliveries(now, PASS)).await?;
        let full = due.len() == PASS;
        let mut attempted = 0usize;
        for (seq, mut delivery) in due {
            if holds
                .get(&delivery.sink)
                .is_some_and(|h| h.until > Utc::now())
            {
                continue;
            }
            attempted += 1;
            let result = match self.sinks.sink(&delivery.sink) {
                Some(sink) => self.send(sink, delivery.alert_id).await,
                None => Err(format!(
                    "sink {:?} is no longer configured; kept queued",
                    delivery.sink
                )),
            };
            let store = self.store.clone();
            match result {
                Ok(()) => {
                    holds.remove(&delivery.sink);
                    tracing::info!(sink = %delivery.sink, alert_id = delivery.alert_id, attempts = delivery.attempts + 1, "alert delivered");
                    let sink = delivery.sink.clone();
                    blocking(move || store.delivery_succeeded(seq, &sink)).await?;
                }
                Err(reason) => {
                    let hold = holds.entry(delivery.sink.clone()).or_insert(Hold {
                        failures: 0,
                        until: now,
                    });
                    hold.failures = hold.failures.saturating_add(1);
                    let wait = self.sinks.retry.backoff(hold.failures);
                    hold.until = Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX);
                    delivery.attempts = delivery.attempts.saturating_add(1);
                    delivery.next_attempt = hold.until;
                    tracing::warn!(sink = %delivery.sink, alert_id = delivery.alert_id, attempts = delivery.attempts, retry_in_ms = wait.as_millis() as u64, error = %reason, "alert delivery failed; will retry");
                    delivery.last_error = Some(reason);
                    blocking(move || store.delivery_failed(seq, &delivery)).await?;
                }
            }
        }
        if full && attempted > 0 {
            return Ok(Duration::ZERO);
        }
        let now = Utc::now();
        let wake_at = holds
            .values()
            .map(|h| h.until)
            .chain(next)
            .filter(|t| *t > now)
            .min();
        Ok(wake_at
            .and_then(|t| (t - now).to_std().ok())
            .map_or(IDLE, |d| d.clamp(Duration::from_millis(10), IDLE)))
    }

    /// Re-sends recent alerts to Alertmanager sinks whose interval is up;
    /// returns the time until the next refresh.
    async fn refresh(&self, last: &mut HashMap<String, Instant>) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        for sink in &self.sinks.sinks {
            if sink.kind != SinkKind::Alertmanager || sink.resend_secs == 0 {
                continue;
            }
            let every = Duration::from_secs(sink.resend_secs);
            let since = last.get(&sink.name).map(Instant::elapsed);
            if let Some(since) = since.filter(|s| *s < every) {
                let left = every - since;
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            // The first pass after a start only marks the time: queued
            // deliveries go first.
            last.insert(sink.name.clone(), Instant::now());
            next = Some(next.map_or(every, |n| n.min(every)));
            if since.is_none() {
                continue;
            }
            let store = self.store.clone();
            let alerts = match blocking(move || {
                store.list(&AlertFilter {
                    limit: MAX_LIMIT,
                    ..Default::default()
                })
            })
            .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(sink = %sink.name, error = %e, "cannot read alerts to refresh");
                    continue;
                }
            };
            let now = Utc::now();
            let horizon = now - TimeDelta::seconds(sink.ends_after_secs.min(1 << 40) as i64);
            let body: Vec<serde_json::Value> = alerts
                .iter()
                .filter(|a| a.created >= horizon && sink.takes(a))
                .filter_map(|a| match sink.body(a, now) {
                    serde_json::Value::Array(mut v) => v.pop(),
                    _ => None,
                })
                .collect();
            if body.is_empty() {
                continue;
            }
            let count = body.len();
            match self.post(sink, &serde_json::Value::Array(body)).await {
                Ok(()) => {
                    tracing::debug!(sink = %sink.name, alerts = count, "alertmanager refreshed")
                }
                Err(e) => {
                    tracing::warn!(sink = %sink.name, alerts = count, error = %e, "alertmanager refresh failed")
                }
            }
        }
        next
    }

    async fn send(&self, sink: &SinkConfig, alert_id: u64) -> Result<(), String> {
        let store = self.store.clone();
        let alert: StoredAlert = match blocking(move || store.get(alert_id)).await {
            Ok(a) => a,
            Err(e) => return Err(e.to_string()),
        };
        let body = sink.body(&alert, Utc::now());
        self.post(sink, &body).await
    }

    async fn post(&self, sink: &SinkConfig, body: &serde_json::Value) -> Result<(), String> {
        let mut request = self
            .http
            .post(sink.endpoint())
            .timeout(Duration::from_secs(sink.timeout_secs.max(1)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(|e| e.to_string())?);
        for (k, v) in &sink.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request.send().await.map_err(|e| {
            // reqwest's Display hides the cause (connection refused, ...).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        Err(format!("status {}: {snippet}", status.as_u16()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::InvalidRequest(format!("alert store task failed: {e}")))?
}
