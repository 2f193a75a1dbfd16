//! Access to the API: who is calling (tokens and roles, see [`crate::auth`]),
//! per-token rate limits, request timeouts, and the audit trail of the
//! API's own use.
//!
//! Every request to a guarded endpoint, allowed or refused, is written into
//! the index as a `source:ward` event (caller, role, endpoint, parameters,
//! status, result count, client address, duration), so analysts can audit
//! the auditors with the same search. The events are ingested like any
//! other record (hash-chained with their partition); there is no endpoint
//! that deletes or changes records, and the ingest endpoints refuse records
//! that claim `source: ward`.
//!
//! Refused requests (401 for a missing or unknown token, on the ingest
//! endpoints too; 403; 429 for the rate limit) are recorded with the
//! token's label when the token is known (never the token) and the client
//! address. A flood of them must not fill the disk, so the [`RefusalTrail`]
//! bounds them per window ([`RefusalLimits`], a minute by default): each
//! source (client IP, caller, status) gets a few records of its own, all
//! sources together a fixed budget, and what is over is counted and
//! written as one `api_refusals` summary per source when the window ends
//! (`ward_api_refusals_summarised_total` counts those requests). Sources
//! beyond a fixed number per window share one catch-all summary, so the
//! memory is bounded too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use ward_event::wire::DecodedRecord;
use ward_event::{RecordId, SourceKind};

use crate::auth::{Action, Caller};
use crate::{ApiError, AppState};

/// The client's address, as the listener saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Token buckets, one per caller.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `who`'s bucket; false when it is empty.
    pub(crate) fn allow(&self, who: &str) -> bool {
        self.allow_at(who, Instant::now())
    }

    /// [`RateLimiter::allow`] at a given time (tests step the clock).
    fn allow_at(&self, who: &str, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.per_second)
            .min(self.burst);
        *last = (*last).max(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks the caller of a guarded endpoint, runs it within the timeout
/// (streams: until the response starts), and records it in the audit trail.
pub(crate) async fn guard(
    State(state): State<AppState>,
    action: Action,
    streaming: bool,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let client = client_addr(&request).map(|a| a.to_string());
    let path = request.uri().path().to_owned();
    let params = request.uri().query().unwrap_or("").to_owned();
    let identity = match &state.options.tokens {
        None => Ok(None),
        Some(tokens) => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match tokens.identify_header(header) {
                None => Err((None, ApiError::Unauthorized)),
                Some(id) if !id.role.may(action) => Err((
                    Some(id.clone()),
                    ApiError::Forbidden(format!("{} (role {})", action.name(), id.role.name())),
                )),
                Some(id) if !state.limiter.allow(&id.name) => {
                    tracing::info!(caller = %id.name, endpoint = %path, "rate limited");
                    Err((Some(id.clone()), ApiError::RateLimited))
                }
                Some(id) => Ok(Some(id.clone())),
            }
        }
    };
    let (caller, response) = match identity {
        Err((known, e)) => return refuse(&state, &request, known, e),
        Ok(identity) => {
            let caller = Caller::new(identity);
            request.extensions_mut().insert(caller.clone());
            let timeout = state.config.request_timeout;
            let response = match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(endpoint = %path, caller = %caller.name(), "request timed out");
                    ApiError::Timeout(timeout.as_secs()).into_response()
                }
            };
            (caller, response)
        }
    };
    if state.config.audit_trail {
        let record = audit_record(&AuditEntry {
            caller: &caller,
            endpoint: &path,
            params: &params,
            status: response.status().as_u16(),
            client: client.as_deref(),
            duration: started.elapsed(),
            streaming,
        });
        let store = state.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.ingest(vec![record]).await {
                tracing::warn!(error = %e, "cannot record an api request in the audit trail");
            }
        });
    }
    response
}

pub(crate) fn client_addr(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0)
}

/// The answer to a refused request, recorded in the audit trail (with
/// the caller when its token was valid).
pub(crate) fn refuse(
    state: &AppState,
    request: &Request,
    known: Option<crate::auth::Identity>,
    error: ApiError,
) -> Response {
    let response = error.into_response();
    record_refusal(
        state,
        Refusal {
            caller: &Caller::new(known),
            endpoint: request.uri().path(),
            params: request.uri().query().unwrap_or(""),
            status: response.status().as_u16(),
            client: client_addr(request),
        },
    );
    response
}

/// A refused request, for the audit trail.
pub(crate) struct Refusal<'a> {
    /// With the identity when the token was valid (403, 429).
    pub caller: &'a Caller,
    pub endpoint: &'a str,
    pub params: &'a str,
    pub status: u16,
    pub client: Option<SocketAddr>,
}

/// Writes a refused request into the audit trail, within the
/// [`RefusalTrail`]'s bounds.
pub(crate) fn record_refusal(state: &AppState, refusal: Refusal<'_>) {
    if !state.config.audit_trail {
        return;
    }
    let trail = &state.refusals;
    let key = SourceKey {
        client: refusal.client.map(|a| a.ip().to_string()),
        caller: refusal.caller.name().to_owned(),
        status: refusal.status,
    };
    trail.start_flusher(state);
    if !trail.admit(key) {
        return;
    }
    let client = refusal.client.map(|a| a.to_string());
    let record = audit_record(&AuditEntry {
        caller: refusal.caller,
        endpoint: refusal.endpoint,
        params: refusal.params,
        status: refusal.status,
        client: client.as_deref(),
        duration: Duration::ZERO,
        streaming: false,
    });
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.ingest(vec![record]).await {
            tracing::warn!(error = %e, "cannot record a refused api request in the audit trail");
        }
    });
}

/// Bounds of the audit trail of refused requests, per window.
#[derive(Debug, Clone, Copy)]
pub struct RefusalLimits {
    pub window: Duration,
    /// Refusals of one source (client IP, caller, status) recorded one by one.
    pub per_source: u32,
    /// Refusals of all sources together recorded one by one.
    pub total: u32,
    /// Sources tracked one by one; the rest share one summary.
    pub max_sources: usize,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        RefusalLimits {
            window: Duration::from_secs(60),
            per_source: 10,
            total: 600,
            max_sources: 1024,
        }
    }
}

/// Where refused requests come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey {
    client: Option<String>,
    caller: String,
    status: u16,
}

#[derive(Debug, Default)]
struct SourceCounts {
    recorded: u32,
    summarised: u64,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<DateTime<Utc>>,
    recorded: u32,
    sources: HashMap<SourceKey, SourceCounts>,
    /// Refusals of sources over `max_sources`, by status.
    overflow: HashMap<u16, u64>,
}

/// Counts refused requests per window and says which to record one by one.
#[derive(Debug)]
pub(crate) struct RefusalTrail {
    limits: RefusalLimits,
    window: Mutex<Window>,
    flusher: AtomicBool,
    /// Refused requests seen.
    pub(crate) refused: AtomicU64,
    /// Refused requests not recorded one by one (counted in summaries).
    pub(crate) summarised: AtomicU64,
}

impl RefusalTrail {
    pub(crate) fn new(limits: RefusalLimits) -> RefusalTrail {
        RefusalTrail {
            limits,
            window: Mutex::new(Window::default()),
            flusher: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            summarised: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Counts one refusal; true when it is to be recorded one by one.
    pub(crate) fn admit(&self, key: SourceKey) -> bool {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let limits = self.limits;
        let mut w = self.lock();
        w.started.get_or_insert_with(Utc::now);
        let under_total = w.recorded < limits.total;
        let tracked = w.sources.len() < limits.max_sources || w.sources.contains_key(&key);
        if !tracked {
            *w.overflow.entry(key.status).or_insert(0) += 1;
            self.summarised.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let counts = w.sources.entry(key).or_default();
        if under_total && counts.recorded < limits.per_source {
            counts.recorded += 1;
            w.recorded += 1;
            true
        } else {
            counts.summarised += 1;
            self.summarised.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Ends the window: one summary record per source with refusals that
    /// were not recorded one by one.
    pub(crate) fn take_summaries(&self) -> Vec<DecodedRecord> {
        let w = std::mem::take(&mut *self.lock());
        let Some(started) = w.started else {
            return Vec::new();
        };
        let ended = Utc::now();
        let mut out: Vec<DecodedRecord> = w
            .sources
            .into_iter()
            .filter(|(_, c)| c.summarised > 0)
            .map(|(k, c)| {
                summary_record(
                    Some(&k.caller),
                    k.client.as_deref(),
                    k.status,
                    c.summarised,
                    started,
                    ended,
                )
            })
            .collect();
        out.extend(
            w.overflow
                .into_iter()
                .map(|(status, n)| summary_record(None, None, status, n, started, ended)),
        );
        out
    }

    /// Starts the task that ends a window every `limits.window` (once, on
    /// the first refusal; it stops when the router is dropped).
    fn start_flusher(&self, state: &AppState) {
        if self.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let trail: Weak<RefusalTrail> = Arc::downgrade(&state.refusals);
        let store = state.store.clone();
        let period = self.limits.window.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(trail) = trail.upgrade() else { return };
                let summaries = trail.take_summaries();
                drop(trail);
                if summaries.is_empty() {
                    continue;
                }
                if let Err(e) = store.ingest(summaries).await {
                    tracing::warn!(error = %e, "cannot record refused-request summaries in the audit trail");
                }
            }
        });
    }
}

fn summary_record(
    caller: Option<&str>,
    client: Option<&str>,
    status: u16,
    refused: u64,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> DecodedRecord {
    let who = match (caller, client) {
        (Some(c), Some(a)) => format!("{c} from {a}"),
        (Some(c), None) => c.to_owned(),
        _ => "sources over the tracking limit".to_owned(),
    };
    let event = json!({
        "kind": "api_refusals",
        "message": format!("{refused} more refused requests ({status}) of {who}, not recorded one by one"),
        "api": {
            "caller": caller,
            "client": client,
            "status": status,
            "refused": refused,
            "window_start": started.to_rfc3339(),
            "window_end": ended.to_rfc3339(),
        }
    });
    ward_record(event, ended)
}

fn ward_record(event: Value, now: DateTime<Utc>) -> DecodedRecord {
    let event = match event {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    DecodedRecord {
        id: RecordId::WardApi {
            pid: std::process::id(),
            nanos: now.timestamp_nanos_opt().unwrap_or(0),
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
        .to_string(),
        source: SourceKind::Ward,
        timestamp: now,
        cluster: None,
        node: None,
        flags: vec![],
        parse_error: None,
        file: None,
        offset: None,
        event,
    }
}

struct AuditEntry<'a> {
    caller: &'a Caller,
    endpoint: &'a str,
    params: &'a str,
    status: u16,
    client: Option<&'a str>,
    duration: Duration,
    streaming: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn audit_record(e: &AuditEntry<'_>) -> DecodedRecord {
    let now = Utc::now();
    let params: Map<String, Value> = form_pairs(e.params)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let role = e.caller.identity.as_ref().map(|i| i.role.name());
    let message = format!(
        "{} {} {} -> {}",
        e.caller.name(),
        e.endpoint,
        params
            .get("q")
            .and_then(Value::as_str)
            .map(|q| format!("q={q}"))
            .unwrap_or_default(),
        e.status
    );
    let event = json!({
        "kind": "api_request",
        "message": message,
        "api": {
            "caller": e.caller.name(),
            "role": role,
            "endpoint": e.endpoint,
            "params": params,
            "status": e.status,
            "results": if e.streaming { None } else { e.caller.count() },
            "streaming": e.streaming,
            "client": e.client,
            "duration_ms": u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
        }
    });
    ward_record(event, now)
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push(h * 16 + l);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Regression: with the wall clock, a test thread descheduled for a
    /// millisecond between two calls saw a token refill and failed.
    fn token_buckets_refill() {
        let l = RateLimiter::new(1000.0, 2);
        let t0 = Instant::now();
        assert!(l.allow_at("a", t0));
        assert!(l.allow_at("a", t0));
        assert!(!l.allow_at("a", t0), "burst spent");
        assert!(l.allow_at("b", t0), "buckets are per caller");
        assert!(
            !l.allow_at("a", t0 + Duration::from_micros(500)),
            "half a token"
        );
        assert!(l.allow_at("a", t0 + Duration::from_millis(2)), "refilled");
        assert!(l.allow("a"), "and with the real clock, later");
    }

    fn key(client: &str, status: u16) -> SourceKey {
        SourceKey {
            client: Some(client.into()),
            caller: "anonymous".into(),
            status,
        }
    }

    #[test]
    fn refusals_are_recorded_a_few_per_source_then_summarised() {
        let trail = RefusalTrail::new(RefusalLimits {
            window: Duration::from_secs(60),
            per_source: 2,
            total: 5,
            max_sources: 3,
        });
        let admitted = |k: SourceKey, n: usize| (0..n).filter(|_| trail.admit(k.clone())).count();
        assert_eq!(admitted(key("10.0.0.1", 401), 10), 2, "per source");
        assert_eq!(admitted(key("10.0.0.2", 401), 10), 2, "another source");
        assert_eq!(
            admitted(key("10.0.0.1", 429), 10),
            1,
            "the total budget is spent"
        );
        assert_eq!(admitted(key("10.0.0.9", 401), 4), 0, "over max_sources");
        assert_eq!(trail.refused.load(Ordering::Relaxed), 34);
        assert_eq!(trail.summarised.load(Ordering::Relaxed), 34 - 5);
        let mut summaries: Vec<(Option<String>, u64, u64)> = trail
            .take_summaries()
            .iter()
            .map(|r| {
                (
                    r.event["api"]["client"].as_str().map(str::to_owned),
                    r.event["api"]["status"].as_u64().unwrap(),
                    r.event["api"]["refused"].as_u64().unwrap(),
                )
            })
            .collect();
        summaries.sort();
        assert_eq!(
            summaries,
            vec![
                (None, 401, 4),
                (Some("10.0.0.1".into()), 401, 8),
                (Some("10.0.0.1".into()), 429, 9),
                (Some("10.0.0.2".into()), 401, 8),
            ]
        );
        // A new window starts afresh.
        assert!(trail.take_summaries().is_empty());
        assert!(trail.admit(key("10.0.0.9", 401)));
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            form_pairs("q=verb%3Acreate+x&limit=5&flag&bad=%zz&end=%4"),
            vec![
                ("q".into(), "verb:create x".into()),
                ("limit".into(), "5".into()),
                ("flag".into(), String::new()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }
}
