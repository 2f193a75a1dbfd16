//! A routine cluster must not page anyone: the built-in pack raises nothing
//! at medium or above on what healthy clusters do all day, and that quiet is
//! not just an empty pack (the same stream with one attack in it pages).

// Test helpers outside #[test] fns may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use ward_rules::{Level, RuleSet};

fn routine() -> Vec<(usize, serde_json::Map<String, serde_json::Value>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/routine_cluster.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, serde_json::from_str(l).unwrap()))
        .collect()
}

#[test]
fn routine_stream_raises_nothing_at_medium_or_above() {
    let events = routine();
    assert_eq!(events.len(), 10);
    let alerts: Vec<_> = common::run(common::builtin(), &events)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let loud = common::at_least_medium(&alerts);
    assert!(loud.is_empty(), "{loud:#?}");
    // Hunting context may still be recorded (the single 403 is low).
    assert!(alerts.iter().all(|a| a.level <= Level::Low));
    assert!(alerts.iter().any(|a| a.audit_ids == ["r-07"]));
}

#[test]
fn same_stream_with_an_attack_pages() {
    let mut events = routine();
    // A person lists every secret, then keeps probing what the token can do.
    let mut list = events[1].1.clone();
    list["user"] = serde_json::json!({"username": "jane@example.com", "groups": ["devs"]});
    list["auditID"] = "attack-1".into();
    events.push((11, list));
    for i in 0..12 {
        let mut denied = events[6].1.clone();
        denied["auditID"] = format!("probe-{i}").into();
        denied["requestReceivedTimestamp"] =
            format!("2026-11-20T10:01:{:02}.000000Z", i * 2).into();
        events.push((12 + i, denied));
    }
    let alerts: Vec<_> = common::run(common::builtin(), &events)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let loud = common::at_least_medium(&alerts);
    let titles: Vec<&str> = loud.iter().map(|a| &*a.title).collect();
    assert!(
        titles.contains(&"Kubernetes Secret Read By A Non-System Identity"),
        "{titles:?}"
    );
    let burst: Vec<_> = loud
        .iter()
        .filter(|a| &*a.title == "Burst Of Forbidden Kubernetes API Requests By One Identity")
        .collect();
    // Suppressed to one alert per identity and window, listing the single
    // routine 403 plus the first nine probes (threshold 10).
    assert_eq!(burst.len(), 1, "{titles:?}");
    assert_eq!(burst[0].audit_ids.len(), 10);
    assert_eq!(burst[0].audit_ids[0], "r-07");
}

#[test]
fn builtin_pack_loads_cleanly_with_levels_that_mean_something() {
    let (set, errors) = RuleSet::builtin();
    assert!(errors.is_empty(), "{errors:#?}");
    let ward: Vec<_> = set
        .rules()
        .iter()
        .filter(|r| r.author.as_deref() == Some("Ward"))
        .collect();
    assert!(ward.len() >= 45, "{}", ward.len());
    for r in &ward {
        assert!(
            r.description.as_deref().is_some_and(|d| d.len() > 80),
            "{}",
            r.title
        );
        assert!(uuid_like(&r.id), "{}: {}", r.title, r.id);
    }
    assert_eq!(set.filters().len(), 3);
    assert!(set.filters().iter().all(|f| !f.rules.is_empty()));
    // Ids are unique across the pack.
    let mut ids: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
