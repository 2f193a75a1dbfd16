//! An event's JSON as a tree borrowed from the batch it was decoded from.
//!
//! Ingest used to parse every event into a `serde_json::Value`: an
//! allocation for each key and string, a B-tree per object, all of it
//! dropped again once the document was built. That was a fifth of the
//! indexer's CPU (BENCHMARKS.md, "Events parsed into borrowed trees"). A
//! [`Node`] borrows its strings from the batch's bytes (only strings with
//! escapes are copied) and keeps an object's members in a vector. The
//! indexer builds documents from trees, and detection rules evaluate them.
//!
//! The members are kept sorted and de-duplicated the way `serde_json::Map`
//! (a B-tree, last duplicate wins) keeps them, so that [`Node::write_json`]
//! writes exactly the bytes `serde_json::to_vec` writes for the same
//! `Value`. Replay keys hash those bytes, and the keys of records already on
//! disk must not change (`ward_indexer::document`'s tests check the two
//! agree, and the `event_tree` fuzz target compares them on arbitrary input).
//!
//! One difference is by design: with serde_json's `raw_value` feature (on
//! in Ward's build), `Value` takes the key `$serde_json::private::RawValue`
//! as a marker and replaces its object by the parsed string value (or fails
//! the whole batch). A tree keeps it as the key it is, so a custom
//! resource with that field is stored as sent.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// An object's members: sorted by key, each key once.
pub type Members<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A JSON value whose strings borrow from the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    /// serde_json's own number, so that it prints as a `Value` would.
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Members<'a>),
}

/// A JSON object, as the event of a record must be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object<'a>(pub Members<'a>);

impl<'a> Node<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Node::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_members(&self) -> Option<&Members<'a>> {
        match self {
            Node::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The same value, borrowing from `value`.
    pub fn of_value(value: &'a Value) -> Node<'a> {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::String(Cow::Borrowed(s)),
            Value::Array(items) => Node::Array(items.iter().map(Node::of_value).collect()),
            Value::Object(map) => Node::Object(Object::of_map(map).0),
        }
    }

    /// The same value as a `serde_json::Value` (a copy).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.as_ref().to_owned()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => Value::Object(to_map(members)),
        }
    }

    /// Appends the value's JSON, as `serde_json::to_writer` writes the
    /// equal `Value`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and numbers parsed from JSON are finite.
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
            Node::String(s) => write_str(out, s),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Node::Object(members) => write_members(out, members),
        }
    }

    /// Whether the value holds anything that `_flat` indexes: what
    /// `_exists_` means (as in Elasticsearch, null, `[]` and `{}` do not
    /// exist).
    pub fn has_leaf(&self) -> bool {
        match self {
            Node::Null => false,
            Node::Array(items) => items.iter().any(Node::has_leaf),
            Node::Object(members) => members.iter().any(|(_, v)| v.has_leaf()),
            _ => true,
        }
    }

    /// Whether the value is an object (or an array of objects) with a leaf.
    pub fn holds_object_leaf(&self) -> bool {
        match self {
            Node::Object(_) => self.has_leaf(),
            Node::Array(items) => items
                .iter()
                .any(|v| matches!(v, Node::Object(_)) && v.has_leaf()),
            _ => false,
        }
    }
}

impl<'a> Object<'a> {
    /// The same object, borrowing from `map` (already in key order).
    pub fn of_map(map: &'a Map<String, Value>) -> Object<'a> {
        Object(
            map.iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::of_value(v)))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        get(&self.0, key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The object with `added` members (in key order), which replace
    /// members of the same keys. One pass, where inserting them one by one
    /// would shift the members each time.
    pub fn merged(self, added: impl IntoIterator<Item = (&'a str, Node<'a>)>) -> Object<'a> {
        let mut added = added.into_iter().peekable();
        let mut out = Vec::with_capacity(self.0.len() + 5);
        let mut own = self.0.into_iter().peekable();
        loop {
            let take_own = match (own.peek(), added.peek()) {
                (Some((k, _)), Some((a, _))) => match key_order(k, a) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => {
                        own.next();
                        false
                    }
                    std::cmp::Ordering::Greater => false,
                },
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_own {
                out.extend(own.next());
            } else if let Some((key, value)) = added.next() {
                out.push((Cow::Borrowed(key), value));
            }
        }
        Object(out)
    }

    /// Appends the object's JSON, as `serde_json::to_writer` writes the
    /// equal map.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_members(out, &self.0)
    }

    pub fn to_map(&self) -> Map<String, Value> {
        to_map(&self.0)
    }
}

/// The member `key` of sorted `members`.
pub fn get<'m, 'a>(members: &'m Members<'a>, key: &str) -> Option<&'m Node<'a>> {
    members
        .binary_search_by(|(k, _)| key_order(k, key))
        .ok()
        .map(|i| &members[i].1)
}

/// `a.cmp(b)`, deciding on the first bytes when they differ: most keys of
/// an object do, and a call to `memcmp` per comparison was a tenth of the
/// ingest threads' time in sorting and lookups.
#[inline]
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match a.as_bytes().first().cmp(&b.as_bytes().first()) {
        std::cmp::Ordering::Equal => a.cmp(b),
        other => other,
    }
}

fn to_map(members: &Members<'_>) -> Map<String, Value> {
    members
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.to_value()))
        .collect()
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes `"`, `\` and control characters, and nothing else;
    // most strings have none, and are copied whole. The check has no early
    // exit so that it compiles to a vector loop.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn write_members(out: &mut Vec<u8>, members: &Members<'_>) {
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        value.write_json(out);
    }
    out.push(b'}');
}

/// Puts parsed members in `serde_json::Map`'s order: sorted by key, and of
/// duplicate keys the last one.
fn canonical(mut members: Members<'_>) -> Members<'_> {
    if members
        .windows(2)
        .all(|w| key_order(&w[0].0, &w[1].0).is_lt())
    {
        return members;
    }
    // Stable: duplicates stay in their order, so the last one is the last.
    members.sort_by(|a, b| key_order(&a.0, &b.0));
    let mut out: Members<'_> = Vec::with_capacity(members.len());
    for member in members {
        match out.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => out.push(member),
        }
    }
    out
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Node<'de>, E> {
        // As `Value`: a number JSON cannot hold is null.
        Ok(Number::from_f64(n).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node<'de>, A::Error> {
        ObjectVisitor.visit_map(map).map(|o| Node::Object(o.0))
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            members.push((key, map.next_value()?));
        }
        Ok(Object(canonical(members)))
    }
}

/// A key borrowed from the text when it has no escapes (`Cow`'s own
/// `Deserialize` always copies).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object<'de>, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Texts whose trees must write what `serde_json` writes for them.
    const TEXTS: &[&str] = &[
        r#"{"b":1,"a":[true,false,null],"c":{"z":"x","y":-3,"x":1.5e300}}"#,
        r#"{"k":1,"k":2,"a":{"k":"first","k":"last"}}"#,
        r#"{"esc\"aped":"line\nbreak \u00e9 \ud83d\ude00","":"","n":-0.0,"big":18446744073709551615,"bigger":18446744073709551616}"#,
        r#"{"floats":[1.0,0.1,1e-7,123456789012345678901234567890,-1.25E+2],"x":{}}"#,
        r#"[]"#,
        r#""s""#,
        "  {\"sp\" : [ 1 , { } ] }  ",
    ];

    #[test]
    fn trees_write_what_serde_json_writes() {
        for text in TEXTS {
            let value: Value = serde_json::from_str(text).unwrap();
            let node: Node = serde_json::from_str(text).unwrap();
            let mut written = Vec::new();
            node.write_json(&mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{text}"
            );
            assert_eq!(node.to_value(), value, "{text}");
            assert_eq!(Node::of_value(&value), node, "{text}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"plain":"value","esc\"":"a\tb"}"#;
        let Object(members) = serde_json::from_str(text).unwrap();
        assert!(
            matches!(&members[0], (Cow::Owned(k), Node::String(Cow::Owned(v))) if k == "esc\"" && v == "a\tb")
        );
        assert!(matches!(
            &members[1],
            (Cow::Borrowed("plain"), Node::String(Cow::Borrowed("value")))
        ));
    }

    #[test]
    fn an_event_must_be_an_object() {
        for text in ["[]", "1", "\"s\"", "null"] {
            assert!(serde_json::from_str::<Object>(text).is_err(), "{text}");
        }
        let object: Object = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(
            object.to_map(),
            *json!({"a": 1, "b": 2}).as_object().unwrap()
        );
    }

    #[test]
    fn merged_members_keep_key_order_and_replace_their_keys() {
        let object: Object = serde_json::from_str(r#"{"d":4,"b":2,"w":0}"#).unwrap();
        let merged = object.merged([
            ("a", Node::Null),
            ("c", Node::Bool(true)),
            ("w", Node::Bool(false)),
            ("z", Node::Null),
        ]);
        let mut out = Vec::new();
        merged.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":null,"b":2,"c":true,"d":4,"w":false,"z":null}"#
        );
    }
}
