//! A rule's `detection` section compiled into selections and a condition,
//! and its evaluation against one event.
//!
//! Shapes accepted for a selection (as in the Sigma spec):
//! - a map `field|modifiers: value(s)`: every item must match (AND), a list
//!   of values means any of them (OR) unless `|all`;
//! - a list of maps: any map matches (OR);
//! - a scalar or a list of scalars: keywords, searched in every text value
//!   of the event (substring match, case-insensitive).
//!
//! A value of `null` means "field absent or null"; `neq` means "present and
//! equal to none of the values".

use serde_json::{Map, Value};

use crate::Error;
use crate::condition::{self, Cond};
use crate::field::FieldCache;
use crate::pattern::{Matcher, Modifiers};
use ward_event::tree::{Members, Node};

/// One `field|mods: values` item (or a keyword list when `field` is None).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) field: Option<String>,
    /// Interned id of `field` for the per-event [`FieldCache`]
    /// (`u32::MAX` until the rule set assigns one).
    pub(crate) field_id: u32,
    pub(crate) matchers: Vec<Matcher>,
    all: bool,
    neq: bool,
}

/// A compiled `detection` section.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    /// Selections by index; each is an OR of AND-groups of items.
    pub(crate) selections: Vec<Vec<Vec<Item>>>,
    pub(crate) condition: Cond,
}

impl Detection {
    /// Compiles a `detection` mapping (or a filter's, which has the same
    /// shape plus `rules`, skipped via `ignore`).
    pub(crate) fn compile(det: &Value, ignore: &[&str]) -> Result<Detection, Error> {
        let map = det
            .as_object()
            .ok_or_else(|| Error::Rule("detection must be a mapping".into()))?;
        let mut names = Vec::new();
        let mut selections = Vec::new();
        let mut condition_text = None;
        for (name, body) in map {
            if name == "condition" {
                condition_text = Some(body);
                continue;
            }
            if name == "timeframe" {
                return Err(Error::Rule(
                    "`timeframe` is Sigma v1; write a correlation rule".into(),
                ));
            }
            if ignore.contains(&name.as_str()) {
                continue;
            }
            selections.push(compile_selection(body)?);
            names.push(name.clone());
        }
        let text = match condition_text {
            Some(Value::String(s)) => s.clone(),
            // A list of conditions is the deprecated OR of them.
            Some(Value::Array(cs)) if !cs.is_empty() => {
                let parts: Option<Vec<&str>> = cs.iter().map(Value::as_str).collect();
                let parts =
                    parts.ok_or_else(|| Error::Rule("condition list must hold strings".into()))?;
                parts
                    .iter()
                    .map(|p| format!("({p})"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            }
            Some(_) => return Err(Error::Rule("condition must be a string".into())),
            None => return Err(Error::Rule("detection has no condition".into())),
        };
        let condition = condition::parse(&text, &names)?;
        Ok(Detection {
            selections,
            condition,
        })
    }

    /// Evaluates without a shared field memo (tests).
    #[cfg(test)]
    pub(crate) fn matches(&self, ev: &Map<String, Value>) -> bool {
        let ev = ward_event::tree::Object::of_map(ev);
        let ev = &ev.0;
        self.matches_with(ev, &mut FieldCache::new(&mut []))
    }

    /// Evaluates, resolving fields through the event's memo.
    pub(crate) fn matches_with<'a>(
        &self,
        ev: &'a Members<'a>,
        cache: &mut FieldCache<'a, '_>,
    ) -> bool {
        self.condition.eval(&mut |i| {
            self.selections[i]
                .iter()
                .any(|g| g.iter().all(|it| it.matches(ev, cache)))
        })
    }

    /// Every item, for the rule set to intern field names.
    pub(crate) fn items_mut(&mut self) -> impl Iterator<Item = &mut Item> {
        self.selections.iter_mut().flatten().flatten()
    }
}

fn compile_selection(body: &Value) -> Result<Vec<Vec<Item>>, Error> {
    match body {
        Value::Object(m) => Ok(vec![compile_map(m)?]),
        Value::Array(items) => {
            let mut groups = Vec::new();
            let mut keywords = Vec::new();
            for it in items {
                match it {
                    Value::Object(m) => groups.push(compile_map(m)?),
                    Value::Array(_) => {
                        return Err(Error::Rule("nested lists in a selection".into()));
                    }
                    scalar => keywords.push(scalar.clone()),
                }
            }
            if !keywords.is_empty() {
                groups.push(vec![keyword_item(&keywords, &[])?]);
            }
            Ok(groups)
        }
        scalar => Ok(vec![vec![keyword_item(std::slice::from_ref(scalar), &[])?]]),
    }
}

fn keyword_item(values: &[Value], mods: &[&str]) -> Result<Item, Error> {
    let mut m = Modifiers::parse("keywords", mods.iter().copied())?;
    // Keywords are substring searches unless the rule says otherwise.
    if mods
        .iter()
        .all(|x| !matches!(*x, "startswith" | "endswith" | "re" | "contains"))
    {
        m = Modifiers::parse("keywords", mods.iter().copied().chain(["contains"]))?;
    }
    let mut matchers = Vec::new();
    for v in values {
        matchers.extend(m.compile("keywords", v)?);
    }
    Ok(Item {
        field: None,
        field_id: u32::MAX,
        matchers,
        all: m.all,
        neq: false,
    })
}

fn compile_map(m: &Map<String, Value>) -> Result<Vec<Item>, Error> {
    let mut items = Vec::with_capacity(m.len());
    for (key, value) in m {
        let mut parts = key.split('|');
        let field = parts.next().unwrap_or_default().to_owned();
        let mods: Vec<&str> = parts.collect();
        let values: &[Value] = match value {
            Value::Array(vs) => vs,
            Value::Object(_) => {
                return Err(Error::Value {
                    field,
                    reason: "a value cannot be a mapping".into(),
                });
            }
            v => std::slice::from_ref(v),
        };
        if field.is_empty() {
            items.push(keyword_item(values, &mods)?);
            continue;
        }
        let parsed = Modifiers::parse(&field, mods.iter().copied())?;
        let mut matchers = Vec::new();
        for v in values {
            matchers.extend(parsed.compile(&field, v)?);
        }
        // An empty list matches nothing; keep it so the rule is visibly inert
        // rather than silently always-true.
        items.push(Item {
            field: Some(field),
            field_id: u32::MAX,
            matchers,
            all: parsed.all,
            neq: parsed.neq,
        });
    }
    Ok(items)
}

impl Item {
    /// `neq` or a multi-value `all`: not a plain "one of these values".
    pub(crate) fn is_negated_or_all(&self) -> bool {
        self.neq || (self.all && self.matchers.len() > 1)
    }

    pub(crate) fn matches<'a>(&self, ev: &'a Members<'a>, cache: &mut FieldCache<'a, '_>) -> bool {
        let Some(field) = &self.field else {
            return self.keywords(ev);
        };
        let id = self.field_id;
        if self.neq {
            let mut found = false;
            let mut present = false;
            let equal = cache.visit(ev, id, field, &mut found, &mut |v| {
                present |= !v.is_null();
                self.matchers.iter().any(|m| m.leaf(v, ev))
            });
            return present && !equal;
        }
        if self.all && self.matchers.len() > 1 {
            return self.matchers.iter().all(|m| one(ev, id, field, m, cache));
        }
        match self.matchers.as_slice() {
            [] => false,
            [m] => one(ev, id, field, m, cache),
            ms => {
                // Field-level matchers (null, exists) cannot share one walk.
                if ms
                    .iter()
                    .any(|m| matches!(m, Matcher::Null | Matcher::Exists(_)))
                {
                    return ms.iter().any(|m| one(ev, id, field, m, cache));
                }
                let mut found = false;
                cache.visit(ev, id, field, &mut found, &mut |v| {
                    ms.iter().any(|m| m.leaf(v, ev))
                })
            }
        }
    }

    fn keywords(&self, ev: &Members<'_>) -> bool {
        let hit = |m: &Matcher| any_text(ev, &mut |v| m.leaf(v, ev), &mut |k| m.leaf_text(k));
        if self.all {
            self.matchers.iter().all(hit)
        } else {
            self.matchers.iter().any(hit)
        }
    }
}

/// One matcher against one field.
fn one<'a>(
    ev: &'a Members<'a>,
    id: u32,
    field: &str,
    m: &Matcher,
    cache: &mut FieldCache<'a, '_>,
) -> bool {
    let mut found = false;
    match m {
        Matcher::Exists(want) => {
            let present = cache.visit(ev, id, field, &mut found, &mut |v| !v.is_null());
            present == *want
        }
        Matcher::Null => {
            let null = cache.visit(ev, id, field, &mut found, &mut |v| v.is_null());
            null || !found
        }
        m => cache.visit(ev, id, field, &mut found, &mut |v| m.leaf(v, ev)),
    }
}

/// Keywords search the event as the raw log line would be searched: every
/// scalar value and every object key (a ConfigMap's data keys are as
/// telling as its values).
fn any_text<'a>(
    m: &'a Members<'a>,
    value: &mut dyn FnMut(&'a Node<'a>) -> bool,
    key: &mut dyn FnMut(&str) -> bool,
) -> bool {
    m.iter().any(|(k, v)| key(k) || any_in_value(v, value, key))
}

fn any_in_value<'a>(
    v: &'a Node<'a>,
    value: &mut dyn FnMut(&'a Node<'a>) -> bool,
    key: &mut dyn FnMut(&str) -> bool,
) -> bool {
    match v {
        Node::Object(m) => any_text(m, value, key),
        Node::Array(a) => a.iter().any(|i| any_in_value(i, value, key)),
        v => value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn det(yaml: &str) -> Detection {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        Detection::compile(&v, &[]).unwrap()
    }

    fn ev(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn and_within_map_or_within_list() {
        let d = det("sel:\n  verb: [create, update]\n  objectRef.resource: pods\ncondition: sel");
        assert!(d.matches(&ev(
            json!({"verb": "update", "objectRef": {"resource": "pods"}})
        )));
        assert!(!d.matches(&ev(
            json!({"verb": "get", "objectRef": {"resource": "pods"}})
        )));
        assert!(!d.matches(&ev(
            json!({"verb": "create", "objectRef": {"resource": "nodes"}})
        )));
        let d = det("sel:\n  - verb: delete\n  - objectRef.subresource: exec\ncondition: sel");
        assert!(d.matches(&ev(json!({"verb": "delete"}))));
        assert!(d.matches(&ev(json!({"objectRef": {"subresource": "exec"}}))));
        assert!(!d.matches(&ev(json!({"verb": "get"}))));
    }

    #[test]
    fn all_modifier_requires_every_value() {
        let d = det("sel:\n  requestURI|contains|all: [exec, command=sh]\ncondition: sel");
        assert!(d.matches(&ev(json!({"requestURI": "/pods/x/exec?command=sh"}))));
        assert!(!d.matches(&ev(json!({"requestURI": "/pods/x/exec?command=ls"}))));
        // Across array elements: each value may match a different element.
        let d = det("sel:\n  rules.verbs|all: [get, delete]\ncondition: sel");
        assert!(d.matches(&ev(
            json!({"rules": [{"verbs": ["get"]}, {"verbs": ["delete"]}]})
        )));
        assert!(!d.matches(&ev(json!({"rules": [{"verbs": ["get"]}]}))));
    }

    #[test]
    fn null_exists_and_neq() {
        let d = det("sel:\n  objectRef.subresource: null\ncondition: sel");
        assert!(d.matches(&ev(json!({"objectRef": {"resource": "pods"}}))));
        assert!(d.matches(&ev(json!({"objectRef": {"subresource": null}}))));
        assert!(!d.matches(&ev(json!({"objectRef": {"subresource": "exec"}}))));
        let d = det("sel:\n  objectRef.subresource|exists: true\ncondition: sel");
        assert!(d.matches(&ev(json!({"objectRef": {"subresource": "exec"}}))));
        assert!(!d.matches(&ev(json!({"objectRef": {"subresource": null}}))));
        assert!(!d.matches(&ev(json!({}))));
        let d = det("sel:\n  objectRef.subresource|exists: false\ncondition: sel");
        assert!(d.matches(&ev(json!({}))));
        assert!(!d.matches(&ev(json!({"objectRef": {"subresource": "x"}}))));
        let d = det("sel:\n  objectRef.namespace|neq: [kube-system, kube-public]\ncondition: sel");
        assert!(d.matches(&ev(json!({"objectRef": {"namespace": "default"}}))));
        assert!(!d.matches(&ev(json!({"objectRef": {"namespace": "KUBE-SYSTEM"}}))));
        assert!(!d.matches(&ev(json!({"objectRef": {"namespace": "kube-public"}}))));
        assert!(!d.matches(&ev(json!({"objectRef": {}}))));
        // The empty string is a value, not a missing field.
        let d = det("sel:\n  reason: ''\ncondition: sel");
        assert!(d.matches(&ev(json!({"reason": ""}))));
        assert!(!d.matches(&ev(json!({}))));
    }

    #[test]
    fn fieldref_compares_two_fields() {
        let d = det("sel:\n  user.username|fieldref: impersonatedUser.username\ncondition: sel");
        assert!(d.matches(&ev(
            json!({"user": {"username": "Bob"}, "impersonatedUser": {"username": "bob"}})
        )));
        assert!(!d.matches(&ev(
            json!({"user": {"username": "bob"}, "impersonatedUser": {"username": "alice"}})
        )));
        assert!(!d.matches(&ev(json!({"user": {"username": "bob"}}))));
        let d = det("sel:\n  requestURI|fieldref|contains: objectRef.name\ncondition: sel");
        assert!(d.matches(&ev(
            json!({"requestURI": "/api/v1/pods/web-1/exec", "objectRef": {"name": "web-1"}})
        )));
        assert!(!d.matches(&ev(
            json!({"requestURI": "/api/v1/pods/web-2/exec", "objectRef": {"name": "web-1"}})
        )));
    }

    #[test]
    fn keywords_search_every_text_value() {
        let d = det("keywords:\n  - trufflehog\n  - access_matrix\ncondition: keywords");
        assert!(d.matches(&ev(json!({"userAgent": "TruffleHog/3.0"}))));
        assert!(d.matches(&ev(json!({"a": {"b": ["x", "my access_matrix"]}}))));
        assert!(!d.matches(&ev(json!({"userAgent": "kubectl"}))));
        // Object keys are searched too.
        assert!(d.matches(&ev(json!({"data": {"TruffleHog.conf": "x"}}))));
        let d = det("keywords: 403\ncondition: keywords");
        assert!(d.matches(&ev(json!({"responseStatus": {"code": 403}}))));
        let d = det("sel:\n  '|all': [alpha, beta]\ncondition: sel");
        assert!(d.matches(&ev(json!({"a": "alpha", "b": "beta"}))));
        assert!(!d.matches(&ev(json!({"a": "alpha"}))));
    }

    #[test]
    fn condition_list_is_or_and_v1_constructs_fail() {
        let d = det("a:\n  x: 1\nb:\n  y: 2\ncondition:\n  - a\n  - b");
        assert!(d.matches(&ev(json!({"y": 2}))));
        let v: Value = serde_norway::from_str("a:\n  x: 1\ntimeframe: 5m\ncondition: a").unwrap();
        assert!(Detection::compile(&v, &[]).is_err());
        let v: Value = serde_norway::from_str("a:\n  x: 1").unwrap();
        assert!(Detection::compile(&v, &[]).is_err());
        let v: Value = serde_norway::from_str("a:\n  x:\n    y: 1\ncondition: a").unwrap();
        assert!(Detection::compile(&v, &[]).is_err());
    }
}
