//! `GET /metrics`: the indexer's counters in Prometheus text format.
//!
//! Written by hand rather than through a metrics registry: the values
//! already live in the store's atomics, and the exposition format is a
//! handful of lines.
//!
//! With tokens configured, `/metrics` needs a token of a role that may read
//! them and no namespace scope: the counts are of every namespace. Refusals
//! go to the audit trail like every other; a scrape that passes is not
//! recorded (a scraper would fill the trail). `--metrics-open` serves it
//! to anyone.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Action;
use crate::{ApiError, AppState, access};

/// With tokens configured (and without `--metrics-open`): an unscoped
/// token whose role may read metrics, else 401/403.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = state
        .options
        .tokens
        .as_ref()
        .filter(|_| !state.options.metrics_open)
    else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let refusal = match tokens.identify_header(header) {
        None => Some((None, ApiError::Unauthorized)),
        Some(id) if !id.role.may(Action::Metrics) || id.namespaces.is_some() => Some((
            Some(id.clone()),
            ApiError::Forbidden("read metrics (they count every namespace)".into()),
        )),
        Some(_) => None,
    };
    match refusal {
        None => next.run(request).await,
        Some((known, error)) => access::refuse(&state, &request, known, error),
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.store.stats();
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "ward_indexer_records_indexed_total",
        "counter",
        "Records committed to the index.",
        get(&stats.records_indexed),
    );
    metric(
        "ward_indexer_batches_acknowledged_total",
        "counter",
        "Batches acknowledged after their commit.",
        get(&stats.batches_acknowledged),
    );
    metric(
        "ward_indexer_commits_total",
        "counter",
        "Group commits.",
        get(&stats.commits),
    );
    metric(
        "ward_indexer_commit_errors_total",
        "counter",
        "Commits that failed (their batches were refused and are resent).",
        get(&stats.commit_errors),
    );
    metric(
        "ward_indexer_duplicates_dropped_total",
        "counter",
        "Replayed records recognised and not stored again.",
        get(&stats.duplicates_dropped),
    );
    metric(
        "ward_indexer_records_expired_total",
        "counter",
        "Records older than the retention period when they arrived, dropped by policy.",
        get(&stats.records_expired),
    );
    metric(
        "ward_indexer_partitions_removed_total",
        "counter",
        "Partitions removed by retention.",
        get(&stats.partitions_removed),
    );
    metric(
        "ward_indexer_partition_records_removed_total",
        "counter",
        "Records in partitions removed by retention.",
        get(&stats.partition_records_removed),
    );
    metric(
        "ward_indexer_partition_bytes_removed_total",
        "counter",
        "Bytes of partitions removed by retention.",
        get(&stats.partition_bytes_removed),
    );
    metric(
        "ward_indexer_partitions",
        "gauge",
        "Partitions on disk.",
        get(&stats.partitions),
    );
    metric(
        "ward_indexer_disk_bytes",
        "gauge",
        "Bytes of all partitions on disk (as of the last retention pass).",
        get(&stats.disk_bytes),
    );
    metric(
        "ward_indexer_segments",
        "gauge",
        "Searchable segments over all partitions.",
        get(&stats.segments),
    );
    metric(
        "ward_indexer_searchable_records",
        "gauge",
        "Records visible to search.",
        state.store.num_docs(),
    );
    metric(
        "ward_indexer_queries_cancelled_total",
        "counter",
        "Searches and aggregations stopped early because their request timed out or its client left.",
        get(&stats.queries_cancelled),
    );
    metric(
        "ward_indexer_partitions_open",
        "gauge",
        "Partitions open for writing.",
        get(&stats.partitions_open),
    );
    metric(
        "ward_indexer_writer_heap_bytes",
        "gauge",
        "Memory the open partitions' index writers may buffer before they flush (their bound).",
        get(&stats.writer_heap_bytes),
    );
    metric(
        "ward_indexer_replay_window_keys",
        "gauge",
        "Replay keys held exactly in memory (the latest records of each partition being written).",
        get(&stats.replay_window_keys),
    );
    metric(
        "ward_indexer_replay_window_bytes",
        "gauge",
        "Memory of the replay windows, about.",
        get(&stats.replay_window_bytes),
    );
    metric(
        "ward_indexer_replay_filter_bytes",
        "gauge",
        "Memory of the per-segment filters that guard replay lookups, and the per-second maps.",
        get(&stats.replay_filter_bytes),
    );
    metric(
        "ward_indexer_replay_lookups_total",
        "counter",
        "Records looked up in the index as possible replays of records outside the window.",
        get(&stats.replay_lookups),
    );
    metric(
        "ward_indexer_replay_lookup_passes_total",
        "counter",
        "Passes over a segment's records that replay lookups needed.",
        get(&stats.replay_lookup_passes),
    );
    metric(
        "ward_indexer_replay_filters_built_total",
        "counter",
        "Segment filters built for replay lookups.",
        get(&stats.replay_filters_built),
    );
    let bounds = state.store.memory_bounds();
    metric(
        "ward_indexer_docstore_cache_bound_bytes",
        "gauge",
        "Decompressed document-store blocks the segment readers may cache (32 MiB per segment).",
        bounds.docstore_cache_bytes as u64,
    );
    metric(
        "ward_indexer_live_tail_subscribers",
        "gauge",
        "Live-tail subscribers (while any, the last commits' records are kept for them).",
        bounds.live_tail_subscribers as u64,
    );
    metric(
        "ward_indexer_aggregation_budget_bytes",
        "gauge",
        "Memory one aggregation request may take.",
        bounds.aggregation_bytes,
    );
    metric(
        "ward_api_refusals_total",
        "counter",
        "API requests refused (401, 403, 429).",
        get(&state.refusals.refused),
    );
    metric(
        "ward_api_refusals_summarised_total",
        "counter",
        "Refused API requests counted in a summary of the audit trail instead of recorded one by one.",
        get(&state.refusals.summarised),
    );
    let redactor = state.store.redactor();
    let _ = writeln!(
        out,
        "# HELP ward_indexer_redaction_enabled Whether records are redacted before storage."
    );
    let _ = writeln!(out, "# TYPE ward_indexer_redaction_enabled gauge");
    let _ = writeln!(
        out,
        "ward_indexer_redaction_enabled {}",
        u8::from(redactor.is_enabled())
    );
    let _ = writeln!(
        out,
        "# HELP ward_indexer_redactions_total Values redacted before storage, by rule."
    );
    let _ = writeln!(out, "# TYPE ward_indexer_redactions_total counter");
    for (rule, n) in redactor.counts() {
        let _ = writeln!(out, "ward_indexer_redactions_total{{rule=\"{rule}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::http::StatusCode;
    use ward_indexer::{Store, StoreConfig};

    use crate::test_support::call;
    use crate::{ApiConfig, ApiOptions, auth::Tokens, router_with};

    /// Issue 15: `/metrics` answered anyone, tokens or not.
    #[tokio::test]
    async fn metrics_need_an_unscoped_token_when_tokens_are_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let tokens = Arc::new(
            Tokens::parse(
                "collector:collector-token-1234567\nviewer:viewer-token-12345678\nviewer/s@shop:scoped-token-1234567\n",
            )
            .unwrap(),
        );
        let options = |open: bool| ApiOptions {
            tokens: Some(tokens.clone()),
            metrics_open: open,
            ..Default::default()
        };
        let app = router_with(store.clone(), ApiConfig::default(), options(false));
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("collector-token-1234567"), StatusCode::FORBIDDEN),
            (Some("scoped-token-1234567"), StatusCode::FORBIDDEN),
            (Some("viewer-token-12345678"), StatusCode::OK),
        ] {
            let (status, _) = call(&app, "GET", "/metrics", token, None).await;
            assert_eq!(status, want, "{token:?}");
        }
        let open = router_with(store.clone(), ApiConfig::default(), options(true));
        assert_eq!(
            call(&open, "GET", "/metrics", None, None).await.0,
            StatusCode::OK
        );
        store.shutdown().await;
    }
}
