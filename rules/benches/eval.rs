//! Throughput of the whole built-in pack on pre-parsed events (the audit
//! corpora of `testdata/`, parsed once up front, as the indexer hands them
//! over).
//! Goal: at least 500,000 events/s per core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value};
use ward_rules::{Engine, RuleSet, event_time};

fn corpus() -> Vec<(Map<String, Value>, chrono::DateTime<chrono::Utc>)> {
    let dir = ward_testdata::fixtures();
    let mut out = Vec::new();
    for rel in [
        "falco-traces/falco_k8s_audit_traces.jsonl",
        "panther-k8s/panther_k8s_audit_events.jsonl",
        "audit2rbac/demo.log",
    ] {
        let path = dir.join(rel);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", path.display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
                let t = event_time(&m).unwrap_or_default();
                out.push((m, t));
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let (rules, errors) = RuleSet::builtin();
    assert!(errors.is_empty(), "{errors:?}");
    let events = corpus();
    // As trees, which is what the indexer hands the engine.
    let events: Vec<_> = events
        .iter()
        .map(|(ev, t)| (ward_event::tree::Object::of_map(ev), *t))
        .collect();
    let mut group = c.benchmark_group("builtin_pack");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("fixture_corpora", |b| {
        let mut engine = Engine::new(rules.clone());
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            for (ev, t) in &events {
                out.clear();
                engine.process_tree(ev, *t, &mut out);
            }
            std::hint::black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
