//! The built-in pack against Falco's Kubernetes audit test traces: every
//! trace Falco's default rules detect (the cases without extra rule files)
//! must raise the Ward rule covering the same behaviour, as many times as
//! Falco's expectation says; the traces Falco's defaults leave alone must
//! raise nothing at medium or above; the malformed trace is reported, not
//! fatal.

// Test helpers outside #[test] fns may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use ward_rules::{Alert, Engine, Level, RuleSet};

struct Case {
    test: String,
    trace: String,
    detect: bool,
    falco_rule: Option<(String, usize)>,
    extra_rules: bool,
}

fn cases() -> Vec<Case> {
    let text =
        std::fs::read_to_string(common::fixtures().join("falco-traces/EXPECTED_FALCO_ALERTS.txt"))
            .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(" | ").map(str::trim).collect();
            assert_eq!(f.len(), 5, "{l}");
            let falco_rule = f[3]
                .rsplit_once('=')
                .map(|(r, n)| (r.to_owned(), n.parse().unwrap()));
            Case {
                test: f[0].to_owned(),
                trace: f[1].to_owned(),
                detect: f[2] == "detect=True",
                falco_rule,
                extra_rules: f[4] != "extra_rules=[]",
            }
        })
        .collect()
}

/// Falco rule → the Ward rule title that covers it.
fn ward_title(falco: &str) -> &'static str {
    match falco {
        "Create Privileged Pod" => "Privileged Container Created In Kubernetes Pod",
        "Create Sensitive Mount Pod" => "Pod Mounting A Sensitive Host Path Created",
        "Create HostNetwork Pod" => "Pod Using The Host Network Created",
        "Create NodePort Service" => "NodePort Service Created",
        "Create/Modify Configmap With Private Credentials" => {
            "ConfigMap With Credentials Created Or Modified"
        }
        "Anonymous Request Allowed" => "Anonymous Kubernetes API Request Allowed",
        "Attach/Exec Pod" => "Exec Or Attach Into A Kubernetes Pod",
        "Pod Created in Kube Namespace" => "Pod Created In kube-system Or kube-public",
        "Service Account Created in Kube Namespace" => {
            "Service Account Created In kube-system Or kube-public"
        }
        "System ClusterRole Modified/Deleted" => "System ClusterRole Or Role Modified Or Deleted",
        "Attach to cluster-admin Role" => "Binding To The cluster-admin Role Created",
        "ClusterRole With Wildcard Created" => {
            "Role Or ClusterRole With Wildcard Permissions Created"
        }
        "ClusterRole With Write Privileges Created" => {
            "Role Or ClusterRole With Write Privileges Created"
        }
        "ClusterRole With Pod Exec Created" => "Role Or ClusterRole Granting Pod Exec Created",
        "K8s Deployment Created" => "Kubernetes Deployment Created",
        "K8s Deployment Deleted" => "Kubernetes Deployment Deleted",
        "K8s Service Created" => "Kubernetes Service Created",
        "K8s Service Deleted" => "Kubernetes Service Deleted",
        "K8s ConfigMap Created" => "Kubernetes ConfigMap Created",
        "K8s ConfigMap Deleted" => "Kubernetes ConfigMap Deleted",
        "K8s Namespace Created" => "Kubernetes Namespace Created",
        "K8s Namespace Deleted" => "Kubernetes Namespace Deleted",
        "K8s Serviceaccount Created" => "Kubernetes ServiceAccount Created",
        "K8s Serviceaccount Deleted" => "Kubernetes ServiceAccount Deleted",
        "K8s Role/Clusterrole Created" => "Kubernetes ClusterRole Created",
        "K8s Role/Clusterrole Deleted" => "Kubernetes ClusterRole Deleted",
        "K8s Role/Clusterrolebinding Created" => "Kubernetes ClusterRoleBinding Created",
        "K8s Role/Clusterrolebinding Deleted" => "Kubernetes ClusterRoleBinding Deleted",
        "K8s Secret Created" => "Kubernetes Secret Created",
        "K8s Secret Deleted" => "Kubernetes Secret Deleted",
        // Site-specific allow-lists and the engine self-test: no Ward rule.
        _ => "",
    }
}

/// Alerts of the built-in pack on one trace file (all its JSON lines).
fn alerts_on(set: &RuleSet, trace: &str) -> Vec<Alert> {
    let path = common::fixtures().join("falco-traces").join(trace);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut engine = Engine::new(set.clone());
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let t = v.as_object().map(common::time_of).unwrap_or_default();
        engine.process(&v, t, &mut out);
    }
    out
}

#[test]
fn detected_traces_raise_the_matching_ward_rule() {
    let set = common::builtin();
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.detect) {
        let Some((falco, count)) = &case.falco_rule else {
            panic!("{}: detect without rule", case.test)
        };
        let title = ward_title(falco);
        if case.extra_rules && title.is_empty() {
            // Needs a site allow-list Falco loads from extra files.
            continue;
        }
        assert!(!title.is_empty(), "{}: no Ward rule for {falco}", case.test);
        let alerts = alerts_on(&set, &case.trace);
        let n = alerts.iter().filter(|a| &*a.title == title).count();
        assert_eq!(
            n,
            *count,
            "{} ({}): expected {count} x {title:?}, got {:?}",
            case.test,
            case.trace,
            alerts.iter().map(|a| &a.title).collect::<Vec<_>>()
        );
        let ward = alerts.iter().find(|a| &*a.title == title).unwrap();
        assert_eq!(ward.author.as_deref(), Some("Ward"));
        assert!(!ward.audit_ids.is_empty());
        checked += 1;
    }
    // 35 default-rule cases + 5 that Falco runs with extra rule files but
    // Ward covers without (engine-v4 privileged and hostNetwork, NodePort,
    // ConfigMap credentials, namespace created).
    let default_cases = cases()
        .iter()
        .filter(|c| c.detect && !c.extra_rules)
        .count();
    assert_eq!(default_cases, 35);
    assert_eq!(checked, default_cases + 5);
}

#[test]
fn undetected_traces_raise_nothing_that_pages() {
    let set = common::builtin();
    let quiet: Vec<Case> = cases()
        .into_iter()
        .filter(|c| !c.detect && !c.extra_rules && c.trace != "fal_01_003.json")
        .collect();
    assert_eq!(quiet.len(), 5);
    for case in quiet {
        let alerts = alerts_on(&set, &case.trace);
        let loud: Vec<_> = alerts.iter().filter(|a| a.level >= Level::Medium).collect();
        assert!(loud.is_empty(), "{}: {loud:#?}", case.test);
    }
    // Without Ward's filters, SigmaHQ's secrets rule would page on two of
    // them: the filters are what keeps them quiet.
    let (sigma_only, _) = RuleSet::load(&[common::fixtures().join("sigma-k8s")]);
    let loud = alerts_on(&sigma_only, "create_service_account_token_secret.json");
    assert!(loud.iter().any(|a| a.level >= Level::Medium));
}

#[test]
fn ward_rule_levels_on_the_whole_trace_set() {
    // Per Ward rule, how many traces it fired on: a regression guard for the
    // pack as a whole (the per-case checks above are the real contract).
    let set = common::builtin();
    let events = common::jsonl("falco-traces/falco_k8s_audit_traces.jsonl");
    let mut per_title: BTreeMap<String, usize> = BTreeMap::new();
    for (_, a) in common::run(set, &events) {
        *per_title.entry(a.title.to_string()).or_default() += 1;
    }
    assert_eq!(
        per_title["ConfigMap With Credentials Created Or Modified"],
        6
    );
    assert_eq!(per_title["Exec Or Attach Into A Kubernetes Pod"], 2);
    assert_eq!(
        per_title["Privileged Container Created In Kubernetes Pod"],
        3
    );
    assert_eq!(per_title["Pod Mounting A Sensitive Host Path Created"], 2);
}

#[test]
fn malformed_trace_is_reported_not_fatal() {
    let set = common::builtin();
    let dir = common::fixtures().join("falco-traces");
    let files: Vec<PathBuf> = ["fal_01_003.json", "exec_pod.json", "attach_pod.json"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let n = ward_rules::run_test_files(&set, &files, &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.contains("fal_01_003.json:1: not an audit event"),
        "{err}"
    );
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    assert!(
        lines
            .iter()
            .any(|a| a["title"] == "Exec Or Attach Into A Kubernetes Pod"
                && a["audit_ids"][0] == "ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6")
    );
    for a in &lines {
        for k in [
            "rule_id",
            "title",
            "level",
            "author",
            "timestamp",
            "audit_ids",
        ] {
            assert!(a.get(k).is_some(), "{k} missing in {a}");
        }
    }
    // Sorted by event time: exec (2018-10-26 13:38:34) before attach
    // (later the same day) whatever the file order.
    let times: Vec<&str> = lines
        .iter()
        .map(|a| a["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
}
