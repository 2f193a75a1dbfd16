//! How a Sigma field name finds its values in a Kubernetes audit event.
//!
//! Audit events mix two kinds of dots: nested objects (`objectRef.resource`
//! is `{"objectRef": {"resource": …}}`) and literal keys that contain dots
//! (`annotations` holds `authorization.k8s.io/decision`). So a field name is
//! tried literally first, and only then split at each dot in turn, from the
//! left: `annotations.authorization.k8s.io/decision` finds the `annotations`
//! object, then its literal key `authorization.k8s.io/decision`.
//!
//! Arrays are transparent: `requestObject.spec.containers.image` visits the
//! image of every container, and a leaf that is an array yields each
//! element, so "any element matches" falls out of the walk.
//!
//! The walk borrows from the already-parsed event and allocates nothing.
//!
//! Trying every split at every level is what makes literal keys work, and
//! it is most of the cost of matching: a map none of whose keys contains a
//! dot can only match a path's first segment, so for such maps (nearly
//! every map of an audit event) the walk looks up that one key.
//! [`DottedKeys`] remembers, for one event, which maps those are.

use ward_event::tree::{self, Members, Node};

/// Visits every value `path` resolves to in `root`, stopping as soon as
/// `visit` returns true. Returns whether `visit` returned true.
///
/// `found` is set when at least one value was reached (even `null`), which is
/// what `exists` and `null` need to tell "absent" from "present".
pub(crate) fn visit<'a>(
    root: &'a Members<'a>,
    path: &str,
    found: &mut bool,
    visit: &mut dyn FnMut(&'a Node<'a>) -> bool,
) -> bool {
    walk_map(root, path, found, visit, &mut DottedKeys::default())
}

/// For the maps of one event: whether any of their keys contains a dot.
/// Maps are told apart by address, so a `DottedKeys` must not outlive the
/// event it was filled from (another event's map could reuse an address);
/// [`FieldCache`], which holds one, borrows the event for its whole life.
struct DottedKeys {
    seen: [(*const (), bool); DottedKeys::CAPACITY],
    len: usize,
}

impl Default for DottedKeys {
    fn default() -> Self {
        DottedKeys {
            seen: [(std::ptr::null(), false); DottedKeys::CAPACITY],
            len: 0,
        }
    }
}

impl DottedKeys {
    /// Maps this small are cheaper to scan than to look up.
    const SCAN_BELOW: usize = 4;
    /// Beyond this many maps, the rest are scanned each time (an audit
    /// event's rules touch a dozen or so).
    const CAPACITY: usize = 24;

    fn has_dotted_key(&mut self, map: &Members<'_>) -> bool {
        let scan = || map.iter().any(|(k, _)| k.as_bytes().contains(&b'.'));
        if map.len() < Self::SCAN_BELOW {
            return scan();
        }
        // Compared, never dereferenced: only the address says which map.
        let address = (map as *const Members<'_>).cast::<()>();
        if let Some((_, dotted)) = self.seen[..self.len].iter().find(|(a, _)| *a == address) {
            return *dotted;
        }
        let dotted = scan();
        if self.len < Self::CAPACITY {
            self.seen[self.len] = (address, dotted);
            self.len += 1;
        }
        dotted
    }
}

fn walk_map<'a>(
    map: &'a Members<'a>,
    path: &str,
    found: &mut bool,
    visit: &mut dyn FnMut(&'a Node<'a>) -> bool,
    dotted: &mut DottedKeys,
) -> bool {
    let Some(first_dot) = path.find('.') else {
        return tree::get(map, path).is_some_and(|v| leaf(v, found, visit));
    };
    if !dotted.has_dotted_key(map) {
        return tree::get(map, &path[..first_dot])
            .is_some_and(|v| walk(v, &path[first_dot + 1..], found, visit, dotted));
    }
    // A literal key wins over any nested reading of the same name.
    if let Some(v) = tree::get(map, path) {
        return leaf(v, found, visit);
    }
    for (i, _) in path.match_indices('.') {
        let hit = tree::get(map, &path[..i])
            .is_some_and(|v| walk(v, &path[i + 1..], found, visit, dotted));
        if hit {
            return true;
        }
    }
    false
}

fn walk<'a>(
    v: &'a Node<'a>,
    path: &str,
    found: &mut bool,
    visit: &mut dyn FnMut(&'a Node<'a>) -> bool,
    dotted: &mut DottedKeys,
) -> bool {
    match v {
        Node::Object(m) => walk_map(m, path, found, visit, dotted),
        Node::Array(items) => items.iter().any(|i| walk(i, path, found, visit, dotted)),
        _ => false,
    }
}

fn leaf<'a>(
    v: &'a Node<'a>,
    found: &mut bool,
    visit: &mut dyn FnMut(&'a Node<'a>) -> bool,
) -> bool {
    match v {
        Node::Array(items) => items.iter().any(|i| leaf(i, found, visit)),
        _ => {
            *found = true;
            visit(v)
        }
    }
}

/// Per-event memo of resolved fields. Rules share field names (`verb`,
/// `objectRef.resource`, `user.username` ...); each is resolved at most
/// once per event and its values replayed to every item that asks.
///
/// Fields get ids at load time ([`crate::RuleSet`] interns every item's
/// field); `slots` is kept by the engine between events (plain data),
/// `values` borrows from the event and lives for one event.
pub(crate) struct FieldCache<'a, 's> {
    slots: &'s mut [Slot],
    values: Vec<&'a Node<'a>>,
    dotted: DottedKeys,
}

/// Where a resolved field's values are in `values`; `state` 0 means not
/// resolved yet, 1 absent, 2 present.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    start: u32,
    len: u32,
    state: u8,
}

impl<'a, 's> FieldCache<'a, 's> {
    /// `slots` must be all-default (the engine resets it per event).
    pub(crate) fn new(slots: &'s mut [Slot]) -> Self {
        FieldCache {
            slots,
            values: Vec::with_capacity(32),
            dotted: DottedKeys::default(),
        }
    }

    /// [`visit`], through the memo when `id` is an interned field.
    pub(crate) fn visit(
        &mut self,
        root: &'a Members<'a>,
        id: u32,
        path: &str,
        found: &mut bool,
        f: &mut dyn FnMut(&'a Node<'a>) -> bool,
    ) -> bool {
        let Some(slot) = self.slots.get(id as usize).copied() else {
            return walk_map(root, path, found, f, &mut self.dotted);
        };
        let slot = if slot.state == 0 {
            let start = self.values.len();
            let mut present = false;
            let values = &mut self.values;
            walk_map(
                root,
                path,
                &mut present,
                &mut |v| {
                    values.push(v);
                    false
                },
                &mut self.dotted,
            );
            let resolved = Slot {
                start: start as u32,
                len: (self.values.len() - start) as u32,
                state: if present { 2 } else { 1 },
            };
            self.slots[id as usize] = resolved;
            resolved
        } else {
            slot
        };
        if slot.state == 2 {
            *found = true;
        }
        let (a, n) = (slot.start as usize, slot.len as usize);
        self.values[a..a + n].iter().any(|v| f(v))
    }
}

/// The first scalar `path` resolves to, as text (for group-by keys and
/// distinct-value counts, where one value per event is what we want).
pub(crate) fn first_text(root: &Members<'_>, path: &str) -> Option<String> {
    let mut out = None;
    let mut found = false;
    visit(root, path, &mut found, &mut |v| match v {
        Node::String(s) => {
            out = Some(s.to_string());
            true
        }
        Node::Number(n) => {
            out = Some(n.to_string());
            true
        }
        Node::Bool(b) => {
            out = Some(b.to_string());
            true
        }
        _ => false,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use ward_event::tree::Object;

    fn all(root: &Value, path: &str) -> (bool, Vec<Value>) {
        let mut found = false;
        let mut vals = Vec::new();
        let tree = Object::of_map(root.as_object().unwrap());
        visit(&tree.0, path, &mut found, &mut |v| {
            vals.push(v.to_value());
            false
        });
        (found, vals)
    }

    #[test]
    fn literal_dotted_key_before_nested_path() {
        let ev = json!({
            "annotations": {"authorization.k8s.io/decision": "allow"},
            "a.b": 1,
            "a": {"b": 2},
        });
        assert_eq!(
            all(&ev, "annotations.authorization.k8s.io/decision").1,
            vec![json!("allow")]
        );
        // Literal `a.b` shadows the nested `a` → `b`.
        assert_eq!(all(&ev, "a.b").1, vec![json!(1)]);
    }

    /// Maps of four keys or more go through the per-event memo of which
    /// maps have dotted keys: the literal key must still win there, and a
    /// map without any must still resolve nested paths.
    #[test]
    fn literal_keys_win_in_large_maps_too() {
        let ev = json!({
            "kind": "Event", "verb": "get", "stage": "ResponseComplete",
            "annotations": {
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC",
                "mutation.webhook.admission.k8s.io/round_0_index_0": "{}",
                "authorization": {"k8s.io/decision": "nested"},
            },
            "objectRef": {"resource": "pods", "namespace": "default", "name": "web", "apiVersion": "v1"},
        });
        let tree = Object::of_map(ev.as_object().unwrap());
        let root = &tree.0;
        let mut slots = vec![Slot::default(); 3];
        let mut cache = FieldCache::new(&mut slots);
        // Twice each: the second time the maps' answers come from the memo.
        for _ in 0..2 {
            for (id, path, want) in [
                (
                    0,
                    "annotations.authorization.k8s.io/decision",
                    json!("allow"),
                ),
                (1, "objectRef.namespace", json!("default")),
                (2, "annotations.authorization.k8s.io/reason", json!("RBAC")),
            ] {
                let mut found = false;
                let mut got = Vec::new();
                cache.visit(root, id, path, &mut found, &mut |v| {
                    got.push(v.to_value());
                    false
                });
                assert!(found, "{path}");
                assert_eq!(got, vec![want.clone()], "{path}");
                // Uninterned lookups share the map memo.
                found = false;
                got.clear();
                cache.visit(root, u32::MAX, path, &mut found, &mut |v| {
                    got.push(v.to_value());
                    false
                });
                assert_eq!(got, vec![want], "{path} uninterned");
            }
        }
        assert_eq!(all(&ev, "objectRef.resource").1, vec![json!("pods")]);
        assert_eq!(all(&ev, "objectRef.resource.x"), (false, vec![]));
    }

    #[test]
    fn arrays_are_transparent() {
        let ev = json!({"spec": {"containers": [
            {"image": "nginx", "ports": [80, 443]},
            {"image": "busybox"}
        ]}});
        assert_eq!(
            all(&ev, "spec.containers.image").1,
            vec![json!("nginx"), json!("busybox")]
        );
        assert_eq!(
            all(&ev, "spec.containers.ports").1,
            vec![json!(80), json!(443)]
        );
    }

    #[test]
    fn missing_and_null_are_different() {
        let ev = json!({"a": null, "b": {"c": 1}});
        assert_eq!(all(&ev, "a"), (true, vec![Value::Null]));
        assert_eq!(all(&ev, "x"), (false, vec![]));
        assert_eq!(all(&ev, "b.d"), (false, vec![]));
        assert_eq!(all(&ev, "b.c.d"), (false, vec![]));
    }

    #[test]
    fn first_text_renders_numbers() {
        let ev = json!({"responseStatus": {"code": 403}, "user": {"username": "bob"}});
        let tree = Object::of_map(ev.as_object().unwrap());
        let m = &tree.0;
        assert_eq!(first_text(m, "responseStatus.code").as_deref(), Some("403"));
        assert_eq!(first_text(m, "user.username").as_deref(), Some("bob"));
        assert_eq!(first_text(m, "user.uid"), None);
    }
}
