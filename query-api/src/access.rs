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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};
use ward_event::SourceKind;
use ward_event::wire::DecodedRecord;

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
        if self.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
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
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.to_string());
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
                None => Err(ApiError::Unauthorized),
                Some(id) if !id.role.may(action) => Err(ApiError::Forbidden(format!(
                    "{} (role {})",
                    action.name(),
                    id.role.name()
                ))),
                Some(id) if !state.limiter.allow(&id.name) => {
                    tracing::info!(caller = %id.name, endpoint = %path, "rate limited");
                    Err(ApiError::RateLimited)
                }
                Some(id) => Ok(Some(id.clone())),
            }
        }
    };
    let (caller, response) = match identity {
        Err(e) => {
            let caller = Caller::new(None);
            (caller, e.into_response())
        }
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
    let event = match event {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    DecodedRecord {
        id: format!(
            "ward-api/{}/{}/{}",
            std::process::id(),
            now.timestamp_nanos_opt().unwrap_or(0),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ),
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
    fn token_buckets_refill() {
        let l = RateLimiter::new(1000.0, 2);
        assert!(l.allow("a"));
        assert!(l.allow("a"));
        assert!(!l.allow("a"), "burst spent");
        assert!(l.allow("b"), "buckets are per caller");
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.allow("a"), "refilled");
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
