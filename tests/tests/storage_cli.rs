//! The storage commands against a real `ward indexer`: separate ingest and
//! API listeners, `/metrics`, `ward snapshot` while the indexer runs,
//! `ward restore`, and `ward verify` on intact and damaged data.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ward_e2e::{Client, Process, free_port, scrape, ward_bin};

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

    // A snapshot while the indexer runs.
    let snap = dir.path().join("ward.snapshot");
    let (ok, out) = ward(&["snapshot", "--data", path(&data), "--out", path(&snap)]);
    assert!(ok, "{out}");
    // Two days of records, and today's partition of the audit trail.
    let counts: Vec<u64> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (partitions, records) = (counts[counts.len() - 2], counts[counts.len() - 1]);
    assert!(partitions >= 2 && records >= 300, "{out}");
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
