//! The end-to-end slice: `ward indexer` and `ward collector` as real
//! processes on loopback, real files on disk, checked through the search API.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ward_e2e::{Client, Process, append, fixtures, free_port, json_lines, start_indexer, ward_bin};

const WAIT: Duration = Duration::from_secs(60);
const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn cri_lines(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "2024-05-01T10:00:{:02}.{:09}Z stdout F line {i} GET /cart 200\n",
                i % 60,
                i
            )
        })
        .collect()
}

fn collector_args(url: &str, root: &Path) -> Vec<String> {
    [
        "collector",
        "--indexer",
        url,
        "--state",
        &root.join("state").display().to_string(),
        "--containers",
        &root.join("pods/*/*/*.log").display().to_string(),
        "--containers",
        &root.join("containers/*.log").display().to_string(),
        "--audit-log",
        &root.join("audit/audit.log").display().to_string(),
        "--node",
        "e2e-node-1",
        "--cluster",
        "e2e",
        "--batch-max-age",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Message → how many times it was indexed, for one query.
fn messages(client: &Client, q: &str) -> BTreeMap<String, usize> {
    let body = client.search(q, 10_000);
    let mut counts = BTreeMap::new();
    for hit in body["hits"].as_array().unwrap() {
        *counts
            .entry(hit["message"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[test]
fn every_line_arrives_exactly_once_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("logs");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut indexer = start_indexer("indexer", dir.path(), port, &[]);
    let client = Client::new(&url);
    client.wait_healthy(WAIT);

    // Files that exist before the collector starts are read from the start.
    let cri = root.join("pods/prod_web-0_5f0c7a2e-0000-4000-8000-000000000001/nginx/0.log");
    append(&cri, cri_lines(0..200).as_bytes());
    // A long line cut into partial chunks, an empty message, invalid UTF-8, a bad line.
    append(
        &cri,
        b"2024-05-01T10:01:00.000000001Z stderr P first half \n\
          2024-05-01T10:01:00.000000002Z stdout F interleaved stdout\n\
          2024-05-01T10:01:00.000000003Z stderr F second half\n\
          2024-05-01T10:01:01Z stdout F \n\
          2024-05-01T10:01:02Z stdout F bytes \xff\xfe here\n\
          this is not a CRI line\n",
    );
    let docker = root.join(format!(
        "containers/api-6d4cf56db6-abcde_shop_api-{CONTAINER_ID}.log"
    ));
    append(
        &docker,
        b"{\"log\":\"docker line one\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T11:00:00.1Z\"}\n\
          {\"log\":\"docker part \",\"stream\":\"stderr\",\"time\":\"2024-05-01T11:00:00.2Z\"}\n\
          {\"log\":\"joined\\n\",\"stream\":\"stderr\",\"time\":\"2024-05-01T11:00:00.3Z\"}\n",
    );
    let audit = root.join("audit/audit.log");
    let traces =
        std::fs::read(fixtures().join("falco-traces/falco_k8s_audit_traces.jsonl")).unwrap();
    let demo_log = std::fs::read(fixtures().join("audit2rbac/demo.log")).unwrap();
    let malformed = std::fs::read(fixtures().join("falco-traces/fal_01_003.json")).unwrap();
    append(&audit, &traces);
    append(&audit, &malformed);
    append(&audit, b"\n");
    let audit_events = 51 + 37;

    let mut collector = Process::start("collector", dir.path(), &collector_args(&url, &root));

    // Files appended to while tailed, and files created later, are followed.
    std::thread::sleep(Duration::from_millis(500));
    append(&cri, cri_lines(200..300).as_bytes());
    append(&audit, &demo_log);
    let cri2 = root.join("pods/prod_worker-1_5f0c7a2e-0000-4000-8000-000000000002/app/2.log");
    append(&cri2, b"2024-05-01T12:00:00Z stdout F started worker\n");

    // 300 numbered + 2 merged/interleaved + empty + non-UTF-8 + 1 raw.
    let web_records = 300 + 2 + 1 + 1 + 1;
    client.wait_for_total("kubernetes.pod:web-0", web_records, WAIT);
    client.wait_for_total("source:audit", audit_events + 1, WAIT);
    client.wait_for_total("kubernetes.namespace:shop", 2, WAIT);
    client.wait_for_total("kubernetes.pod:worker-1", 1, WAIT);

    // Every numbered line exactly once.
    let web = messages(&client, "kubernetes.pod:web-0");
    for i in 0..300 {
        assert_eq!(
            web.get(&format!("line {i} GET /cart 200")),
            Some(&1),
            "line {i}"
        );
    }
    assert_eq!(
        web.get("first half second half"),
        Some(&1),
        "partials merged per stream"
    );
    assert_eq!(web.get("interleaved stdout"), Some(&1));
    assert_eq!(web.get(""), Some(&1), "empty message kept");
    assert_eq!(
        web.get("bytes \u{fffd}\u{fffd} here"),
        Some(&1),
        "invalid UTF-8 kept, replaced"
    );

    // Fields and metadata of a container record.
    let hit = &client.search("message:\"line 7 GET\"", 10)["hits"][0];
    assert_eq!(hit["source"], "container");
    assert_eq!(hit["stream"], "stdout");
    assert_eq!(hit["cluster"], "e2e");
    assert_eq!(hit["node"], "e2e-node-1");
    assert_eq!(
        hit["timestamp"], "2024-05-01T10:00:07.000000007Z",
        "the line's own time"
    );
    assert_eq!(hit["kubernetes"]["namespace"], "prod");
    assert_eq!(hit["kubernetes"]["pod"], "web-0");
    assert_eq!(hit["kubernetes"]["container"], "nginx");
    assert_eq!(
        hit["kubernetes"]["pod_uid"],
        "5f0c7a2e-0000-4000-8000-000000000001"
    );
    assert_eq!(hit["kubernetes"]["restart_count"], 0);
    assert_eq!(hit["ward"]["file"], cri.display().to_string());

    let bad = &client.search("kubernetes.pod:web-0 AND ward.flags:parse_error", 10);
    assert_eq!(bad["total"], 1);
    assert_eq!(bad["hits"][0]["message"], "this is not a CRI line");
    assert!(
        bad["hits"][0]["ward"]["parse_error"]
            .as_str()
            .unwrap()
            .contains("CRI")
    );
    assert_eq!(client.search("ward.flags:invalid_utf8", 10)["total"], 1);

    // Docker json-file, with its container id from the path.
    let docker_hits = client.search("kubernetes.container:api", 10);
    let msgs: Vec<&str> = docker_hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message"].as_str().unwrap())
        .collect();
    assert!(
        msgs.contains(&"docker line one") && msgs.contains(&"docker part joined"),
        "{msgs:?}"
    );
    assert_eq!(
        docker_hits["hits"][0]["kubernetes"]["container_id"],
        CONTAINER_ID
    );
    assert_eq!(
        client.search("kubernetes.pod:worker-1", 1)["hits"][0]["kubernetes"]["restart_count"],
        2
    );

    // Audit events keep every field; the malformed trace is kept raw and flagged.
    let exec = client.search("verb:create AND objectRef.subresource:exec", 10);
    assert!(exec["total"].as_u64().unwrap() >= 1);
    let e = &exec["hits"][0];
    assert!(
        e["auditID"].is_string()
            && e["user"]["username"].is_string()
            && e["objectRef"]["name"].is_string()
    );
    assert_eq!(e["source"], "audit");
    assert_eq!(e["cluster"], "e2e");
    let raw = client.search("source:audit AND ward.flags:parse_error", 10);
    assert_eq!(raw["total"], 1);
    assert!(
        raw["hits"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"kind\": 0")
    );
    let forbidden = client.search(
        "responseStatus.code:403 AND user.username:system\\:admin",
        100,
    );
    let want = demo_log
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            v["responseStatus"]["code"] == 403 && v["user"]["username"] == "system:admin"
        })
        .count();
    assert!(want > 0);
    assert_eq!(forbidden["total"], want as u64);

    // A restart resumes from the acknowledged checkpoints: nothing twice, nothing lost.
    collector.stop();
    append(&cri, cri_lines(300..350).as_bytes());
    let mut collector = Process::start("collector-2", dir.path(), &collector_args(&url, &root));
    client.wait_for_total("kubernetes.pod:web-0", web_records + 50, WAIT);
    let web = messages(&client, "kubernetes.pod:web-0");
    for i in 0..350 {
        assert_eq!(
            web.get(&format!("line {i} GET /cart 200")),
            Some(&1),
            "line {i} after restart"
        );
    }
    client.wait_for_total("source:audit", audit_events + 1, Duration::from_secs(1));

    // `ward search` prints the same hits.
    let out = std::process::Command::new(ward_bin())
        .args([
            "search",
            "--server",
            &url,
            "--json",
            "--limit",
            "5",
            "kubernetes.pod:worker-1",
        ])
        .output()
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "started worker");
    let out = std::process::Command::new(ward_bin())
        .args(["search", "--server", &url, "verb:(create"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position 5"));

    collector.stop();
    indexer.stop();
}

#[test]
fn collector_waits_for_an_indexer_that_is_not_there_yet() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("logs");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    append(
        &root.join("pods/prod_web-0_uid/nginx/0.log"),
        cri_lines(0..100).as_bytes(),
    );
    let mut collector = Process::start("collector", dir.path(), &collector_args(&url, &root));
    std::thread::sleep(Duration::from_secs(2));
    let mut indexer = start_indexer("indexer", dir.path(), port, &[]);
    let client = Client::new(&url);
    client.wait_healthy(WAIT);
    client.wait_for_total("kubernetes.pod:web-0", 100, WAIT);
    collector.stop();
    indexer.stop();
}
