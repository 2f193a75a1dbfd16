//! `GET /api/v1/tail?q=`: matching records as Server-Sent Events, as they
//! are committed (see `ward_indexer::live_tail` for how matching works).
//!
//! Events: `hit` (data: one record's JSON) and `lagged` (data:
//! `{"skipped": n}`, commits this tail did not see because it or the
//! indexer fell behind). A comment is sent every 15 s to keep proxies from
//! closing an idle stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use ward_indexer::live_tail::TailEvent;

use crate::auth::Caller;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TailParams {
    #[serde(default)]
    q: String,
}

pub(crate) async fn tail(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<TailParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let subscription = state.store.tail(&params.q, caller.namespaces.as_deref())?;
    // (subscription, events of the current commit not yet sent)
    let stream = futures_util::stream::unfold(
        (subscription, std::collections::VecDeque::<Event>::new()),
        |(mut sub, mut queue)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok::<Event, Infallible>(event), (sub, queue)));
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
