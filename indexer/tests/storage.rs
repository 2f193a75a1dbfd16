//! Storage that responders can trust: time partitions, retention, hash
//! chains with `verify`, snapshots, redaction. Real indexes on disk; the
//! tampering tests change them behind the store's back with tantivy itself,
//! the way an intruder with write access to the volume could.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tantivy::schema::Value as _;
use ward_event::wire::{BatchWriter, DecodedRecord};
use ward_event::{Record, SourceKind};
use ward_indexer::chain::HmacKey;
use ward_indexer::partition::{self, Day};
use ward_indexer::verify::{self, Status};
use ward_indexer::{
    IngestTap, ParsedRecord, Retention, SearchRequest, Store, StoreConfig, snapshot,
};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn audit(n: u64, time: DateTime<Utc>) -> DecodedRecord {
    let Value::Object(event) = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("00000000-0000-0000-0000-{n:012}"), "stage": "ResponseComplete",
        "verb": "get", "requestURI": format!("/api/v1/namespaces/default/pods/p{n}"),
        "user": {"username": "alice"}, "sourceIPs": ["10.0.0.1"],
        "requestReceivedTimestamp": time.to_rfc3339(), "seq": n,
    }) else {
        unreachable!()
    };
    record(format!("test/{n}"), SourceKind::Audit, time, None, n, event)
}

fn container(n: u64, time: DateTime<Utc>, message: &str) -> DecodedRecord {
    let Value::Object(event) = json!({"message": message, "stream": "stdout",
        "kubernetes": {"namespace": "shop", "pod": "api-0", "container": "api"}})
    else {
        unreachable!()
    };
    let file = Some("/var/log/pods/x.log".into());
    record(
        format!("c/{n}"),
        SourceKind::Container,
        time,
        file,
        n,
        event,
    )
}

fn record(
    id: String,
    source: SourceKind,
    timestamp: DateTime<Utc>,
    file: Option<String>,
    offset: u64,
    event: Map<String, Value>,
) -> DecodedRecord {
    Record {
        id,
        source,
        timestamp,
        cluster: Some("c1".into()),
        node: Some("n1".into()),
        flags: vec![],
        parse_error: None,
        file,
        offset: Some(offset),
        event,
    }
}

fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.writer_heap_bytes = 20_000_000;
    c.writer_threads = 1;
    c.commit_interval = Duration::from_millis(20);
    c
}

async fn search(store: &Store, q: &str, start: Option<&str>, end: Option<&str>) -> Vec<Value> {
    store
        .search(SearchRequest {
            query: q.into(),
            start: start.map(at),
            end: end.map(at),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .hits
        .iter()
        .map(|h| serde_json::from_str(h.get()).unwrap())
        .collect()
}

#[tokio::test]
async fn records_go_to_the_partition_of_their_own_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let days = ["2026-11-20", "2026-11-21", "2026-11-22"];
    let mut n = 0;
    for day in days {
        let batch = (0..10)
            .map(|i| {
                n += 1;
                audit(n, at(&format!("{day}T0{i}:00:00Z")))
            })
            .collect();
        store.ingest(batch).await.unwrap();
    }
    // A late event for the first day, after the others.
    store
        .ingest(vec![audit(100, at("2026-11-20T23:59:59.5Z"))])
        .await
        .unwrap();
    let names: Vec<String> = store.partitions().iter().map(Day::name).collect();
    assert_eq!(names, days);
    // The gauge follows new days as they are created, not only at the
    // retention pass.
    assert_eq!(
        store
            .stats()
            .partitions
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let first = search(
        &store,
        "",
        Some("2026-11-20T00:00:00Z"),
        Some("2026-11-21T00:00:00Z"),
    )
    .await;
    assert_eq!(first.len(), 11);
    assert_eq!(
        first[0]["seq"],
        json!(100),
        "newest first, the late event too"
    );
    // A range inside one day, and one across the boundary of two.
    assert_eq!(
        search(
            &store,
            "",
            Some("2026-11-21T03:00:00Z"),
            Some("2026-11-21T05:00:00Z")
        )
        .await
        .len(),
        2
    );
    let across = search(
        &store,
        "",
        Some("2026-11-21T09:00:00Z"),
        Some("2026-11-22T01:00:00Z"),
    )
    .await;
    assert_eq!(across.len(), 2);
    assert_eq!(across[0]["seq"], json!(21));
    assert_eq!(across[1]["seq"], json!(20));
    // Without a range, hits from every day, newest first.
    let all = search(&store, "user.username:alice", None, None).await;
    assert_eq!(all.len(), 31);
    let times: Vec<&str> = all
        .iter()
        .map(|h| h["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
    store.shutdown().await;
    // Each day's records are on disk in that day's directory.
    let report = verify::verify(dir.path(), None).unwrap();
    let counts: Vec<(String, u64)> = report
        .partitions
        .iter()
        .map(|p| (p.partition.clone(), p.records))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("2026-11-20".into(), 11),
            ("2026-11-21".into(), 10),
            ("2026-11-22".into(), 10)
        ]
    );
    assert!(report.is_intact(), "{report:#?}");
}

fn day_offset(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

#[tokio::test]
async fn retention_by_age_removes_whole_days_records_it_and_drops_late_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for (i, age) in [10, 5, 1, 0].into_iter().enumerate() {
        let batch = (0..5)
            .map(|j| audit((i * 10 + j) as u64, day_offset(age)))
            .collect();
        store.ingest(batch).await.unwrap();
    }
    assert_eq!(store.partitions().len(), 4);
    store.shutdown().await;
    drop(store);

    let mut c = config(dir.path());
    c.retention = Retention {
        max_age: Some(Duration::from_secs(3 * 86_400)),
        max_bytes: None,
    };
    let store = Store::open(c).unwrap();
    // The pass runs as the writer starts; wait for it.
    for _ in 0..200 {
        if store
            .stats()
            .partitions_removed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept: Vec<Day> = store.partitions();
    assert_eq!(kept, vec![Day::of(day_offset(1)), Day::of(day_offset(0))]);
    assert_eq!(store.num_docs(), 10);
    let stats = store.stats();
    assert_eq!(
        stats
            .partition_records_removed
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
    assert!(
        stats
            .partition_bytes_removed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(!partition::partition_dir(dir.path(), Day::of(day_offset(10))).exists());

    // A record for a day retention already gave up is dropped, and counted.
    let receipt = store.ingest(vec![audit(99, day_offset(20))]).await.unwrap();
    assert_eq!((receipt.records, receipt.expired), (1, 1));
    assert_eq!(store.num_docs(), 10);
    assert_eq!(
        stats
            .records_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    store.shutdown().await;

    // The removals are recorded in the ledger: verify tells them apart
    // from tampering.
    let report = verify::verify(dir.path(), None).unwrap();
    assert!(report.is_intact(), "{report:#?}");
    let removed: Vec<_> = report
        .partitions
        .iter()
        .filter(|p| p.status == Status::Removed)
        .collect();
    assert_eq!(removed.len(), 2);
    assert!(removed[0].problems[0].contains("age"), "{:?}", removed[0]);
}

#[tokio::test]
async fn retention_by_size_removes_the_oldest_days_but_never_today() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for (i, age) in [3, 2, 1, 0].into_iter().enumerate() {
        let batch = (0..50)
            .map(|j| audit((i * 100 + j) as u64, day_offset(age)))
            .collect();
        store.ingest(batch).await.unwrap();
    }
    store.shutdown().await;
    drop(store);
    let sizes: Vec<u64> = (0..4)
        .map(|age| {
            partition::disk_usage(&partition::partition_dir(
                dir.path(),
                Day::of(day_offset(3 - age)),
            ))
        })
        .collect();
    // Room for the newest two days only.
    let mut c = config(dir.path());
    c.retention.max_bytes = Some(sizes[2] + sizes[3] + sizes[3] / 2);
    let store = Store::open(c).unwrap();
    for _ in 0..200 {
        if store.partitions().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.partitions(),
        vec![Day::of(day_offset(1)), Day::of(day_offset(0))]
    );
    store.shutdown().await;
    drop(store);
    // Even a limit below today's size keeps today.
    let mut c = config(dir.path());
    c.retention.max_bytes = Some(1);
    let store = Store::open(c).unwrap();
    for _ in 0..200 {
        if store.partitions().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.partitions(), vec![Day::of(day_offset(0))]);
    store.shutdown().await;
}

#[tokio::test]
async fn merges_keep_segment_counts_bounded_under_many_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut n = 0;
    for _ in 0..120 {
        let batch = (0..20)
            .map(|_| {
                n += 1;
                audit(n, at("2026-11-23T10:00:00Z"))
            })
            .collect();
        // Each batch is its own commit (20 ms apart): 120 segments written.
        store.ingest(batch).await.unwrap();
    }
    store.shutdown().await;
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.num_docs(), 2400);
    let segments = store.segment_count();
    assert!(segments <= 16, "{segments} segments after 120 commits");
    store.shutdown().await;
}

/// Loads three days and returns the store's directory, closed.
async fn loaded(dir: &Path, key: Option<HmacKey>) {
    let mut c = config(dir);
    c.hmac_key = key;
    let store = Store::open(c).unwrap();
    let mut n = 0;
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        for _ in 0..3 {
            let batch = (0..10)
                .map(|i| {
                    n += 1;
                    audit(n, at(&format!("{day}T0{i}:00:00Z")))
                })
                .collect();
            store.ingest(batch).await.unwrap();
        }
    }
    store.shutdown().await;
}

fn index_of(dir: &Path, day: &str) -> tantivy::Index {
    let schema = ward_indexer::schema::WardSchema::new();
    partition::open_index(dir, Day::parse(day).unwrap(), &schema, false).unwrap()
}

/// (partition, problems) of everything not intact.
fn problems(dir: &Path, key: Option<&HmacKey>) -> Vec<(String, Status, Vec<String>)> {
    let report = verify::verify(dir, key).unwrap();
    let mut out: Vec<_> = report
        .partitions
        .into_iter()
        .filter(|p| p.status != Status::Intact)
        .map(|p| (p.partition, p.status, p.problems))
        .collect();
    if !report.ledger.is_empty() {
        out.push(("ledger".into(), Status::Tampered, report.ledger));
    }
    out
}

/// Finds one stored document of a partition: (its `_batch`, its `_source`).
fn first_doc(
    index: &tantivy::Index,
    seq_wanted: u64,
) -> (tantivy::TantivyDocument, Map<String, Value>) {
    let schema = ward_indexer::schema::WardSchema::new();
    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    for (s, segment) in searcher.segment_readers().iter().enumerate() {
        let batches = segment.fast_fields().u64("_batch").unwrap();
        for doc in 0..segment.max_doc() {
            if batches.first(doc) == Some(seq_wanted) {
                let d: tantivy::TantivyDocument = searcher
                    .doc(tantivy::DocAddress::new(s as u32, doc))
                    .unwrap();
                let source = d.get_first(schema.source_doc).unwrap().as_bytes().unwrap();
                let map = serde_json::from_slice(source).unwrap();
                return (d, map);
            }
        }
    }
    panic!("no document in batch {seq_wanted}")
}

fn key_term(map: &Map<String, Value>) -> tantivy::Term {
    // Documents are found again by a `_flat` term of their id.
    let schema = ward_indexer::schema::WardSchema::new();
    let mut text = String::new();
    ward_indexer::schema::flat_term_text("ward.id", map["ward"]["id"].as_str().unwrap(), &mut text);
    tantivy::Term::from_field_text(schema.flat, &text)
}

#[tokio::test]
async fn verify_is_intact_on_an_untouched_store() {
    let dir = tempfile::tempdir().unwrap();
    loaded(dir.path(), None).await;
    let report = verify::verify(dir.path(), None).unwrap();
    assert!(report.is_intact(), "{report:#?}");
    assert_eq!(report.partitions.len(), 3);
    assert!(
        report
            .partitions
            .iter()
            .all(|p| p.batches == 3 && p.records == 30)
    );
}

#[tokio::test]
async fn verify_finds_an_altered_record() {
    let dir = tempfile::tempdir().unwrap();
    loaded(dir.path(), None).await;
    let index = index_of(dir.path(), "2026-11-21");
    let (_, mut map) = first_doc(&index, 2);
    let mut writer: tantivy::IndexWriter<tantivy::TantivyDocument> =
        index.writer(20_000_000).unwrap();
    writer.delete_term(key_term(&map));
    // The intruder rewrites who did it.
    map.insert("user".into(), json!({"username": "someone-else"}));
    let schema = ward_indexer::schema::WardSchema::new();
    let mut forged = tantivy::TantivyDocument::new();
    forged.add_u64(schema.batch, 2);
    forged.add_bytes(schema.source_doc, &serde_json::to_vec(&map).unwrap());
    writer.add_document(forged).unwrap();
    // Keep the payload so the commit looks like the indexer's.
    let payload = index.load_metas().unwrap().payload;
    let mut prepared = writer.prepare_commit().unwrap();
    prepared.set_payload(payload.as_deref().unwrap());
    prepared.commit().unwrap();
    assert_eq!(
        problems(dir.path(), None),
        vec![(
            "2026-11-21".into(),
            Status::Tampered,
            vec!["batch 2: altered (10 records, contents differ)".into()]
        )]
    );
}

#[tokio::test]
async fn verify_finds_deleted_and_inserted_records() {
    let dir = tempfile::tempdir().unwrap();
    loaded(dir.path(), None).await;
    let index = index_of(dir.path(), "2026-11-20");
    let (_, one) = first_doc(&index, 1);
    let mut writer: tantivy::IndexWriter<tantivy::TantivyDocument> =
        index.writer(20_000_000).unwrap();
    writer.delete_term(key_term(&one));
    // An inserted record claiming a batch that was never committed.
    let schema = ward_indexer::schema::WardSchema::new();
    let mut fake = tantivy::TantivyDocument::new();
    fake.add_bytes(schema.source_doc, br#"{"verb":"get","ward":{"id":"fake"}}"#);
    fake.add_u64(schema.batch, 9);
    writer.add_document(fake).unwrap();
    let payload = index.load_metas().unwrap().payload;
    let mut prepared = writer.prepare_commit().unwrap();
    prepared.set_payload(payload.as_deref().unwrap());
    prepared.commit().unwrap();
    drop(writer);
    assert_eq!(
        problems(dir.path(), None),
        vec![(
            "2026-11-20".into(),
            Status::Tampered,
            vec![
                "batch 1: altered (10 records committed, 9 found)".into(),
                "batch 9: added (1 records in no committed batch)".into()
            ]
        )]
    );
}

#[tokio::test]
async fn verify_finds_a_removed_batch_and_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    loaded(dir.path(), None).await;
    let index = index_of(dir.path(), "2026-11-22");
    let mut writer: tantivy::IndexWriter<tantivy::TantivyDocument> =
        index.writer(20_000_000).unwrap();
    let schema = ward_indexer::schema::WardSchema::new();
    writer
        .delete_query(Box::new(tantivy::query::RangeQuery::new(
            std::ops::Bound::Included(tantivy::Term::from_field_u64(schema.batch, 3)),
            std::ops::Bound::Included(tantivy::Term::from_field_u64(schema.batch, 3)),
        )))
        .unwrap();
    let payload = index.load_metas().unwrap().payload;
    let mut prepared = writer.prepare_commit().unwrap();
    prepared.set_payload(payload.as_deref().unwrap());
    prepared.commit().unwrap();
    drop(writer);
    let problems_now = problems(dir.path(), None);
    assert_eq!(
        problems_now,
        vec![(
            "2026-11-22".into(),
            Status::Tampered,
            vec!["batch 3: removed (all 10 records are missing)".into()]
        )]
    );
    // Hiding it by editing the chain breaks the chain instead.
    let chain =
        partition::partition_dir(dir.path(), Day::parse("2026-11-22").unwrap()).join("chain.jsonl");
    let text = std::fs::read_to_string(&chain).unwrap();
    let edited = text.replacen("\"records\":10", "\"records\":0", 1);
    std::fs::write(&chain, edited).unwrap();
    let found = problems(dir.path(), None);
    assert!(
        found[0]
            .2
            .iter()
            .any(|p| p == "chain: entry 1 does not match its hash"),
        "{found:?}"
    );
}

#[tokio::test]
async fn verify_finds_deleted_segment_files_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    loaded(dir.path(), None).await;
    let index_dir =
        partition::partition_dir(dir.path(), Day::parse("2026-11-20").unwrap()).join("index");
    let store_file = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "store"))
        .unwrap();
    std::fs::remove_file(store_file).unwrap();
    std::fs::remove_dir_all(partition::partition_dir(
        dir.path(),
        Day::parse("2026-11-22").unwrap(),
    ))
    .unwrap();
    let found = problems(dir.path(), None);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1),
        ("2026-11-20", Status::Unreadable)
    );
    assert_eq!(
        (found[1].0.as_str(), found[1].1),
        ("2026-11-22", Status::Missing)
    );
}

#[tokio::test]
async fn hmac_signed_chains_reject_a_rebuilt_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = HmacKey::from_bytes(b"a key of thirty-two bytes, say..");
    loaded(dir.path(), Some(key.clone())).await;
    assert!(problems(dir.path(), Some(&key)).is_empty());
    // Someone without the key rebuilds a partition's chain from scratch.
    let chain =
        partition::partition_dir(dir.path(), Day::parse("2026-11-21").unwrap()).join("chain.jsonl");
    let text = std::fs::read_to_string(&chain).unwrap();
    let mut forged =
        ward_indexer::chain::ChainFile::open(&dir.path().join("forged"), None, None).unwrap();
    for line in text.lines() {
        let entry: ward_indexer::chain::Entry = serde_json::from_str(line).unwrap();
        forged.append(entry.body).unwrap();
    }
    drop(forged);
    std::fs::rename(dir.path().join("forged"), &chain).unwrap();
    let found = problems(dir.path(), Some(&key));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].2.iter().any(|p| p.contains("not signed")),
        "{found:?}"
    );
    // A wrong key fails everywhere.
    let wrong = HmacKey::from_bytes(b"not the key that signed anything");
    assert_eq!(problems(dir.path(), Some(&wrong)).len(), 4);
}

#[tokio::test]
async fn a_snapshot_taken_during_ingest_restores_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for b in 0..60u64 {
                let batch = (0..50)
                    .map(|i| {
                        audit(
                            b * 50 + i,
                            at("2026-11-23T08:00:00Z")
                                + chrono::Duration::seconds((b * 50 + i) as i64),
                        )
                    })
                    .collect();
                store.ingest(batch).await.unwrap();
                acked += 50;
            }
            acked
        })
    };
    // Snapshot while batches keep committing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = store.num_docs();
    let out = dir.path().join("snap.tar.zst");
    let data = dir.path().to_owned();
    let out2 = out.clone();
    // Another store's dump rides along as an extra file.
    let dump = dir.path().join("other.ndjson");
    std::fs::write(&dump, "{\"x\":1}\n").unwrap();
    let extra = vec![snapshot::Extra {
        name: "other.ndjson".into(),
        path: dump,
        counts: [("things".to_string(), 1)].into_iter().collect(),
    }];
    let bad = snapshot::Extra {
        name: "partitions/x".into(),
        ..extra[0].clone()
    };
    assert!(snapshot::create_with(dir.path(), &out, &[bad]).is_err());
    assert!(!out.exists());
    let manifest = tokio::task::spawn_blocking(move || snapshot::create_with(&data, &out2, &extra))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.extra[0].counts["things"], 1);
    let acked = writer.await.unwrap();
    assert_eq!(acked, 3000);
    let in_snapshot: u64 = manifest.partitions.iter().map(|p| p.records).sum();
    assert!(in_snapshot >= before, "{in_snapshot} < {before}");
    store.shutdown().await;

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("data");
    let restored_manifest = snapshot::restore(&out, &target).unwrap();
    assert_eq!(restored_manifest.extra[0].name, "other.ndjson");
    assert_eq!(
        std::fs::read_to_string(target.join("other.ndjson")).unwrap(),
        "{\"x\":1}\n"
    );
    let report = verify::verify(&target, None).unwrap();
    assert!(report.is_intact(), "{report:#?}");
    let store = Store::open(config(&target)).unwrap();
    assert_eq!(store.num_docs(), in_snapshot);
    let hits = search(&store, "verb:get", None, None).await;
    assert_eq!(hits.len() as u64, in_snapshot);
    store.shutdown().await;
    // Restoring over existing data is refused.
    assert!(snapshot::restore(&out, &target).is_err());
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Map<String, Value>>>);

impl IngestTap for Recorder {
    fn observe(&self, batch: &[ParsedRecord<'_>]) {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|r| r.hit.to_map()));
    }
}

/// A store whose ingest tap records every hit it is shown.
fn store_with_recorder(dir: &Path) -> (Store, Arc<Recorder>) {
    let tap = Arc::new(Recorder::default());
    let mut c = config(dir);
    c.tap = Some(tap.clone());
    (Store::open(c).unwrap(), tap)
}

/// An audit event that creates a Secret, and a container line with a
/// bearer token: one record for each kind of redaction.
fn secret_and_credential() -> (DecodedRecord, DecodedRecord) {
    let mut secret = audit(1, at("2026-11-23T10:00:00Z"));
    secret.event.insert(
        "requestObject".into(),
        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"},
               "data": {"password": "aHVudGVyMg=="}}),
    );
    let line = container(
        2,
        at("2026-11-23T10:00:01Z"),
        "login with Authorization: Bearer abcdefghijklmnop123 ok",
    );
    (secret, line)
}

#[tokio::test]
async fn secrets_are_redacted_before_storage_but_rules_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tap) = store_with_recorder(dir.path());
    let (secret, line) = secret_and_credential();
    store.ingest(vec![secret, line]).await.unwrap();
    let hits = search(&store, "", None, None).await;
    let text = serde_json::to_string(&hits).unwrap();
    assert!(!text.contains("aHVudGVyMg=="), "{text}");
    assert!(!text.contains("abcdefghijklmnop123"), "{text}");
    assert!(text.contains("[REDACTED:bearer-token]"));
    // The hash is searchable, so "where else was this value written" works.
    let hashed = hits
        .iter()
        .find_map(|h| h["requestObject"]["data"]["password"].as_str())
        .unwrap()
        .to_owned();
    assert!(hashed.starts_with("sha256:"));
    let q = format!("requestObject.data.password:\"{hashed}\"");
    assert_eq!(search(&store, &q, None, None).await.len(), 1);
    // The tap saw the originals.
    let seen = tap.0.lock().unwrap().clone();
    assert_eq!(
        seen[0]["requestObject"]["data"]["password"],
        json!("aHVudGVyMg==")
    );
    assert!(
        seen[1]["message"]
            .as_str()
            .unwrap()
            .contains("abcdefghijklmnop123")
    );
    let counts = store.redactor().counts();
    assert_eq!(
        counts.iter().find(|(n, _)| *n == "secret-data").unwrap().1,
        1
    );
    assert_eq!(
        counts.iter().find(|(n, _)| *n == "bearer-token").unwrap().1,
        1
    );
    store.shutdown().await;
}

/// The store's own decoding of NDJSON batches (what the HTTP layer hands
/// it): the tap sees the originals in order, records are redacted, and a
/// batch that is refused leaves nothing behind — no document, no tap call,
/// no redaction counted (its sender sends it again).
#[tokio::test]
async fn ndjson_batches_are_decoded_redacted_and_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (store, tap) = store_with_recorder(dir.path());
    let (secret, line) = secret_and_credential();
    let batch = |records: &[DecodedRecord], tail: &[u8]| {
        let mut w = BatchWriter::new();
        for r in records {
            w.push(r).unwrap();
        }
        let mut bytes = w.take();
        bytes.extend_from_slice(tail);
        bytes
    };
    let counted = |store: &Store| {
        let counts = store.redactor().counts();
        let of = |name: &str| counts.iter().find(|(n, _)| *n == name).unwrap().1;
        (of("secret-data"), of("bearer-token"))
    };
    // Refused: a line that is not a record, after two redactable records.
    let err = store
        .ingest_ndjson(batch(&[secret.clone(), line.clone()], b"not json\n"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    // Refused: `source: ward`, in the envelope or in the event.
    let mut forged = audit(3, at("2026-11-23T10:00:02Z"));
    forged.source = SourceKind::Ward;
    let mut forged_event = audit(4, at("2026-11-23T10:00:03Z"));
    forged_event.event.insert("source".into(), json!("ward"));
    for forged in [forged, forged_event] {
        let err = store
            .ingest_ndjson(batch(&[line.clone(), forged], b""))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ward_indexer::Error::InvalidRequest(_)),
            "{err}"
        );
    }
    assert_eq!(store.num_docs(), 0);
    assert!(
        tap.0.lock().unwrap().is_empty(),
        "the tap saw a refused batch"
    );
    assert_eq!(counted(&store), (0, 0), "redactions of refused batches");
    // Accepted.
    let receipt = store
        .ingest_ndjson(batch(&[secret.clone(), line.clone()], b"\n  \n"))
        .await
        .unwrap();
    assert_eq!((receipt.records, receipt.duplicates), (2, 0));
    assert_eq!(counted(&store), (1, 1));
    let hits = search(&store, "", None, None).await;
    let text = serde_json::to_string(&hits).unwrap();
    assert!(!text.contains("aHVudGVyMg=="), "{text}");
    assert!(!text.contains("abcdefghijklmnop123"), "{text}");
    let seen = tap.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["requestObject"]["data"]["password"], "aHVudGVyMg==");
    assert!(
        seen[1]["message"]
            .as_str()
            .unwrap()
            .contains("abcdefghijklmnop123")
    );
    // What the tap saw is the hit as Ward's own records' path builds it.
    let expected = ward_indexer::document::key_and_hit(secret.clone()).1;
    assert_eq!(seen[0], expected);
    // A resend is recognised, redacted or not.
    let receipt = store
        .ingest_ndjson(batch(&[secret, line], b""))
        .await
        .unwrap();
    assert_eq!((receipt.records, receipt.duplicates), (2, 2));
    store.shutdown().await;
}
