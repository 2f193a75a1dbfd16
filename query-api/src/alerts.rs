//! Alerts and retro-hunts:
//!
//! - `GET /api/v1/alerts?level=&min_level=&rule=&status=&start=&end=&limit=`:
//!   newest first;
//! - `GET /api/v1/alerts/{id}`;
//! - `POST /api/v1/alerts/{id}/status` `{"status": "acknowledged", "by":
//!   "alice", "comment": "..."}`: with tokens configured it needs an analyst
//!   or admin token, and who changed it is the token's name (`by` is then
//!   ignored);
//! - `GET /api/v1/alerts/sinks`: delivery counts per sink and queue length;
//! - `POST /api/v1/rules/hunt` `{"start": ..., "end": ..., "rules": [{"name":
//!   "x.yml", "text": "<yaml>"}], "window_secs": 3600, "max_alerts": 1000}`:
//!   runs rules (the indexer's live rules when none are given) over the
//!   audit events indexed in `[start, end)` and returns the alerts without
//!   storing them. Same token rule as status changes;
//!
//! A caller limited to namespaces sees, changes and hunts only within them,
//! as search does: alerts by [`StoredAlert::visible_to`] (another
//! namespace's alert, or a cluster-scoped one, is a 404 to it), hunts over
//! the events of its namespaces only.
//! - `GET /api/v1/alerts/export`: the whole store as NDJSON
//!   ([`AlertStore::export`]) for backups and `ward snapshot`; admin
//!   tokens only (without a namespace scope: it is every alert).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ward_alerts::{AlertFilter, AlertStore, HuntRequest, RulesTap, Status, StoredAlert};
use ward_indexer::Cancel;
use ward_rules::Level;

use crate::auth::Caller;
use crate::search::parse_time;
use crate::{ApiError, AppState};

/// What the alert routes work on: the store, and the live rules (for hunts).
#[derive(Clone)]
pub struct AlertsApi {
    pub store: AlertStore,
    pub tap: Option<Arc<RulesTap>>,
}

impl std::fmt::Debug for AlertsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsApi")
            .field("rules", &self.tap.is_some())
            .finish()
    }
}

const DEFAULT_LIMIT: usize = 100;
const DEFAULT_HUNT_ALERTS: usize = 10_000;
/// A hunt window of an hour keeps memory bounded by one hour of audit events.
const DEFAULT_WINDOW_SECS: i64 = 3600;

pub(crate) fn alerts(state: &AppState) -> Result<&AlertsApi, ApiError> {
    state
        .options
        .alerts
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("alerts are not enabled on this indexer".into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    level: Option<String>,
    min_level: Option<String>,
    rule: Option<String>,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    count: usize,
    alerts: Vec<StoredAlert>,
}

fn parse<T: std::str::FromStr<Err = String>>(
    name: &str,
    value: Option<&str>,
) -> Result<Option<T>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
        })
        .transpose()
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let api = alerts(&state)?;
    let filter = AlertFilter {
        level: parse::<Level>("level", p.level.as_deref())?,
        min_level: parse::<Level>("min_level", p.min_level.as_deref())?,
        rule: p.rule.filter(|r| !r.is_empty()),
        status: parse::<Status>("status", p.status.as_deref())?,
        start: parse_time("start", p.start.as_deref())?,
        end: parse_time("end", p.end.as_deref())?,
        limit: p.limit.unwrap_or(DEFAULT_LIMIT),
        namespaces: caller.namespaces.clone(),
    };
    let store = api.store.clone();
    let alerts = blocking(move || store.list(&filter)).await?;
    Ok(Json(ListResponse {
        count: alerts.len(),
        alerts,
    }))
}

pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<StoredAlert>, ApiError> {
    let id = parse_id(&id)?;
    let store = alerts(&state)?.store.clone();
    let scope = caller.namespaces;
    Ok(Json(
        blocking(move || visible(&store, id, scope.as_deref())).await?,
    ))
}

/// The alert, when the caller's scope lets it see it; else as if there
/// were none (404), so a scoped caller learns nothing of other alerts.
fn visible(
    store: &AlertStore,
    id: u64,
    namespaces: Option<&[String]>,
) -> Result<StoredAlert, ward_alerts::Error> {
    let alert = store.get(id)?;
    if alert.visible_to(namespaces) {
        Ok(alert)
    } else {
        Err(ward_alerts::Error::NotFound(id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    status: String,
    by: Option<String>,
    comment: Option<String>,
}

pub(crate) async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<StatusBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<StoredAlert>, ApiError> {
    let id = parse_id(&id)?;
    let store = alerts(&state)?.store.clone();
    let token_name = triage_identity(&state, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status: Status = body.status.parse().map_err(ApiError::BadRequest)?;
    let by = match token_name {
        Some(name) => name,
        None => body
            .by
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "anonymous".into()),
    };
    if by.len() > 200 || body.comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        return Err(ApiError::BadRequest(
            "by is limited to 200 bytes and comment to 10,000".into(),
        ));
    }
    tracing::info!(alert_id = id, status = status.as_str(), by = %by, "alert status changed");
    let comment = body.comment;
    let scope = caller.namespaces;
    Ok(Json(
        blocking(move || {
            // An alert's namespace never changes: checked, then changed.
            visible(&store, id, scope.as_deref())?;
            store.set_status(id, status, &by, comment)
        })
        .await?,
    ))
}

pub(crate) async fn sinks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = alerts(&state)?.store.clone();
    let (counts, queued) = blocking(move || Ok((store.sink_counts()?, store.queue_len()?))).await?;
    Ok(Json(json!({ "sinks": counts, "queued": queued })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HuntBody {
    start: String,
    end: String,
    /// Rule files as text; the live rules when absent.
    rules: Option<Vec<RuleText>>,
    window_secs: Option<i64>,
    max_alerts: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleText {
    name: String,
    text: String,
}

pub(crate) async fn hunt(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<HuntBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    triage_identity(&state, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let start = parse_time("start", Some(&body.start))?
        .ok_or_else(|| ApiError::BadRequest("start is required".into()))?;
    let end = parse_time("end", Some(&body.end))?
        .ok_or_else(|| ApiError::BadRequest("end is required".into()))?;
    let (rules, errors) = match body.rules {
        Some(texts) => {
            let sources: Vec<(String, String)> =
                texts.into_iter().map(|r| (r.name, r.text)).collect();
            ward_rules::RuleSet::from_sources(&sources)
        }
        None => match state.options.alerts.as_ref().and_then(|a| a.tap.as_ref()) {
            Some(tap) => (tap.rules(), Vec::new()),
            None => {
                return Err(ApiError::BadRequest(
                    "this indexer runs no rules: send rules with the hunt".into(),
                ));
            }
        },
    };
    let rule_errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if rules.rules().is_empty() {
        return Err(ApiError::BadRequest(format!(
            "no rule could be loaded: {}",
            rule_errors.join("; ")
        )));
    }
    let window_secs = body.window_secs.unwrap_or(DEFAULT_WINDOW_SECS);
    let window = TimeDelta::try_seconds(window_secs)
        .filter(|w| *w > TimeDelta::zero() && *w <= ward_alerts::hunt::MAX_WINDOW)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "window_secs must be between 1 and {}",
                ward_alerts::hunt::MAX_WINDOW.num_seconds()
            ))
        })?;
    let max_alerts = body.max_alerts.unwrap_or(DEFAULT_HUNT_ALERTS);
    if max_alerts > ward_alerts::hunt::MAX_ALERTS {
        return Err(ApiError::BadRequest(format!(
            "max_alerts must be at most {}",
            ward_alerts::hunt::MAX_ALERTS
        )));
    }
    // Dropped with this future (the request timed out, the client left):
    // the hunt on the blocking pool then stops.
    let cancel = Cancel::new();
    let _cancel_on_drop = cancel.on_drop();
    let request = HuntRequest {
        start,
        end,
        window,
        max_alerts,
        namespaces: caller.namespaces.clone(),
        cancel,
    };
    let rule_count = rules.rules().len();
    let index = state.store.clone();
    let report = blocking(move || ward_alerts::hunt(&index, rules, &request)).await?;
    tracing::info!(
        rules = rule_count,
        events = report.events,
        alerts = report.alerts.len(),
        "retro-hunt finished"
    );
    Ok(Json(json!({
        "rules": rule_count,
        "rule_errors": rule_errors,
        "events": report.events,
        "alerts": report.alerts,
        "truncated": report.truncated,
    })))
}

/// `GET /api/v1/alerts/export`. The export runs on a blocking thread and
/// writes into a channel of a few 64 KiB chunks that the response body
/// reads: memory stays bounded whatever the store's size, and a slow
/// client slows the export (its read transaction stays open meanwhile,
/// which only delays reclaiming pages the writer frees). An export that
/// fails midway ends the stream with an error, and the dump then lacks its
/// end line, which an import refuses.
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    if caller.namespaces.is_some() {
        return Err(ApiError::Forbidden(
            "backup with a token limited to namespaces".into(),
        ));
    }
    let store = alerts(&state)?.store.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter(tx.clone());
        match store.export(&mut out) {
            Ok(counts) => tracing::info!(
                alerts = counts.alerts,
                deliveries = counts.deliveries,
                "alert store export finished"
            ),
            Err(ward_alerts::Error::DumpIo(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::info!("alert store export client went away");
            }
            Err(e) => {
                tracing::warn!(error = %e, "alert store export stopped");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"ward-alerts.ndjson\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The export's output: each write becomes a chunk of the response body,
/// waiting while the channel is full.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With tokens configured: the name of an analyst or admin token, or 401.
/// Without: `None` (anyone may).
fn triage_identity(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(tokens) = &state.options.tokens else {
        return Ok(None);
    };
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match tokens.identity_of_header(header) {
        Some((role, name)) if role.may_triage() => Ok(Some(name.to_owned())),
        _ => Err(ApiError::Unauthorized),
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("alert id {id:?} is not a number")))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ward_alerts::Error> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ward_indexer::Error::Unavailable(e.to_string()))??)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use ward_alerts::{AlertStore, RulesTap, SinksConfig};
    use ward_indexer::{Store, StoreConfig};

    use super::*;
    use crate::test_support::call;
    use crate::{ApiConfig, ApiOptions, auth::Tokens, router_with};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        app: Router,
    }

    fn setup(tokens: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let alerts = AlertStore::open(&dir.path().join("alerts.redb")).unwrap();
        let (rules, errors) = ward_rules::RuleSet::builtin();
        assert!(errors.is_empty());
        let tap = Arc::new(RulesTap::new(
            rules,
            alerts.clone(),
            Arc::new(SinksConfig::default()),
            None,
        ));
        let mut config = StoreConfig::new(dir.path());
        config.commit_interval = std::time::Duration::from_millis(10);
        config.tap = Some(tap.clone());
        let store = Store::open(config).unwrap();
        let options = ApiOptions {
            tokens: tokens.map(|t| Arc::new(Tokens::parse(t).unwrap())),
            alerts: Some(AlertsApi {
                store: alerts,
                tap: Some(tap),
            }),
            ..Default::default()
        };
        let app = router_with(store.clone(), ApiConfig::default(), options);
        Fixture {
            _dir: dir,
            store,
            app,
        }
    }

    fn exec_event_list() -> String {
        let path = ward_testdata::fixtures().join("falco-traces/exec_pod.json");
        let text = std::fs::read_to_string(path).unwrap();
        let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event]}).to_string()
    }

    async fn ingest(app: &Router, token: Option<&str>) {
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/v1/k8s/audit")
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(exec_event_list())).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn timelines_hold_the_alerts_their_events_raised() {
        let f = setup(None);
        ingest(&f.app, None).await;
        let event: Value = serde_json::from_str(&exec_event_list()).unwrap();
        let event = &event["items"][0];
        let user = event["user"]["username"].as_str().unwrap();
        let audit_id = event["auditID"].as_str().unwrap();
        let pod = format!(
            "{}/{}",
            event["objectRef"]["namespace"].as_str().unwrap(),
            event["objectRef"]["name"].as_str().unwrap()
        );
        let (_, list) = call(&f.app, "GET", "/api/v1/alerts", None, None).await;
        let raised = list["count"].as_u64().unwrap();
        assert!(raised >= 1, "{list}");
        let exec_id = list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["title"].as_str().unwrap().to_lowercase().contains("exec"))
            .unwrap()["id"]
            .clone();
        call(
            &f.app,
            "POST",
            &format!("/api/v1/alerts/{exec_id}/status"),
            None,
            Some(json!({"status": "acknowledged", "by": "bob"})),
        )
        .await;

        for entity in [format!("user:{user}"), format!("pod:{pod}")] {
            let uri = format!("/api/v1/timeline?entity={}", urlencode(&entity));
            let (status, body) = call(&f.app, "GET", &uri, None, None).await;
            assert_eq!(status, StatusCode::OK, "{entity}: {body}");
            assert_eq!(body["total"], 1, "{entity}: {body}");
            let alerts = body["alerts"].as_array().unwrap();
            assert_eq!(
                alerts.len() as u64,
                raised,
                "every alert of the event: {body}"
            );
            let exec = alerts.iter().find(|a| a["id"] == exec_id).unwrap();
            assert_eq!(exec["status"], "acknowledged", "current triage status");
            assert_eq!(exec["audit_ids"], json!([audit_id]));
            for key in ["rule_id", "title", "level", "timestamp", "event_ids"] {
                assert!(!exec[key].is_null(), "{key} in {exec}");
            }
            let times: Vec<&str> = alerts
                .iter()
                .map(|a| a["timestamp"].as_str().unwrap())
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        }
        // Another entity's timeline holds neither the event nor its alerts.
        let (status, other) = call(
            &f.app,
            "GET",
            "/api/v1/timeline?entity=user:nobody",
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(other["alerts"], json!([]));
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn ingest_raises_alerts_that_list_filter_and_change_status() {
        let f = setup(None);
        ingest(&f.app, None).await;
        let (status, list) = call(&f.app, "GET", "/api/v1/alerts", None, None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let count = list["count"].as_u64().unwrap();
        assert!(count >= 1);
        let exec = list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["title"].as_str().unwrap().to_lowercase().contains("exec"))
            .unwrap()
            .clone();
        let id = exec["id"].as_u64().unwrap();
        assert_eq!(exec["status"], "open");

        // A replayed webhook call adds no alert.
        ingest(&f.app, None).await;
        let (_, again) = call(&f.app, "GET", "/api/v1/alerts", None, None).await;
        assert_eq!(again["count"].as_u64().unwrap(), count);

        let (status, one) = call(&f.app, "GET", &format!("/api/v1/alerts/{id}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["rule_id"], exec["rule_id"]);

        let (status, changed) = call(
            &f.app,
            "POST",
            &format!("/api/v1/alerts/{id}/status"),
            None,
            Some(json!({"status": "acknowledged", "by": "alice", "comment": "on it"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(changed["status"], "acknowledged");
        assert_eq!(changed["history"][1]["by"], "alice");
        assert_eq!(changed["history"][1]["comment"], "on it");
        assert!(changed["history"][1]["at"].is_string());

        let (_, acked) = call(
            &f.app,
            "GET",
            "/api/v1/alerts?status=acknowledged",
            None,
            None,
        )
        .await;
        assert_eq!(acked["count"], 1);
        let rule = exec["rule_id"].as_str().unwrap();
        let (_, by_rule) = call(
            &f.app,
            "GET",
            &format!(
                "/api/v1/alerts?rule={rule}&level={}",
                exec["level"].as_str().unwrap()
            ),
            None,
            None,
        )
        .await;
        assert_eq!(by_rule["count"], 1);
        let (_, none) = call(
            &f.app,
            "GET",
            "/api/v1/alerts?end=2000-01-01T00:00:00Z",
            None,
            None,
        )
        .await;
        assert_eq!(none["count"], 0);

        for (uri, want) in [
            ("/api/v1/alerts?level=severe", StatusCode::BAD_REQUEST),
            ("/api/v1/alerts?colour=red", StatusCode::BAD_REQUEST),
            ("/api/v1/alerts?limit=10001", StatusCode::BAD_REQUEST),
            ("/api/v1/alerts/999", StatusCode::NOT_FOUND),
            ("/api/v1/alerts/x", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(call(&f.app, "GET", uri, None, None).await.0, want, "{uri}");
        }
        let (status, _) = call(
            &f.app,
            "POST",
            &format!("/api/v1/alerts/{id}/status"),
            None,
            Some(json!({"status": "solved"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Retro-hunt over the indexed event, with the live rules and with
        // rules sent along; nothing is stored.
        let range = json!({"start": "2018-10-26T00:00:00Z", "end": "2018-10-27T00:00:00Z"});
        let (status, hunt) = call(
            &f.app,
            "POST",
            "/api/v1/rules/hunt",
            None,
            Some(range.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{hunt}");
        assert_eq!(hunt["events"], 1);
        assert_eq!(hunt["alerts"].as_array().unwrap().len() as u64, count);
        let mut custom = range.clone();
        custom["rules"] = json!([
            {"name": "bad.yml", "text": "title: broken\ndetection: {}\n"},
            {"name": "exec.yml", "text": "title: Any exec\nid: any-exec\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s: {objectRef.subresource: exec}\n  condition: s\n"}
        ]);
        let (status, hunt) = call(&f.app, "POST", "/api/v1/rules/hunt", None, Some(custom)).await;
        assert_eq!(status, StatusCode::OK, "{hunt}");
        assert_eq!(hunt["rules"], 1);
        assert_eq!(hunt["rule_errors"].as_array().unwrap().len(), 1);
        assert_eq!(hunt["alerts"][0]["rule_id"], "any-exec");
        assert!(
            hunt["alerts"][0]["event_id"]
                .as_str()
                .unwrap()
                .starts_with("audit:")
        );
        let (_, after) = call(&f.app, "GET", "/api/v1/alerts", None, None).await;
        assert_eq!(
            after["count"].as_u64().unwrap(),
            count,
            "hunts store nothing"
        );
        let (status, _) = call(
            &f.app,
            "POST",
            "/api/v1/rules/hunt",
            None,
            Some(json!({"start": "2018-10-27T00:00:00Z", "end": "2018-10-26T00:00:00Z"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        f.store.shutdown().await;
    }

    #[tokio::test]
    async fn export_streams_the_whole_store_to_admins_only() {
        let f = setup(Some(
            "collector:collector-token-1234567\nanalyst/alice:analyst-token-1234567\nadmin/ops:admin-token-123456789\nadmin/shop@shop:shop-admin-token-12345\n",
        ));
        ingest(&f.app, Some("collector-token-1234567")).await;
        let (_, list) = call(
            &f.app,
            "GET",
            "/api/v1/alerts",
            Some("admin-token-123456789"),
            None,
        )
        .await;
        let count = list["count"].as_u64().unwrap();
        assert!(count >= 1);
        let id = list["alerts"][0]["id"].as_u64().unwrap();
        let (status, _) = call(
            &f.app,
            "POST",
            &format!("/api/v1/alerts/{id}/status"),
            Some("analyst-token-1234567"),
            Some(json!({"status": "acknowledged"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        let get = |token: Option<&str>| {
            let mut req = Request::builder().uri("/api/v1/alerts/export");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            f.app.clone().oneshot(req.body(Body::empty()).unwrap())
        };
        let resp = get(Some("admin-token-123456789")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["format"], "ward-alerts");
        assert_eq!(lines.last().unwrap()["end"]["alerts"], count);
        let acked = lines.iter().find(|l| l["alert"]["id"] == id).unwrap();
        assert_eq!(acked["alert"]["status"], "acknowledged");
        assert_eq!(acked["alert"]["history"][1]["by"], "alice");
        // What it streamed is a dump a new store can be made from.
        let dir = tempfile::tempdir().unwrap();
        let counts = AlertStore::import(&dir.path().join("alerts.redb"), &bytes[..]).unwrap();
        assert_eq!(counts.alerts, count);

        for (token, want) in [
            (Some("analyst-token-1234567"), StatusCode::FORBIDDEN),
            (Some("collector-token-1234567"), StatusCode::FORBIDDEN),
            (Some("shop-admin-token-12345"), StatusCode::FORBIDDEN),
            (None, StatusCode::UNAUTHORIZED),
        ] {
            assert_eq!(get(token).await.unwrap().status(), want, "{token:?}");
        }
        f.store.shutdown().await;
    }

    /// The exec into `default/nginx…` and a cluster-scoped binding to
    /// cluster-admin, as one webhook call.
    async fn ingest_exec_and_cluster_binding(app: &Router, token: &str) {
        let dir = ward_testdata::fixtures().join("falco-traces");
        let items: Vec<Value> = ["exec_pod.json", "attach_cluster_admin_role.json"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(dir.join(f)).unwrap();
                serde_json::from_str(text.lines().next().unwrap()).unwrap()
            })
            .collect();
        let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items});
        let (status, body) = call(app, "POST", "/api/v1/k8s/audit", Some(token), Some(list)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Issue 15: a namespace-scoped token listed, read and closed every
    /// alert, and its hunts read every namespace's events.
    #[tokio::test]
    async fn scopes_hold_on_alerts_and_hunts() {
        let f = setup(Some(
            "collector:collector-token-1234567\nanalyst/all:analyst-token-1234567\nanalyst/dee@default:default-token-1234567\nanalyst/sam@shop:shop-token-1234567890\n",
        ));
        ingest_exec_and_cluster_binding(&f.app, "collector-token-1234567").await;
        let list = |token: &'static str| {
            let app = f.app.clone();
            async move {
                let (status, body) = call(&app, "GET", "/api/v1/alerts", Some(token), None).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body["alerts"].as_array().unwrap().clone()
            }
        };
        let all = list("analyst-token-1234567").await;
        let cluster = all
            .iter()
            .find(|a| a["namespace"].is_null())
            .expect("a cluster-scoped alert")
            .clone();
        let in_default = all
            .iter()
            .find(|a| a["namespace"] == "default")
            .expect("an alert in default")
            .clone();
        let dee = list("default-token-1234567").await;
        assert!(!dee.is_empty());
        assert!(dee.iter().all(|a| a["namespace"] == "default"), "{dee:?}");
        assert!(list("shop-token-1234567890").await.is_empty());

        let cluster_id = cluster["id"].as_u64().unwrap();
        let default_id = in_default["id"].as_u64().unwrap();
        for (token, id, want) in [
            ("shop-token-1234567890", default_id, StatusCode::NOT_FOUND),
            ("default-token-1234567", cluster_id, StatusCode::NOT_FOUND),
            ("default-token-1234567", default_id, StatusCode::OK),
            ("analyst-token-1234567", cluster_id, StatusCode::OK),
        ] {
            let uri = format!("/api/v1/alerts/{id}");
            assert_eq!(
                call(&f.app, "GET", &uri, Some(token), None).await.0,
                want,
                "{token} {id}"
            );
            let body = json!({"status": "closed"});
            let (status, _) = call(
                &f.app,
                "POST",
                &format!("{uri}/status"),
                Some(token),
                Some(body),
            )
            .await;
            assert_eq!(status, want, "status of {id} by {token}");
        }
        let (_, unchanged) = call(
            &f.app,
            "GET",
            &format!("/api/v1/alerts/{default_id}"),
            Some("analyst-token-1234567"),
            None,
        )
        .await;
        assert_eq!(
            unchanged["history"].as_array().unwrap().len(),
            2,
            "only dee's change"
        );

        // Rule counts and timelines count only what the scope may see.
        let (_, rules) = call(
            &f.app,
            "GET",
            "/api/v1/rules",
            Some("shop-token-1234567890"),
            None,
        )
        .await;
        let counted: u64 = rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alerts"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 0, "{rules}");

        // Hunts read only the scope's events.
        let range = json!({"start": "2018-10-26T00:00:00Z", "end": "2018-10-27T00:00:00Z"});
        let hunt = |token: &'static str| {
            let (app, range) = (f.app.clone(), range.clone());
            async move {
                let (status, body) =
                    call(&app, "POST", "/api/v1/rules/hunt", Some(token), Some(range)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body
            }
        };
        assert_eq!(hunt("analyst-token-1234567").await["events"], 2);
        let dee = hunt("default-token-1234567").await;
        assert_eq!(dee["events"], 1, "{dee}");
        assert!(
            dee["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| !a.to_string().contains("some-reader-binding")),
            "{dee}"
        );
        assert_eq!(hunt("shop-token-1234567890").await["events"], 0);
        f.store.shutdown().await;
    }

    /// Issue 15: `window_secs` = i64::MAX panicked the handler (the
    /// connection dropped); bounds are a 400.
    #[tokio::test]
    async fn hunt_bounds_are_a_bad_request() {
        let f = setup(None);
        for extra in [
            json!({"window_secs": i64::MAX}),
            json!({"window_secs": 0}),
            json!({"window_secs": -5}),
            json!({"window_secs": 86_401}),
            json!({"max_alerts": 100_001}),
        ] {
            let mut body = json!({"start": "2018-10-26T00:00:00Z", "end": "2018-10-27T00:00:00Z"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, answer) =
                call(&f.app, "POST", "/api/v1/rules/hunt", None, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {answer}");
        }
        f.store.shutdown().await;
    }

    #[tokio::test]
    async fn with_tokens_status_changes_need_an_analyst_and_record_its_name() {
        let f = setup(Some(
            "collector:collector-token-1234567\nreader:reader-token-12345678\nanalyst/alice:analyst-token-1234567\n",
        ));
        ingest(&f.app, Some("collector-token-1234567")).await;
        // Reading alerts needs a token too (a viewer's will do).
        let (status, _) = call(&f.app, "GET", "/api/v1/alerts?limit=1", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (_, list) = call(
            &f.app,
            "GET",
            "/api/v1/alerts?limit=1",
            Some("reader-token-12345678"),
            None,
        )
        .await;
        let id = list["alerts"][0]["id"].as_u64().unwrap();
        let uri = format!("/api/v1/alerts/{id}/status");
        let body = json!({"status": "closed", "by": "mallory"});
        let (status, _) = call(&f.app, "POST", &uri, None, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        for token in ["reader-token-12345678", "collector-token-1234567"] {
            let (status, _) = call(&f.app, "POST", &uri, Some(token), Some(body.clone())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{token:?}");
        }
        let (status, changed) = call(
            &f.app,
            "POST",
            &uri,
            Some("analyst-token-1234567"),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            changed["history"][1]["by"], "alice",
            "the token's label, not the body's"
        );
        assert_eq!(changed["status"], "closed");
        let (status, _) = call(
            &f.app,
            "POST",
            "/api/v1/rules/hunt",
            Some("reader-token-12345678"),
            Some(json!({"start": "2018-10-26T00:00:00Z", "end": "2018-10-27T00:00:00Z"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        f.store.shutdown().await;
    }
}
