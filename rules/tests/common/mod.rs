//! Shared helpers: where the research fixtures live (`testdata/`, see
//! `testdata/ORIGIN.md`) and how to read them.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use ward_rules::{Alert, Engine, Level, RuleSet};

pub use ward_testdata::fixtures;

/// The events of a JSONL file with their 1-based line numbers.
pub fn jsonl(rel: &str) -> Vec<(usize, Map<String, Value>)> {
    let path = fixtures().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            match v {
                Value::Object(m) => (i + 1, m),
                _ => panic!("{}:{}: not an object", path.display(), i + 1),
            }
        })
        .collect()
}

pub fn time_of(ev: &Map<String, Value>) -> DateTime<Utc> {
    ward_rules::event_time(ev).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Runs events one by one and returns (line, alert) pairs.
pub fn run(rules: RuleSet, events: &[(usize, Map<String, Value>)]) -> Vec<(usize, Alert)> {
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (line, ev) in events {
        out.clear();
        engine.process_map(ev, time_of(ev), &mut out);
        all.extend(out.drain(..).map(|a| (*line, a)));
    }
    all
}

pub fn builtin() -> RuleSet {
    let (set, errors) = RuleSet::builtin();
    assert!(
        errors.is_empty(),
        "built-in pack has load errors: {errors:#?}"
    );
    set
}

pub fn at_least_medium(alerts: &[Alert]) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.level >= Level::Medium).collect()
}
