//! The one place where errors become HTTP status codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] ward_indexer::Error),
    #[error(transparent)]
    Alerts(#[from] ward_alerts::Error),
    #[error("{0}")]
    BadRequest(String),
    #[error("unsupported content encoding {0:?}: send zstd or identity")]
    UnsupportedEncoding(String),
    #[error("no such page: {0}")]
    NotFound(String),
    #[error("a valid bearer token of a role that may do this is required")]
    Unauthorized,
    #[error("this token's role may not {0}")]
    Forbidden(String),
    #[error("too many requests for this token; retry later")]
    RateLimited,
    #[error("too many live tails: {0}; close one and retry")]
    TooManyTails(String),
    #[error("the request took longer than {0} seconds")]
    Timeout(u64),
    #[error("this indexer does not serve host {0:?}: use its address or --public-url")]
    WrongHost(String),
    #[error("content type {0:?} is not JSON: send application/json (or application/x-ndjson)")]
    UnsupportedMediaType(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
}

impl ApiError {
    fn store_status(e: &ward_indexer::Error) -> StatusCode {
        use ward_event::Error as Wire;
        use ward_indexer::Error as Store;
        match e {
            Store::Query { .. } | Store::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Store::Wire(Wire::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Store::Wire(_) => StatusCode::BAD_REQUEST,
            Store::Unavailable(_) | Store::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Store::Budget(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Store::Tantivy(_) | Store::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn status(&self) -> StatusCode {
        use ward_alerts::Error as Alerts;
        match self {
            ApiError::Store(e) => Self::store_status(e),
            ApiError::Alerts(Alerts::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Alerts(Alerts::InvalidRequest(_)) => StatusCode::BAD_REQUEST,
            ApiError::Alerts(Alerts::Index(e)) => Self::store_status(e),
            ApiError::Alerts(
                Alerts::Db(_)
                | Alerts::Encoding(_)
                | Alerts::MissingRuleVersion(_)
                | Alerts::Io { .. }
                | Alerts::Config { .. }
                | Alerts::Delivery { .. }
                | Alerts::Dump { .. }
                | Alerts::DumpIo(_),
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedEncoding(_) | ApiError::UnsupportedMediaType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::WrongHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited | ApiError::TooManyTails(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        }
        let position = match &self {
            ApiError::Store(ward_indexer::Error::Query { position, .. }) => Some(*position),
            _ => None,
        };
        let kind = match &self {
            ApiError::Store(ward_indexer::Error::Query { .. }) => Some("query"),
            ApiError::Store(ward_indexer::Error::Budget(_)) => Some("budget"),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            position,
            kind,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
