//! Rule files reload while the indexer runs: a rule added to the rules
//! directory starts firing, a broken file is reported and skipped, and the
//! rules already loaded keep running.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_e2e::{Client, free_port, start_indexer};

const RULE_A: &str = "title: Reload test A\nid: reload-a\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s:\n    verb: get\n    objectRef.resource: configmaps\n  condition: s\n";
const RULE_B: &str = "title: Reload test B\nid: reload-b\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s:\n    verb: delete\n    objectRef.resource: secrets\n  condition: s\n";

fn event(audit_id: &str, verb: &str, resource: &str) -> Value {
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": "ResponseComplete", "verb": verb,
        "requestURI": format!("/api/v1/namespaces/default/{resource}/x"),
        "user": {"username": "alice"}, "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": resource, "namespace": "default", "name": "x", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-23T10:00:00.000000Z",
        "stageTimestamp": "2026-11-23T10:00:00.100000Z"
    })
}

fn post(client: &Client, events: Vec<Value>) {
    let body = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": events});
    let resp = client
        .http()
        .post(format!("{}/api/v1/k8s/audit?cluster=e2e", client.base))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

fn fired(client: &Client, rule: &str) -> usize {
    let body: Value = client
        .http()
        .get(format!(
            "{}/api/v1/alerts?rule={rule}&limit=1000",
            client.base
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    body["alerts"].as_array().unwrap().len()
}

#[test]
fn a_rule_added_while_running_fires_and_a_broken_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("a.yml"), RULE_A).unwrap();
    let port = free_port();
    let mut indexer = start_indexer(
        "indexer",
        dir.path(),
        port,
        &[
            "--rules".into(),
            rules.display().to_string(),
            "--no-builtin-rules".into(),
        ],
    );
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(Duration::from_secs(60));

    post(&client, vec![event("a-1", "get", "configmaps")]);
    assert_eq!(fired(&client, "reload-a"), 1);
    post(&client, vec![event("b-0", "delete", "secrets")]);
    assert_eq!(fired(&client, "reload-b"), 0, "rule B is not loaded yet");

    // Add rule B and a file that is not a rule at all.
    std::fs::write(rules.join("broken.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(rules.join("b.yml"), RULE_B).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while fired(&client, "reload-b") == 0 {
        assert!(
            Instant::now() < deadline,
            "rule B never fired after it was added"
        );
        n += 1;
        post(&client, vec![event(&format!("b-{n}"), "delete", "secrets")]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rule A still runs, and the broken file was reported by name.
    post(&client, vec![event("a-2", "get", "configmaps")]);
    assert_eq!(fired(&client, "reload-a"), 2);
    indexer.stop();
    let log = indexer.output();
    assert!(
        log.contains("broken.yml"),
        "the broken rule file is reported:\n{log}"
    );
}

#[test]
fn a_reload_is_not_woken_again_by_its_own_reads() {
    // Loading rule files opens and reads them, which are file events too:
    // one change must be one reload, not a reload every 300 ms for ever
    // (issue 22).
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("a.yml"), RULE_A).unwrap();
    let port = free_port();
    let args = ["--rules".into(), rules.display().to_string()];
    let mut indexer = start_indexer("indexer", dir.path(), port, &args);
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(Duration::from_secs(60));

    std::fs::write(rules.join("b.yml"), RULE_B).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !indexer.output().contains("rules reloaded") {
        assert!(Instant::now() < deadline, "no reload after a change");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ten debounce periods with nothing changed.
    std::thread::sleep(Duration::from_secs(3));
    indexer.stop();
    let reloads = indexer.output().matches("rules reloaded").count();
    assert!(reloads <= 2, "{reloads} reloads after one change");
}
