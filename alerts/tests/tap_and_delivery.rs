//! The tap raises and de-duplicates alerts; the dispatcher delivers them to
//! real HTTP receivers on loopback, retrying while a receiver fails and
//! after a restart.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Map, Value};
use ward_alerts::{AlertStore, Dispatcher, RulesTap, SinksConfig, Status};
use ward_indexer::tree::Object;
use ward_indexer::{IngestTap, ParsedRecord};
use ward_rules::RuleSet;

fn fixture(name: &str) -> Map<String, Value> {
    let path = ward_testdata::fixtures().join("falco-traces").join(name);
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

/// The hit of an audit record with this id, as the indexer builds it.
fn hit(id: &str, event: Map<String, Value>) -> Map<String, Value> {
    let mut hit = event;
    hit.insert("source".into(), "audit".into());
    hit.insert("cluster".into(), "prod-1".into());
    hit.insert("ward".into(), serde_json::json!({ "id": id }));
    hit
}

/// The record the tap sees for a hit (the indexer lends it the batch's trees).
fn record<'a>(id: &'a str, hit: &'a Object<'a>) -> ParsedRecord<'a> {
    ParsedRecord {
        id,
        key: id,
        timestamp_nanos: 0,
        hit,
    }
}

/// A receiver that answers 503 to the first `fail_first` requests.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/{*path}",
        post({
            let bodies = bodies.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| async move {
                if calls.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let v: Value = serde_json::from_slice(&body).unwrap();
                bodies.lock().unwrap().push((headers, v));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, bodies }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_raises_once_and_sinks_get_it_despite_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = AlertStore::open(&dir.path().join("alerts.redb")).unwrap();
    let hook = receiver(2).await;
    let am = receiver(0).await;
    let slack = receiver(0).await;
    let sinks = SinksConfig::parse(&format!(
        "sinks:\n\
         - {{name: hook, type: webhook, url: '{}/hook', headers: {{X-Ward-Test: yes}}}}\n\
         - {{name: am, type: alertmanager, url: '{}', min_level: high}}\n\
         - {{name: chat, type: slack, url: '{}/services/x', levels: [critical]}}\n\
         retry: {{initial_ms: 50, max_ms: 200}}\n",
        hook.url, am.url, slack.url
    ))
    .unwrap();
    let sinks = Arc::new(sinks);
    let dispatcher = Dispatcher::new(store.clone(), sinks.clone()).unwrap();
    let (rules, errors) = RuleSet::builtin();
    assert!(errors.is_empty(), "{errors:?}");
    let tap = RulesTap::new(rules, store.clone(), sinks, Some(dispatcher.waker()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async {
        let _ = stop_rx.await;
    }));

    let exec = fixture("exec_pod.json");
    let audit_id = exec["auditID"].as_str().unwrap().to_owned();
    let mut container = Map::new();
    container.insert("source".into(), "container".into());
    let exec_hit = hit("f:1", exec.clone());
    let (exec_tree, container_tree) = (Object::of_map(&exec_hit), Object::of_map(&container));
    let batch = vec![record("f:1", &exec_tree), record("f:2", &container_tree)];
    tap.observe(&batch);
    let first = store.count().unwrap();
    assert!(first >= 1, "the exec trace raises an alert");
    tap.observe(&batch);
    assert_eq!(
        store.count().unwrap(),
        first,
        "a replayed batch adds nothing"
    );
    assert_eq!(tap.counts().replayed, 1);
    // Same event under another record id (resent by a restarted
    // collector in a new epoch): the store's rule+auditID key catches it.
    let again = hit("g:1", exec);
    tap.observe(&[record("g:1", &Object::of_map(&again))]);
    assert_eq!(store.count().unwrap(), first);

    let alerts = store
        .list(&ward_alerts::AlertFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let exec_alert = alerts
        .iter()
        .find(|a| a.title.to_lowercase().contains("exec"))
        .expect("an exec alert");
    assert_eq!(exec_alert.audit_ids, vec![audit_id.clone()]);
    assert_eq!(exec_alert.event_ids, vec!["f:1".to_string()]);
    assert_eq!(exec_alert.cluster.as_deref(), Some("prod-1"));
    assert_eq!(exec_alert.namespace.as_deref(), Some("default"));
    assert_eq!(exec_alert.status, Status::Open);
    let routed_hook = alerts
        .iter()
        .filter(|a| a.level >= ward_rules::Level::Medium)
        .count();
    assert!(routed_hook >= 1);

    wait_for("webhook deliveries", || {
        hook.bodies.lock().unwrap().len() == routed_hook
    })
    .await;
    let counts = store.sink_counts().unwrap();
    assert_eq!(counts["hook"].delivered, routed_hook as u64);
    assert!(counts["hook"].failed >= 2, "{counts:?}");
    {
        let bodies = hook.bodies.lock().unwrap();
        assert_eq!(bodies[0].0["x-ward-test"], "yes");
        assert!(
            bodies
                .iter()
                .any(|(_, b)| b["audit_ids"][0] == audit_id.as_str())
        );
    }
    let high = alerts
        .iter()
        .filter(|a| a.level >= ward_rules::Level::High)
        .count();
    wait_for("alertmanager deliveries", || {
        am.bodies.lock().unwrap().len() == high
    })
    .await;
    {
        let bodies = am.bodies.lock().unwrap();
        for (_, b) in bodies.iter() {
            let a = &b[0];
            for label in ["alertname", "rule_id", "severity", "cluster", "alert_id"] {
                assert!(a["labels"][label].is_string(), "{label} in {a}");
            }
            let starts = chrono::DateTime::parse_from_rfc3339(a["startsAt"].as_str().unwrap());
            let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap());
            assert!(ends.unwrap() > starts.unwrap());
        }
    }
    assert!(
        slack.bodies.lock().unwrap().len()
            == alerts
                .iter()
                .filter(|a| a.level == ward_rules::Level::Critical)
                .count()
    );
    wait_for("an empty queue", || store.queue_len().unwrap() == 0).await;
    let _ = stop_tx.send(());
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_deliveries_survive_a_restart_while_the_sink_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.redb");
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = format!(
        "sinks:\n- {{name: hook, type: webhook, url: 'http://127.0.0.1:{port}/x'}}\nretry: {{initial_ms: 20, max_ms: 100}}\n"
    );
    {
        let store = AlertStore::open(&path).unwrap();
        let sinks = Arc::new(SinksConfig::parse(&config).unwrap());
        let dispatcher = Dispatcher::new(store.clone(), sinks.clone()).unwrap();
        let (rules, _) = RuleSet::builtin();
        let tap = RulesTap::new(rules, store.clone(), sinks, Some(dispatcher.waker()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(dispatcher.run(async {
            let _ = stop_rx.await;
        }));
        let exec = hit("f:1", fixture("exec_pod.json"));
        tap.observe(&[record("f:1", &Object::of_map(&exec))]);
        wait_for("failed attempts", || {
            store
                .sink_counts()
                .unwrap()
                .get("hook")
                .is_some_and(|c| c.failed >= 2)
        })
        .await;
        let _ = stop_tx.send(());
        running.await.unwrap();
        assert!(store.queue_len().unwrap() >= 1);
    }
    // "Restart": a new store handle and dispatcher, and now the sink is up.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::<Value>::new()));
    let app = Router::new().route(
        "/x",
        post({
            let got = got.clone();
            move |body: axum::body::Bytes| async move {
                got.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = AlertStore::open(&path).unwrap();
    let queued = store.queue_len().unwrap() as usize;
    let sinks = Arc::new(SinksConfig::parse(&config).unwrap());
    let dispatcher = Dispatcher::new(store.clone(), sinks).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async {
        let _ = stop_rx.await;
    }));
    wait_for("delivery after restart", || {
        got.lock().unwrap().len() == queued
    })
    .await;
    wait_for("an empty queue", || store.queue_len().unwrap() == 0).await;
    assert_eq!(
        store.sink_counts().unwrap()["hook"].delivered,
        queued as u64
    );
    let _ = stop_tx.send(());
    running.await.unwrap();
}
