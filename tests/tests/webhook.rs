//! The Kubernetes audit webhook, on the indexer (`POST /api/v1/k8s/audit`)
//! and on the collector (`--audit-webhook`): valid, malformed and oversized
//! bodies, ingest tokens, and "2xx only once durable".

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use ward_e2e::{Client, Rig, fixtures, free_port, start_indexer, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// An EventList of the first `n` events of the audit2rbac demo log.
fn event_list(n: usize) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(fixtures().join("audit2rbac/demo.log")).expect("demo log");
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| serde_json::from_str(l).expect("demo event"))
        .collect();
    assert_eq!(events.len(), n);
    let body =
        serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events});
    // Pretty-printed, as the API server's encoder may send it.
    (serde_json::to_string_pretty(&body).expect("encode"), events)
}

fn post(client: &Client, url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = client
        .http()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("webhook request");
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

/// Announces a 17 MiB body and reads the answer without sending it: the
/// bound must be enforced from the header, before any of the body is read
/// (and a client still sending would see the connection cut otherwise).
fn post_oversized(base: &str, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n",
        17 * 1024 * 1024
    )
    .expect("send headers");
    conn.write_all(&[b' '; 4096]).expect("send some body");
    let mut answer = [0u8; 12];
    conn.read_exact(&mut answer)
        .expect("an answer before the body");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

const WEBHOOK_TOKEN: &str = "webhook-token-0123456789abcdef";
const READER_TOKEN: &str = "reader-token-0123456789abcdef";

#[test]
fn indexer_webhook_takes_event_lists_and_refuses_bad_bodies_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    ward_e2e::write_secret(
        &tokens,
        &format!("# test tokens\naudit-webhook:{WEBHOOK_TOKEN}\nreader:{READER_TOKEN}\n"),
    );
    let port = free_port();
    let _indexer = start_indexer(
        "indexer",
        dir.path(),
        port,
        &[
            "--tokens".into(),
            tokens.display().to_string(),
            "--cluster".into(),
            "default-cluster".into(),
        ],
    );
    let client = Client::new(format!("http://127.0.0.1:{port}")).with_token(READER_TOKEN);
    client.wait_healthy(WAIT);
    let url = format!("{}/api/v1/k8s/audit?cluster=prod", client.base);
    let (body, events) = event_list(30);

    // Tokens: none, a reader's, a wrong one: 401, and nothing stored.
    for token in [None, Some(READER_TOKEN), Some("not-a-token-at-all-0000")] {
        let (status, _) = post(&client, &url, token, body.clone().into_bytes());
        assert_eq!(status, 401, "token {token:?}");
    }
    assert_eq!(client.search("source:audit", 1)["total"], 0);

    // Malformed JSON and non-audit JSON: 400 with the reason.
    let (status, text) = post(
        &client,
        &url,
        Some(WEBHOOK_TOKEN),
        b"{\"kind\":\"EventList\",\"items\":[".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(text.contains("EOF") || text.contains("expected"), "{text}");
    let (status, text) = post(
        &client,
        &url,
        Some(WEBHOOK_TOKEN),
        b"{\"kind\":\"Pod\"}".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(text.contains("Pod"), "{text}");
    // Over the 16 MiB body bound: 413.
    let status = post_oversized(&client.base, "/api/v1/k8s/audit", Some(WEBHOOK_TOKEN));
    assert_eq!(status, 413);

    // Valid: 200 once committed, so searchable right away, with ids from
    // auditID and stage and the cluster from the query.
    let (status, text) = post(
        &client,
        &url,
        Some(WEBHOOK_TOKEN),
        body.clone().into_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    let hits = client.search("source:audit AND cluster:prod", 1000);
    assert_eq!(hits["total"], events.len() as u64);
    let mut ids: Vec<String> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ward"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "audit:{}:{}",
                e["auditID"].as_str().unwrap(),
                e["stage"].as_str().unwrap()
            )
        })
        .collect();
    want.sort();
    assert_eq!(ids, want);

    // The API server sends a batch again when its answer was lost: the same
    // ids, so the indexer recognises the replay.
    let (status, _) = post(
        &client,
        &url,
        Some(WEBHOOK_TOKEN),
        body.clone().into_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        client.search("source:audit AND cluster:prod", 1000)["total"],
        events.len() as u64
    );

    // Without ?cluster= the indexer's --cluster is used.
    let one = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"solo-1","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods"}"#;
    let plain = format!("{}/api/v1/k8s/audit", client.base);
    let (status, _) = post(
        &client,
        &plain,
        Some(WEBHOOK_TOKEN),
        one.as_bytes().to_vec(),
    );
    assert_eq!(status, 200);
    let hit = &client.search("auditID:solo\\-1", 10)["hits"][0];
    assert_eq!(hit["cluster"], "default-cluster");
    assert_eq!(hit["ward"]["flags"], serde_json::json!(["time_inferred"]));
}

#[test]
fn collector_webhook_answers_only_once_events_are_durable() {
    let mut rig = Rig::new();
    let hook_port = free_port();
    let hook = format!("127.0.0.1:{hook_port}");
    // No indexer yet: the events must go to the spool before the 200.
    rig.start_collector(&["--audit-webhook", &hook]);
    let url = format!("http://{hook}/api/v1/k8s/audit");
    let (body, events) = event_list(25);

    let (status, text) = post(&rig.client, &url, None, b"not json".to_vec());
    assert_eq!(status, 400);
    assert!(!text.is_empty());
    let status = post_oversized(&format!("http://{hook}"), "/api/v1/k8s/audit", None);
    assert_eq!(status, 413);

    let (status, text) = post(&rig.client, &url, None, body.into_bytes());
    assert_eq!(status, 200, "{text}");
    assert!(
        rig.metric("ward_collector_spool_bytes") > 0.0,
        "acknowledged while the indexer is away: must be in the spool"
    );
    rig.start_indexer();
    let hits = rig.client.wait_for_total(
        "source:audit AND node:e2e\\-node\\-1",
        events.len() as u64,
        WAIT,
    );
    assert_eq!(hits["hits"][0]["cluster"], "e2e");
    wait_until("spool drained", WAIT, || {
        (rig.metric("ward_collector_spool_bytes") == 0.0).then_some(())
    });
    assert_eq!(
        rig.metric("ward_collector_lines_read_total{source=\"webhook\"}"),
        events.len() as f64
    );
}

/// Issue 15: the collector's audit webhook took events from anyone who
/// reached its port, in the clear. It now serves TLS and requires a token,
/// like the indexer's listener.
#[test]
fn collector_webhook_takes_tls_and_a_token() {
    let mut rig = Rig::new();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = ward_e2e::TestPki::generate(pki_dir.path());
    let token_file = pki_dir.path().join("webhook-token");
    ward_e2e::write_secret(&token_file, "webhook-secret-0123456789\n");
    let hook = format!("127.0.0.1:{}", free_port());
    let p = |path: &std::path::Path| path.display().to_string();
    rig.start_collector(&[
        "--audit-webhook",
        &hook,
        "--audit-webhook-tls-cert",
        &p(&pki.server_cert),
        "--audit-webhook-tls-key",
        &p(&pki.server_key),
        "--audit-webhook-token-file",
        &p(&token_file),
    ]);
    let tls = Client::with_http(format!("https://{hook}"), pki.client(None));
    wait_until("the webhook listens", WAIT, || {
        tls.http()
            .get(format!("https://{hook}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let url = format!("https://{hook}/api/v1/k8s/audit");
    let (body, events) = event_list(5);
    for token in [None, Some("webhook-secret-012345678"), Some("nope")] {
        let (status, _) = post(&tls, &url, token, body.clone().into_bytes());
        assert_eq!(status, 401, "{token:?}");
    }
    let plain = rig
        .client
        .http()
        .post(format!("http://{hook}/api/v1/k8s/audit"))
        .header("content-type", "application/json")
        .bearer_auth("webhook-secret-0123456789")
        .body(body.clone())
        .send();
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP is not served"
    );
    let (status, text) = post(
        &tls,
        &url,
        Some("webhook-secret-0123456789"),
        body.into_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    rig.start_indexer();
    rig.client.wait_for_total(
        "source:audit AND node:e2e\\-node\\-1",
        events.len() as u64,
        WAIT,
    );
}
