//! One-shot query latency benchmark: Ward's index against ripgrep over the
//! same events as raw NDJSON files, measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p ward-indexer --example query_bench -- --events 10000000
//! ```
//!
//! Options: `--events N` (10,000,000), `--ward-runs N` (200 timed runs of
//! each Ward query), `--rg-runs N` (10 of each ripgrep command), `--dir
//! PATH` (where index and NDJSON go; a temporary directory by default,
//! removed at the end), `--keep` (leave them).
//!
//! **Corpus.** The audit events of `testdata/` (Falco, Panther,
//! audit2rbac) are the shapes; request and response bodies are dropped, as
//! the `Metadata` level of an audit policy does for most resources, and so
//! are Panther's `p_*` enrichment keys and `impersonatedUser`. 70% of the
//! records are audit events with a user out of 5,000 people (skewed: a few
//! are very active) and 300 service accounts, one of 150 namespaces, a pod
//! name and a source IP; 30% are container log lines of 40 kinds, one of
//! which (about 0.5% of lines) says `connect: connection refused`. Record
//! times are evenly spread over the 7 days from 2026-11-16 in order. The
//! same records are written one JSON object per line into one file per day
//! (what the audit log and a log export hold), and ingested with
//! `Store::ingest_blocking` from two threads.
//!
//! **Queries**, each Ward's and ripgrep's, whose counts the bench checks
//! are equal (a line that differs is printed as a mismatch):
//!
//! | query | Ward (in process, `Store`) | ripgrep |
//! | --- | --- | --- |
//! | selective term | `user.username:"NAME"`, total + newest 100 | `rg -c -F '"username":"NAME"'` over all files |
//! | phrase | `"connection refused"`, total + newest 100 | `rg -c -F 'connection refused'` over all files |
//! | audit phrase | `"team-001:sa-001"` (field-less, over `_all`), total + newest 100 | `rg -c -F 'team-001:sa-001'` over all files |
//! | 24 h histogram | all records of one day, 1 h buckets | `rg -o -r '$1' '"(stageTimestamp\|timestamp)":"DAYT(\d\d)' DAY.ndjson \| sort \| uniq -c` |
//! | top-10 terms | `user.username`, top 10, all records | `rg -o -r '$1' '"username":"([^"]*)"' \| sort \| uniq -c \| sort -rn \| head -10` |

#[path = "../benches/support/mod.rs"]
mod support;

/// The allocator of the `ward` binary, so that the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use ward_event::SourceKind;
use ward_event::wire::DecodedRecord;
use ward_indexer::aggregate::{AggregateRequest, Interval};
use ward_indexer::{SearchRequest, Store, StoreConfig};

const DAYS: i64 = 7;
const PEOPLE: usize = 5_000;
const SERVICE_ACCOUNTS: usize = 300;
const NAMESPACES: usize = 150;
const BATCH: usize = 10_000;

struct Args {
    events: usize,
    ward_runs: usize,
    rg_runs: usize,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 10_000_000,
        ward_runs: 200,
        rg_runs: 10,
        dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| -> usize { v.parse().unwrap_or_else(|_| usage("not a number")) };
        match flag.as_str() {
            "--events" => args.events = number(value()),
            "--ward-runs" => args.ward_runs = number(value()).max(1),
            "--rg-runs" => args.rg_runs = number(value()).max(1),
            "--dir" => args.dir = Some(PathBuf::from(value())),
            "--keep" => args.keep = true,
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    args
}

fn usage(why: &str) -> ! {
    eprintln!(
        "query_bench: {why}\nusage: query_bench [--events N] [--ward-runs N] [--rg-runs N] [--dir PATH] [--keep]"
    );
    std::process::exit(2)
}

/// splitmix64: a deterministic corpus without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Skewed towards 0: a few values are very common, most are rare.
    fn skewed(&mut self, n: usize) -> usize {
        ((self.unit().powi(3) * n as f64) as usize).min(n - 1)
    }
}

const LOG_LINES: &[&str] = &[
    "GET /api/cart 200 12ms",
    "GET /api/products?page=2 200 31ms",
    "POST /api/checkout 201 88ms",
    "GET /healthz 200 0ms",
    "GET /metrics 200 2ms",
    "PUT /api/cart/items/17 204 9ms",
    "DELETE /api/session 204 3ms",
    "GET /api/users/me 401 1ms",
    "GET /static/app.js 304 0ms",
    "POST /api/login 200 140ms",
    "level=info msg=\"cache warmed\" entries=5120",
    "level=info msg=\"flushed batch\" rows=250 took=41ms",
    "level=debug msg=\"tick\" queue=0",
    "level=warn msg=\"slow query\" table=orders took=812ms",
    "level=error msg=\"payment provider timeout\" provider=acme after=30s",
    "level=info msg=\"leader elected\" id=worker-2",
    "level=info msg=\"reconcile finished\" object=default/web duration=18ms",
    "level=warn msg=\"retrying request\" attempt=2 backoff=200ms",
    "INFO  [main] o.a.k.clients.consumer.KafkaConsumer - subscribed to topic orders",
    "INFO  [pool-3] c.e.shop.OrderService - order 88123 placed",
    "WARN  [pool-1] c.e.shop.StockService - low stock sku=A-1022 left=3",
    "ERROR [pool-2] c.e.shop.MailService - smtp send failed: 421 try again later",
    "I1123 10:00:01.000001       1 controller.go:120] Starting workers",
    "I1123 10:00:02.000002       1 shared_informer.go:311] Caches are synced",
    "E1123 10:00:03.000003       1 reflector.go:147] watch closed with: too old resource version",
    "W1123 10:00:04.000004       1 warnings.go:70] v1 Endpoints is deprecated",
    "nginx: 10.2.0.8 - - \"GET /index.html HTTP/1.1\" 200 612",
    "nginx: 10.2.0.9 - - \"GET /favicon.ico HTTP/1.1\" 404 153",
    "redis: 1:M * Background saving started by pid 42",
    "redis: 1:M * DB saved on disk",
    "postgres: LOG:  checkpoint starting: time",
    "postgres: LOG:  checkpoint complete: wrote 120 buffers",
    "postgres: ERROR:  duplicate key value violates unique constraint \"orders_pkey\"",
    "worker: processed job 7781 in 1.2s",
    "worker: job 7782 failed: upstream returned 503, will retry",
    "envoy: upstream reset: reset reason: overflow",
    "grpc: transport is closing",
    "jvm: GC pause (G1 Evacuation Pause) 14ms",
    "node: listening on :8080",
];
const REFUSED: &str = "dial tcp 10.3.7.12:5432: connect: connection refused";

/// Audit event shapes from the fixtures, bodies and enrichment dropped.
fn shapes() -> Vec<Map<String, Value>> {
    let drop_keys = [
        "requestObject",
        "responseObject",
        "impersonatedUser",
        "timestamp",
        "metadata",
    ];
    support::templates()
        .into_iter()
        .map(|mut e| {
            e.retain(|k, _| !k.starts_with("p_") && !drop_keys.contains(&k.as_str()));
            e
        })
        .collect()
}

struct Generated {
    records: usize,
    ndjson_bytes: u64,
    /// user.username → events.
    users: BTreeMap<String, u64>,
}

/// Generates the corpus, writes it as NDJSON per day and ingests it.
fn generate(events: usize, store: &Store, ndjson_dir: &Path) -> Generated {
    let shapes = shapes();
    let mut rng = Rng(0x5eed);
    let start = DateTime::parse_from_rfc3339("2026-11-16T00:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc);
    let step = (DAYS * 86_400_000_000_000) / events.max(1) as i64;
    let mut users = BTreeMap::new();
    let mut ndjson_bytes = 0u64;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<DecodedRecord>>(4);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let batch = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(batch) = batch else { return };
                    store.ingest_blocking(batch).expect("ingest");
                }
            });
        }
        let mut day_file: Option<(i64, std::io::BufWriter<std::fs::File>)> = None;
        let mut batch = Vec::with_capacity(BATCH);
        for n in 0..events {
            let time = start + chrono::Duration::nanoseconds(step * n as i64);
            let day = (time - start).num_days();
            if day_file.as_ref().is_none_or(|(d, _)| *d != day) {
                let path = ndjson_dir.join(format!("{}.ndjson", time.format("%Y-%m-%d")));
                let file = std::fs::File::create(&path).expect("create ndjson file");
                day_file = Some((day, std::io::BufWriter::with_capacity(1 << 20, file)));
            }
            let t = time.to_rfc3339_opts(SecondsFormat::Micros, true);
            let ns = format!("team-{:03}", rng.skewed(NAMESPACES));
            let (source, event) = if rng.below(10) < 7 {
                let mut e = shapes[rng.below(shapes.len())].clone();
                let user = if rng.below(10) < 6 {
                    format!(
                        "system:serviceaccount:{ns}:sa-{:03}",
                        rng.skewed(SERVICE_ACCOUNTS)
                    )
                } else {
                    format!("user-{:04}@example.com", rng.skewed(PEOPLE))
                };
                *users.entry(user.clone()).or_insert(0) += 1;
                e.insert("auditID".into(), json!(format!("qb-{n:010}")));
                e.insert("requestReceivedTimestamp".into(), json!(t));
                e.insert("stageTimestamp".into(), json!(t));
                e.insert(
                    "user".into(),
                    json!({"username": user, "groups": ["system:authenticated"]}),
                );
                e.insert(
                    "sourceIPs".into(),
                    json!([format!(
                        "10.{}.{}.{}",
                        rng.below(4),
                        rng.below(256),
                        rng.below(256)
                    )]),
                );
                if let Some(Value::Object(obj)) = e.get_mut("objectRef") {
                    if obj.contains_key("namespace") {
                        obj.insert("namespace".into(), json!(ns));
                    }
                    if obj.contains_key("name") {
                        obj.insert(
                            "name".into(),
                            json!(format!("web-{:05x}", rng.below(1 << 20))),
                        );
                    }
                }
                (SourceKind::Audit, e)
            } else {
                let message = if rng.below(200) == 0 {
                    REFUSED
                } else {
                    LOG_LINES[rng.skewed(LOG_LINES.len())]
                };
                let pod = format!("app-{}-{:05x}", rng.below(40), rng.below(1 << 20));
                let e = json!({
                    "kubernetes": {"namespace": ns, "pod": pod, "container": "app"},
                    "stream": "stdout",
                    "message": message,
                });
                let Value::Object(e) = e else { unreachable!() };
                (SourceKind::Container, e)
            };
            // The NDJSON line: the audit event as the audit log holds it,
            // a container line as an export holds it (with its time).
            let line = match source {
                SourceKind::Audit => serde_json::to_string(&event),
                _ => {
                    let mut with_time = Map::new();
                    with_time.insert("timestamp".into(), json!(t));
                    with_time.extend(event.clone());
                    serde_json::to_string(&with_time)
                }
            }
            .expect("json");
            if let Some((_, w)) = day_file.as_mut() {
                w.write_all(line.as_bytes()).expect("write ndjson");
                w.write_all(b"\n").expect("write ndjson");
            }
            ndjson_bytes += line.len() as u64 + 1;
            batch.push(DecodedRecord {
                id: format!("qb:{n}"),
                source,
                timestamp: time,
                cluster: Some("bench".into()),
                node: Some(format!("node-{}", n % 8)),
                flags: vec![],
                parse_error: None,
                file: None,
                offset: None,
                event,
            });
            if batch.len() == BATCH {
                tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .expect("ingest threads alive");
            }
            if n > 0 && n % 1_000_000 == 0 {
                eprintln!("  generated {n} records");
            }
        }
        if !batch.is_empty() {
            tx.send(batch).expect("ingest threads alive");
        }
        if let Some((_, mut w)) = day_file.take() {
            w.flush().expect("flush ndjson");
        }
        drop(tx);
    });
    Generated {
        records: events,
        ndjson_bytes,
        users,
    }
}

/// p50 and p99 (nearest rank) of durations, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (rank(0.50), rank(0.99))
}

fn time_runs<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut out = f(); // warm-up, not timed
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        out = f();
        samples.push(t0.elapsed());
    }
    (samples, out)
}

fn sh(script: &str, dir: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of `rg -c` lines (`file:count`, or just `count`).
fn rg_count(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
        .sum()
}

/// `uniq -c` lines → (key, count).
fn uniq_counts(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let (n, key) = l.trim().split_once(' ')?;
            Some((key.to_owned(), n.parse().ok()?))
        })
        .collect()
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

struct Row {
    name: &'static str,
    ward: (f64, f64),
    rg: (f64, f64),
    rg_command: String,
    same: bool,
    matches: u64,
}

fn main() {
    let args = parse_args();
    if std::process::Command::new("rg")
        .arg("--version")
        .output()
        .is_err()
    {
        usage("ripgrep (rg) is not installed: apt-get install ripgrep");
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let index_dir = root.join("index");
    let ndjson_dir = root.join("ndjson");
    std::fs::create_dir_all(&ndjson_dir).expect("create ndjson dir");
    println!("query_bench: {} records, load {}", args.events, load_avg());

    let mut config = StoreConfig::new(&index_dir);
    config.queue_timeout = Duration::from_secs(600);
    let store = Store::open(config.clone()).expect("open store");
    let t0 = Instant::now();
    let generated = generate(args.events, &store, &ndjson_dir);
    let ingest_secs = t0.elapsed().as_secs_f64();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(store.shutdown());
    drop(store);
    let merge_cpu = support::wait_idle(Duration::from_secs(600));
    let store = Store::open(config).expect("reopen store");
    println!(
        "ingested {} records in {ingest_secs:.0} s (then {:.0} CPU-s of merges); index {:.2} GB in {} segments over {} day partitions; NDJSON {:.2} GB",
        store.num_docs(),
        merge_cpu.as_secs_f64(),
        support::disk_bytes(&index_dir) as f64 / 1e9,
        store.segment_count(),
        store.partitions().len(),
        generated.ndjson_bytes as f64 / 1e9,
    );
    assert_eq!(
        store.num_docs(),
        generated.records as u64,
        "every record indexed"
    );

    // The selective user: the one whose event count is closest to 1,000.
    let (user, user_events) = generated
        .users
        .iter()
        .filter(|(u, _)| u.starts_with("user-"))
        .min_by_key(|(_, n)| n.abs_diff(1_000))
        .map(|(u, n)| (u.clone(), *n))
        .expect("some users");
    println!("load before queries {}", load_avg());
    let mut rows = Vec::new();

    // A search for the total and newest 100 hits against `rg -c` over all
    // files; `expected` is the count the generator knows, if any.
    let count_row = |name: &'static str, query: String, cmd: String, expected: Option<u64>| {
        let request = SearchRequest::new(query, 100);
        let (samples, response) = time_runs(args.ward_runs, || {
            store.search_blocking(&request).expect("search")
        });
        let ward = percentiles(samples);
        let (samples, out) = time_runs(args.rg_runs, || sh(&cmd, &ndjson_dir));
        Row {
            name,
            ward,
            rg: percentiles(samples),
            same: response.total == rg_count(&out) && expected.is_none_or(|n| response.total == n),
            matches: response.total,
            rg_command: cmd,
        }
    };
    // 1. Selective term.
    rows.push(count_row(
        "selective term",
        format!("user.username:\"{user}\""),
        format!("rg -c -F '\"username\":\"{user}\"' ."),
        Some(user_events),
    ));
    // 2. Phrase over container lines (`message`).
    rows.push(count_row(
        "phrase",
        "\"connection refused\"".into(),
        "rg -c -F 'connection refused' .".into(),
        None,
    ));
    // 2b. A field-less phrase over audit values (`_all`).
    rows.push(count_row(
        "audit phrase",
        "\"team-001:sa-001\"".into(),
        "rg -c -F 'team-001:sa-001' .".into(),
        None,
    ));

    // 3. Date histogram over the fourth day, hourly.
    let day = DateTime::parse_from_rfc3339("2026-11-19T00:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc);
    let request = AggregateRequest {
        query: "*".into(),
        start: Some(day),
        end: Some(day + chrono::Duration::days(1)),
        histogram: Some(Interval::Fixed(Duration::from_secs(3600))),
        ..AggregateRequest::default()
    };
    let (samples, response) = time_runs(args.ward_runs, || {
        store.aggregate_blocking(&request).expect("aggregate")
    });
    let ward = percentiles(samples);
    let cmd = "rg -o --no-filename -r '$1' '\"(?:stageTimestamp|timestamp)\":\"2026-11-19T(\\d\\d)' 2026-11-19.ndjson | sort | uniq -c".to_owned();
    let (samples, out) = time_runs(args.rg_runs, || sh(&cmd, &ndjson_dir));
    let rg_hours: Vec<u64> = uniq_counts(&out).into_iter().map(|(_, n)| n).collect();
    let ward_hours: Vec<u64> = response
        .histogram
        .as_ref()
        .map(|h| h.buckets.iter().map(|b| b.count).collect())
        .unwrap_or_default();
    rows.push(Row {
        name: "24 h histogram (1 h buckets)",
        ward,
        rg: percentiles(samples),
        same: ward_hours == rg_hours && ward_hours.len() == 24,
        matches: response.total,
        rg_command: cmd,
    });

    // 4. Top-10 users over everything.
    let request = AggregateRequest {
        query: "*".into(),
        terms: Some(("user.username".into(), 10)),
        ..AggregateRequest::default()
    };
    let (samples, response) = time_runs(args.ward_runs, || {
        store.aggregate_blocking(&request).expect("aggregate")
    });
    let ward = percentiles(samples);
    let cmd = "rg -o --no-filename -r '$1' '\"username\":\"([^\"]*)\"' . | sort | uniq -c | sort -rn | head -10".to_owned();
    let (samples, out) = time_runs(args.rg_runs, || sh(&cmd, &ndjson_dir));
    let rg_top = uniq_counts(&out);
    let ward_top: Vec<(String, u64)> = response
        .terms
        .as_ref()
        .map(|t| t.buckets.iter().map(|b| (b.key.clone(), b.count)).collect())
        .unwrap_or_default();
    let counts = |v: &[(String, u64)]| v.iter().map(|(_, n)| *n).collect::<Vec<_>>();
    rows.push(Row {
        name: "top-10 terms (user.username)",
        ward,
        rg: percentiles(samples),
        // Ties may order differently; the counts must agree.
        same: counts(&ward_top) == counts(&rg_top) && ward_top.len() == 10,
        matches: response.total,
        rg_command: cmd,
    });
    println!("load after queries {}", load_avg());

    println!(
        "\n| query | matches | Ward p50 ms | Ward p99 ms | rg p50 ms | rg p99 ms | p50 ratio | p99 ratio | same result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0}x | {:.0}x | {} |",
            r.name,
            r.matches,
            r.ward.0,
            r.ward.1,
            r.rg.0,
            r.rg.1,
            r.rg.0 / r.ward.0.max(1e-6),
            r.rg.1 / r.ward.1.max(1e-6),
            if r.same { "yes" } else { "MISMATCH" }
        );
    }
    println!();
    for r in &rows {
        println!("rg ({}): {}", r.name, r.rg_command);
    }
    println!(
        "Ward runs {} per query (after one warm-up), rg runs {} per query (after one warm-up); selective user {user} ({user_events} events)",
        args.ward_runs, args.rg_runs
    );
    drop(store);
    if args.keep {
        println!("kept {}", root.display());
    } else if args.dir.is_some() {
        let _ = std::fs::remove_dir_all(&index_dir);
        let _ = std::fs::remove_dir_all(&ndjson_dir);
    }
}
