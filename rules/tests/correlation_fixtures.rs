//! The correlation fixtures (`correlation/*.yml`) on audit2rbac's demo.log
//! must fire exactly as `correlation/EXPECTED.txt` says: sliding windows
//! over event time, with and without per-group suppression.

// Test helpers outside #[test] fns may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use ward_rules::{Engine, EngineConfig, RuleSet};

fn run(file: &str, suppress: bool) -> Vec<(usize, ward_rules::Alert)> {
    let (set, errors) = RuleSet::load(&[common::fixtures().join("correlation").join(file)]);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.rules().iter().filter(|r| r.correlation).count(), 1);
    let mut engine = Engine::with_config(
        set,
        EngineConfig {
            suppress,
            ..EngineConfig::default()
        },
    );
    let mut out = Vec::new();
    let mut hits = Vec::new();
    for (line, ev) in common::jsonl("audit2rbac/demo.log") {
        out.clear();
        engine.process_map(&ev, common::time_of(&ev), &mut out);
        hits.extend(out.drain(..).map(|a| (line, a)));
    }
    hits
}

#[test]
fn burst_by_user_and_impersonated_user_gte3() {
    let hits = run("mr_k8s_forbidden_burst.yml", false);
    let lines: Vec<usize> = hits.iter().map(|(l, _)| *l).collect();
    // The base rule is informational and referenced without `generate`, so
    // only the correlation alerts.
    assert!(hits.iter().all(|(_, a)| a.correlation));
    assert_eq!(lines, vec![4, 7, 8, 37]);
    let groups: Vec<Option<String>> = hits
        .iter()
        .map(|(_, a)| a.group.as_ref().unwrap()["impersonatedUser.username"].clone())
        .collect();
    assert_eq!(
        groups,
        vec![
            Some("bob".to_owned()),
            Some("system:serviceaccount:ns1:sa1".to_owned()),
            Some("system:serviceaccount:ns1:sa1".to_owned()),
            Some("alice".to_owned()),
        ]
    );
    // Every alert lists the audit IDs of the forbidden events in its window.
    for (_, a) in &hits {
        assert!(a.audit_ids.len() >= 3, "{a:?}");
        assert_eq!(&*a.rule_id, "6f0c2a7e-4d52-4c1e-9b0a-2f6f3c1d9a11");
        assert_eq!(a.author.as_deref(), Some("ward project fixture"));
    }

    // With suppression, the second sa1 alert (line 8) is folded into the first.
    let suppressed: Vec<usize> = run("mr_k8s_forbidden_burst.yml", true)
        .iter()
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(suppressed, vec![4, 7, 37]);
}

#[test]
fn burst_by_user_gte5_needs_a_sliding_window() {
    for suppress in [false, true] {
        let hits = run("mr_k8s_forbidden_burst_by_user_gte5.yml", suppress);
        assert_eq!(hits.len(), 1, "{hits:#?}");
        let (line, alert) = &hits[0];
        assert_eq!(*line, 8);
        // Events 4..8 (19:59:03 .. 20:01:37) straddle a 5-minute clock
        // boundary: only a sliding window sees all five.
        assert_eq!(alert.audit_ids.len(), 5);
        assert_eq!(alert.timestamp.to_rfc3339(), "2017-09-11T20:01:37+00:00");
        assert_eq!(
            alert.group.as_ref().unwrap()["user.username"].as_deref(),
            Some("system:admin")
        );
    }
}
