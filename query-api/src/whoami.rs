//! `GET /api/v1/whoami`: who the presented token belongs to and what its
//! role may do, so a client (the dashboard) offers only what the server
//! would allow. It is a convenience, not the check: every route still
//! refuses what the caller's role may not do.
//!
//! Any valid token may ask, an ingest token included; without a tokens
//! file the API is open and the answer says so (`auth: false`, every
//! action allowed).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Action, Caller};

#[derive(Debug, Serialize)]
pub(crate) struct WhoAmI {
    /// Whether the API checks tokens.
    auth: bool,
    /// `null` without tokens.
    role: Option<&'static str>,
    /// The token's label (or role and fingerprint), `anonymous` without tokens.
    name: String,
    /// The namespaces the token is limited to; `null` when it sees all.
    namespaces: Option<Vec<String>>,
    /// Each action of [`Action::ALL`] and whether the caller may do it.
    may: BTreeMap<&'static str, bool>,
    /// Whether the indexer keeps alerts (the alert and rule routes exist).
    alerts: bool,
    /// Said when the API runs without tokens: everything is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

/// What `whoami` says when no tokens are configured.
pub(crate) const OPEN_WARNING: &str = "no tokens are configured: every endpoint (search, ingest, \
     alert triage) is open to anyone who can reach this indexer";

pub(crate) async fn whoami(State(state): State<AppState>, caller: Caller) -> Json<WhoAmI> {
    let role = caller.identity.as_ref().map(|i| i.role);
    let may = Action::ALL
        .iter()
        .filter(|a| **a != Action::Whoami)
        .map(|a| (a.name(), role.is_none_or(|r| r.may(*a))))
        .collect();
    Json(WhoAmI {
        auth: state.options.tokens.is_some(),
        role: role.map(|r| r.name()),
        name: caller.name().to_owned(),
        namespaces: caller.namespaces.clone(),
        may,
        alerts: state.options.alerts.is_some(),
        warning: state.options.tokens.is_none().then_some(OPEN_WARNING),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::Router;
    use axum::http::StatusCode;
    use serde_json::Value;
    use ward_indexer::{Store, StoreConfig};

    use crate::{ApiConfig, ApiOptions, auth::Tokens, router_with};

    async fn whoami(app: &Router, token: Option<&str>) -> (StatusCode, Value) {
        crate::test_support::get(app, "/api/v1/whoami", token).await
    }

    #[tokio::test]
    async fn open_api_allows_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let app = router_with(store.clone(), ApiConfig::default(), ApiOptions::default());
        let (status, me) = whoami(&app, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["auth"], false);
        assert_eq!(me["role"], Value::Null);
        assert_eq!(me["name"], "anonymous");
        assert_eq!(me["alerts"], false);
        assert!(
            me["warning"].as_str().unwrap().contains("open"),
            "issue 15: an open API says so: {me}"
        );
        let may = me["may"].as_object().unwrap();
        assert_eq!(may.len(), 10);
        assert!(may.values().all(|v| v == true));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_say_their_role_and_what_it_may_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let tokens = Tokens::parse(
            "collector:collector-token-1234567\nviewer/vic@shop,pay:viewer-token-12345678\nanalyst/alice:analyst-token-1234567\nadmin:admin-token-123456789\n",
        )
        .unwrap();
        let options = ApiOptions {
            tokens: Some(Arc::new(tokens)),
            ..Default::default()
        };
        let app = router_with(store.clone(), ApiConfig::default(), options);
        assert_eq!(whoami(&app, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            whoami(&app, Some("not-a-token-at-all-1234")).await.0,
            StatusCode::UNAUTHORIZED
        );

        let (status, vic) = whoami(&app, Some("viewer-token-12345678")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(vic["auth"], true);
        assert!(vic.get("warning").is_none(), "{vic}");
        assert_eq!(vic["role"], "viewer");
        assert_eq!(vic["name"], "vic");
        assert_eq!(vic["namespaces"], serde_json::json!(["shop", "pay"]));
        assert_eq!(vic["may"]["search"], true);
        assert_eq!(vic["may"]["tail"], true);
        assert_eq!(vic["may"]["export"], false);
        assert_eq!(vic["may"]["triage"], false);
        assert_eq!(vic["may"]["ingest"], false);

        let (_, alice) = whoami(&app, Some("analyst-token-1234567")).await;
        assert_eq!(alice["role"], "analyst");
        assert_eq!(alice["name"], "alice");
        assert_eq!(alice["namespaces"], Value::Null);
        assert_eq!(alice["may"]["triage"], true);
        assert_eq!(alice["may"]["export"], true);
        assert_eq!(alice["may"]["backup"], false);

        let (status, collector) = whoami(&app, Some("collector-token-1234567")).await;
        assert_eq!(status, StatusCode::OK, "any valid token may ask");
        assert_eq!(collector["role"], "ingest");
        assert_eq!(collector["may"]["search"], false);
        assert_eq!(collector["may"]["ingest"], true);

        let (_, admin) = whoami(&app, Some("admin-token-123456789")).await;
        assert!(
            admin["may"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == true)
        );
        store.shutdown().await;
    }
}
