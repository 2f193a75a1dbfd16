//! One decoded record → one tantivy document and the hit it is returned as.
//!
//! The stored hit is the event's own fields under their original names, next
//! to what Ward adds: `timestamp`, `source`, `cluster`, `node`, and `ward`
//! (record id, flags, parse error, file and offset).

use serde_json::{Map, Value};
use tantivy::TantivyDocument;
use ward_event::SourceKind;
use ward_event::wire::DecodedRecord;

use crate::chain::{Digest32, record_digest};
use crate::schema::{
    AUDIT_ID, MESSAGE, STATUS_CODE, TIMESTAMP, WardSchema, flat_term_text, ip_term_text,
    is_time_text, parse_ip, tie_of,
};

/// Top-level fields indexed by path but kept out of `_all`: objects that
/// hold whole API objects (or Ward's bookkeeping), so that field-less search
/// stays about who did what, not about every string inside a pod spec; and
/// `auditID`, whose UUID pieces are new terms in every event (a field-less
/// `auditID` is matched whole through `_flat`, see `crate::compile`).
const NOT_IN_ALL: &[&str] = &["requestObject", "responseObject", "ward", AUDIT_ID];

/// Builds the stored hit from a decoded record. The event's own fields win
/// over nothing: Ward's fields are added only under names the event does
/// not use, except `ward`, which is Ward's own namespace.
pub fn hit(record: DecodedRecord) -> Map<String, Value> {
    let mut ward = Map::new();
    ward.insert("id".into(), Value::String(record.id));
    if !record.flags.is_empty() {
        ward.insert(
            "flags".into(),
            serde_json::to_value(&record.flags).unwrap_or(Value::Null),
        );
    }
    if let Some(e) = record.parse_error {
        ward.insert("parse_error".into(), Value::String(e));
    }
    if let Some(f) = record.file {
        ward.insert("file".into(), Value::String(f));
    }
    if let Some(o) = record.offset {
        ward.insert("offset".into(), Value::from(o));
    }
    let mut hit = record.event;
    let timestamp = record
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    for (key, value) in [
        (TIMESTAMP, Some(Value::String(timestamp))),
        ("source", Some(Value::String(record.source.as_str().into()))),
        ("cluster", record.cluster.map(Value::String)),
        ("node", record.node.map(Value::String)),
    ] {
        if let Some(value) = value {
            hit.entry(key).or_insert(value);
        }
    }
    hit.insert("ward".into(), Value::Object(ward));
    hit
}

/// A record parsed once: its id, event time, and the hit it is stored and
/// returned as. Detection rules see this before it becomes a document.
#[derive(Debug, Clone)]
pub struct ParsedRecord {
    pub id: String,
    /// What replays are recognised by: the record id, or for an audit
    /// event the cluster, `auditID` and `stage`, so that one API server
    /// event is stored once however it arrived (log file, webhook, retries).
    pub key: String,
    pub timestamp_nanos: i64,
    pub hit: Map<String, Value>,
}

impl ParsedRecord {
    pub fn from_record(record: DecodedRecord) -> ParsedRecord {
        parse(record).0
    }
}

/// The keys [`hit`] adds when the event does not have them, besides `ward`.
const ADDED_KEYS: [&str; 4] = [TIMESTAMP, "source", "cluster", "node"];

/// An audit event's JSON as serialized for its replay key, kept to start
/// its stored form with instead of serializing the event a second time
/// (when redaction leaves the record as it was).
pub(crate) struct EventJson {
    bytes: Vec<u8>,
    /// Which of [`ADDED_KEYS`] the event lacked.
    lacked: [bool; 4],
}

impl EventJson {
    /// The stored form of `hit`: the event's own JSON, then the keys Ward
    /// added. The same object as `serde_json::to_vec(hit)`, keys in another
    /// order.
    fn stored(&self, hit: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 256);
        let body = self.bytes.strip_suffix(b"}").unwrap_or(&self.bytes);
        out.extend_from_slice(body);
        let mut first = body == b"{";
        let added = ADDED_KEYS
            .iter()
            .zip(self.lacked)
            .filter(|(_, lacked)| *lacked)
            .map(|(key, _)| *key)
            .chain(["ward"]);
        for key in added {
            if let Some(value) = hit.get(key) {
                if !first {
                    out.push(b',');
                }
                first = false;
                // Writing strings and values to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, key);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, value);
            }
        }
        out.push(b'}');
        out
    }
}

/// Parses a record once; for an audit event, also keeps the JSON its
/// replay key was computed from.
pub(crate) fn parse(record: DecodedRecord) -> (ParsedRecord, Option<EventJson>) {
    let id = record.id.clone();
    let timestamp_nanos = record.timestamp.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let (key, bytes) = replay_key(&record);
    let event_json = bytes
        .filter(|_| !record.event.contains_key("ward"))
        .map(|bytes| EventJson {
            bytes,
            lacked: ADDED_KEYS.map(|k| !record.event.contains_key(k)),
        });
    let parsed = ParsedRecord {
        id,
        key,
        timestamp_nanos,
        hit: hit(record),
    };
    (parsed, event_json)
}

/// An audit event's replay key: the API server's `auditID` and `stage`
/// name one event, and the hash of its content guards against tools that
/// reuse an `auditID` for different events (test traces do). The same
/// event sent twice (a retried webhook batch, a log file read again after
/// copytruncate, the webhook and the log backend both on) has one key.
/// Returns the event's JSON that was hashed, too.
fn replay_key(record: &DecodedRecord) -> (String, Option<Vec<u8>>) {
    let text = |k: &str| record.event.get(k).and_then(Value::as_str);
    match (record.source, text("auditID"), text("stage")) {
        (SourceKind::Audit, Some(audit_id), Some(stage))
            if !audit_id.is_empty() && record.parse_error.is_none() =>
        {
            use std::hash::Hasher;
            // Serializing a Map cannot fail: its keys are strings. Should it
            // ever, the key hashes nothing and the stored form is built whole.
            let bytes = serde_json::to_vec(&record.event).ok();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(bytes.as_deref().unwrap_or_default());
            let key = format!(
                "audit\u{0}{}\u{0}{audit_id}\u{0}{stage}\u{0}{:016x}",
                record.cluster.as_deref().unwrap_or(""),
                h.finish()
            );
            (key, bytes)
        }
        _ => (record.id.clone(), None),
    }
}

/// Builds the tantivy document of a record.
pub fn build(schema: &WardSchema, record: DecodedRecord) -> TantivyDocument {
    build_parsed(schema, &ParsedRecord::from_record(record)).doc
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
}

/// Builds the tantivy document of a record already parsed.
pub fn build_parsed(schema: &WardSchema, record: &ParsedRecord) -> Built {
    build_parsed_with(schema, record, None)
}

/// [`build_parsed`], starting the stored form with the event's JSON from
/// [`parse`] when there is one.
pub(crate) fn build_parsed_with(
    schema: &WardSchema,
    record: &ParsedRecord,
    event_json: Option<&EventJson>,
) -> Built {
    let ParsedRecord {
        key,
        timestamp_nanos: nanos,
        hit,
        ..
    } = record;
    let nanos = *nanos;
    let mut doc = TantivyDocument::new();
    let tie = tie_of(key);
    doc.add_u64(schema.tie, tie);
    doc.add_date(
        schema.timestamp,
        tantivy::DateTime::from_timestamp_nanos(nanos),
    );
    let time_inferred = is_time_inferred(hit);
    if time_inferred {
        doc.add_text(schema.key, key);
    }
    let is_audit = hit.get("source").and_then(Value::as_str) == Some("audit");
    let mut indexer = LeafIndexer {
        schema,
        doc: &mut doc,
        path: String::with_capacity(64),
        term: String::with_capacity(64),
        to_all: is_audit,
    };
    for (key, value) in hit {
        match key.as_str() {
            TIMESTAMP => {}
            MESSAGE => {
                indexer.doc.add_text(schema.exists, MESSAGE);
                if let Some(text) = value.as_str() {
                    indexer.doc.add_text(schema.message, text);
                }
            }
            _ => {
                // Top-level objects keep an `_exists` term: `_exists_:f` on
                // them is one posting list, not a scan of every `_flat`
                // term under `f` (a request body has hundreds).
                if holds_object_leaf(value) {
                    indexer.doc.add_text(schema.exists, key);
                }
                indexer.to_all = is_audit && !NOT_IN_ALL.contains(&key.as_str());
                indexer.path.clear();
                indexer.path.push_str(key);
                indexer.walk(value);
            }
        }
    }
    if let Some(code) = lookup(hit, STATUS_CODE).and_then(Value::as_u64) {
        doc.add_u64(schema.status_code, code);
    }
    for (dotted, field) in &schema.columns {
        match lookup(hit, dotted) {
            Some(Value::String(s)) => doc.add_text(*field, s),
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    doc.add_text(*field, s);
                }
            }
            _ => {}
        }
    }
    let stored = match event_json {
        Some(json) => json.stored(hit),
        // Serializing a Map cannot fail: its keys are strings.
        None => serde_json::to_vec(hit).unwrap_or_default(),
    };
    let digest = record_digest(&stored);
    doc.add_bytes(schema.source_doc, &stored);
    Built {
        doc,
        digest,
        tie,
        time_inferred,
    }
}

/// Whether a value holds anything that `_flat` indexes: what `_exists_`
/// means (as in Elasticsearch, null, `[]` and `{}` do not exist).
fn has_leaf(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().any(has_leaf),
        Value::Object(map) => map.values().any(has_leaf),
        _ => true,
    }
}

/// Whether a value is an object (or an array of objects) with a leaf.
fn holds_object_leaf(value: &Value) -> bool {
    match value {
        Value::Object(_) => has_leaf(value),
        Value::Array(items) => items
            .iter()
            .any(|v| matches!(v, Value::Object(_)) && has_leaf(v)),
        _ => false,
    }
}

/// Whether a record's time is the time it was read (the line had none).
fn is_time_inferred(hit: &Map<String, Value>) -> bool {
    hit.get("ward")
        .and_then(|w| w.get("flags"))
        .and_then(Value::as_array)
        .is_some_and(|flags| flags.iter().any(|f| f == "time_inferred"))
}

/// A dotted name resolved the way analysts write it: a key that contains
/// dots literally (annotation keys) before a nested path.
pub fn lookup<'a>(object: &'a Map<String, Value>, dotted: &str) -> Option<&'a Value> {
    if let Some(v) = object.get(dotted) {
        return Some(v);
    }
    let mut rest = dotted;
    let mut current = object;
    loop {
        let (head, tail) = rest.split_once('.')?;
        let next = current.get(head)?;
        if let Some(v) = next.as_object().and_then(|o| o.get(tail)) {
            return Some(v);
        }
        current = next.as_object()?;
        rest = tail;
    }
}

struct LeafIndexer<'a> {
    schema: &'a WardSchema,
    doc: &'a mut TantivyDocument,
    path: String,
    term: String,
    to_all: bool,
}

impl LeafIndexer<'_> {
    fn walk(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                let len = self.path.len();
                for (key, child) in map {
                    self.path.push('.');
                    self.path.push_str(key);
                    self.walk(child);
                    self.path.truncate(len);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item);
                }
            }
            Value::String(s) => {
                self.leaf(s);
                if let Some(bits) = parse_ip(s) {
                    ip_term_text(&self.path, bits, &mut self.term);
                    self.doc.add_text(self.schema.ip, &self.term);
                }
                if self.to_all && !is_time_text(s) {
                    self.doc.add_text(self.schema.all, s);
                }
            }
            Value::Bool(b) => self.leaf(if *b { "true" } else { "false" }),
            Value::Number(n) => self.leaf(&n.to_string()),
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
        assert_eq!(ParsedRecord::from_record(record).key, expected);
    }

    /// The stored form built from the kept event JSON is the same object as
    /// the hit serialized whole, whichever keys Ward had to add.
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
            let (parsed, json) = parse(audit_record(event, cluster));
            let json = json.expect("audit events keep their JSON");
            let reused = build_parsed_with(&schema, &parsed, Some(&json));
            let whole = build_parsed(&schema, &parsed);
            let stored = |b: &Built| -> Value {
                let bytes = b
                    .doc
                    .get_first(schema.source_doc)
                    .and_then(|v| v.as_bytes());
                serde_json::from_slice(bytes.unwrap()).unwrap()
            };
            assert_eq!(stored(&reused), stored(&whole));
            assert_eq!(stored(&reused), Value::Object(parsed.hit.clone()));
            // serde_json keeps the last of duplicate keys: count them.
            let bytes = reused
                .doc
                .get_first(schema.source_doc)
                .and_then(|v| v.as_bytes());
            let keys = top_level_keys(bytes.unwrap());
            let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
            assert_eq!(keys.len(), unique.len(), "{keys:?}");
            assert_eq!(keys.len(), parsed.hit.len());
        }
        // An event with its own `ward` key is stored whole.
        let (_, json) = parse(audit_record(
            json!({"auditID": "a", "stage": "s", "ward": 1}),
            None,
        ));
        assert!(json.is_none());
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
