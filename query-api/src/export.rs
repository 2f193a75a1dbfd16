//! `GET /api/v1/export?q=&start=&end=&format=ndjson|csv&include_ward=`: every match,
//! oldest first, streamed.
//!
//! A task pages through the matches with the cursor (`export_page_size`
//! hits at a time) and sends each page's encoded bytes down a channel of
//! two pages; the response body reads from it. Memory is bounded by a few
//! pages whatever the number of hits, and a slow client slows the walk
//! instead of growing a buffer. A client that goes away stops it.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use ward_indexer::{Cancel, SearchRequest, SortOrder};

use crate::auth::Caller;
use crate::search::{parse_time, without_ward_trail};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Ndjson,
    Csv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportParams {
    #[serde(default)]
    q: String,
    start: Option<String>,
    end: Option<String>,
    format: Option<Format>,
    #[serde(default)]
    include_ward: bool,
}

/// The CSV columns: (header, dotted path in the hit).
const CSV_COLUMNS: &[(&str, &str)] = &[
    ("timestamp", "timestamp"),
    ("source", "source"),
    ("cluster", "cluster"),
    ("node", "node"),
    ("namespace", "kubernetes.namespace"),
    ("pod", "kubernetes.pod"),
    ("container", "kubernetes.container"),
    ("user", "user.username"),
    ("verb", "verb"),
    ("resource", "objectRef.resource"),
    ("object_namespace", "objectRef.namespace"),
    ("object_name", "objectRef.name"),
    ("source_ip", "sourceIPs"),
    ("code", "responseStatus.code"),
    ("request_uri", "requestURI"),
    ("message", "message"),
    ("id", "ward.id"),
];

pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let format = params.format.unwrap_or_default();
    let mut request = SearchRequest {
        query: without_ward_trail(params.q, params.include_ward)?,
        start: parse_time("start", params.start.as_deref())?,
        end: parse_time("end", params.end.as_deref())?,
        limit: state
            .config
            .export_page_size
            .clamp(1, ward_indexer::store::MAX_LIMIT),
        order: SortOrder::Oldest,
        cursor: None,
        namespaces: caller.namespaces.clone(),
        cancel: Cancel::new(),
    };
    // A bad query is a 400, not a broken stream. Compiled on the blocking
    // pool: a costly regex must not hold up the async runtime.
    let (store, text) = (state.store.clone(), request.query.clone());
    tokio::task::spawn_blocking(move || store.check_query(&text))
        .await
        .map_err(|e| ward_indexer::Error::Unavailable(e.to_string()))??;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut sent = 0u64;
        if format == Format::Csv {
            let header: Vec<&str> = CSV_COLUMNS.iter().map(|(h, _)| *h).collect();
            let line = format!("{}\r\n", header.join(","));
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
        }
        loop {
            let page = tokio::select! {
                page = store.page(request.clone(), false) => page,
                () = tx.closed() => {
                    // The client went away mid-page: stop the page's search.
                    request.cancel.cancel();
                    tracing::info!(sent, "export client went away");
                    return;
                }
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, sent, "export stopped");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut buf = Vec::with_capacity(page.hits.len() * 512);
            for hit in &page.hits {
                match format {
                    Format::Ndjson => {
                        buf.extend_from_slice(hit.get().as_bytes());
                        buf.push(b'\n');
                    }
                    Format::Csv => csv_row(hit.get(), &mut buf),
                }
            }
            sent += page.hits.len() as u64;
            if !buf.is_empty() && tx.send(Ok(Bytes::from(buf))).await.is_err() {
                tracing::info!(sent, "export client went away");
                return;
            }
            match page.cursor {
                Some(c) => request.cursor = Some(c),
                None => break,
            }
        }
        tracing::info!(sent, "export finished");
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}

fn csv_row(hit: &str, out: &mut Vec<u8>) {
    let value: Value = serde_json::from_str(hit).unwrap_or(Value::Null);
    for (i, (_, path)) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let field = value
            .as_object()
            .and_then(|o| ward_indexer::document::lookup(o, path));
        let text = match field {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" "),
            Some(other) => other.to_string(),
        };
        csv_field(&text, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
fn csv_field(text: &str, out: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_it_must() {
        let mut out = Vec::new();
        csv_field("plain", &mut out);
        out.push(b'|');
        csv_field("a,\"b\"\nc", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "plain|\"a,\"\"b\"\"\nc\"");
    }
}
