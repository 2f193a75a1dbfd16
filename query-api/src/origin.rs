//! What a browser on another site cannot make the API do.
//!
//! - **Host**: with [`ApiOptions::allowed_hosts`](crate::ApiOptions) set, a
//!   request whose `Host` (or HTTP/2 authority) is not one of them gets a
//!   421. A page on another site that rebinds its DNS name to the
//!   indexer's address then reaches nothing: its requests carry its own
//!   name. Probes, `/metrics` and the ingest endpoints (kubelets,
//!   Prometheus and collectors address pods by IP or Service name) are not
//!   checked.
//! - **Content type**: every state-changing request (`POST`: ingest, the
//!   audit webhook, alert status, hunts) must declare a JSON body
//!   (`application/json`, `application/x-ndjson` as collectors send,
//!   `application/*+json`), else 415. A cross-site form or `no-cors`
//!   fetch can only send `text/plain`, form and multipart bodies without
//!   a preflight, so it can neither store events nor change an alert.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// Paths other machines address by IP or Service name.
const HOST_EXEMPT: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/ingest",
    "/api/v1/k8s/audit",
];

pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(allowed) = &state.options.allowed_hosts else {
        return next.run(request).await;
    };
    if HOST_EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(ToString::to_string))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if allowed.contains(&host) {
        return next.run(request).await;
    }
    tracing::info!(host = %host, path = %request.uri().path(), "request for another host refused");
    ApiError::WrongHost(host).into_response()
}

/// Whether a `Content-Type` declares a JSON (or NDJSON) body.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == ward_event::wire::CONTENT_TYPE
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub(crate) async fn require_json(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if declared.is_some_and(is_json) {
        return next.run(request).await;
    }
    ApiError::UnsupportedMediaType(declared.unwrap_or("none").to_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/x-ndjson",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
