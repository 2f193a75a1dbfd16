//! One decoded record → one tantivy document and the hit it is returned as.
//!
//! The stored hit is the event's own fields under their original names, next
//! to what Ward adds: `timestamp`, `source`, `cluster`, `node`, and `ward`
//! (record id, flags, parse error, file and offset).
//!
//! A record's event arrives as a [`tree::Object`] borrowing from its batch
//! (see [`crate::tree`] for why); records decoded into `serde_json` maps
//! (Ward's own) are borrowed into the same form, so there is one builder.
//! [`Prepared`] is a record on its way: its hit and replay key, what the
//! ingest tap sees ([`Prepared::parsed`]) and the document
//! ([`Prepared::build`]).

use std::borrow::Cow;

use serde_json::{Map, Value};
use tantivy::TantivyDocument;
use ward_event::wire::DecodedRecord;
use ward_event::{Flag, Record, SourceKind};

use crate::chain::{Digest32, record_digest};
use crate::redact::{Redactor, Tally};
use crate::schema::{
    AUDIT_ID, MESSAGE, STATUS_CODE, TIMESTAMP, WardSchema, flat_term_text, ip_term_text,
    is_time_text, parse_ip, tie_of,
};
use crate::tree::{self, Members, Node, Object};

/// Top-level fields indexed by path but kept out of `_all`: objects that
/// hold whole API objects (or Ward's bookkeeping), so that field-less search
/// stays about who did what, not about every string inside a pod spec; and
/// `auditID`, whose UUID pieces are new terms in every event (a field-less
/// `auditID` is matched whole through `_flat`, see `crate::compile`).
const NOT_IN_ALL: &[&str] = &["requestObject", "responseObject", "ward", AUDIT_ID];

/// A record as the ingest tap sees it, parsed once and before redaction:
/// its id, replay key, time, and the hit it is stored and returned as,
/// borrowed from the batch. Detection rules see this before it becomes a
/// document.
#[derive(Debug, Clone, Copy)]
pub struct ParsedRecord<'a> {
    pub id: &'a str,
    /// What replays are recognised by: the record id, or for an audit
    /// event the cluster, `auditID` and `stage`, so that one API server
    /// event is stored once however it arrived (log file, webhook, retries).
    pub key: &'a str,
    pub timestamp_nanos: i64,
    pub hit: &'a Object<'a>,
}

/// The replay key and hit of a decoded record, as ingest computes them
/// (for tests and tools that hold records, not batches).
pub fn key_and_hit(mut record: DecodedRecord) -> (String, Map<String, Value>) {
    let event = std::mem::take(&mut record.event);
    let prepared = Prepared::new(record.with_event(Object::of_map(&event)));
    (prepared.key.clone(), prepared.hit.to_map())
}

/// A record whose event is a tree borrowed from the batch's bytes.
pub type TreeRecord<'a> = Record<Object<'a>>;

/// The keys Ward adds to the hit when the event does not have them,
/// besides `ward`, which is always Ward's.
const ADDED_KEYS: [&str; 4] = [TIMESTAMP, "source", "cluster", "node"];

/// A record on its way to a document: its hit (the event's members and
/// Ward's, in key order) and its replay key.
pub struct Prepared<'a> {
    hit: Object<'a>,
    key: String,
    timestamp_nanos: i64,
    time_inferred: bool,
    /// An audit event's JSON as hashed for its replay key, and which of
    /// [`ADDED_KEYS`] it lacked: its stored form starts with these bytes
    /// instead of serializing the event a second time.
    event_json: Option<(Vec<u8>, [bool; 4])>,
}

impl<'a> Prepared<'a> {
    pub fn new(record: TreeRecord<'a>) -> Prepared<'a> {
        let Record {
            id,
            source,
            timestamp,
            cluster,
            node,
            flags,
            parse_error,
            file,
            offset,
            event,
        } = record;
        let (key, event_bytes) = replay_key(&id, source, cluster.as_deref(), &parse_error, &event);
        let lacked = ADDED_KEYS.map(|k| !event.contains_key(k));
        let event_json = event_bytes
            .filter(|_| !event.contains_key("ward"))
            .map(|bytes| (bytes, lacked));
        let time_inferred = flags.contains(&Flag::TimeInferred);
        // `ward`'s members, in key order.
        let mut ward: Members<'a> = Vec::with_capacity(5);
        let owned = |s: String| Node::String(Cow::Owned(s));
        if let Some(f) = file {
            ward.push((Cow::Borrowed("file"), owned(f)));
        }
        if !flags.is_empty() {
            let names = flags.iter().map(|f| match serde_json::to_value(f) {
                Ok(Value::String(name)) => owned(name),
                _ => Node::Null,
            });
            ward.push((Cow::Borrowed("flags"), Node::Array(names.collect())));
        }
        ward.push((Cow::Borrowed("id"), owned(id)));
        if let Some(o) = offset {
            ward.push((Cow::Borrowed("offset"), Node::Number(o.into())));
        }
        if let Some(e) = parse_error {
            ward.push((Cow::Borrowed("parse_error"), owned(e)));
        }
        // What Ward adds, in key order: the keys the event lacks, and `ward`.
        let [lacks_time, lacks_source, lacks_cluster, lacks_node] = lacked;
        let added = [
            ("cluster", cluster.filter(|_| lacks_cluster).map(owned)),
            ("node", node.filter(|_| lacks_node).map(owned)),
            (
                "source",
                lacks_source.then(|| Node::String(Cow::Borrowed(source.as_str()))),
            ),
            (
                TIMESTAMP,
                lacks_time
                    .then(|| owned(timestamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))),
            ),
            ("ward", Some(Node::Object(ward))),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)));
        let hit = event.merged(added);
        Prepared {
            hit,
            key,
            timestamp_nanos: timestamp.timestamp_nanos_opt().unwrap_or(i64::MAX),
            time_inferred,
            event_json,
        }
    }

    /// The record as detection rules see it.
    pub fn parsed(&self) -> ParsedRecord<'_> {
        let id = self
            .hit
            .get("ward")
            .and_then(Node::as_members)
            .and_then(|w| tree::get(w, "id"))
            .and_then(Node::as_str)
            .unwrap_or_default();
        ParsedRecord {
            id,
            key: &self.key,
            timestamp_nanos: self.timestamp_nanos,
            hit: &self.hit,
        }
    }

    /// Builds the document, redacted first when `redaction` says by what
    /// (counting into its tally).
    pub fn build(self, schema: &WardSchema, redaction: Option<(&Redactor, &mut Tally)>) -> Built {
        let redacted = redaction
            .filter(|(r, _)| r.is_enabled() && r.may_change(&self.hit))
            .and_then(|(r, tally)| {
                let mut hit = self.hit.to_map();
                r.redact_into(&mut hit, tally).then_some(hit)
            });
        let (doc, digest, tie) = match &redacted {
            // A redacted record is stored as it now is, not as it came.
            Some(hit) => self.document(schema, &Object::of_map(hit), None),
            None => self.document(schema, &self.hit, self.event_json.as_ref()),
        };
        Built {
            doc,
            digest,
            tie,
            time_inferred: self.time_inferred,
            key: self.key,
            timestamp_nanos: self.timestamp_nanos,
        }
    }

    /// The document of `hit`, the digest of its stored form, and its tie.
    fn document(
        &self,
        schema: &WardSchema,
        hit: &Object<'_>,
        event_json: Option<&(Vec<u8>, [bool; 4])>,
    ) -> (TantivyDocument, Digest32, u64) {
        // Room for the stored form, the terms and the texts: the document
        // is written once, not grown and copied a few times over.
        let mut doc = TantivyDocument::with_capacity(
            event_json.map_or(4096, |(bytes, _)| 3 * bytes.len() + 512),
        );
        let tie = tie_of(&self.key);
        doc.add_u64(schema.tie, tie);
        doc.add_date(
            schema.timestamp,
            tantivy::DateTime::from_timestamp_nanos(self.timestamp_nanos),
        );
        if self.time_inferred {
            doc.add_text(schema.key, &self.key);
        }
        let is_audit = hit.get("source").and_then(Node::as_str) == Some("audit");
        let mut indexer = LeafIndexer {
            schema,
            doc: &mut doc,
            path: String::with_capacity(64),
            term: String::with_capacity(64),
            number: String::new(),
            to_all: is_audit,
        };
        for (key, value) in &hit.0 {
            match key.as_ref() {
                TIMESTAMP => {}
                MESSAGE => {
                    indexer.doc.add_text(schema.exists, MESSAGE);
                    if let Some(text) = value.as_str() {
                        indexer.doc.add_text(schema.message, text);
                    }
                }
                key => {
                    // Top-level objects keep an `_exists` term: `_exists_:f`
                    // on them is one posting list, not a scan of every
                    // `_flat` term under `f` (a request body has hundreds).
                    if value.holds_object_leaf() {
                        indexer.doc.add_text(schema.exists, key);
                    }
                    indexer.to_all = is_audit && !NOT_IN_ALL.contains(&key);
                    indexer.path.clear();
                    indexer.path.push_str(key);
                    indexer.walk(value);
                }
            }
        }
        // A name with a dot can only be a top-level key if one has a dot
        // (none has, in audit events): then its failed search is skipped.
        let dotted_keys = hit.0.iter().any(|(k, _)| k.contains('.'));
        let lookup =
            |dotted: &str| lookup_with(&hit.0, dotted, dotted_keys, tree::get, Node::as_members);
        if let Some(code) = lookup(STATUS_CODE).and_then(Node::as_u64) {
            doc.add_u64(schema.status_code, code);
        }
        for (dotted, field) in &schema.columns {
            match lookup(dotted) {
                Some(Node::String(s)) => doc.add_text(*field, s),
                Some(Node::Array(items)) => {
                    for s in items.iter().filter_map(Node::as_str) {
                        doc.add_text(*field, s);
                    }
                }
                _ => {}
            }
        }
        let mut stored = Vec::with_capacity(event_json.map_or(1024, |(b, _)| b.len() + 256));
        match event_json {
            Some((bytes, lacked)) => stored_after_event(&mut stored, bytes, *lacked, hit),
            None => hit.write_json(&mut stored),
        }
        let digest = record_digest(&stored);
        doc.add_bytes(schema.source_doc, &stored);
        (doc, digest, tie)
    }
}

/// The stored form of `hit` from the event's own JSON: its members, then
/// the keys Ward added. The same object as `hit` written whole, keys in
/// another order.
fn stored_after_event(out: &mut Vec<u8>, event: &[u8], lacked: [bool; 4], hit: &Object<'_>) {
    let body = event.strip_suffix(b"}").unwrap_or(event);
    out.extend_from_slice(body);
    let mut first = body == b"{";
    let added = ADDED_KEYS
        .iter()
        .zip(lacked)
        .filter(|(_, lacked)| *lacked)
        .map(|(key, _)| *key)
        .chain(["ward"]);
    for key in added {
        if let Some(value) = hit.get(key) {
            if !first {
                out.push(b',');
            }
            first = false;
            Node::String(Cow::Borrowed(key)).write_json(out);
            out.push(b':');
            value.write_json(out);
        }
    }
    out.push(b'}');
}

/// An audit event's replay key: the API server's `auditID` and `stage`
/// name one event, and the hash of its content guards against tools that
/// reuse an `auditID` for different events (test traces do). The same
/// event sent twice (a retried webhook batch, a log file read again after
/// copytruncate, the webhook and the log backend both on) has one key.
/// Returns the event's JSON that was hashed, too. Other records are
/// recognised by their id.
fn replay_key(
    id: &str,
    source: SourceKind,
    cluster: Option<&str>,
    parse_error: &Option<String>,
    event: &Object<'_>,
) -> (String, Option<Vec<u8>>) {
    let text = |k: &str| event.get(k).and_then(Node::as_str);
    match (source, text("auditID"), text("stage")) {
        (SourceKind::Audit, Some(audit_id), Some(stage))
            if !audit_id.is_empty() && parse_error.is_none() =>
        {
            use std::hash::Hasher;
            let mut bytes = Vec::with_capacity(2048);
            event.write_json(&mut bytes);
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(&bytes);
            let key = format!(
                "audit\u{0}{}\u{0}{audit_id}\u{0}{stage}\u{0}{:016x}",
                cluster.unwrap_or(""),
                h.finish()
            );
            (key, Some(bytes))
        }
        _ => (id.to_owned(), None),
    }
}

/// Builds the tantivy document of a record.
pub fn build(schema: &WardSchema, mut record: DecodedRecord) -> TantivyDocument {
    let event = std::mem::take(&mut record.event);
    Prepared::new(record.with_event(Object::of_map(&event)))
        .build(schema, None)
        .doc
}

/// A record's document and what the writer needs to know of it.
pub struct Built {
    pub doc: TantivyDocument,
    /// The digest of its stored form (for the partition's hash chain).
    pub digest: Digest32,
    /// Its tie-breaker ([`tie_of`] its replay key).
    pub tie: u64,
    /// Whether its time was inferred (its line had none), so that a replay,
    /// read at another time, is recognised by its whole key, which the
    /// document then has as a `_key` term (see `crate::store`).
    pub time_inferred: bool,
    /// Its replay key (see [`ParsedRecord::key`]).
    pub key: String,
    pub timestamp_nanos: i64,
}

/// A dotted name resolved the way analysts write it: a key that contains
/// dots literally (annotation keys) before a nested path.
pub fn lookup<'a>(object: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    lookup_with(object, dotted, true, |o, k| o.get(k), Value::as_object)
}

/// [`lookup`] over any object type, given how to get a member and how to
/// see a value as an object; `dotted_keys` says whether `object` may have
/// keys with dots.
fn lookup_with<'o, O: ?Sized, V>(
    object: &'o O,
    dotted: &str,
    dotted_keys: bool,
    get: impl Fn(&'o O, &str) -> Option<&'o V>,
    as_object: impl Fn(&'o V) -> Option<&'o O>,
) -> Option<&'o V> {
    if (dotted_keys || !dotted.contains('.'))
        && let Some(v) = get(object, dotted)
    {
        return Some(v);
    }
    let mut rest = dotted;
    let mut current = object;
    loop {
        let (head, tail) = rest.split_once('.')?;
        let next = as_object(get(current, head)?)?;
        if let Some(v) = get(next, tail) {
            return Some(v);
        }
        current = next;
        rest = tail;
    }
}

struct LeafIndexer<'a> {
    schema: &'a WardSchema,
    doc: &'a mut TantivyDocument,
    path: String,
    term: String,
    number: String,
    to_all: bool,
}

impl LeafIndexer<'_> {
    fn walk(&mut self, value: &Node<'_>) {
        match value {
            Node::Null => {}
            Node::Object(members) => {
                let len = self.path.len();
                for (key, child) in members {
                    self.path.push('.');
                    self.path.push_str(key);
                    self.walk(child);
                    self.path.truncate(len);
                }
            }
            Node::Array(items) => {
                for item in items {
                    self.walk(item);
                }
            }
            Node::String(s) => {
                self.leaf(s);
                if let Some(bits) = parse_ip(s) {
                    ip_term_text(&self.path, bits, &mut self.term);
                    self.doc.add_text(self.schema.ip, &self.term);
                }
                if self.to_all && !is_time_text(s) {
                    self.doc.add_text(self.schema.all, s);
                }
            }
            Node::Bool(b) => self.leaf(if *b { "true" } else { "false" }),
            Node::Number(n) => {
                use std::fmt::Write;
                let mut number = std::mem::take(&mut self.number);
                number.clear();
                let _ = write!(number, "{n}");
                self.leaf(&number);
                self.number = number;
            }
        }
    }

    fn leaf(&mut self, value: &str) {
        flat_term_text(&self.path, value, &mut self.term);
        self.doc.add_text(self.schema.flat, &self.term);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn audit_record(event: Value, cluster: Option<&str>) -> DecodedRecord {
        ward_event::Record {
            id: "n1/f/0".into(),
            source: SourceKind::Audit,
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            cluster: cluster.map(str::to_owned),
            node: None,
            flags: vec![],
            parse_error: None,
            file: Some("/var/log/audit.log".into()),
            offset: Some(0),
            event: event.as_object().unwrap().clone(),
        }
    }

    /// The top-level keys of a JSON object, in order, duplicates kept.
    fn top_level_keys(bytes: &[u8]) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((k, _)) =
                            map.next_entry::<String, serde::de::IgnoredAny>()?
                        {
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(Visitor)
            }
        }
        serde_json::from_slice::<Keys>(bytes).unwrap().0
    }

    /// Replay keys are on disk (as `_tie`): hashing the event's JSON in one
    /// piece must give what hashing it as serde writes it (in pieces) gave.
    #[test]
    fn replay_keys_hash_the_event_json_as_before() {
        struct Pieces(std::collections::hash_map::DefaultHasher);
        impl std::io::Write for Pieces {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                std::hash::Hasher::write(&mut self.0, bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let record = audit_record(
            json!({"auditID": "a-1", "stage": "ResponseComplete", "verb": "get",
                   "user": {"username": "alice", "groups": ["g1", "g2"]}, "n": 1.5}),
            Some("prod"),
        );
        let mut pieces = Pieces(std::collections::hash_map::DefaultHasher::new());
        serde_json::to_writer(&mut pieces, &record.event).unwrap();
        let expected = format!(
            "audit\u{0}prod\u{0}a-1\u{0}ResponseComplete\u{0}{:016x}",
            std::hash::Hasher::finish(&pieces.0)
        );
        assert_eq!(key_and_hit(record.clone()).0, expected);
        // The same event as a sender writes it, keys in another order and
        // one repeated, parsed into a tree from the text.
        let text = r#"{"verb":"list","user":{"groups":["g1","g2"],"username":"alice"},"n":1.50,"stage":"ResponseComplete","auditID":"a-1","verb":"get"}"#;
        let tree: Object = serde_json::from_str(text).unwrap();
        let from_text = Prepared::new(record.with_event(tree));
        assert_eq!(from_text.key, expected);
    }

    /// The stored form built from the kept event JSON is the same object as
    /// the hit written whole, whichever keys Ward had to add.
    #[test]
    fn stored_form_from_the_event_json_is_the_hit() {
        use tantivy::schema::Value as _;
        let schema = WardSchema::new();
        for (event, cluster) in [
            (
                json!({"auditID": "a", "stage": "s", "verb": "get"}),
                Some("c"),
            ),
            (
                json!({"auditID": "a", "stage": "s", "cluster": "own", "source": "x"}),
                Some("c"),
            ),
            (
                json!({"auditID": "a", "stage": "s", "timestamp": "t", "node": "n"}),
                None,
            ),
        ] {
            let record = audit_record(event, cluster);
            let (_, hit) = key_and_hit(record.clone());
            let map = record.event.clone();
            let prepared = Prepared::new(record.with_event(Object::of_map(&map)));
            assert!(
                prepared.event_json.is_some(),
                "audit events keep their JSON"
            );
            let reused = prepared.build(&schema, None);
            let bytes = reused
                .doc
                .get_first(schema.source_doc)
                .and_then(|v| v.as_bytes())
                .unwrap();
            let stored: Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(stored, Value::Object(hit.clone()));
            // serde_json keeps the last of duplicate keys: count them.
            let keys = top_level_keys(bytes);
            let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
            assert_eq!(keys.len(), unique.len(), "{keys:?}");
            assert_eq!(keys.len(), hit.len());
        }
        // An event with its own `ward` key is stored whole.
        let record = audit_record(json!({"auditID": "a", "stage": "s", "ward": 1}), None);
        let map = record.event.clone();
        let prepared = Prepared::new(record.with_event(Object::of_map(&map)));
        assert!(prepared.event_json.is_none());
    }

    /// An event parsed from the batch's text gets the document it got when
    /// it was parsed into a `serde_json::Map`, whatever the order and
    /// repetition of its keys in the text.
    #[test]
    fn events_parsed_from_text_build_the_documents_of_their_maps() {
        use tantivy::Document as _;
        let schema = WardSchema::new();
        let texts = [
            r#"{"stage":"ResponseComplete","auditID":"x-1","verb":"get","user":{"username":"alice","groups":["b","a"]},"responseStatus":{"code":200},"sourceIPs":["10.0.0.1"],"annotations":{"authorization.k8s.io/decision":"allow"}}"#,
            r#"{"auditID":"x-2","stage":"s","verb":"list","verb":"watch","objectRef":{"resource":"pods","resource":"secrets"},"n":1.50,"esc":"a\"b\u00e9"}"#,
        ];
        for text in texts {
            let map: Map<String, Value> = serde_json::from_str(text).unwrap();
            let from_map = build(&schema, audit_record(Value::Object(map), Some("c")));
            let tree: Object = serde_json::from_str(text).unwrap();
            let from_text = Prepared::new(audit_record(json!({}), Some("c")).with_event(tree))
                .build(&schema, None)
                .doc;
            assert_eq!(
                from_text.to_json(&schema.schema),
                from_map.to_json(&schema.schema),
                "{text}"
            );
        }
    }

    #[test]
    fn lookup_prefers_literal_dotted_keys() {
        let m = json!({
            "annotations": {"authorization.k8s.io/decision": "allow"},
            "a.b": 1, "a": {"b": 2},
            "user": {"username": "alice"}
        });
        let m = m.as_object().unwrap();
        assert_eq!(
            lookup(m, "annotations.authorization.k8s.io/decision"),
            Some(&json!("allow"))
        );
        assert_eq!(lookup(m, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(m, "user.username"), Some(&json!("alice")));
        assert_eq!(lookup(m, "user.uid"), None);
    }
}
