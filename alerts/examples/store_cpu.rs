//! CPU cost of storing alerts, per alert, on the thread that stores them:
//! the built-in pack's alerts over the fixture corpora replicated with
//! fresh `auditID`s (so every alert is new), handed to
//! [`AlertStore::insert`] in the groups one ingest batch would raise.
//! Thread CPU comes from `/proc/thread-self/schedstat`, which on a shared
//! machine is steadier than wall-clock time.
//!
//! ```text
//! cargo run --release -p ward-alerts --example store_cpu -- --copies 200
//! ```
//!
//! With `--sinks 1` every alert also queues one delivery, as with one
//! configured sink.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value};
use ward_alerts::{AlertStore, NewAlert};
use ward_rules::{Engine, RuleSet, event_time};

/// Events per group: a 4 MiB collector batch holds about this many audit events.
const EVENTS_PER_BATCH: usize = 3000;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn text(map: &Map<String, Value>, path: &[&str]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut m = map;
    for p in parents {
        m = m.get(*p)?.as_object()?;
    }
    m.get(*last)?.as_str().map(str::to_owned)
}

fn main() {
    let mut copies = 200usize;
    let mut sinks = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--copies" => copies = args.next().and_then(|v| v.parse().ok()).expect("N"),
            "--sinks" => sinks = args.next().and_then(|v| v.parse().ok()).expect("N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = ward_testdata::fixtures();
    let mut templates: Vec<Map<String, Value>> = Vec::new();
    for rel in [
        "falco-traces/falco_k8s_audit_traces.jsonl",
        "panther-k8s/panther_k8s_audit_events.jsonl",
        "audit2rbac/demo.log",
    ] {
        let text = std::fs::read_to_string(dir.join(rel)).expect("fixtures");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
                templates.push(m);
            }
        }
    }
    let (rules, errors) = RuleSet::builtin();
    assert!(errors.is_empty());
    let mut engine = Engine::new(rules);

    // Raise every alert first, grouped by batch, so that only storing is timed.
    let mut groups: Vec<Vec<NewAlert>> = vec![Vec::new()];
    let mut out = Vec::new();
    let mut events = 0usize;
    for copy in 0..copies {
        for (n, template) in templates.iter().enumerate() {
            let mut event = template.clone();
            let audit_id = format!(
                "{}-{copy:07}",
                text(&event, &["auditID"]).unwrap_or_else(|| format!("e{n}"))
            );
            event.insert("auditID".into(), Value::String(audit_id.clone()));
            let time = event_time(&event).unwrap_or_default();
            out.clear();
            engine.process_map(&event, time, &mut out);
            let group = groups.last_mut().expect("one group");
            for alert in out.drain(..) {
                group.push(NewAlert {
                    alert,
                    event_id: format!("bench:{copy}:{n}"),
                    audit_id: Some(audit_id.clone()),
                    cluster: Some("bench".into()),
                    namespace: text(&event, &["objectRef", "namespace"]),
                    user: text(&event, &["user", "username"]),
                });
            }
            events += 1;
            if events.is_multiple_of(EVENTS_PER_BATCH) {
                groups.push(Vec::new());
            }
        }
    }
    let alerts: usize = groups.iter().map(Vec::len).sum();
    let tmp = tempfile::tempdir().unwrap();
    let store = AlertStore::open(&tmp.path().join("alerts.redb")).unwrap();
    let names: Vec<String> = (0..sinks).map(|i| format!("sink{i}")).collect();
    let route = |_: &ward_alerts::StoredAlert| names.clone();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let wall = std::time::Instant::now();
    let start = thread_cpu_ns();
    let mut stored = 0usize;
    for group in groups {
        stored += store.insert(group, &route).unwrap().len();
    }
    let cpu_ns = thread_cpu_ns() - start;
    let bytes = std::fs::metadata(tmp.path().join("alerts.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{events} events, {alerts} alerts ({stored} stored), {sinks} sinks: {:.2} CPU-s ({:.2} s wall, load {}); {:.2} µs per alert, {:.2} µs per event; {:.0} bytes per alert on disk",
        cpu_ns as f64 / 1e9,
        wall.elapsed().as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        cpu_ns as f64 / 1e3 / alerts as f64,
        cpu_ns as f64 / 1e3 / events as f64,
        bytes as f64 / stored.max(1) as f64,
    );
}
