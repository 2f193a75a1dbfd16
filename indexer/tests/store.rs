//! Store tests on the audit fixtures of `testdata/`: what goes in comes back, and
//! each query operator selects exactly the events an independent reading of
//! the JSON says it should.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use ward_event::audit::{self, Parsed};
use ward_event::wire::{self, BatchWriter, RawRecord};
use ward_event::{Flag, Record, SourceKind};
use ward_indexer::document::lookup;
use ward_indexer::{Error, SearchRequest, Store, StoreConfig};

use ward_testdata::fixtures;

/// Every audit event of the three corpora, as the collector would send them,
/// except repeats of an identical event (same `auditID`, `stage` and
/// content): the store keeps those once, by design (see
/// `an_identical_audit_event_is_stored_once`).
fn corpus() -> Vec<u8> {
    corpus_with_repeats(false)
}

fn corpus_with_repeats(repeats: bool) -> Vec<u8> {
    let mut seen = std::collections::HashSet::new();
    let mut w = BatchWriter::new();
    for file in [
        "falco-traces/falco_k8s_audit_traces.jsonl",
        "panther-k8s/panther_k8s_audit_events.jsonl",
        "audit2rbac/demo.log",
    ] {
        let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            for parsed in audit::parse_line(line) {
                let Parsed::Event { raw, timestamp } = parsed else {
                    panic!("{file}:{n}")
                };
                let has_audit_id = raw.contains("\"auditID\"");
                if !repeats && has_audit_id && !seen.insert(raw.to_string()) {
                    continue;
                }
                let mut flags = vec![];
                let timestamp = timestamp.unwrap_or_else(|| {
                    flags.push(Flag::TimeInferred);
                    DateTime::from_timestamp(1_000_000_000, 0).unwrap()
                });
                let envelope: RawRecord = Record {
                    id: format!("{file}/{n}"),
                    source: SourceKind::Audit,
                    timestamp,
                    cluster: Some("test".into()),
                    node: Some("node-1".into()),
                    flags,
                    parse_error: None,
                    file: Some(file.into()),
                    offset: Some(n as u64),
                    event: (),
                };
                w.push_raw(&envelope, raw).unwrap();
            }
        }
    }
    w.take()
}

/// A store loaded with the corpus as the HTTP layer hands it over (NDJSON,
/// decoded by the store into trees), and the events as `serde_json` reads
/// them, for the expectations.
async fn loaded_store(dir: &std::path::Path) -> (Store, Vec<Map<String, Value>>) {
    let store = Store::open(StoreConfig::new(dir)).unwrap();
    let batch = corpus();
    let events: Vec<Map<String, Value>> = wire::decode(&batch)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    let receipt = store.ingest_ndjson(batch).await.unwrap();
    assert_eq!((receipt.records, receipt.duplicates), (events.len(), 0));
    (store, events)
}

async fn ids(store: &Store, q: &str) -> BTreeSet<String> {
    let resp = store
        .search(SearchRequest {
            query: q.into(),
            start: None,
            end: None,
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
    let hits: Vec<Value> = resp
        .hits
        .iter()
        .map(|h| serde_json::from_str(h.get()).unwrap())
        .collect();
    assert_eq!(resp.total as usize, hits.len(), "{q}");
    hits.iter()
        .map(|h| h["ward"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn expected(
    events: &[Map<String, Value>],
    pred: impl Fn(&Map<String, Value>) -> bool,
) -> BTreeSet<String> {
    // Ids are assigned in corpus order, so recompute them the same way.
    let records = wire::decode(&corpus()).unwrap();
    records
        .iter()
        .zip(events)
        .filter(|(_, e)| pred(e))
        .map(|(r, _)| r.id.clone())
        .collect()
}

/// Which events a query must select, read straight from the JSON.
type Predicate = Box<dyn Fn(&Map<String, Value>) -> bool>;

fn ip_bits(text: &str) -> u128 {
    match text.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The addresses among an event's `sourceIPs` strings.
fn ips(e: &Map<String, Value>) -> Vec<u128> {
    lookup(e, "sourceIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
                .map(|ip| ip_bits(&ip.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn in_block(network: &'static str, prefix: u32) -> Predicate {
    let v4 = network.contains('.');
    let prefix = if v4 { prefix + 96 } else { prefix };
    let net = ip_bits(network);
    Box::new(move |e| {
        ips(e)
            .iter()
            .any(|ip| prefix == 0 || (ip ^ net) >> (128 - prefix) == 0)
    })
}

fn str_at<'a>(e: &'a Map<String, Value>, path: &str) -> Option<&'a str> {
    lookup(e, path).and_then(Value::as_str)
}

#[tokio::test]
async fn every_event_is_stored_whole_and_searchable_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = loaded_store(dir.path()).await;
    assert_eq!(store.num_docs() as usize, events.len());
    // The corpora's 51 + 222 + 37 events, less one exact repeat.
    assert_eq!(events.len(), 51 + 222 + 37 - 1);

    // Every original field comes back under its own name.
    let resp = store
        .search(SearchRequest {
            query: String::new(),
            start: None,
            end: None,
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let hits: Vec<Map<String, Value>> = resp
        .hits
        .iter()
        .map(|h| serde_json::from_str(h.get()).unwrap())
        .collect();
    let by_id: std::collections::HashMap<&str, &Map<String, Value>> = hits
        .iter()
        .map(|h| (h["ward"]["id"].as_str().unwrap(), h))
        .collect();
    let records = wire::decode(&corpus()).unwrap();
    assert_eq!(by_id.len(), records.len());
    for record in &records {
        let hit = by_id[record.id.as_str()];
        for (k, v) in &record.event {
            assert_eq!(hit.get(k), Some(v), "field {k} of {}", record.id);
        }
        assert_eq!(hit["source"], "audit");
        assert_eq!(hit["cluster"], "test");
        assert_eq!(hit["node"], "node-1");
    }
    // Newest first.
    let times: Vec<&str> = hits
        .iter()
        .map(|h| h["timestamp"].as_str().unwrap())
        .collect();
    let parsed: Vec<DateTime<Utc>> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] >= w[1]));

    let cases: Vec<(&str, Predicate)> = vec![
        (
            "verb:create",
            Box::new(|e| str_at(e, "verb") == Some("create")),
        ),
        (
            "verb:CREATE",
            Box::new(|e| str_at(e, "verb") == Some("create")),
        ),
        (
            "verb:create AND objectRef.resource:pods",
            Box::new(|e| {
                str_at(e, "verb") == Some("create")
                    && str_at(e, "objectRef.resource") == Some("pods")
            }),
        ),
        (
            "verb:(get OR list) NOT objectRef.resource:pods",
            Box::new(|e| {
                matches!(str_at(e, "verb"), Some("get" | "list"))
                    && str_at(e, "objectRef.resource") != Some("pods")
            }),
        ),
        (
            "objectRef.subresource:exec",
            Box::new(|e| str_at(e, "objectRef.subresource") == Some("exec")),
        ),
        (
            "user.username:system\\:admin",
            Box::new(|e| str_at(e, "user.username") == Some("system:admin")),
        ),
        (
            "user.username:system:anonymous",
            Box::new(|e| str_at(e, "user.username") == Some("system:anonymous")),
        ),
        (
            "user.groups:system\\:masters",
            Box::new(|e| {
                lookup(e, "user.groups")
                    .and_then(Value::as_array)
                    .is_some_and(|g| g.iter().any(|x| x == "system:masters"))
            }),
        ),
        (
            "objectRef.namespace:kube\\-sys*",
            Box::new(|e| {
                str_at(e, "objectRef.namespace").is_some_and(|n| n.starts_with("kube-sys"))
            }),
        ),
        (
            "requestURI:*exec*",
            Box::new(|e| {
                str_at(e, "requestURI").is_some_and(|u| u.to_lowercase().contains("exec"))
            }),
        ),
        (
            "requestURI:/.*\\/exec.*/",
            Box::new(|e| str_at(e, "requestURI").is_some_and(|u| u.contains("/exec"))),
        ),
        (
            "responseStatus.code:403",
            Box::new(|e| lookup(e, "responseStatus.code").and_then(Value::as_u64) == Some(403)),
        ),
        (
            "responseStatus.code:[400 TO 499]",
            Box::new(|e| {
                lookup(e, "responseStatus.code")
                    .and_then(Value::as_u64)
                    .is_some_and(|c| (400..=499).contains(&c))
            }),
        ),
        (
            "_exists_:impersonatedUser",
            Box::new(|e| e.contains_key("impersonatedUser")),
        ),
        (
            "_exists_:impersonatedUser.username",
            Box::new(|e| present(e, "impersonatedUser.username")),
        ),
        (
            "_exists_:impersonatedUser.groups",
            Box::new(|e| present(e, "impersonatedUser.groups")),
        ),
        (
            "objectRef.subresource:*",
            Box::new(|e| present(e, "objectRef.subresource")),
        ),
        // An empty string is a value.
        (
            "_exists_:annotations.authorization.k8s.io/reason",
            Box::new(|e| {
                lookup(e, "annotations")
                    .and_then(|a| a.get("authorization.k8s.io/reason"))
                    .is_some_and(|v| !v.is_null())
            }),
        ),
        ("_exists_:timestamp", Box::new(|_| true)),
        // Dotted keys are objects, as in Elasticsearch.
        (
            "_exists_:annotations.authorization",
            Box::new(|e| {
                lookup(e, "annotations")
                    .and_then(Value::as_object)
                    .is_some_and(|a| a.keys().any(|k| k.starts_with("authorization.")))
            }),
        ),
        // A field-less phrase: its words in order inside one value that
        // field-less search covers (not request or response bodies).
        (
            "\"kube-system:replicaset-controller\"",
            Box::new(|e| has_phrase(e, &["kube", "system", "replicaset", "controller"])),
        ),
        (
            "\"system:serviceaccount\"",
            Box::new(|e| has_phrase(e, &["system", "serviceaccount"])),
        ),
        (
            "annotations.authorization.k8s.io/decision:forbid",
            Box::new(|e| {
                lookup(e, "annotations")
                    .and_then(|a| a.get("authorization.k8s.io/decision"))
                    .and_then(Value::as_str)
                    == Some("forbid")
            }),
        ),
        (
            "requestObject.spec.containers.securityContext.privileged:true",
            Box::new(|e| {
                lookup(e, "requestObject.spec.containers")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.pointer("/securityContext/privileged") == Some(&Value::Bool(true))
                        })
                    })
            }),
        ),
        // CIDR blocks and address ranges on IP fields, IPv4 and IPv6,
        // against an independent reading with std's address types.
        ("sourceIPs:10.0.0.0/8", in_block("10.0.0.0", 8)),
        ("sourceIPs:192.168.0.0/16", in_block("192.168.0.0", 16)),
        ("sourceIPs:54.212.0.0/16", in_block("54.212.0.0", 16)),
        ("sourceIPs:0.0.0.0/0", in_block("0.0.0.0", 0)),
        ("sourceIPs:::1/128", in_block("::1", 128)),
        ("sourceIPs:\"::ffff:10.0.0.0/104\"", in_block("10.0.0.0", 8)),
        ("sourceIPs:0:0:0:0:0:0:0:1", in_block("::1", 128)),
        (
            "sourceIPs:[10.0.0.0 TO 10.0.1.255]",
            Box::new(|e| {
                ips(e)
                    .iter()
                    .any(|ip| *ip >= ip_bits("10.0.0.0") && *ip <= ip_bits("10.0.1.255"))
            }),
        ),
    ];
    for (q, pred) in cases {
        let want = expected(&events, pred);
        assert!(!want.is_empty(), "{q}: the corpus must exercise the case");
        assert_eq!(ids(&store, q).await, want, "{q}");
    }
    // Words of different values are not a phrase, though every word is there.
    assert!(!ids(&store, "create AND pods").await.is_empty());
    assert!(expected(&events, |e| has_phrase(e, &["create", "pods"])).is_empty());
    assert_eq!(ids(&store, "\"create pods\"").await, BTreeSet::new());
    // Field-less search finds an `auditID` whole (`_all` leaves it out),
    // but not the pieces of one, nor times.
    let audit_id = str_at(&events[0], "auditID").unwrap().to_owned();
    let want = expected(&events, |e| str_at(e, "auditID") == Some(audit_id.as_str()));
    assert!(!want.is_empty());
    assert_eq!(ids(&store, &format!("\"{audit_id}\"")).await, want);
    assert_eq!(ids(&store, &audit_id.to_uppercase()).await, want);
    let piece = audit_id.split('-').next().unwrap();
    if piece != audit_id {
        assert_eq!(ids(&store, piece).await, BTreeSet::new(), "{piece}");
    }
    let time = str_at(&events[0], "stageTimestamp").unwrap().to_owned();
    assert_eq!(ids(&store, &format!("\"{time}\"")).await, BTreeSet::new());
    // A field whose name starts another's does not exist because of it.
    assert!(!ids(&store, "_exists_:user.username").await.is_empty());
    assert_eq!(ids(&store, "_exists_:user.user").await, BTreeSet::new());
    assert_eq!(ids(&store, "_exists_:verbs").await, BTreeSet::new());
    store.shutdown().await;
}

/// A value at `path` that is not null.
fn present(e: &Map<String, Value>, path: &str) -> bool {
    lookup(e, path).is_some_and(|v| !v.is_null())
}

/// Whether a string value outside request and response bodies has `words`
/// as consecutive words (split at anything not alphanumeric, lowercased).
fn has_phrase(e: &Map<String, Value>, words: &[&str]) -> bool {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut values = Vec::new();
    for (k, v) in e {
        if k != "requestObject" && k != "responseObject" {
            strings(v, &mut values);
        }
    }
    values.iter().any(|value| {
        let lower = value.to_lowercase();
        let tokens: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .collect();
        tokens.windows(words.len()).any(|w| w == words)
    })
}

#[tokio::test]
async fn time_range_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = loaded_store(dir.path()).await;
    let all = store
        .search(SearchRequest {
            query: "*".into(),
            start: None,
            end: None,
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.hits.len(), 5);
    assert_eq!(all.total, store.num_docs());
    let start: DateTime<Utc> = "2017-09-11T19:55:05Z".parse().unwrap();
    let end: DateTime<Utc> = "2017-09-11T19:57:00Z".parse().unwrap();
    let window = store
        .search(SearchRequest {
            query: "*".into(),
            start: Some(start),
            end: Some(end),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(window.total > 0 && window.total < all.total);
    for hit in &window.hits {
        let v: Value = serde_json::from_str(hit.get()).unwrap();
        let t: DateTime<Utc> = v["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(t >= start && t < end, "{t}");
    }
    store.shutdown().await;
}

#[tokio::test]
async fn bad_queries_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    for q in [
        "verb:(create",
        "requestURI:/[/",
        "responseStatus.code:[a TO b]",
        "a:[1 TO",
    ] {
        let err = store
            .search(SearchRequest {
                query: q.into(),
                start: None,
                end: None,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Query { .. } | Error::InvalidRequest(_)),
            "{q}: {err:?}"
        );
    }
    let err = store
        .search(SearchRequest {
            query: "*".into(),
            start: None,
            end: None,
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)));
    store.shutdown().await;
}

#[tokio::test]
async fn acknowledged_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = loaded_store(dir.path()).await;
    store.shutdown().await;
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.num_docs() as usize, events.len());
    store.shutdown().await;
}

#[tokio::test]
async fn replayed_records_are_stored_once_also_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, events) = loaded_store(dir.path()).await;
    let n = events.len();
    // Sent again as it was, and decoded into maps (the path of Ward's own
    // records): the trees and the maps give the same replay keys.
    let receipt = store.ingest_ndjson(corpus()).await.unwrap();
    assert_eq!((receipt.records, receipt.duplicates), (n, n));
    let receipt = store
        .ingest(wire::decode(&corpus()).unwrap())
        .await
        .unwrap();
    assert_eq!((receipt.records, receipt.duplicates), (n, n));
    assert_eq!(store.num_docs() as usize, n);
    store.shutdown().await;
    drop(store);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    // Half old, half new: only the new half is stored.
    let mut records = wire::decode(&corpus()).unwrap();
    records.truncate(100);
    for r in records.iter_mut().take(50) {
        // A new record: new id, and (audit events being keyed by content
        // too) a field that makes it a different event.
        r.id.push_str("-new");
        r.event.insert("variant".into(), Value::Bool(true));
    }
    let receipt = store.ingest(records).await.unwrap();
    assert_eq!(receipt.duplicates, 50);
    assert_eq!(store.num_docs() as usize, n + 50);
    store.shutdown().await;
}

#[tokio::test]
async fn an_identical_audit_event_is_stored_once() {
    // The Panther corpus holds one event twice, byte for byte (same
    // auditID and stage): an API server retrying a webhook batch, or the
    // same event read from the log and received by webhook, looks the same.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let with = wire::decode(&corpus_with_repeats(true)).unwrap();
    let without = wire::decode(&corpus()).unwrap().len();
    assert_eq!(with.len(), without + 1);
    let receipt = store.ingest(with).await.unwrap();
    assert_eq!(receipt.duplicates, 1);
    assert_eq!(store.num_docs() as usize, without);
    // Same auditID and stage but different content (test traces reuse
    // auditIDs): both are kept.
    let mut records = wire::decode(&corpus()).unwrap();
    records.truncate(2);
    let mut b = records[0].clone();
    b.id.push_str("-variant");
    b.event.insert("verb".into(), Value::String("patch".into()));
    let receipt = store.ingest(vec![b]).await.unwrap();
    assert_eq!(receipt.duplicates, 0);
    store.shutdown().await;
}

/// A partition created before the storage rework (field norms, an
/// `_exists` term per path, the whole replay key as a `_key` term) keeps its
/// own schema: the store opens it, adds to it, recognises replays of its
/// records, and answers phrases and `_exists_` over old and new records.
#[tokio::test]
async fn partitions_of_the_earlier_schema_stay_readable_and_writable() {
    use tantivy::schema::{IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
    use ward_indexer::document;
    use ward_indexer::partition::{self, Day};
    use ward_indexer::schema::WardSchema;

    let dir = tempfile::tempdir().unwrap();
    let current = WardSchema::new();
    // The earlier options: `_all` and `_exists` (like every indexed field)
    // with norms; same fields, same order.
    let mut builder = Schema::builder();
    for (_, entry) in current.schema.fields() {
        match entry.name() {
            "_all" => {
                builder.add_text_field(
                    "_all",
                    TextOptions::default().set_indexing_options(
                        TextFieldIndexing::default()
                            .set_tokenizer(ward_indexer::schema::TEXT_TOKENIZER)
                            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
                    ),
                );
            }
            "_exists" => {
                builder.add_text_field("_exists", STRING);
            }
            _ => {
                builder.add_field(entry.clone());
            }
        }
    }
    let legacy = builder.build();
    assert_ne!(legacy, current.schema);
    let time: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
    let day = Day::of(time);
    let index_dir = partition::partition_dir(dir.path(), day).join(partition::INDEX_DIR);
    std::fs::create_dir_all(&index_dir).unwrap();
    let index = tantivy::Index::create_in_dir(&index_dir, legacy.clone()).unwrap();
    WardSchema::register_tokenizers(&index);
    let event = |id: &str, user: &str, impersonated: bool| {
        let mut e = serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": id,
            "stage": "ResponseComplete", "verb": "get",
            "user": {"username": user},
            "stageTimestamp": "2026-11-20T10:00:00Z",
        });
        if impersonated {
            e["impersonatedUser"] = serde_json::json!({"username": "bob"});
        }
        Record {
            id: id.into(),
            source: SourceKind::Audit,
            timestamp: time,
            cluster: Some("test".into()),
            node: None,
            flags: vec![],
            parse_error: None,
            file: None,
            offset: None,
            event: e.as_object().unwrap().clone(),
        }
    };
    {
        let mut writer: tantivy::IndexWriter =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        let old = event(
            "old-1",
            "system:serviceaccount:kube-system:replicaset-controller",
            true,
        );
        let (key, _) = document::key_and_hit(old.clone());
        // The earlier builder wrote the whole replay key as the `_key` term.
        let built = document::build(&current, old);
        let mut doc = tantivy::TantivyDocument::new();
        for (field, value) in built.field_values() {
            if field != current.key {
                doc.add_field_value(field, value);
            }
        }
        doc.add_text(current.key, &key);
        // And one `_exists` term per path.
        for path in [
            "impersonatedUser",
            "impersonatedUser.username",
            "user.username",
        ] {
            doc.add_text(current.exists, path);
        }
        writer.add_document(doc).unwrap();
        writer.commit().unwrap();
    }
    drop(index);

    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(store.num_docs(), 1);
    let mut w = BatchWriter::new();
    w.push(&event(
        "new-1",
        "system:serviceaccount:kube-system:deployment-controller",
        true,
    ))
    .unwrap();
    w.push(&event("new-2", "alice", false)).unwrap();
    store
        .ingest(wire::decode(&w.take()).unwrap())
        .await
        .unwrap();
    // The old record sent again is recognised (by its time and `_tie`).
    let mut w = BatchWriter::new();
    w.push(&event(
        "old-1",
        "system:serviceaccount:kube-system:replicaset-controller",
        true,
    ))
    .unwrap();
    let receipt = store
        .ingest(wire::decode(&w.take()).unwrap())
        .await
        .unwrap();
    assert_eq!(receipt.duplicates, 1);
    assert_eq!(store.num_docs(), 3);
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        ids(&store, "\"kube-system:replicaset-controller\"").await,
        set(&["old-1"])
    );
    assert_eq!(
        ids(&store, "\"serviceaccount:kube-system\"").await,
        set(&["old-1", "new-1"])
    );
    assert_eq!(
        ids(&store, "_exists_:impersonatedUser").await,
        set(&["old-1", "new-1"])
    );
    assert_eq!(
        ids(&store, "_exists_:impersonatedUser.username").await,
        set(&["old-1", "new-1"])
    );
    store.shutdown().await;
    // The partition still has the schema it was created with.
    let reopened = tantivy::Index::open_in_dir(&index_dir).unwrap();
    assert_eq!(reopened.schema(), legacy);
}

/// A record whose line had no time gets the time it was read, so a replay
/// (a collector re-reading after a restart, a webhook retry) has another
/// time: it is still recognised, by its whole key, also after a restart.
#[tokio::test]
async fn replays_of_records_without_their_own_time_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let line = |read_at: &str| {
        let mut w = BatchWriter::new();
        w.push(&Record {
            id: "node-1/abc/42".into(),
            source: SourceKind::Container,
            timestamp: read_at.parse::<DateTime<Utc>>().unwrap(),
            cluster: Some("test".into()),
            node: Some("node-1".into()),
            flags: vec![Flag::TimeInferred],
            parse_error: Some("no timestamp".into()),
            file: Some("/var/log/pods/x/0.log".into()),
            offset: Some(42),
            event: serde_json::json!({"message": "line without a time"})
                .as_object()
                .unwrap()
                .clone(),
        })
        .unwrap();
        wire::decode(&w.take()).unwrap()
    };
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let first = store.ingest(line("2026-11-23T10:00:00Z")).await.unwrap();
    assert_eq!(first.duplicates, 0);
    let again = store.ingest(line("2026-11-23T10:05:00Z")).await.unwrap();
    assert_eq!(again.duplicates, 1);
    store.shutdown().await;
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let after_restart = store.ingest(line("2026-11-23T11:00:00Z")).await.unwrap();
    assert_eq!(after_restart.duplicates, 1);
    assert_eq!(store.num_docs(), 1);
    store.shutdown().await;
}

/// A partition whose fields do not line up with today's schema (here: one
/// written before `_tie` and `_ip` existed) is refused with a clear error,
/// not opened to answer queries with the wrong fields.
#[tokio::test]
async fn a_partition_of_an_incompatible_schema_is_refused() {
    use ward_indexer::partition::{self, Day};
    use ward_indexer::schema::WardSchema;

    let dir = tempfile::tempdir().unwrap();
    let current = WardSchema::new();
    let mut builder = tantivy::schema::Schema::builder();
    for (_, entry) in current.schema.fields() {
        if entry.name() == "_tie" {
            break;
        }
        builder.add_field(entry.clone());
    }
    let day = Day::of("2026-11-20T10:00:00Z".parse().unwrap());
    let index_dir = partition::partition_dir(dir.path(), day).join(partition::INDEX_DIR);
    std::fs::create_dir_all(&index_dir).unwrap();
    tantivy::Index::create_in_dir(&index_dir, builder.build()).unwrap();
    let Err(err) = Store::open(StoreConfig::new(dir.path())) else {
        panic!("a partition without _tie opened");
    };
    assert!(err.to_string().contains("incompatible version"), "{err}");
    assert!(err.to_string().contains("_tie"), "{err}");
}
