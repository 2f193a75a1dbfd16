//! Rule evaluation throughput per CPU-second of the evaluating thread:
//! the whole built-in pack over the fixture corpora, pre-parsed, for about
//! `--secs` seconds of this thread's CPU time (from
//! `/proc/thread-self/schedstat`, nanoseconds on CPU). On a shared machine
//! this is steadier than criterion's wall-clock figure, which counts the
//! time other processes hold the core.
//!
//! ```text
//! cargo run --release -p ward-rules --example eval_cpu -- --secs 10
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Map, Value};
use ward_rules::{Engine, RuleSet, event_time};

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut secs = 10.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--secs" {
            secs = args.next().and_then(|v| v.parse().ok()).expect("--secs N");
        }
    }
    let dir = ward_testdata::fixtures();
    let mut events: Vec<(Map<String, Value>, chrono::DateTime<chrono::Utc>)> = Vec::new();
    for rel in [
        "falco-traces/falco_k8s_audit_traces.jsonl",
        "panther-k8s/panther_k8s_audit_events.jsonl",
        "audit2rbac/demo.log",
    ] {
        let text = std::fs::read_to_string(dir.join(rel)).expect("fixtures");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
                let t = event_time(&m).unwrap_or_default();
                events.push((m, t));
            }
        }
    }
    // As trees, which is what the indexer hands the engine.
    let events: Vec<_> = events
        .iter()
        .map(|(ev, t)| (ward_event::tree::Object::of_map(ev), *t))
        .collect();
    let (rules, errors) = RuleSet::builtin();
    assert!(errors.is_empty());
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let start = thread_cpu_ns();
    let wall = std::time::Instant::now();
    let mut n = 0u64;
    let mut alerts = 0usize;
    while (thread_cpu_ns() - start) as f64 / 1e9 < secs {
        for _ in 0..100 {
            for (ev, t) in &events {
                out.clear();
                engine.process_tree(ev, *t, &mut out);
                alerts += out.len();
            }
            n += events.len() as u64;
        }
    }
    let cpu = (thread_cpu_ns() - start) as f64 / 1e9;
    println!(
        "{} events ({} per pass) in {:.2} CPU-s ({:.2} s wall, load {}): {:.0} events per CPU-second; {} alerts",
        n,
        events.len(),
        cpu,
        wall.elapsed().as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        n as f64 / cpu,
        alerts
    );
}
