//! Engine behaviour through the public API: load errors, filters,
//! `generate`, and correlation windows (sliding over event time, suppression,
//! bounded state, every correlation type).

// Test helpers outside #[test] fns may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use ward_rules::{Alert, Engine, EngineConfig, Error, RuleSet, RuleSource};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_700_000_000 + secs)
}

fn set(yaml: &str) -> RuleSet {
    let (s, errors) = RuleSet::from_sources(&[("test.yml", yaml)]);
    assert!(errors.is_empty(), "{errors:#?}");
    s
}

fn ev(id: &str, user: &str, verb: &str) -> Value {
    json!({"kind": "Event", "auditID": id, "verb": verb, "user": {"username": user},
           "responseStatus": {"code": 403}, "objectRef": {"resource": "pods"}})
}

const BASE: &str = r#"
title: Forbidden
id: base-forbidden
name: forbidden
detection:
  sel:
    responseStatus.code: 403
  condition: sel
level: low
"#;

fn count_rule(extra: &str) -> String {
    format!(
        "title: Burst\nid: burst\ncorrelation:\n  type: event_count\n  rules: [forbidden]\n  group-by: [user.username]\n  timespan: 60s\n  condition:\n    gte: 3\n{extra}level: high\n---\n{BASE}"
    )
}

fn feed(engine: &mut Engine, events: &[(i64, Value)]) -> Vec<(i64, Alert)> {
    let mut all = Vec::new();
    let mut out = Vec::new();
    for (s, e) in events {
        out.clear();
        engine.process(e, t(*s), &mut out);
        all.extend(out.drain(..).map(|a| (*s, a)));
    }
    all
}

#[test]
fn broken_rule_file_is_reported_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yml"),
        "title: good\ndetection:\n  sel:\n    verb: get\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad_yaml.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(
        dir.path().join("bad_condition.yaml"),
        "title: bad cond\ndetection:\n  sel:\n    verb: get\n  condition: sel and nothere\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad_modifier.yml"),
        "title: bad mod\ndetection:\n  sel:\n    verb|expand: '%x%'\n  condition: sel\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/also_good.yaml"),
        "title: also good\ndetection:\n  sel:\n    verb: list\n  condition: sel\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
    let (set, errors) = RuleSet::load(&[dir.path().to_owned()]);
    let titles: Vec<&str> = set.rules().iter().map(|r| r.title.as_str()).collect();
    assert_eq!(titles, vec!["good", "also good"]);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("bad_yaml.yml") && m.contains("invalid YAML"))
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("bad_condition.yaml") && m.contains("nothere"))
    );
    assert!(errors.iter().any(
        |e| matches!(&e.error, Error::Modifier { modifier, .. } if modifier == "expand")
            && matches!(&e.source, RuleSource::File(p) if p.ends_with("bad_modifier.yml"))
    ));
    // The good rules run.
    let mut engine = Engine::new(set);
    let mut out = Vec::new();
    engine.process(&json!({"verb": "LIST"}), t(0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].title, "also good");
    // A missing path is an error, not a panic.
    let (_, errors) = RuleSet::load(&[dir.path().join("nope.yml")]);
    assert!(matches!(errors[0].error, Error::Io { .. }));
}

#[test]
fn unknown_references_and_cycles_are_load_errors() {
    let (set, errors) = RuleSet::from_sources(&[(
        "c.yml",
        "title: c1\nid: c1\ncorrelation:\n  type: event_count\n  rules: [missing]\n  timespan: 1m\n  condition: {gte: 1}\n---\n\
         title: a\nid: a\ncorrelation:\n  type: temporal\n  rules: [b, x]\n  timespan: 1m\n---\n\
         title: b\nid: b\ncorrelation:\n  type: temporal\n  rules: [a, x]\n  timespan: 1m\n---\n\
         title: x\nid: x\ndetection:\n  s:\n    verb: get\n  condition: s\n",
    )]);
    assert_eq!(set.rules().len(), 1);
    assert!(
        errors
            .iter()
            .any(|e| matches!(&e.error, Error::UnknownReference(r) if r == "missing"))
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| matches!(e.error, Error::Cycle(_)))
            .count(),
        2
    );
}

#[test]
fn filters_and_generate() {
    let yaml = format!(
        "{BASE}---\ntitle: no bots\nlogsource: {{product: kubernetes}}\nfilter:\n  rules: [base-forbidden]\n  bots:\n    user.username|startswith: 'system:'\n  condition: not bots\n"
    );
    let s = set(&yaml);
    let mut e = Engine::new(s);
    let got = feed(
        &mut e,
        &[
            (0, ev("1", "system:kube-scheduler", "get")),
            (1, ev("2", "bob", "get")),
        ],
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.audit_ids, vec!["2"]);

    // A base rule referenced by a correlation is silent unless `generate`.
    let mut e = Engine::new(set(&count_rule("")));
    let got = feed(&mut e, &[(0, ev("1", "bob", "get"))]);
    assert!(got.is_empty());
    let mut e = Engine::new(set(&count_rule("generate: true\n")));
    let got = feed(&mut e, &[(0, ev("1", "bob", "get"))]);
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].1.rule_id, "base-forbidden");
}

#[test]
fn event_count_window_slides_over_event_time() {
    let cfg = EngineConfig {
        suppress: false,
        ..EngineConfig::default()
    };
    let mut e = Engine::with_config(set(&count_rule("")), cfg);
    let got = feed(
        &mut e,
        &[
            (0, ev("1", "bob", "get")),
            (50, ev("2", "bob", "get")),
            // 61s after the first: it has slid out, only 2 in the window.
            (61, ev("3", "bob", "get")),
            (70, ev("4", "alice", "get")),
            (100, ev("5", "bob", "get")),
            (105, ev("6", "bob", "get")),
        ],
    );
    let at: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(at, vec![100, 105]);
    assert_eq!(got[0].1.audit_ids, vec!["2", "3", "5"]);
    assert_eq!(got[1].1.audit_ids, vec!["2", "3", "5", "6"]);
    let group = got[0].1.group.as_ref().unwrap();
    assert_eq!(group["user.username"].as_deref(), Some("bob"));
    assert_eq!(got[0].1.level, ward_rules::Level::High);
    assert!(got[0].1.correlation);
}

#[test]
fn suppression_once_per_group_and_window() {
    let mut e = Engine::new(set(&count_rule("")));
    let events: Vec<(i64, Value)> = (0..10)
        .map(|i| (i * 5, ev(&i.to_string(), "bob", "get")))
        .collect();
    let got = feed(&mut e, &events);
    // Fires at the 3rd event (t=10), then quiet until t >= 70.
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![10]);
    let got = feed(
        &mut e,
        &[(69, ev("x", "bob", "get")), (70, ev("y", "bob", "get"))],
    );
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![70]);
    // Another group is not suppressed by bob's alert.
    let got = feed(
        &mut e,
        &[
            (71, ev("a1", "eve", "get")),
            (72, ev("a2", "eve", "get")),
            (73, ev("a3", "eve", "get")),
        ],
    );
    assert_eq!(got.len(), 1);
}

#[test]
fn state_is_bounded_and_evictions_counted() {
    let cfg = EngineConfig {
        max_groups: 2,
        max_events_per_group: 3,
        suppress: false,
    };
    let mut e = Engine::with_config(set(&count_rule("")), cfg);
    feed(
        &mut e,
        &[
            (0, ev("1", "a", "get")),
            (1, ev("2", "b", "get")),
            (2, ev("3", "c", "get")),
        ],
    );
    assert_eq!(e.groups(), 2);
    assert_eq!(e.stats().evicted_groups, 1);
    // "a" was the stalest and is gone: two more of its events do not reach 3.
    let got = feed(
        &mut e,
        &[(3, ev("4", "a", "get")), (4, ev("5", "a", "get"))],
    );
    assert!(got.is_empty());
    assert_eq!(e.stats().evicted_groups, 2);
    // Per-group cap: the window never holds more than 3 events.
    let got = feed(
        &mut e,
        &[(5, ev("6", "a", "get")), (6, ev("7", "a", "get"))],
    );
    assert_eq!(got.last().unwrap().1.audit_ids, vec!["5", "6", "7"]);
    assert_eq!(e.stats().evicted_events, 1);
    // Groups idle for a whole window are dropped as event time moves on.
    feed(&mut e, &[(1000, ev("8", "z", "get"))]);
    assert_eq!(e.groups(), 1);
}

#[test]
fn value_count_temporal_and_ordered() {
    let rules = r#"
title: get
name: r_get
detection: {s: {verb: get}, condition: s}
---
title: delete
name: r_delete
detection: {s: {verb: delete}, condition: s}
---
title: many pods
id: vc
correlation:
  type: value_count
  rules: [r_get]
  group-by: [user.username]
  timespan: 1m
  condition: {field: objectRef.name, gte: 3}
---
title: get and delete
id: tmp
correlation:
  type: temporal
  rules: [r_get, r_delete]
  group-by: [user.username]
  timespan: 1m
---
title: get then delete
id: ord
correlation:
  type: temporal_ordered
  rules: [r_delete, r_get]
  group-by: [user.username]
  timespan: 1m
"#;
    let mk = |id: &str, verb: &str, name: &str| json!({"auditID": id, "verb": verb, "user": {"username": "bob"}, "objectRef": {"name": name}});
    let mut e = Engine::with_config(
        set(rules),
        EngineConfig {
            suppress: false,
            ..EngineConfig::default()
        },
    );
    let got = feed(
        &mut e,
        &[
            (0, mk("1", "get", "p1")),
            (1, mk("2", "get", "p1")),
            (2, mk("3", "get", "p2")),
            (3, mk("4", "delete", "p2")),
            (4, mk("5", "get", "p3")),
        ],
    );
    let fired: Vec<(i64, &str)> = got.iter().map(|(s, a)| (*s, &*a.rule_id)).collect();
    assert_eq!(
        fired,
        vec![
            // temporal: both kinds seen at t=3 (and still at t=4)
            (3, "tmp"),
            // value_count: third distinct name at t=4
            (4, "vc"),
            (4, "tmp"),
            // ordered delete → get: only once a get follows the delete
            (4, "ord"),
        ]
    );
}

#[test]
fn chained_correlations_and_aliases() {
    let rules = r#"
title: denied
name: denied
detection: {s: {responseStatus.code: 403}, condition: s}
---
title: allowed
name: allowed
detection: {s: {responseStatus.code: 200}, condition: s}
---
title: burst
name: burst
id: burst
correlation:
  type: event_count
  rules: [denied]
  group-by: [user.username]
  timespan: 1m
  condition: {gte: 2}
---
title: burst then success from same source
id: chain
correlation:
  type: temporal_ordered
  rules: [burst, allowed]
  group-by: [src]
  timespan: 5m
  aliases:
    src:
      burst: sourceIPs
      allowed: sourceIPs
"#;
    let mk = |id: &str, code: u16, ip: &str| json!({"auditID": id, "user": {"username": "bob"}, "responseStatus": {"code": code}, "sourceIPs": [ip]});
    let mut e = Engine::new(set(rules));
    let got = feed(
        &mut e,
        &[
            (0, mk("1", 403, "1.2.3.4")),
            (1, mk("2", 403, "1.2.3.4")),
            (2, mk("3", 200, "9.9.9.9")),
            (3, mk("4", 200, "1.2.3.4")),
        ],
    );
    let fired: Vec<(i64, &str)> = got.iter().map(|(s, a)| (*s, &*a.rule_id)).collect();
    // The inner correlation is silent (referenced, no `generate`); the chain
    // fires when the same source IP succeeds after the burst.
    assert_eq!(fired, vec![(3, "chain")]);
    assert_eq!(
        got[0].1.group.as_ref().unwrap()["src"].as_deref(),
        Some("1.2.3.4")
    );
    assert_eq!(got[0].1.audit_ids, vec!["2", "4"]);
}

#[test]
fn literal_dotted_annotation_keys_and_numbers() {
    let s = set(r#"
title: allowed anon
detection:
  sel:
    annotations.authorization.k8s.io/decision: allow
    responseStatus.code: '200'
  condition: sel
"#);
    let mut e = Engine::new(s);
    let got = feed(
        &mut e,
        &[
            (
                0,
                json!({"annotations": {"authorization.k8s.io/decision": "allow"}, "responseStatus": {"code": 200}}),
            ),
            (
                1,
                json!({"annotations": {"authorization.k8s.io/decision": "forbid"}, "responseStatus": {"code": 200}}),
            ),
            (
                2,
                json!({"annotations": {"authorization": {"k8s": {"io/decision": "allow"}}}, "responseStatus": {"code": 201}}),
            ),
        ],
    );
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0]);
}
