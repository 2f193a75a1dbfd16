//! Handler tests through the real router with `oneshot`, on a real index.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use ward_event::wire::{self, BatchWriter};
use ward_event::{Record, SourceKind};
use ward_indexer::{Store, StoreConfig};
use ward_query_api::{ApiConfig, router};

fn batch(n: usize) -> Vec<u8> {
    let mut w = BatchWriter::new();
    for i in 0..n {
        let r = Record {
            id: format!("t/{i}"),
            source: SourceKind::Container,
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
            cluster: None,
            node: Some("n1".into()),
            flags: vec![],
            parse_error: None,
            file: None,
            offset: Some(i as u64),
            event: json!({"message": format!("line {i} connection refused"), "stream": "stdout",
                          "kubernetes": {"namespace": "prod", "pod": "web-0", "container": "app"}}),
        };
        w.push(&r).unwrap();
    }
    w.take()
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

fn ingest(body: Vec<u8>, encoding: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/api/v1/ingest").header(header::CONTENT_TYPE, wire::CONTENT_TYPE);
    if let Some(e) = encoding {
        b = b.header(header::CONTENT_ENCODING, e);
    }
    b.body(Body::from(body)).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn ingest_then_search() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let app = router(store.clone(), ApiConfig::default());
    let (status, body) = call(&app, ingest(wire::compress(&batch(30), 3), Some("zstd"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["records"], 30);
    let (status, body) = call(&app, get("/api/v1/search?q=kubernetes.namespace:prod%20AND%20message:%22connection%20refused%22&limit=5")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 30);
    assert_eq!(body["hits"].as_array().unwrap().len(), 5);
    assert_eq!(
        body["hits"][0]["message"], "line 29 connection refused",
        "newest first"
    );
    assert_eq!(body["hits"][0]["source"], "container");
    assert_eq!(body["hits"][0]["kubernetes"]["pod"], "web-0");
    // Identity encoding is accepted too; this batch repeats record `t/0`,
    // a replay, so it is acknowledged and not stored again.
    let (status, receipt) = call(&app, ingest(batch(1), None)).await;
    assert_eq!(receipt["duplicates"], 1, "{receipt}");
    assert_eq!(status, StatusCode::OK);
    let (_, body) = call(&app, get("/api/v1/search?q=message:%22line%200%22&start=2023-11-14T22:13:20Z&end=2023-11-14T22:13:21Z")).await;
    assert_eq!(body["total"], 1, "{body}");
    store.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let config = ApiConfig {
        max_body_bytes: 64 * 1024,
        max_batch_bytes: 256 * 1024,
        ..ApiConfig::default()
    };
    let app = router(store.clone(), config);

    let (status, body) = call(&app, ingest(b"not zstd".to_vec(), Some("zstd"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("zstd"), "{body}");

    // A decompression bomb: tiny on the wire, over the batch bound inflated.
    let bomb = wire::compress(&vec![b' '; 1024 * 1024], 19);
    assert!(bomb.len() < 64 * 1024);
    let (status, body) = call(&app, ingest(bomb, Some("zstd"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let (status, _) = call(&app, ingest(vec![b'x'; 65 * 1024], Some("zstd"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, body) = call(
        &app,
        ingest(wire::compress(b"{\"id\":\"x\"}\n", 3), Some("zstd")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("line 1"), "{body}");

    let (status, _) = call(&app, ingest(batch(1), Some("br"))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, body) = call(&app, get("/api/v1/search?q=verb:(create")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["position"], 5, "{body}");
    let (status, _) = call(&app, get("/api/v1/search?q=*&start=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, get("/api/v1/search?query=oops")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(store.num_docs(), 0, "nothing was half-ingested");
    store.shutdown().await;
}

#[tokio::test]
async fn health_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let app = router(store.clone(), ApiConfig::default());
    assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK);
    let (status, body) = call(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("<title>Ward</title>"));
    assert_eq!(call(&app, get("/nope")).await.0, StatusCode::NOT_FOUND);
    store.shutdown().await;
}

#[tokio::test]
async fn ingest_and_api_routers_serve_only_their_own_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let options = ward_query_api::ApiOptions::default();
    let ingest_app =
        ward_query_api::ingest_router(store.clone(), ApiConfig::default(), options.clone());
    let api_app = ward_query_api::api_router(store.clone(), ApiConfig::default(), options);
    let (status, _) = call(&ingest_app, ingest(batch(3), None)).await;
    assert_eq!(status, StatusCode::OK);
    // Search and metrics are not reachable on the ingest port...
    assert_eq!(
        call(&ingest_app, get("/api/v1/search?q=*")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&ingest_app, get("/metrics")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&ingest_app, get("/healthz")).await.0, StatusCode::OK);
    // ...and ingest is not reachable on the API port.
    let (status, _) = call(&api_app, ingest(batch(3), None)).await;
    assert_ne!(status, StatusCode::OK);
    let (status, body) = call(&api_app, get("/api/v1/search?q=*")).await;
    assert_eq!((status, body["total"].as_u64()), (StatusCode::OK, Some(3)));
    store.shutdown().await;
}

#[tokio::test]
async fn metrics_count_records_replays_and_redactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let app = router(store.clone(), ApiConfig::default());
    call(&app, ingest(batch(4), None)).await;
    call(&app, ingest(batch(2), None)).await;
    let mut w = BatchWriter::new();
    w.push(&Record {
        id: "secret-line".into(),
        source: SourceKind::Container,
        timestamp: chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
        cluster: None,
        node: None,
        flags: vec![],
        parse_error: None,
        file: None,
        offset: None,
        event: json!({"message": "dsn=postgres://app:hunter2@db/x"}),
    })
    .unwrap();
    call(&app, ingest(w.take(), None)).await;
    let resp = app.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "ward_indexer_records_indexed_total 5",
        "ward_indexer_duplicates_dropped_total 2",
        "ward_indexer_searchable_records 5",
        "ward_indexer_redaction_enabled 1",
        "ward_indexer_redactions_total{rule=\"url-password\"} 1",
        "ward_indexer_redactions_total{rule=\"secret-data\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    store.shutdown().await;
}

/// Issue 15: `source` is compared without regard to case, so nobody but
/// Ward adds to the `source:ward` trail, whatever the spelling.
#[tokio::test]
async fn ward_audit_trail_cannot_be_forged_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let config = ApiConfig {
        audit_trail: false,
        ..ApiConfig::default()
    };
    let app = router(store.clone(), config);
    let line = |i: usize, envelope: &str, own: &str| {
        format!(
            r#"{{"id":"forged/{i}","source":"{envelope}","timestamp":"2023-11-14T22:13:20Z","event":{{"message":"hello {i}","source":"{own}"}}}}"#
        )
    };
    for (i, (envelope, own)) in [
        ("container", "Ward"),
        ("container", "WARD"),
        ("container", " ward "),
        ("WARD", "x"),
        ("Ward", "x"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("{}\n", line(i, envelope, own));
        // Refused (the batch, or the record alone): never stored as ward.
        let _ = call(&app, ingest(body.into_bytes(), None)).await;
    }
    let (status, body) = call(&app, get("/api/v1/search?q=source:ward")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 0, "{body}");
    store.shutdown().await;
}

/// Issue 15: every search added a `source:ward` record that the next
/// free-text search for the same words found, and the dashboard's default
/// view and live tail filled with them. They are kept and searchable, but
/// only a query that asks for them returns them.
#[tokio::test]
async fn ward_audit_trail_stays_out_of_queries_that_do_not_ask_for_it() {
    use futures_util::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.commit_interval = std::time::Duration::from_millis(10);
    let store = Store::open(config).unwrap();
    let app = router(store.clone(), ApiConfig::default());
    let (status, _) = call(&app, ingest(batch(3), None)).await;
    assert_eq!(status, StatusCode::OK);
    // A live tail of everything, opened before the trail grows.
    let tail = app.clone().oneshot(get("/api/v1/tail?q=")).await.unwrap();
    assert_eq!(tail.status(), StatusCode::OK);
    let mut tail = tail.into_body().into_data_stream();
    // A search for "refused" is in the trail, with "refused" in its params.
    let (_, body) = call(&app, get("/api/v1/search?q=refused")).await;
    assert_eq!(body["total"], 3, "{body}");
    let mut trail = Value::Null;
    for _ in 0..200 {
        let (_, body) = call(&app, get("/api/v1/search?q=source:ward%20AND%20refused")).await;
        if body["total"].as_u64().unwrap_or(0) >= 1 {
            trail = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        trail["hits"][0]["source"], "ward",
        "the trail is searchable: {trail}"
    );

    let (_, body) = call(&app, get("/api/v1/search?q=refused")).await;
    assert_eq!(
        body["total"], 3,
        "free text does not find the trail: {body}"
    );
    let (_, body) = call(&app, get("/api/v1/search?q=refused&include_ward=true")).await;
    assert!(body["total"].as_u64().unwrap() > 3, "unless asked: {body}");
    let (_, body) = call(&app, get("/api/v1/search?limit=100")).await;
    assert_eq!(body["total"], 3, "{body}");
    let (_, body) = call(&app, get("/api/v1/aggregate?histogram=auto&terms=source")).await;
    assert_eq!(body["total"], 3, "{body}");
    assert_eq!(
        body["terms"]["buckets"],
        json!([{"key": "container", "count": 3}])
    );
    let (_, body) = call(
        &app,
        get("/api/v1/aggregate?terms=source&include_ward=true"),
    )
    .await;
    assert!(body["total"].as_u64().unwrap() > 3, "{body}");
    let (status, body) = call(&app, get("/api/v1/export?q=refused")).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default().to_owned();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("\"source\":\"ward\""), "{text}");

    // The tail saw the trail's commits before this line's, and skipped them.
    let mut more = batch(4);
    more = more.split(|b| *b == b'\n').nth(3).unwrap().to_vec();
    more.push(b'\n');
    let (status, body) = call(&app, ingest(more, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = String::from_utf8(tail.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("line 3 connection refused"), "{first}");
    assert!(!first.contains("\"source\":\"ward\""), "{first}");
    store.shutdown().await;
}

/// Issue 15: a page on another site could POST `text/plain` NDJSON to the
/// ingest endpoint (stored) and reach the API through a rebound DNS name.
#[tokio::test]
async fn cross_site_requests_can_neither_store_nor_rebind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let options = ward_query_api::ApiOptions {
        allowed_hosts: Some(vec!["127.0.0.1:7171".into(), "localhost:7171".into()]),
        ..Default::default()
    };
    let config = ApiConfig {
        audit_trail: false,
        ..ApiConfig::default()
    };
    let app = ward_query_api::router_with(store.clone(), config, options);
    let with = |method: &str, uri: &str, host: &str, ty: Option<&str>, body: Vec<u8>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host);
        if let Some(t) = ty {
            b = b.header(header::CONTENT_TYPE, t);
        }
        b.body(Body::from(body)).unwrap()
    };
    for ty in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let req = with("POST", "/api/v1/ingest", "127.0.0.1:7171", ty, batch(2));
        let (status, body) = call(&app, req).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ty:?}: {body}");
        let audit = with(
            "POST",
            "/api/v1/k8s/audit",
            "127.0.0.1:7171",
            ty,
            b"{}".to_vec(),
        );
        assert_eq!(
            call(&app, audit).await.0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
    let (_, body) = call(
        &app,
        with("GET", "/api/v1/search", "localhost:7171", None, vec![]),
    )
    .await;
    assert_eq!(body["total"], 0, "nothing stored: {body}");
    // What collectors and the API server send is taken.
    let req = with(
        "POST",
        "/api/v1/ingest",
        "indexer.ward-system.svc:7171",
        Some(wire::CONTENT_TYPE),
        batch(2),
    );
    assert_eq!(call(&app, req).await.0, StatusCode::OK);

    // A rebound name reaches neither the API nor the dashboard; probes,
    // metrics and ingest answer any Host.
    for uri in ["/api/v1/search", "/", "/api/v1/whoami"] {
        let req = with("GET", uri, "evil.example:7171", None, vec![]);
        assert_eq!(
            call(&app, req).await.0,
            StatusCode::MISDIRECTED_REQUEST,
            "{uri}"
        );
        let req = with("GET", uri, "localhost:7171", None, vec![]);
        assert_eq!(call(&app, req).await.0, StatusCode::OK, "{uri}");
    }
    for uri in ["/healthz", "/metrics"] {
        let req = with("GET", uri, "10.1.2.3:7171", None, vec![]);
        assert_eq!(call(&app, req).await.0, StatusCode::OK, "{uri}");
    }
    store.shutdown().await;
}
