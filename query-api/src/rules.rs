//! `GET /api/v1/rules`: the rules the indexer runs now, for the dashboard's
//! Rules page: each rule's id, title, level, where it came from (built-in
//! pack or a file), how many alerts it raised (all and still open), the
//! filters, and why documents of the last load were skipped.
//!
//! The rules come from the live [`ward_alerts::RulesTap`] (so a reload of
//! the rule files shows at once) and the counts from the alert store (so
//! they survive restarts). Without rules the list is empty; without an
//! alert store the route answers 404 like the other alert routes.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use ward_alerts::{RuleAlertCounts, RuleLoadError};
use ward_rules::{Level, RuleSource};

use crate::alerts::{alerts, blocking};
use crate::auth::Caller;
use crate::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub(crate) struct RulesResponse {
    /// Whether the indexer runs rules at all.
    enabled: bool,
    count: usize,
    rules: Vec<RuleEntry>,
    filters: Vec<FilterEntry>,
    errors: Vec<RuleLoadError>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RuleEntry {
    id: String,
    title: String,
    level: Level,
    /// `builtin` or `file` (or `inline`).
    source: &'static str,
    /// Path inside the built-in pack, or the file.
    path: String,
    correlation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    tags: Vec<String>,
    /// Alerts stored for this rule, all and still open.
    alerts: u64,
    open: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FilterEntry {
    title: String,
    path: String,
    rules: Vec<String>,
}

fn source_parts(source: &RuleSource) -> (&'static str, String) {
    match source {
        RuleSource::Builtin(name) => ("builtin", name.clone()),
        RuleSource::File(path) => ("file", path.display().to_string()),
        RuleSource::Inline(name) => ("inline", name.clone()),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RulesResponse>, ApiError> {
    let api = alerts(&state)?;
    let store = api.store.clone();
    // A scoped caller counts only the alerts it may see.
    let scope = caller.namespaces;
    let counts = blocking(move || store.rule_counts_visible_to(scope.as_deref())).await?;
    let Some(tap) = api.tap.as_ref() else {
        return Ok(Json(RulesResponse {
            enabled: false,
            count: 0,
            rules: Vec::new(),
            filters: Vec::new(),
            errors: Vec::new(),
        }));
    };
    let set = tap.rules();
    let rules: Vec<RuleEntry> = set
        .rules()
        .iter()
        .map(|r| {
            let (source, path) = source_parts(&r.source);
            let c = counts
                .get(&r.id)
                .copied()
                .unwrap_or(RuleAlertCounts::default());
            RuleEntry {
                id: r.id.clone(),
                title: r.title.clone(),
                level: r.level,
                source,
                path,
                correlation: r.correlation,
                description: r.description.clone(),
                tags: r.tags.clone(),
                alerts: c.alerts,
                open: c.open,
            }
        })
        .collect();
    let filters = set
        .filters()
        .iter()
        .map(|f| FilterEntry {
            title: f.title.clone(),
            path: f.source.to_string(),
            rules: f.rules.clone(),
        })
        .collect();
    Ok(Json(RulesResponse {
        enabled: true,
        count: rules.len(),
        rules,
        filters,
        errors: tap.load_errors(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use ward_alerts::{AlertStore, RulesTap, SinksConfig};
    use ward_indexer::{Store, StoreConfig};

    use crate::test_support::get;
    use crate::{AlertsApi, ApiConfig, ApiOptions, auth::Tokens, router_with};

    #[tokio::test]
    async fn lists_live_rules_with_alert_counts_and_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        let alerts = AlertStore::open(&dir.path().join("alerts.redb")).unwrap();
        let (builtin, _) = ward_rules::RuleSet::builtin();
        let builtin_count = builtin.len();
        let tap = Arc::new(RulesTap::new(
            builtin,
            alerts.clone(),
            Arc::new(SinksConfig::default()),
            None,
        ));
        let (_, errors) =
            ward_rules::RuleSet::from_sources(&[("broken.yml", "title: broken\ndetection: {}\n")]);
        assert_eq!(errors.len(), 1);
        tap.set_load_errors(&errors);
        let mut config = StoreConfig::new(dir.path());
        config.commit_interval = std::time::Duration::from_millis(10);
        config.tap = Some(tap.clone());
        let store = Store::open(config).unwrap();
        let options = ApiOptions {
            tokens: Some(Arc::new(
                Tokens::parse("collector:collector-token-1234567\nviewer:viewer-token-12345678\n")
                    .unwrap(),
            )),
            alerts: Some(AlertsApi {
                store: alerts,
                tap: Some(tap),
            }),
            ..Default::default()
        };
        let app = router_with(store.clone(), ApiConfig::default(), options);

        let path = ward_testdata::fixtures().join("falco-traces/exec_pod.json");
        let text = std::fs::read_to_string(path).unwrap();
        let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let body = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event]});
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri("/api/v1/k8s/audit")
                    .header("authorization", "Bearer collector-token-1234567")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        assert_eq!(
            get(&app, "/api/v1/rules", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&app, "/api/v1/rules", Some("collector-token-1234567"))
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        let (status, list) = get(&app, "/api/v1/rules", Some("viewer-token-12345678")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["enabled"], true);
        assert_eq!(list["count"].as_u64().unwrap() as usize, builtin_count);
        let rules = list["rules"].as_array().unwrap();
        assert!(rules.iter().all(|r| r["source"] == "builtin"));
        assert!(
            rules
                .iter()
                .all(|r| r["path"].as_str().unwrap().ends_with(".yml"))
        );
        let hit: Vec<&Value> = rules
            .iter()
            .filter(|r| r["alerts"].as_u64().unwrap() > 0)
            .collect();
        assert!(!hit.is_empty(), "the exec event raised alerts");
        assert!(hit.iter().all(|r| r["open"] == r["alerts"]));
        assert!(
            hit.iter()
                .any(|r| r["title"].as_str().unwrap().to_lowercase().contains("exec"))
        );
        assert_eq!(list["errors"][0]["source"], "broken.yml");
        assert!(list["errors"][0]["error"].as_str().is_some());
        store.shutdown().await;
    }

    #[tokio::test]
    async fn without_an_alert_store_the_route_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let app = router_with(store.clone(), ApiConfig::default(), ApiOptions::default());
        assert_eq!(
            get(&app, "/api/v1/rules", None).await.0,
            StatusCode::NOT_FOUND
        );
        store.shutdown().await;
    }
}
