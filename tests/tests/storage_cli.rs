//! The storage commands against a real `ward indexer`: separate ingest and
//! API listeners, `/metrics`, `ward snapshot` while the indexer runs (the
//! alert store included, taken through the API), `ward restore`, and `ward
//! verify` on intact and damaged data.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use ward_e2e::{Client, Process, falco_event_list, free_port, scrape, start_indexer, ward_bin};

fn events(first: usize, n: usize, day: &str) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                "{{\"id\":\"cli:{i}\",\"source\":\"container\",\"timestamp\":\"{day}T10:00:00.{i:09}Z\",\"node\":\"n1\",\"event\":{{\"message\":\"event {i} token=abc Authorization: Bearer sk_live_0123456789abcdef\",\"kubernetes\":{{\"pod\":\"cli\"}}}}}}\n"
            )
        })
        .collect()
}

fn ward(args: &[&str]) -> (bool, String) {
    let out = Command::new(ward_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn listeners_metrics_snapshot_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    let (ingest_port, api_port) = (free_port(), free_port());
    let args: Vec<String> = [
        "indexer",
        "--data",
        path(&data),
        "--listen",
        &format!("127.0.0.1:{ingest_port}"),
        "--api-listen",
        &format!("127.0.0.1:{api_port}"),
        "--hmac-key",
        path(&key),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut indexer = Process::start("indexer", dir.path(), &args);
    let ingest_url = format!("http://127.0.0.1:{ingest_port}");
    let api = Client::new(format!("http://127.0.0.1:{api_port}"));
    api.wait_healthy(Duration::from_secs(60));
    let http = reqwest::blocking::Client::new();
    for (first, day) in [(0, "2026-11-20"), (100, "2026-11-21"), (200, "2026-11-21")] {
        let resp = http
            .post(format!("{ingest_url}/api/v1/ingest"))
            .header("content-type", "application/x-ndjson")
            .body(events(first, 100, day))
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
    }
    // Search is on the API port only.
    api.wait_for_total("kubernetes.pod:cli", 300, Duration::from_secs(30));
    let on_ingest = http
        .get(format!("{ingest_url}/api/v1/search?q=*"))
        .send()
        .unwrap();
    assert_eq!(on_ingest.status().as_u16(), 404);
    // Tokens in log lines were masked before storage, and counted.
    let hit = api.search("kubernetes.pod:cli", 1);
    let message = hit["hits"][0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("Bearer [REDACTED:bearer-token]"),
        "{message}"
    );
    let metrics = scrape(&format!("http://127.0.0.1:{api_port}/metrics")).unwrap();
    // The 300 records, and the API's audit trail of the searches above
    // (`source:ward` events, in today's partition).
    assert!(
        metrics["ward_indexer_records_indexed_total"] >= 300.0,
        "{metrics:?}"
    );
    assert_eq!(
        metrics["ward_indexer_redactions_total{rule=\"bearer-token\"}"],
        300.0
    );

    // A snapshot while the indexer runs: its alert store is locked, so the
    // alerts come through its API (no tokens here).
    let snap = dir.path().join("ward.snapshot");
    let api_url = format!("http://127.0.0.1:{api_port}");
    let (ok, out) = ward(&[
        "snapshot",
        "--data",
        path(&data),
        "--out",
        path(&snap),
        "--alerts-from",
        &api_url,
    ]);
    assert!(ok, "{out}");
    // Two days of records, and today's partition of the audit trail; no
    // audit events, so no alerts.
    let counts: Vec<u64> = out
        .rsplit_once(": ")
        .unwrap()
        .1
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (partitions, records) = (counts[0], counts[1]);
    assert!(partitions >= 2 && records >= 300, "{out}");
    assert!(out.contains(", 0 alerts"), "{out}");
    indexer.stop();

    let (ok, out) = ward(&["verify", "--data", path(&data), "--hmac-key", path(&key)]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2026-11-20  intact      1 batches, 100 records"),
        "{out}"
    );
    assert!(out.contains("2026-11-21  intact"), "{out}");
    // Without the key, the signatures are not checked; with another, they fail.
    let other = dir.path().join("other.key");
    std::fs::write(&other, "another key, sixteen bytes or more").unwrap();
    let (ok, out) = ward(&["verify", "--data", path(&data), "--hmac-key", path(&other)]);
    assert!(!ok, "{out}");
    assert!(out.contains("wrong hmac"), "{out}");

    // Restore into a new directory, verify, and serve it.
    let restored = dir.path().join("restored");
    let (ok, out) = ward(&[
        "restore",
        "--snapshot",
        path(&snap),
        "--data",
        path(&restored),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = ward(&[
        "verify",
        "--data",
        path(&restored),
        "--hmac-key",
        path(&key),
    ]);
    assert!(ok, "{out}");
    let port = free_port();
    let args: Vec<String> = [
        "indexer",
        "--data",
        path(&restored),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut again = Process::start("restored", dir.path(), &args);
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(Duration::from_secs(60));
    assert_eq!(client.search("kubernetes.pod:cli", 1)["total"], 300);
    again.stop();

    // Damage behind the indexer's back: verify says where, and fails.
    let index_dir = data.join("partitions/2026-11-21/index");
    let victim = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "store"))
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let (ok, out) = ward(&["verify", "--data", path(&data)]);
    assert!(!ok, "{out}");
    assert!(out.contains("2026-11-21  unreadable"), "{out}");
    assert!(out.contains("2026-11-20  intact"), "{out}");
}

const COLLECTOR: &str = "collector-token-1234567";
const ANALYST: &str = "analyst-token-1234567";
const ADMIN: &str = "admin-token-123456789";

/// Every alert, oldest first, as an admin sees them.
fn all_alerts(client: &Client) -> Vec<Value> {
    let body: Value = client
        .http()
        .get(format!("{}/api/v1/alerts?limit=10000", client.base))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut alerts = body["alerts"].as_array().unwrap().clone();
    alerts.reverse();
    alerts
}

#[test]
fn alerts_statuses_and_dedup_survive_snapshot_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    ward_e2e::write_secret(
        &tokens,
        &format!("collector:{COLLECTOR}\nanalyst/alice:{ANALYST}\nadmin/ops:{ADMIN}\n"),
    );
    let admin_token = dir.path().join("admin.token");
    std::fs::write(&admin_token, format!("{ADMIN}\n")).unwrap();
    let analyst_token = dir.path().join("analyst.token");
    std::fs::write(&analyst_token, ANALYST).unwrap();
    let token_args = ["--tokens".to_string(), path(&tokens).to_owned()];

    let port = free_port();
    let mut indexer = start_indexer("indexer", dir.path(), port, &token_args);
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(&url).with_token(ADMIN);
    client.wait_healthy(Duration::from_secs(60));
    let events = falco_event_list(&[
        "exec_pod.json",
        "create_nginx_pod_privileged.json",
        "create_kube_system_secret.json",
    ]);
    client.post_audit(&events, Some(COLLECTOR));
    let before = all_alerts(&client);
    assert!(before.len() >= 2, "{before:?}");

    // Alice acknowledges one.
    let id = before[0]["id"].as_u64().unwrap();
    let changed: Value = client
        .http()
        .post(format!("{url}/api/v1/alerts/{id}/status"))
        .bearer_auth(ANALYST)
        .json(&json!({"status": "acknowledged", "comment": "looking at it"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(changed["status"], "acknowledged", "{changed}");
    let before = all_alerts(&client);

    // The running indexer locks its alert store: a plain snapshot says
    // what to do instead of leaving the alerts out.
    let data = dir.path().join("data");
    let snap = dir.path().join("alerts.snapshot");
    let plain = Command::new(ward_bin())
        .args(["snapshot", "--data", path(&data), "--out", path(&snap)])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        stderr.contains("--alerts-from") && stderr.contains("--no-alerts"),
        "{stderr}"
    );
    assert!(!snap.exists());
    // An analyst's token may not take a backup.
    let (ok, out) = ward(&[
        "snapshot",
        "--data",
        path(&data),
        "--out",
        path(&snap),
        "--alerts-from",
        &url,
        "--token-file",
        path(&analyst_token),
    ]);
    assert!(!ok && out.contains("403"), "{out}");
    assert!(!snap.exists());

    let (ok, out) = ward(&[
        "snapshot",
        "--data",
        path(&data),
        "--out",
        path(&snap),
        "--alerts-from",
        &url,
        "--token-file",
        path(&admin_token),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!(", {} alerts", before.len())), "{out}");
    indexer.stop();
    // Stopped, the indexer's store is read directly.
    let offline = dir.path().join("offline.snapshot");
    let (ok, out) = ward(&["snapshot", "--data", path(&data), "--out", path(&offline)]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!(", {} alerts", before.len())), "{out}");

    // Restore elsewhere and serve it.
    let elsewhere = dir.path().join("elsewhere");
    let (ok, out) = ward(&[
        "restore",
        "--snapshot",
        path(&snap),
        "--data",
        path(&elsewhere.join("data")),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(", {} alerts into", before.len())),
        "{out}"
    );
    assert!(elsewhere.join("data/alerts.redb").exists());
    assert!(!elsewhere.join("data/alerts.ndjson").exists());
    let port = free_port();
    let mut restored = start_indexer("restored", &elsewhere, port, &token_args);
    let client = Client::new(format!("http://127.0.0.1:{port}")).with_token(ADMIN);
    client.wait_healthy(Duration::from_secs(60));
    let after = all_alerts(&client);
    assert_eq!(after, before, "every alert, status and history as it was");
    let acked = after.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(acked["status"], "acknowledged");
    let history = acked["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["by"], "alice");
    assert_eq!(history[1]["comment"], "looking at it");
    assert!(history[1]["at"].as_str().unwrap().starts_with("20"));

    // The same events again raise nothing: the de-duplication keys came along.
    client.post_audit(&events, Some(COLLECTOR));
    assert_eq!(all_alerts(&client), before);
    // New events raise alerts with ids after the restored ones.
    client.post_audit(
        &falco_event_list(&["attach_cluster_admin_role.json"]),
        Some(COLLECTOR),
    );
    let more = all_alerts(&client);
    assert!(more.len() > before.len(), "{more:?}");
    let max_before = before.iter().map(|a| a["id"].as_u64().unwrap()).max();
    assert!(
        more[before.len()..]
            .iter()
            .all(|a| a["id"].as_u64() > max_before)
    );
    restored.stop();
}
