//! Shared by `benches/ingest.rs` (criterion) and `examples/ingest_bench.rs`
//! (the one-shot 1M-event comparison): the replicated audit fixtures, the
//! two ingest paths being compared, and process CPU accounting.
//!
//! The two paths index the same documents into the same schema with the
//! same writer heap and thread count:
//! - [`run_ward`]: what the indexer does with a collector's batches —
//!   zstd NDJSON → `wire::decompress` → `Store::ingest_ndjson_blocking`
//!   (events parsed into trees, document build, group-commit writer), with
//!   several batches in flight as the collector keeps them;
//! - [`run_raw`]: documents already built as the store builds them, added
//!   to a tantivy `IndexWriter` directly, with one commit at the end.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexWriter, TantivyDocument};
use ward_event::audit::{self, Parsed};
use ward_event::wire::{self, BatchWriter, RawRecord};
use ward_event::{Record, RecordId, SourceKind};
use ward_indexer::document::{Prepared, TreeRecord};
use ward_indexer::schema::WardSchema;
use ward_indexer::{Store, StoreConfig};

/// The audit corpora of the test data (310 events in all).
pub const FIXTURES: &[&str] = &[
    "falco-traces/falco_k8s_audit_traces.jsonl",
    "panther-k8s/panther_k8s_audit_events.jsonl",
    "audit2rbac/demo.log",
];

/// The collector's default batch size (`CollectorConfig::batch_max_bytes`).
pub const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// The collector's default zstd level.
pub const ZSTD_LEVEL: i32 = 3;
/// Decompression limit used by the ingest path here.
pub const DECOMPRESS_LIMIT: usize = 64 * 1024 * 1024;

pub fn fixtures_dir() -> PathBuf {
    ward_testdata::fixtures()
}

/// The fixture events, parsed once. An event repeated byte for byte in
/// the fixtures is taken once: Ward stores an identical audit event once,
/// so its copies would not be indexed and the counts would not match.
pub fn templates() -> Vec<Map<String, Value>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for name in FIXTURES {
        let path = fixtures_dir().join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            for item in audit::parse_line(line) {
                if let Parsed::Event { raw, .. } = item
                    && seen.insert(raw.to_owned())
                    && let Ok(Value::Object(map)) = serde_json::from_str(raw)
                {
                    out.push(map);
                }
            }
        }
    }
    assert!(!out.is_empty(), "no fixture events found");
    out
}

/// The replicated corpus, as a collector would ship it.
pub struct Corpus {
    pub events: usize,
    /// Bytes of event JSON (what the audit log holds).
    pub event_bytes: u64,
    /// Bytes of NDJSON records (event + Ward's envelope), uncompressed.
    pub ndjson_bytes: u64,
    /// zstd-compressed batches.
    pub batches: Vec<Vec<u8>>,
    pub compressed_bytes: u64,
}

const TIME_KEYS: &[&str] = &["requestReceivedTimestamp", "stageTimestamp", "timestamp"];

/// Replicates the fixtures to `events` events, each copy with its own
/// auditID and timestamps (copy `k` is shifted by `k` seconds), and packs
/// them into batches with the collector's envelope, size and zstd level.
pub fn corpus(events: usize) -> Corpus {
    corpus_with(events, false)
}

/// Like [`corpus`]; with `one_day`, the events are instead spread evenly
/// over one UTC day in arrival order, as a live cluster's would be (the
/// fixtures' own times span years, so the plain corpus writes to many day
/// partitions in every batch, which live ingest does not).
pub fn corpus_with(events: usize, one_day: bool) -> Corpus {
    corpus_of(templates(), events, one_day, |_, _| true)
}

/// Like [`corpus_with`], from `templates`, keeping in copy `k` only the
/// templates `i` for which `keep(k, i)` holds (for example the events that
/// raise alerts in only one copy in a hundred, for a realistic alert rate).
pub fn corpus_of(
    templates: Vec<Map<String, Value>>,
    events: usize,
    one_day: bool,
    keep: impl Fn(usize, usize) -> bool,
) -> Corpus {
    let day_start = DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc);
    let step_nanos = 86_400_000_000_000i64 / events.max(1) as i64;
    let mut writer = BatchWriter::new();
    let mut batches = Vec::new();
    let mut event_bytes = 0u64;
    let mut ndjson_bytes = 0u64;
    let mut compressed_bytes = 0u64;
    let mut offset = 0u64;
    let mut seal = |writer: &mut BatchWriter, batches: &mut Vec<Vec<u8>>| {
        let ndjson = writer.take();
        ndjson_bytes += ndjson.len() as u64;
        let body = wire::compress(&ndjson, ZSTD_LEVEL);
        compressed_bytes += body.len() as u64;
        batches.push(body);
    };
    let (keep, count) = (&keep, templates.len());
    let picks = (0..).flat_map(move |copy| {
        (0..count)
            .filter(move |&i| keep(copy, i))
            .map(move |i| (copy, i))
    });
    for (n, (copy, template)) in picks.take(events).enumerate() {
        let mut event = templates[template].clone();
        let shift = chrono::Duration::seconds(copy as i64)
            + chrono::Duration::microseconds(template as i64);
        let audit_id = match event.get("auditID").and_then(Value::as_str) {
            Some(id) => format!("{id}-{copy:07}"),
            None => format!("bench-{n}"),
        };
        event.insert("auditID".into(), Value::String(audit_id));
        for key in TIME_KEYS {
            if let Some(Value::String(t)) = event.get_mut(*key)
                && let Ok(parsed) = DateTime::parse_from_rfc3339(t)
            {
                let time = if one_day {
                    day_start + chrono::Duration::nanoseconds(step_nanos * n as i64)
                } else {
                    parsed.with_timezone(&Utc) + shift
                };
                *t = time.to_rfc3339_opts(SecondsFormat::Micros, true);
            }
        }
        let timestamp = audit::event_time(&event).unwrap_or_else(Utc::now);
        let raw = serde_json::to_string(&event).expect("a Map serializes");
        let record: RawRecord = Record {
            id: RecordId::File {
                fingerprint: "bench0000000000000000",
                epoch: 0,
                offset,
                piece: 0,
                item: None,
            }
            .to_string(),
            source: SourceKind::Audit,
            timestamp,
            cluster: Some("bench".into()),
            node: Some(format!("node-{}", copy % 4)),
            flags: Vec::new(),
            parse_error: None,
            file: Some("/var/log/kubernetes/audit/audit.log".into()),
            offset: Some(offset),
            event: (),
        };
        offset += raw.len() as u64 + 1;
        event_bytes += raw.len() as u64 + 1;
        writer.push_raw(&record, &raw).expect("a record encodes");
        if writer.bytes() >= BATCH_MAX_BYTES {
            seal(&mut writer, &mut batches);
        }
    }
    if !writer.is_empty() {
        seal(&mut writer, &mut batches);
    }
    Corpus {
        events,
        event_bytes,
        ndjson_bytes,
        batches,
        compressed_bytes,
    }
}

/// Index settings shared by both paths.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub writer_threads: usize,
    pub writer_heap_bytes: usize,
    /// Batches in flight on the Ward path (the collector's default is 4).
    pub senders: usize,
    pub commit_interval: Duration,
    /// Threads searching in a loop while the Ward path ingests (0: none).
    pub search_threads: usize,
    /// After every this many batches, the batch `replay_lag` batches
    /// earlier is sent again (replays in the stream; 0: none).
    pub replay_every: usize,
    pub replay_lag: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = StoreConfig::new("unused");
        Settings {
            writer_threads: defaults.writer_threads,
            writer_heap_bytes: defaults.writer_heap_bytes,
            senders: 4,
            commit_interval: defaults.commit_interval,
            search_threads: 0,
            replay_every: 0,
            replay_lag: 100,
        }
    }
}

/// Wall and process CPU time of a measured region.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub wall: Duration,
    pub cpu: Duration,
}

impl Measured {
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Measures wall and process CPU time of `f`.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let out = f();
    let wall = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    (out, Measured { wall, cpu })
}

/// User + system CPU time of this process (all threads, live or exited),
/// from `/proc/self/stat`; `children` gives that of waited-for children.
fn stat_cpu(children: bool) -> Duration {
    // USER_HZ is 100 on every Linux architecture Ward runs on.
    const TICKS_PER_SEC: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), cutime and cstime 16 and 17.
    let (a, b) = if children { (12, 13) } else { (10, 11) };
    let ticks = fields.get(a).copied().unwrap_or(0) + fields.get(b).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

pub fn process_cpu() -> Duration {
    stat_cpu(false)
}

pub fn children_cpu() -> Duration {
    stat_cpu(true)
}

/// A line of `/proc/self/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until this process is (nearly) idle: tantivy merges segments in
/// background threads after commits. Returns the CPU time spent meanwhile.
pub fn wait_idle(max: Duration) -> Duration {
    let start = process_cpu();
    let deadline = Instant::now() + max;
    loop {
        let before = process_cpu();
        std::thread::sleep(Duration::from_millis(500));
        let used = process_cpu().saturating_sub(before);
        if used <= Duration::from_millis(20) || Instant::now() >= deadline {
            return process_cpu().saturating_sub(start);
        }
    }
}

/// Total size of the files under `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Result of the Ward path.
#[derive(Debug, Clone, Copy)]
pub struct WardRun {
    /// From the first batch taken to the last acknowledgement.
    pub ingest: Measured,
    pub commits: u64,
    pub docs: u64,
    /// Searches completed while ingesting (with `search_threads`).
    pub searches: u64,
    /// CPU spent by background merges after the last acknowledgement.
    pub trailing_cpu: Duration,
    /// Records sent again (with `replay_every`), all recognised as replays.
    pub replayed: u64,
    pub index_bytes: u64,
}

/// Ward end to end: `senders` threads each take the next compressed batch,
/// decompress and `ingest_ndjson_blocking` it (which parses and builds documents and
/// waits for the group commit that acknowledges the batch).
pub fn run_ward(corpus: &Corpus, settings: &Settings, dir: &Path) -> WardRun {
    let mut config = StoreConfig::new(dir);
    config.writer_threads = settings.writer_threads;
    config.writer_heap_bytes = settings.writer_heap_bytes;
    config.commit_interval = settings.commit_interval;
    config.queue_timeout = Duration::from_secs(600);
    let store = Store::open(config).expect("open store");
    let next = AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let searches = AtomicUsize::new(0);
    let replayed = AtomicUsize::new(0);
    let ((), ingest) = measure(|| {
        std::thread::scope(|s| {
            for t in 0..settings.search_threads {
                let (store, done, searches) = (&store, &done, &searches);
                s.spawn(move || {
                    // What an analyst runs: a selective term, a phrase, a
                    // time-bounded query, each for the newest 100 hits.
                    let queries = [
                        "objectRef.resource:secrets AND verb:get",
                        "user.username:\"system:serviceaccount:kube-system:replicaset-controller\"",
                        "responseStatus.code:[400 TO 499]",
                        "_exists_:impersonatedUser",
                    ];
                    let mut i = t;
                    while !done.load(Ordering::Relaxed) {
                        let request = ward_indexer::SearchRequest {
                            query: queries[i % queries.len()].into(),
                            start: None,
                            end: None,
                            limit: 100,
                            ..Default::default()
                        };
                        store.search_blocking(&request).expect("search");
                        searches.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                });
            }
            let mut senders = Vec::new();
            for _ in 0..settings.senders.max(1) {
                let (replayed, next, store) = (&replayed, &next, &store);
                senders.push(s.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = corpus.batches.get(i) else {
                            break;
                        };
                        let ndjson = wire::decompress(body, DECOMPRESS_LIMIT).expect("decompress");
                        store.ingest_ndjson_blocking(ndjson).expect("ingest");
                        let every = settings.replay_every;
                        if every > 0 && i % every == 0 && i >= settings.replay_lag {
                            let again = &corpus.batches[i - settings.replay_lag];
                            let ndjson =
                                wire::decompress(again, DECOMPRESS_LIMIT).expect("decompress");
                            let r = store.ingest_ndjson_blocking(ndjson).expect("replay");
                            assert_eq!(r.duplicates, r.records, "a resent batch is all replays");
                            replayed.fetch_add(r.records, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for sender in senders {
                let _ = sender.join();
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    let docs = store.num_docs();
    let commits = store.stats().commits.load(Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Merges still running when the last batch was acknowledged finish
    // during shutdown: counted as trailing CPU, like the raw path's.
    let ((), shutdown) = measure(|| runtime.block_on(store.shutdown()));
    drop(store);
    let trailing_cpu = shutdown.cpu + wait_idle(Duration::from_secs(120));
    WardRun {
        ingest,
        searches: searches.load(Ordering::Relaxed) as u64,
        commits,
        docs,
        trailing_cpu,
        replayed: replayed.load(Ordering::Relaxed) as u64,
        index_bytes: disk_bytes(dir),
    }
}

/// Single-threaded wall time of the steps before tantivy, over the whole
/// corpus (one thread, so wall time is that thread's CPU time on an idle core).
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    pub decompress: Duration,
    pub decode: Duration,
    pub build: Duration,
}

/// Decodes a batch as the store does: events as trees borrowing from it.
fn decode_trees(ndjson: &[u8]) -> Vec<TreeRecord<'_>> {
    wire::records(ndjson)
        .collect::<Result<_, _>>()
        .expect("decode")
}

/// Builds a record's document as the store does (without redaction).
fn build_tree(schema: &WardSchema, record: TreeRecord<'_>) -> TantivyDocument {
    Prepared::new(record).build(schema, None).doc
}

/// Decompresses, decodes and builds every document of the corpus (outside
/// any indexing), batch by batch, timing each step.
pub fn build_documents(corpus: &Corpus, schema: &WardSchema) -> (Vec<TantivyDocument>, Phases) {
    let mut phases = Phases::default();
    let mut docs = Vec::with_capacity(corpus.events);
    for body in &corpus.batches {
        let t = Instant::now();
        let ndjson = wire::decompress(body, DECOMPRESS_LIMIT).expect("decompress");
        phases.decompress += t.elapsed();
        let t = Instant::now();
        let records = decode_trees(&ndjson);
        phases.decode += t.elapsed();
        let t = Instant::now();
        docs.extend(records.into_iter().map(|r| build_tree(schema, r)));
        phases.build += t.elapsed();
    }
    (docs, phases)
}

/// The same steps as [`build_documents`] on the first `max_batches`
/// batches, without keeping anything (as in the ingest path, where memory is
/// reused batch after batch): a cleaner per-event cost of each step.
pub fn profile_phases(corpus: &Corpus, schema: &WardSchema, max_batches: usize) -> (Phases, usize) {
    let mut phases = Phases::default();
    let mut events = 0;
    for body in corpus.batches.iter().take(max_batches) {
        let t = Instant::now();
        let ndjson = wire::decompress(body, DECOMPRESS_LIMIT).expect("decompress");
        phases.decompress += t.elapsed();
        let t = Instant::now();
        let records = decode_trees(&ndjson);
        phases.decode += t.elapsed();
        events += records.len();
        let t = Instant::now();
        let docs: Vec<TantivyDocument> =
            records.into_iter().map(|r| build_tree(schema, r)).collect();
        phases.build += t.elapsed();
        drop(std::hint::black_box(docs));
    }
    (phases, events)
}

/// Result of the raw tantivy path.
#[derive(Debug, Clone, Copy)]
pub struct RawRun {
    /// `add_document` for every document and one commit.
    pub index: Measured,
    pub commit: Measured,
    /// CPU spent by merges after the commit.
    pub trailing_cpu: Duration,
    pub docs: u64,
    pub index_bytes: u64,
}

/// Raw tantivy: the same documents, same schema, same heap and threads,
/// added directly and committed once; with tantivy's default index settings
/// (LZ4 document store in 16 KiB blocks), or with Ward's (`ward_settings`:
/// zstd in 1 MiB blocks, see `partition::index_settings`).
pub fn run_raw(
    docs: Vec<TantivyDocument>,
    settings: &Settings,
    dir: &Path,
    ward_settings: bool,
) -> RawRun {
    let schema = WardSchema::new();
    let directory = MmapDirectory::open(dir).expect("open directory");
    let index_settings = if ward_settings {
        ward_indexer::partition::index_settings()
    } else {
        tantivy::IndexSettings::default()
    };
    let index = Index::builder()
        .schema(schema.schema.clone())
        .settings(index_settings)
        .open_or_create(directory)
        .expect("create index");
    WardSchema::register_tokenizers(&index);
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(settings.writer_threads.max(1), settings.writer_heap_bytes)
        .expect("writer");
    let mut commit = Measured::default();
    let ((), index_time) = measure(|| {
        for doc in docs {
            writer.add_document(doc).expect("add_document");
        }
        ((), commit) = measure(|| {
            writer.commit().expect("commit");
        });
    });
    let (_, merge_cpu) = measure(|| writer.wait_merging_threads().expect("merges"));
    let trailing_cpu = merge_cpu.cpu + wait_idle(Duration::from_secs(120));
    let reader = index.reader().expect("reader");
    RawRun {
        index: index_time,
        commit,
        trailing_cpu,
        docs: reader.searcher().num_docs(),
        index_bytes: disk_bytes(dir),
    }
}
