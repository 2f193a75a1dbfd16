//! `GET /api/v1/tail?q=&include_ward=`: matching records as Server-Sent Events, as they
//! are committed (see `ward_indexer::live_tail` for how matching works).
//!
//! Events: `hit` (data: one record's JSON) and `lagged` (data:
//! `{"skipped": n}`, commits this tail did not see because it or the
//! indexer fell behind). A comment is sent every 15 s to keep proxies from
//! closing an idle stream.
//!
//! The query compiles on the blocking pool (a costly regex must not hold
//! up the async runtime, health probes and ingest with it). Live tails are
//! capped per caller (`max_tails_per_caller`; without tokens every caller
//! is `anonymous`) and in all (`max_tails`): one more is a 429. A slot is
//! held by the response's stream and freed when it is dropped (the client
//! left, the store closed).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use ward_indexer::live_tail::TailEvent;

use crate::auth::Caller;
use crate::search::without_ward_trail;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TailParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    include_ward: bool,
}

pub(crate) async fn tail(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let q = without_ward_trail(params.q, params.include_ward)?;
    let slot = state.tails.acquire(caller.name())?;
    let store = state.store.clone();
    let scope = caller.namespaces.clone();
    let subscription = tokio::task::spawn_blocking(move || store.tail(&q, scope.as_deref()))
        .await
        .map_err(|e| ward_indexer::Error::Unavailable(e.to_string()))??;
    // (subscription, events of the current commit not yet sent, the slot)
    let stream = futures_util::stream::unfold(
        (
            subscription,
            std::collections::VecDeque::<Event>::new(),
            slot,
        ),
        |(mut sub, mut queue, slot)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok::<Event, Infallible>(event), (sub, queue, slot)));
                }
                match sub.next().await {
                    TailEvent::Hits(hits) => {
                        queue.extend(
                            hits.iter()
                                .map(|h| Event::default().event("hit").data(h.get())),
                        );
                    }
                    TailEvent::Lagged(n) => {
                        queue.push_back(
                            Event::default()
                                .event("lagged")
                                .data(format!("{{\"skipped\":{n}}}")),
                        );
                    }
                    TailEvent::Closed => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Live tails open, per caller and in all, within their caps.
#[derive(Debug)]
pub(crate) struct TailSlots {
    per_caller: usize,
    total: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open live tail; its slot is freed when dropped.
#[derive(Debug)]
pub(crate) struct TailSlot {
    slots: Arc<TailSlots>,
    caller: String,
}

impl TailSlots {
    pub(crate) fn new(per_caller: usize, total: usize) -> Arc<TailSlots> {
        Arc::new(TailSlots {
            per_caller,
            total,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<String, usize>)> {
        match self.open.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A slot for `caller`, or 429 when it or everyone holds the most.
    pub(crate) fn acquire(self: &Arc<Self>, caller: &str) -> Result<TailSlot, ApiError> {
        let mut open = self.lock();
        let mine = open.1.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(ApiError::TooManyTails(format!(
                "this caller already has {mine} live tails open"
            )));
        }
        if open.0 >= self.total {
            return Err(ApiError::TooManyTails(format!(
                "{} live tails are open, the most this indexer serves",
                open.0
            )));
        }
        open.0 += 1;
        *open.1.entry(caller.to_owned()).or_insert(0) += 1;
        Ok(TailSlot {
            slots: self.clone(),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for TailSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::task::Poll;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode};
    use tower::ServiceExt;
    use ward_indexer::{Store, StoreConfig};

    use crate::{ApiConfig, ApiOptions, auth::Tokens, router_with};

    fn app(store: &Store, config: ApiConfig, tokens: Option<&str>) -> Router {
        let options = ApiOptions {
            tokens: tokens.map(|t| Arc::new(Tokens::parse(t).unwrap())),
            ..Default::default()
        };
        router_with(store.clone(), config, options)
    }

    fn request(uri: &str, token: &str) -> Request<Body> {
        Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    }

    async fn tail(app: &Router, token: &str) -> Response<Body> {
        app.clone()
            .oneshot(request("/api/v1/tail?q=verb:get", token))
            .await
            .unwrap()
    }

    /// Issue 15: live tails were not capped at all.
    #[tokio::test]
    async fn live_tails_are_capped_per_token_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let config = ApiConfig {
            max_tails_per_caller: 2,
            max_tails: 3,
            audit_trail: false,
            ..ApiConfig::default()
        };
        let app = app(
            &store,
            config,
            Some("viewer/a:a-token-1234567890123\nviewer/b:b-token-1234567890123\n"),
        );
        let a1 = tail(&app, "a-token-1234567890123").await;
        let a2 = tail(&app, "a-token-1234567890123").await;
        assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
        let a3 = tail(&app, "a-token-1234567890123").await;
        assert_eq!(a3.status(), StatusCode::TOO_MANY_REQUESTS, "per token");
        let b1 = tail(&app, "b-token-1234567890123").await;
        assert_eq!(b1.status(), StatusCode::OK);
        let b2 = tail(&app, "b-token-1234567890123").await;
        assert_eq!(b2.status(), StatusCode::TOO_MANY_REQUESTS, "in all");
        // A client that leaves frees its slot.
        drop(a1);
        let b2 = tail(&app, "b-token-1234567890123").await;
        assert_eq!(b2.status(), StatusCode::OK);
        drop((a2, b1, b2));
        store.shutdown().await;
    }

    /// Issue 15: tail and export compiled their query on the async
    /// runtime: six tails of a costly regex stalled `/healthz` and ingest.
    /// The request now yields (its first poll is pending) while the query
    /// compiles on the blocking pool, and then answers.
    #[tokio::test]
    async fn tail_and_export_compile_queries_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let app = app(
            &store,
            ApiConfig {
                audit_trail: false,
                ..ApiConfig::default()
            },
            None,
        );
        let costly = "verb:%2F(%5Cw%7B1,8%7D)%7B1,10%7D%2F";
        for uri in [
            format!("/api/v1/tail?q={costly}"),
            format!("/api/v1/export?q={costly}"),
        ] {
            let mut call = Box::pin(app.clone().oneshot(request(&uri, "unused")));
            let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "{uri} compiled on the async runtime");
            // Refused (the regex is over the size limit) once compiled.
            let status = call.await.unwrap().status();
            assert!(
                matches!(status, StatusCode::OK | StatusCode::BAD_REQUEST),
                "{uri}: {status}"
            );
        }
        store.shutdown().await;
    }
}
