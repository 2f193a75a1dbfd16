//! The investigation endpoints through the real router (`oneshot`) on real
//! indexes: aggregate, export, tail, timeline, and access control with the
//! audit trail.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use ward_event::wire::{BatchWriter, DecodedRecord};
use ward_event::{Record, SourceKind};
use ward_indexer::{Store, StoreConfig};
use ward_query_api::auth::Tokens;
use ward_query_api::{ApiConfig, ApiOptions, router, router_with};

const T0: i64 = 1_795_474_800;

fn audit(i: i64, user: &str, verb: &str, ns: &str, sub: Option<&str>) -> DecodedRecord {
    let mut object = json!({"resource": "pods", "namespace": ns, "name": format!("web-{}", i % 2)});
    if let Some(s) = sub {
        object["subresource"] = json!(s);
    }
    Record {
        id: format!("a/{i}"),
        source: SourceKind::Audit,
        timestamp: chrono::DateTime::from_timestamp(T0 + i, 0).unwrap(),
        cluster: None,
        node: None,
        flags: vec![],
        parse_error: None,
        file: None,
        offset: None,
        event: json!({"verb": verb, "user": {"username": user}, "objectRef": object,
                      "sourceIPs": [format!("10.0.{}.{}", i % 3, i % 250)]})
        .as_object()
        .unwrap()
        .clone(),
    }
}

fn container(i: i64, ns: &str, pod: &str, message: &str) -> DecodedRecord {
    Record {
        id: format!("c/{i}"),
        source: SourceKind::Container,
        timestamp: chrono::DateTime::from_timestamp(T0 + i, 0).unwrap(),
        cluster: None,
        node: Some("n1".into()),
        flags: vec![],
        parse_error: None,
        file: None,
        offset: None,
        event: json!({"message": message, "stream": "stdout",
                      "kubernetes": {"namespace": ns, "pod": pod, "container": "app"}})
        .as_object()
        .unwrap()
        .clone(),
    }
}

fn quiet() -> ApiConfig {
    ApiConfig {
        audit_trail: false,
        ..ApiConfig::default()
    }
}

async fn store_with(records: Vec<DecodedRecord>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.commit_interval = Duration::from_millis(20);
    let store = Store::open(config).unwrap();
    if !records.is_empty() {
        store.ingest(records).await.unwrap();
    }
    (dir, store)
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn get_as(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn aggregate_endpoint() {
    let records = (0..60)
        .map(|i| {
            audit(
                i,
                if i % 3 == 0 { "alice" } else { "bob" },
                "get",
                "shop",
                None,
            )
        })
        .collect();
    let (_dir, store) = store_with(records).await;
    let app = router(store.clone(), quiet());
    let (status, body) = call(
        &app,
        get("/api/v1/aggregate?q=verb:get&start=2026-11-23T23:00:00Z&end=2026-11-23T23:01:00Z&histogram=10s&terms=user.username&size=5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 60);
    assert_eq!(body["histogram"]["buckets"].as_array().unwrap().len(), 6);
    assert_eq!(body["histogram"]["buckets"][0]["count"], 10);
    assert_eq!(
        body["terms"]["buckets"][0],
        json!({"key": "bob", "count": 40})
    );
    let (status, body) = call(&app, get("/api/v1/aggregate?terms=requestURI")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("keyword column"));
    let (status, body) = call(
        &app,
        get("/api/v1/aggregate?histogram=1ms&start=2026-01-01T00:00:00Z&end=2026-12-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["kind"], "budget");
    let (status, _) = call(&app, get("/api/v1/aggregate?histogram=fortnightly")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    store.shutdown().await;
}

#[tokio::test]
async fn export_streams_every_match_in_time_order() {
    let n = 2_500;
    let records = (0..n)
        .map(|i| container(i, "shop", "web-0", &format!("line {i}, \"quoted\"")))
        .collect();
    let (_dir, store) = store_with(records).await;
    // Pages of 64 hits: the export walks 40 pages with the cursor.
    let app = router(
        store.clone(),
        ApiConfig {
            export_page_size: 64,
            ..quiet()
        },
    );
    let resp = app
        .clone()
        .oneshot(get("/api/v1/export?q=kubernetes.namespace:shop"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    // Read it as a stream, chunk by chunk, without keeping the body.
    let mut stream = resp.into_body().into_data_stream();
    let mut rest = Vec::new();
    let mut count = 0i64;
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        chunks += 1;
        rest.extend_from_slice(&chunk);
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = rest.drain(..=pos).collect();
            let hit: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(
                hit["ward"]["id"],
                format!("c/{count}"),
                "oldest first, none skipped"
            );
            count += 1;
        }
    }
    assert_eq!(count, n);
    assert!(chunks >= 40, "{chunks} chunks: streamed page by page");

    let (status, body) = call(
        &app,
        get("/api/v1/export?q=message:%22line%207%22&format=csv"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    let mut lines = text.split("\r\n");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("timestamp,source,cluster,node,namespace")
    );
    let row = lines.next().unwrap();
    assert!(row.contains("\"line 7, \"\"quoted\"\"\""), "{row}");
    let (status, body) = call(&app, get("/api/v1/export?q=verb:(")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(&app, get("/api/v1/export?format=xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    store.shutdown().await;
}

#[tokio::test]
async fn tail_streams_new_matches_as_server_sent_events() {
    let (_dir, store) = store_with(vec![]).await;
    let app = router(store.clone(), quiet());
    let resp = app
        .clone()
        .oneshot(get("/api/v1/tail?q=message:panic"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = resp.into_body().into_data_stream();
    let ingest = {
        let store = store.clone();
        tokio::spawn(async move {
            // Give the subscriber a moment, then write.
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .ingest(vec![
                    container(1, "shop", "web-0", "all good"),
                    container(2, "shop", "web-0", "panic: nil map"),
                ])
                .await
                .unwrap();
        })
    };
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    ingest.await.unwrap();
    assert!(text.starts_with("event: hit\ndata: "), "{text}");
    assert!(text.contains("panic: nil map"), "{text}");
    assert!(!text.contains("all good"), "{text}");
    let (status, _) = call(&app, get("/api/v1/tail?q=a:(")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    store.shutdown().await;
}

#[tokio::test]
async fn timeline_of_a_user_an_ip_and_a_pod() {
    let records = vec![
        audit(1, "mallory", "get", "shop", None),
        audit(2, "mallory", "create", "shop", Some("exec")),
        audit(3, "alice", "get", "shop", None),
        {
            let mut r = audit(4, "mallory", "get", "payments", None);
            r.event["objectRef"] =
                json!({"resource": "secrets", "namespace": "payments", "name": "db"});
            r
        },
        container(5, "shop", "web-0", "sh: whoami"),
        container(6, "shop", "web-1", "other pod"),
    ];
    let (_dir, store) = store_with(records).await;
    let app = router(store.clone(), quiet());
    let (status, body) = call(&app, get("/api/v1/timeline?entity=user:mallory")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ward"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a/1", "a/2", "a/4"], "oldest first");
    assert_eq!(
        body["related"]["pods_exec"],
        json!([{"value": "shop/web-0", "count": 1}])
    );
    assert_eq!(
        body["related"]["secrets_read"],
        json!([{"value": "payments/db", "count": 1}])
    );
    assert_eq!(body["related"]["source_ips"].as_array().unwrap().len(), 3);

    let (_, body) = call(&app, get("/api/v1/timeline?entity=pod:shop/web-0")).await;
    let ids: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ward"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["a/2", "c/5"],
        "audit events about the pod and its own lines"
    );
    assert_eq!(
        body["related"]["users"],
        json!([{"value": "mallory", "count": 1}])
    );

    let (_, body) = call(&app, get("/api/v1/timeline?entity=ip:10.0.1.0/24")).await;
    assert_eq!(body["total"], 2, "{body}");
    let (status, _) = call(&app, get("/api/v1/timeline?entity=pod:nopod")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    store.shutdown().await;
}

const TOKENS: &str = "\
viewer/vera:viewer-token-00000000
viewer/nina@shop:scoped-token-0000000
analyst/ann:analyst-token-0000000
admin/root:admin-token-000000000
collector:ingest-token-00000000
";

#[tokio::test]
async fn roles_scopes_rate_limits_and_the_audit_trail() {
    let records = vec![
        audit(1, "alice", "get", "shop", None),
        audit(2, "alice", "get", "payments", None),
        container(3, "shop", "web-0", "hello"),
        container(4, "payments", "pay-0", "hello"),
    ];
    let (_dir, store) = store_with(records).await;
    let options = ApiOptions {
        tokens: Some(Arc::new(Tokens::parse(TOKENS).unwrap())),
        ..ApiOptions::default()
    };
    let app = router_with(store.clone(), ApiConfig::default(), options.clone());
    let endpoints = [
        "/api/v1/search?q=*",
        "/api/v1/aggregate?terms=verb",
        "/api/v1/timeline?entity=user:alice",
        "/api/v1/export?q=*",
        "/api/v1/tail?q=*",
    ];
    for uri in endpoints {
        let (status, _) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} without a token");
        let (status, _) = call(&app, get_as(uri, "wrong-token-000000000")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{uri} with an unknown token"
        );
        let (status, _) = call(&app, get_as(uri, "ingest-token-00000000")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} with an ingest token");
        let viewer = app
            .clone()
            .oneshot(get_as(uri, "viewer-token-00000000"))
            .await
            .unwrap();
        let want = if uri.contains("export") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(viewer.status(), want, "{uri} as a viewer");
        for token in ["analyst-token-0000000", "admin-token-000000000"] {
            let resp = app.clone().oneshot(get_as(uri, token)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{uri} as {token}");
        }
    }
    // Ingest stays ingest-only.
    let batch = {
        let mut w = BatchWriter::new();
        w.push(&audit(9, "x", "get", "shop", None)).unwrap();
        w.take()
    };
    let ingest = |token: &str| {
        Request::post("/api/v1/ingest")
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(batch.clone()))
            .unwrap()
    };
    let (status, _) = call(&app, ingest("viewer-token-00000000")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, ingest("ingest-token-00000000")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A namespace scope filters audit events and container lines.
    let (_, body) = call(&app, get_as("/api/v1/search?q=*", "scoped-token-0000000")).await;
    let mut ids: Vec<&str> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ward"]["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["a/1", "a/9", "c/3"], "{body}");
    let (_, body) = call(
        &app,
        get_as("/api/v1/aggregate?terms=verb", "scoped-token-0000000"),
    )
    .await;
    assert_eq!(body["total"], 3);

    // The viewer's search is in the audit trail, visible to an admin.
    let (_, _) = call(
        &app,
        get_as(
            "/api/v1/search?q=user.username:needle&limit=3",
            "viewer-token-00000000",
        ),
    )
    .await;
    let mut found = Value::Null;
    for _ in 0..100 {
        let (_, body) = call(
            &app,
            get_as(
                "/api/v1/search?q=source:ward%20AND%20api.caller:vera%20AND%20api.params.q:%22user.username:needle%22",
                "admin-token-000000000",
            ),
        )
        .await;
        if body["total"] == 1 {
            found = body["hits"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found["api"]["endpoint"], "/api/v1/search", "{found}");
    assert_eq!(found["api"]["role"], "viewer");
    assert_eq!(found["api"]["status"], 200);
    assert_eq!(found["api"]["results"], 0);
    assert_eq!(found["api"]["params"]["limit"], "3");
    // The scoped viewer cannot see the trail; nobody can rewrite it.
    let (_, body) = call(
        &app,
        get_as("/api/v1/search?q=source:ward", "scoped-token-0000000"),
    )
    .await;
    assert_eq!(body["total"], 0);
    let mut forged = audit(10, "x", "get", "shop", None);
    forged.source = SourceKind::Ward;
    let mut w = BatchWriter::new();
    w.push(&forged).unwrap();
    let req = Request::post("/api/v1/ingest")
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::AUTHORIZATION, "Bearer admin-token-000000000")
        .body(Body::from(w.take()))
        .unwrap();
    let (status, _) = call(&app, req).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "source:ward is written only by Ward"
    );
    for method in ["DELETE", "PUT", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri("/api/v1/search?q=source:ward")
            .header(header::AUTHORIZATION, "Bearer admin-token-000000000")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }

    // A per-token rate limit: a burst of 3, then 429 for that token only.
    let limited = router_with(
        store.clone(),
        ApiConfig {
            rate_limit_per_sec: 0.5,
            rate_limit_burst: 3,
            audit_trail: false,
            ..ApiConfig::default()
        },
        options,
    );
    for _ in 0..3 {
        let (status, _) = call(&limited, get_as("/api/v1/search", "viewer-token-00000000")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let resp = limited
        .clone()
        .oneshot(get_as("/api/v1/search", "viewer-token-00000000"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    let (status, _) = call(&limited, get_as("/api/v1/search", "analyst-token-0000000")).await;
    assert_eq!(status, StatusCode::OK);
    store.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_names_every_api_route() {
    let (_dir, store) = store_with(vec![]).await;
    let app = router(store.clone(), quiet());
    let (status, doc) = call(&app, get("/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/v1/search",
        "/api/v1/aggregate",
        "/api/v1/export",
        "/api/v1/tail",
        "/api/v1/timeline",
        "/api/v1/whoami",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
        // The route exists and is a GET.
        let resp = app.clone().oneshot(get(path)).await.unwrap();
        assert_ne!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    store.shutdown().await;
}

/// Waits for a search to return `want` hits (the audit trail is written
/// asynchronously).
async fn wait_for_total(app: &axum::Router, uri: &str, want: u64) -> Value {
    let mut body = Value::Null;
    for _ in 0..100 {
        body = call(app, get_as(uri, "admin-token-000000000")).await.1;
        if body["total"] == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uri}: wanted {want} hits, last answer {body}");
}

#[tokio::test]
async fn refused_requests_are_in_the_audit_trail_within_bounds() {
    use axum::extract::ConnectInfo;
    use ward_query_api::access::{ClientAddr, RefusalLimits};

    let (_dir, store) = store_with(vec![audit(1, "alice", "get", "shop", None)]).await;
    let options = ApiOptions {
        tokens: Some(Arc::new(Tokens::parse(TOKENS).unwrap())),
        ..ApiOptions::default()
    };
    let app = router_with(
        store.clone(),
        ApiConfig {
            rate_limit_per_sec: 0.01,
            rate_limit_burst: 2,
            refusal_limits: RefusalLimits {
                window: Duration::from_millis(300),
                per_source: 3,
                total: 100,
                max_sources: 100,
            },
            ..ApiConfig::default()
        },
        options.clone(),
    );
    // Reads the trail without a rate limit, and without adding to it.
    let reader = router_with(store.clone(), quiet(), options);
    let from = |mut req: Request<Body>, ip: &str| {
        let addr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
        req
    };
    // A flood of unknown tokens from one address, a few from another.
    for _ in 0..20 {
        let req = from(
            get_as("/api/v1/search?q=x", "stolen-token-000000000"),
            "192.0.2.7",
        );
        assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);
    }
    let req = from(get("/api/v1/search?q=x"), "192.0.2.8");
    assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);
    // The viewer past its burst.
    for i in 0..6 {
        let req = from(
            get_as("/api/v1/search?q=*", "viewer-token-00000000"),
            "192.0.2.9",
        );
        let want = if i < 2 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(call(&app, req).await.0, want);
    }
    // Ingest without a valid token.
    let req = from(
        Request::post("/api/v1/ingest")
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::AUTHORIZATION, "Bearer viewer-token-00000000")
            .body(Body::from("{}"))
            .unwrap(),
        "192.0.2.10",
    );
    assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);

    // One by one: 3 of the flood, the other address's one, 3 of the 429s,
    // and the ingest attempt.
    let one_by_one = "/api/v1/search?q=source:ward%20AND%20kind:api_request%20AND%20NOT%20api.status:200&limit=100";
    let body = wait_for_total(&reader, one_by_one, 8).await;
    let hits = body["hits"].as_array().unwrap();
    let of = |client: &str| {
        hits.iter()
            .filter(|h| h["api"]["client"].as_str().unwrap().starts_with(client))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("192.0.2.7:").len(), 3);
    assert_eq!(of("192.0.2.8:").len(), 1);
    let limited = of("192.0.2.9:");
    assert_eq!(limited.len(), 3);
    for h in &limited {
        assert_eq!(h["api"]["status"], 429);
        assert_eq!(h["api"]["caller"], "vera", "the token's label");
        assert_eq!(h["api"]["role"], "viewer");
    }
    let ingest = of("192.0.2.10:");
    assert_eq!(ingest[0]["api"]["endpoint"], "/api/v1/ingest");
    assert_eq!(ingest[0]["api"]["status"], 401);
    for h in hits {
        assert_eq!(
            h["api"]["params"]["q"].is_string(),
            h["api"]["endpoint"] != "/api/v1/ingest"
        );
        let text = h.to_string();
        assert!(
            !text.contains("stolen-token") && !text.contains("viewer-token"),
            "{text}"
        );
    }

    // The rest is counted in one summary per source when the window ends.
    let summaries = wait_for_total(
        &reader,
        "/api/v1/search?q=source:ward%20AND%20kind:api_refusals&limit=100",
        2,
    )
    .await;
    let mut counts: Vec<(String, u64, u64)> = summaries["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["api"]["client"].as_str().unwrap().to_owned(),
                h["api"]["status"].as_u64().unwrap(),
                h["api"]["refused"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![("192.0.2.7".into(), 401, 17), ("192.0.2.9".into(), 429, 1)]
    );
    // A scrape with a valid token is not a refusal (and is not recorded).
    let (_, metrics) = call(&app, get_as("/metrics", "admin-token-000000000")).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("ward_api_refusals_total 26"), "{metrics}");
    assert!(
        metrics.contains("ward_api_refusals_summarised_total 18"),
        "{metrics}"
    );
    store.shutdown().await;
}

/// A request that times out answers 503, and its search or aggregation on
/// the blocking pool stops instead of running on (counted in
/// `ward_indexer_queries_cancelled_total`).
///
/// The runtime has one blocking thread, held busy while each request is
/// made: the query can only start after its request timed out, so it
/// cannot finish first on a loaded machine (it did once, and the test
/// failed).
#[test]
fn timed_out_queries_stop_their_blocking_work() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(timed_out_queries_stop(&runtime));
}

async fn timed_out_queries_stop(runtime: &tokio::runtime::Runtime) {
    // Enough records that a query takes longer than the timer's first tick.
    let (_dir, store) = store_with(vec![]).await;
    for chunk in 0..24 {
        let batch = (0..5_000)
            .map(|i| {
                let n = chunk * 5_000 + i;
                audit(n, &format!("u{}", n % 50), "get", "shop", None)
            })
            .collect();
        store.ingest(batch).await.unwrap();
    }
    let app = router_with(
        store.clone(),
        ApiConfig {
            // Times out at the first wait: the handler has handed the query
            // to the blocking pool and is dropped right away.
            request_timeout: Duration::ZERO,
            ..quiet()
        },
        ApiOptions::default(),
    );
    let cancelled = || {
        store
            .stats()
            .queries_cancelled
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for (n, uri) in [
        "/api/v1/aggregate?terms=user.username&histogram=1m",
        "/api/v1/search?q=verb:get",
        "/api/v1/timeline?entity=ip:10.0.0.0/8",
    ]
    .into_iter()
    .enumerate()
    {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = runtime.spawn_blocking(move || held.recv());
        let (status, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let mut waited = 0;
        while cancelled() < n as u64 + 1 && waited < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert_eq!(
            cancelled(),
            n as u64 + 1,
            "{uri}: the blocking work stopped"
        );
    }
    let (_, metrics) = call(&app, get("/metrics")).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ward_indexer_queries_cancelled_total 3"),
        "{metrics}"
    );
    // Without the timeout the same request answers.
    let app = router_with(store.clone(), quiet(), ApiOptions::default());
    let (status, body) = call(&app, get("/api/v1/aggregate?terms=user.username")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 120_000);
    store.shutdown().await;
}
