//! The 16 SigmaHQ Kubernetes audit rules, loaded unchanged, must give
//! exactly the hits listed in `EXPECTED_SIGMA_HITS.txt` (computed with
//! rsigma-eval and an independent evaluator) on the three event corpora.

// Test helpers outside #[test] fns may unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use ward_rules::{RuleSet, RuleSource};

/// corpus → rule file → expected lines.
fn expected() -> BTreeMap<String, BTreeMap<String, BTreeSet<usize>>> {
    let text = std::fs::read_to_string(common::fixtures().join("EXPECTED_SIGMA_HITS.txt")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<usize>>> = BTreeMap::new();
    let mut corpus = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("== ") {
            corpus = Some(c.trim().to_owned());
            continue;
        }
        let Some(c) = &corpus else { continue };
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 3 || !parts[1].ends_with(".yml") {
            continue;
        }
        let count: usize = parts[0].parse().unwrap();
        let list = line.split("lines=[").nth(1).unwrap().trim_end_matches(']');
        let lines: BTreeSet<usize> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(count, lines.len(), "malformed expectation line {line:?}");
        out.entry(c.clone())
            .or_default()
            .insert(parts[1].to_owned(), lines);
    }
    out
}

fn sigma_rules() -> RuleSet {
    let (set, errors) = RuleSet::load(&[common::fixtures().join("sigma-k8s")]);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(set.rules().len(), 16);
    set
}

#[test]
fn exact_hits_on_all_three_corpora() {
    let expected = expected();
    assert_eq!(expected.len(), 3, "three corpora expected");
    let set = sigma_rules();
    // rule id → file name
    let files: BTreeMap<String, String> = set
        .rules()
        .iter()
        .map(|r| {
            let RuleSource::File(p) = &r.source else {
                panic!("{:?}", r.source)
            };
            (
                r.id.clone(),
                p.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut total = 0;
    for (corpus, per_rule) in &expected {
        assert_eq!(per_rule.len(), 16, "{corpus}");
        let events = common::jsonl(corpus);
        let mut got: BTreeMap<String, BTreeSet<usize>> = per_rule
            .keys()
            .map(|k| (k.clone(), BTreeSet::new()))
            .collect();
        for (line, alert) in common::run(set.clone(), &events) {
            let file = &files[&*alert.rule_id];
            assert!(got.get_mut(file).unwrap().insert(line), "duplicate alert");
        }
        for (file, want) in per_rule {
            assert_eq!(&got[file], want, "{corpus} / {file}");
            total += want.len();
        }
    }
    // Guard against an expectation file that silently lost its content.
    assert_eq!(total, 13 + 97 + 12);
}

#[test]
fn builtin_copies_are_unchanged() {
    let dir = common::fixtures().join("sigma-k8s");
    let builtin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("builtin/sigmahq");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        let ours = std::fs::read(builtin.join(name))
            .unwrap_or_else(|_| panic!("{name:?} missing from builtin/sigmahq"));
        assert_eq!(ours, std::fs::read(&p).unwrap(), "{name:?} differs");
        n += 1;
    }
    assert_eq!(n, 18, "16 rules + 2 licence files");
    // And the built-in pack carries them with author and id intact.
    let set = common::builtin();
    let sigma: Vec<_> = set
        .rules()
        .iter()
        .filter(|r| matches!(&r.source, RuleSource::Builtin(n) if n.starts_with("sigmahq/")))
        .collect();
    assert_eq!(sigma.len(), 16);
    assert!(
        sigma
            .iter()
            .all(|r| r.author.as_deref().is_some_and(|a| a != "Ward"))
    );
    assert!(
        sigma
            .iter()
            .any(|r| r.id == "a1b0ca4e-7835-413e-8471-3ff2b8a66be6")
    );
}
