//! The prefilter of a rule set: which detection rules an event could
//! match, found from a few of its fields without evaluating any rule.

use std::collections::HashMap;

use crate::detection::Detection;
use crate::ruleset::DetRule;

/// Rules indexed by the value of the field most of them require (in
/// Kubernetes audit rules `verb`, then `objectRef.resource` inside each verb
/// bucket), so that an event is only checked against rules that could match
/// it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefilter {
    /// None for a leaf: `always` then holds every rule of the node.
    field: Option<String>,
    /// Id of `field` in the per-event field memo (items share it).
    field_id: u32,
    /// Lowercase value → sub-index of the rules that require it.
    buckets: Vec<(String, Prefilter)>,
    /// Rules with no requirement on `field`.
    always: Vec<u32>,
}

impl Prefilter {
    /// The prefilter of `dets`; rule numbers are their positions.
    pub(crate) fn build(dets: &[DetRule]) -> Prefilter {
        build_node(dets, (0..dets.len() as u32).collect(), &mut Vec::new())
    }

    /// Gives the prefilter's fields the ids items use for the same names.
    pub(crate) fn intern(&mut self, ids: &mut HashMap<String, u32>) {
        if let Some(f) = &self.field {
            let next = ids.len() as u32;
            self.field_id = *ids.entry(f.clone()).or_insert(next);
        }
        for (_, sub) in &mut self.buckets {
            sub.intern(ids);
        }
    }

    /// Appends the rules worth checking for `ev` to `out` (unsorted).
    pub(crate) fn collect<'a>(
        &self,
        ev: &'a ward_event::tree::Members<'a>,
        out: &mut Vec<u32>,
        cache: &mut crate::field::FieldCache<'a, '_>,
    ) {
        out.extend_from_slice(&self.always);
        let Some(f) = self.field.as_deref() else {
            return;
        };
        let mut n = 0;
        let mut text: Option<&'a str> = None;
        let mut found = false;
        cache.visit(ev, self.field_id, f, &mut found, &mut |v| {
            n += 1;
            text = v.as_str();
            n > 1
        });
        match (n, text) {
            // Absent: rules that need a value of the field cannot match.
            (0, _) => {}
            (1, Some(t)) if t.is_ascii() => {
                if let Some((_, sub)) = self.buckets.iter().find(|(v, _)| v.eq_ignore_ascii_case(t))
                {
                    sub.collect(ev, out, cache);
                }
            }
            // Several values, a number, non-ASCII text: check everything.
            _ => self.collect_all(out),
        }
    }

    fn collect_all(&self, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.always);
        for (_, sub) in &self.buckets {
            sub.collect_all(out);
        }
    }
}

/// What values of `field` a detection requires, if it requires one of a
/// known set of exact values (conservative: None when unsure).
fn required(det: &Detection, field: &str) -> Option<Vec<String>> {
    use crate::condition::Cond;
    fn sel(det: &Detection, i: usize, field: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for group in &det.selections[i] {
            let item = group.iter().find_map(|it| {
                if it.field.as_deref() != Some(field) || it.is_negated_or_all() {
                    return None;
                }
                let needles: Option<Vec<String>> = it
                    .matchers
                    .iter()
                    .map(|m| m.exact_needle().map(str::to_owned))
                    .collect();
                needles.filter(|n| !n.is_empty())
            })?;
            out.extend(item);
        }
        (!out.is_empty()).then_some(out)
    }
    fn walk(det: &Detection, c: &Cond, field: &str) -> Option<Vec<String>> {
        match c {
            Cond::Sel(i) => sel(det, *i, field),
            Cond::Not(_) => None,
            Cond::And(cs) => cs.iter().find_map(|c| walk(det, c, field)),
            Cond::Or(cs) => {
                let mut out = Vec::new();
                for c in cs {
                    out.extend(walk(det, c, field)?);
                }
                Some(out)
            }
            Cond::AtLeast(n, is) if *n == is.len() => is.iter().find_map(|i| sel(det, *i, field)),
            Cond::AtLeast(_, is) => {
                let mut out = Vec::new();
                for i in is {
                    out.extend(sel(det, *i, field)?);
                }
                Some(out)
            }
        }
    }
    walk(det, &det.condition, field)
}

/// Small nodes are not worth another level of lookups.
const MIN_INDEXED: usize = 6;
const MAX_DEPTH: usize = 3;

fn build_node(dets: &[DetRule], rules: Vec<u32>, used: &mut Vec<String>) -> Prefilter {
    let leaf = |rules: Vec<u32>| Prefilter {
        field: None,
        field_id: u32::MAX,
        buckets: Vec::new(),
        always: rules,
    };
    if rules.len() < MIN_INDEXED || used.len() >= MAX_DEPTH {
        return leaf(rules);
    }
    // Pick the field the most of these rules require a value of.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for &k in &rules {
        let d = &dets[k as usize];
        let mut seen: Vec<&str> = Vec::new();
        for g in d.detection.selections.iter().flatten() {
            for it in g {
                let Some(f) = it.field.as_deref() else {
                    continue;
                };
                if !seen.contains(&f) && !used.iter().any(|u| u == f) {
                    seen.push(f);
                }
            }
        }
        for f in seen {
            if required(&d.detection, f).is_some() {
                *counts.entry(f).or_default() += 1;
            }
        }
    }
    let best = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)));
    let field = match best {
        Some((f, n)) if n >= 2 => f.to_owned(),
        _ => return leaf(rules),
    };
    let mut buckets: Vec<(String, Vec<u32>)> = Vec::new();
    let mut always = Vec::new();
    for k in rules {
        match required(&dets[k as usize].detection, &field) {
            Some(mut values) => {
                values.sort();
                values.dedup();
                for v in values {
                    match buckets.iter_mut().find(|(b, _)| *b == v) {
                        Some((_, rs)) => rs.push(k),
                        None => buckets.push((v, vec![k])),
                    }
                }
            }
            None => always.push(k),
        }
    }
    used.push(field.clone());
    let buckets = buckets
        .into_iter()
        .map(|(v, rs)| (v, build_node(dets, rs, used)))
        .collect();
    used.pop();
    Prefilter {
        field_id: u32::MAX,
        field: Some(field),
        buckets,
        always,
    }
}

#[cfg(test)]
mod tests {
    use crate::RuleSet;

    #[test]
    fn index_picks_verb_and_is_conservative() {
        let (set, errs) = RuleSet::from_sources(&[(
            "t",
            r#"
title: a
detection:
  sel:
    verb: [create, Update]
    objectRef.resource: pods
  condition: sel
---
title: b
detection:
  sel:
    verb: delete
  condition: sel
---
title: c
detection:
  sel:
    verb|startswith: del
  condition: sel
---
title: d
detection:
  sel:
    verb: get
  other:
    user.username: x
  condition: sel or other
---
title: e
detection:
  sel:
    verb: get
  condition: not sel
---
title: f
detection:
  sel:
    verb: patch
  condition: sel
"#,
        )]);
        assert!(errs.is_empty(), "{errs:?}");
        let idx = &set.prefilter;
        assert_eq!(idx.field.as_deref(), Some("verb"));
        let bucket = |v: &str| {
            let mut out = Vec::new();
            if let Some((_, sub)) = idx.buckets.iter().find(|(b, _)| b == v) {
                sub.collect_all(&mut out);
            }
            out
        };
        assert_eq!(bucket("create"), vec![0]);
        assert_eq!(bucket("update"), vec![0]);
        assert_eq!(bucket("delete"), vec![1]);
        // c (startswith), d (or with a non-verb branch), e (not) are always checked.
        assert_eq!(idx.always, vec![2, 3, 4]);
        // An event only gets the rules its verb can match.
        let ev = serde_json::json!({"verb": "DELETE"});
        let ev = ward_event::tree::Object::of_map(ev.as_object().unwrap());
        let mut out = Vec::new();
        idx.collect(&ev.0, &mut out, &mut crate::field::FieldCache::new(&mut []));
        assert_eq!(out, vec![2, 3, 4, 1]);
    }
}
