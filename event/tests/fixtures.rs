//! The audit parser on real API server events from the fixtures of `testdata/`.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use ward_event::audit::{Parsed, parse_line};
use ward_event::{Error, cri, docker};

fn fixture(path: &str) -> String {
    let p = ward_testdata::fixtures().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_fixture_event_parses_and_keeps_its_text() {
    for (file, want) in [
        ("falco-traces/falco_k8s_audit_traces.jsonl", 51),
        ("panther-k8s/panther_k8s_audit_events.jsonl", 222),
        ("audit2rbac/demo.log", 37),
    ] {
        let text = fixture(file);
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = parse_line(line);
            assert_eq!(parsed.len(), 1, "{file}: {line}");
            match &parsed[0] {
                Parsed::Event { raw, .. } => assert_eq!(*raw, line),
                Parsed::Invalid { error, .. } => panic!("{file}: {error}: {line}"),
            }
            n += 1;
        }
        assert_eq!(n, want, "{file}");
    }
}

#[test]
fn events_with_a_time_get_it() {
    // Falco's traces and audit2rbac's log all carry a timestamp field.
    for file in [
        "falco-traces/falco_k8s_audit_traces.jsonl",
        "audit2rbac/demo.log",
    ] {
        for line in fixture(file).lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                matches!(
                    parse_line(line)[0],
                    Parsed::Event {
                        timestamp: Some(_),
                        ..
                    }
                ),
                "{line}"
            );
        }
    }
}

#[test]
fn the_malformed_trace_is_kept_raw_with_a_reason() {
    let text = fixture("falco-traces/fal_01_003.json");
    let parsed = parse_line(text.trim());
    let Parsed::Invalid { raw, error } = &parsed[0] else {
        panic!("{parsed:?}")
    };
    assert_eq!(*raw, text.trim());
    assert!(
        matches!(error, Error::Audit(reason) if reason.contains("integer")),
        "{error}"
    );
}

#[test]
fn a_one_mebibyte_physical_line() {
    let message = "x".repeat(1024 * 1024);
    let cri_line = format!("2024-05-01T10:00:00.000000001Z stdout F {message}");
    let c = cri::parse(cri_line.as_bytes()).unwrap();
    assert_eq!(c.message.len(), 1024 * 1024);
    let docker_line =
        format!(r#"{{"log":"{message}\n","stream":"stdout","time":"2024-05-01T10:00:00Z"}}"#);
    let d = docker::parse(docker_line.as_bytes()).unwrap();
    assert_eq!(d.message.len(), 1024 * 1024);
    assert!(!d.partial);
}
