//! Detection end to end, with real processes: `ward indexer` with the
//! built-in rules delivers alerts to Debian's `prometheus-alertmanager`
//! (started here on loopback), loses none while Alertmanager is down and
//! restarted, de-duplicates replayed batches, records who changed an
//! alert's status, and hunts over indexed events with `ward rules hunt`.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use ward_e2e::{
    Client, falco_event_list, free_port, json_lines, start_indexer, wait_until, ward_bin,
};

const WAIT: Duration = Duration::from_secs(60);
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A real Alertmanager on loopback; killed when dropped.
struct Alertmanager {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Alertmanager {
    fn start(dir: &Path, port: u16) -> Alertmanager {
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: apt-get install prometheus-alertmanager (scripts/test does)"
        );
        let config = dir.join("am.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log = dir.join("alertmanager.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::blocking::Client::new();
        wait_until("alertmanager ready", WAIT, || {
            http.get(format!("{}/-/ready", am.url))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        am
    }

    /// The `alert_id` labels of the alerts Alertmanager holds.
    fn alert_ids(&self) -> BTreeSet<u64> {
        let alerts: Value = reqwest::blocking::get(format!("{}/api/v2/alerts", self.url))
            .unwrap()
            .json()
            .unwrap();
        alerts
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["labels"]["alert_id"].as_str()?.parse().ok())
            .collect()
    }

    fn alerts(&self) -> Vec<Value> {
        reqwest::blocking::get(format!("{}/api/v2/alerts", self.url))
            .unwrap()
            .json::<Value>()
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "---- alertmanager output ----\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
        }
    }
}

fn alerts(client: &Client, query: &str) -> Vec<Value> {
    alerts_as(client, query, None)
}

/// With tokens configured, reading alerts needs a viewer (or better) token.
fn alerts_as(client: &Client, query: &str, token: Option<&str>) -> Vec<Value> {
    let mut req = client
        .http()
        .get(format!("{}/api/v1/alerts?{query}", client.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send().unwrap().json().unwrap();
    body["alerts"].as_array().unwrap().clone()
}

const READER: &str = "reader-token-12345678";

fn ids(alerts: &[Value]) -> BTreeSet<u64> {
    alerts.iter().map(|a| a["id"].as_u64().unwrap()).collect()
}

#[test]
fn alertmanager_gets_every_alert_across_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let am_port = free_port();
    let mut am = Alertmanager::start(dir.path(), am_port);
    let sinks = dir.path().join("sinks.yml");
    std::fs::write(
        &sinks,
        format!(
            "sinks:\n  - name: am\n    type: alertmanager\n    url: {}\n    min_level: medium\n    resend_secs: 2\nretry:\n  initial_ms: 200\n  max_ms: 1000\n",
            am.url
        ),
    )
    .unwrap();
    let port = free_port();
    let mut indexer = start_indexer(
        "indexer",
        dir.path(),
        port,
        &["--sinks".into(), sinks.display().to_string()],
    );
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(WAIT);

    client.post_audit(&falco_event_list(&["exec_pod.json"]), None);
    let first = ids(&alerts(&client, "min_level=medium"));
    assert!(!first.is_empty(), "the exec trace raises a medium+ alert");
    wait_until("alerts in alertmanager", WAIT, || {
        am.alert_ids().is_superset(&first).then_some(())
    });
    let first_id = first.first().unwrap().to_string();
    let exec = am
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alert_id"].as_str() == Some(first_id.as_str()))
        .unwrap();
    for label in [
        "alertname",
        "rule_id",
        "severity",
        "cluster",
        "namespace",
        "user",
    ] {
        assert!(exec["labels"][label].is_string(), "{label} in {exec}");
    }
    assert_eq!(exec["labels"]["cluster"], "e2e");
    assert!(exec["endsAt"].is_string() && exec["startsAt"].is_string());

    // Alertmanager down: alerts raised meanwhile wait in the queue.
    am.stop();
    client.post_audit(
        &falco_event_list(&[
            "create_nginx_pod_privileged.json",
            "attach_cluster_admin_role.json",
        ]),
        None,
    );
    let all = ids(&alerts(&client, "min_level=medium"));
    assert!(
        all.len() > first.len(),
        "new alerts while alertmanager is down"
    );
    wait_until("failed delivery attempts", WAIT, || {
        let sinks: Value = client
            .http()
            .get(format!("{}/api/v1/alerts/sinks", client.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        (sinks["sinks"]["am"]["failed"].as_u64().unwrap_or(0) > 0
            && sinks["queued"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    });

    // Back, with the same storage: every alert arrives, the old ones too.
    let am = Alertmanager::start(dir.path(), am_port);
    wait_until("every alert after the restart", WAIT, || {
        let got = am.alert_ids();
        got.is_superset(&all).then_some(())
    });
    let sinks: Value = client
        .http()
        .get(format!("{}/api/v1/alerts/sinks", client.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(sinks["queued"], 0, "{sinks}");
    assert!(sinks["sinks"]["am"]["delivered"].as_u64().unwrap() >= all.len() as u64);
    indexer.stop();
}

#[test]
fn replays_do_not_duplicate_and_status_changes_record_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    ward_e2e::write_secret(
        &tokens,
        "collector:collector-token-1234567\nanalyst/alice:analyst-token-1234567\nreader:reader-token-12345678\n",
    );
    let port = free_port();
    let args = ["--tokens".to_string(), tokens.display().to_string()];
    let mut indexer = start_indexer("indexer", dir.path(), port, &args);
    let client = Client::new(format!("http://127.0.0.1:{port}"));
    client.wait_healthy(WAIT);
    let body = falco_event_list(&["exec_pod.json", "create_nginx_pod_privileged.json"]);
    client.post_audit(&body, Some("collector-token-1234567"));
    let before = alerts_as(&client, "limit=1000", Some(READER));
    assert!(!before.is_empty());
    client.post_audit(&body, Some("collector-token-1234567"));
    assert_eq!(
        ids(&alerts_as(&client, "limit=1000", Some(READER))),
        ids(&before)
    );

    // After a restart the tap's memory of recent ids is gone; the store's
    // rule+auditID key still holds.
    indexer.stop();
    let mut indexer = start_indexer("indexer2", dir.path(), port, &args);
    client.wait_healthy(WAIT);
    client.post_audit(&body, Some("collector-token-1234567"));
    assert_eq!(
        ids(&alerts_as(&client, "limit=1000", Some(READER))),
        ids(&before)
    );

    let id = before[0]["id"].as_u64().unwrap();
    let url = format!("{}/api/v1/alerts/{id}/status", client.base);
    let change = json!({"status": "acknowledged", "comment": "looking at it"});
    let refused = client
        .http()
        .post(&url)
        .bearer_auth("reader-token-12345678")
        .json(&change)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403, "a viewer may not triage");
    let started = chrono_free_now();
    let changed: Value = client
        .http()
        .post(&url)
        .bearer_auth("analyst-token-1234567")
        .json(&change)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(changed["status"], "acknowledged");
    let alert: Value = client
        .http()
        .get(format!("{}/api/v1/alerts/{id}", client.base))
        .bearer_auth(READER)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let history = alert["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["status"], "open");
    assert_eq!(history[1]["status"], "acknowledged");
    assert_eq!(history[1]["by"], "alice", "the token's label");
    assert_eq!(history[1]["comment"], "looking at it");
    assert!(history[1]["at"].as_str().unwrap() >= started.as_str());

    // Retro-hunt from the command line with a rule written after the fact.
    let rule = dir.path().join("hunt.yml");
    std::fs::write(
        &rule,
        "title: Privileged pod (hunt)\nid: hunt-privileged\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s:\n    objectRef.resource: pods\n    requestObject.spec.containers.securityContext.privileged: true\n  condition: s\n",
    )
    .unwrap();
    let token = dir.path().join("analyst.token");
    std::fs::write(&token, "analyst-token-1234567\n").unwrap();
    let out = Command::new(ward_bin())
        .args(["rules", "hunt", "--rules"])
        .arg(&rule)
        .args([
            "--start",
            "2018-01-01T00:00:00Z",
            "--end",
            "2030-01-01T00:00:00Z",
            "--server",
            &client.base,
            "--token-file",
        ])
        .arg(&token)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let hunted = json_lines(&out);
    assert_eq!(hunted.len(), 1, "{hunted:?}");
    assert_eq!(hunted[0]["rule_id"], "hunt-privileged");
    assert_eq!(
        ids(&alerts_as(&client, "limit=1000", Some(READER))),
        ids(&before),
        "a hunt stores nothing"
    );
    indexer.stop();
}

/// Now in RFC 3339 (UTC, seconds), without a date library in this crate.
fn chrono_free_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
