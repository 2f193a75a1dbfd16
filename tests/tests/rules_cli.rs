//! `ward rules test` as a user runs it: the built-in pack over Falco's traces.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use ward_e2e::{fixtures, json_lines, ward_bin};

#[test]
fn rules_test_prints_one_alert_per_line_and_reports_bad_input() {
    let traces = fixtures().join("falco-traces");
    let exec = traces.join("exec_pod.json");
    let malformed = traces.join("fal_01_003.json");
    let out = std::process::Command::new(ward_bin())
        .args(["rules", "test"])
        .arg(&exec)
        .arg(&malformed)
        .output()
        .unwrap();
    let alerts = json_lines(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fal_01_003.json"),
        "malformed trace reported: {stderr}"
    );
    let exec_event: Value = serde_json::from_str(
        std::fs::read_to_string(&exec)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let audit_id = exec_event["auditID"].as_str().unwrap();
    let hit = alerts
        .iter()
        .find(|a| a["title"].as_str().unwrap().to_lowercase().contains("exec"))
        .expect("an exec alert");
    for key in [
        "rule_id",
        "title",
        "level",
        "author",
        "timestamp",
        "audit_ids",
    ] {
        assert!(!hit[key].is_null(), "{key} in {hit}");
    }
    assert_eq!(hit["audit_ids"][0], audit_id);
}
