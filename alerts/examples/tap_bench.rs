//! Ingest throughput with detection on versus off, in one run: the same
//! replicated audit corpus (the indexer bench's, see
//! `indexer/benches/support/mod.rs`) through `Store::ingest_ndjson_blocking` with
//! 4 batches in flight, once without a tap and once with [`RulesTap`]
//! running the whole built-in pack and storing alerts in redb.
//!
//! ```text
//! cargo run --release -p ward-alerts --example tap_bench -- --events 200000 --runs 2
//! ```
//!
//! A third mode, `eval`, runs the same engine in a tap that drops what it
//! raises: the cost of evaluation alone, without the alert store.
//!
//! By default the corpus is attack-dense (every copy of the fixtures carries
//! its own auditIDs, so every copy of a triggering event raises new
//! alerts): a worst case for the alert store, not a typical cluster. With
//! `--alert-every K` the fixture events that raise alerts are in only one
//! copy in K, the others in every copy.
//!
//! ```text
//! cargo run --release -p ward-alerts --example tap_bench -- --events 200000 --one-day --alert-every 100
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../indexer/benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use support::{DECOMPRESS_LIMIT, Measured, measure};
use ward_alerts::{AlertStore, RulesTap, SinksConfig};
use ward_event::wire;
use ward_indexer::{IngestTap, Store, StoreConfig};

/// Evaluation only: the engine behind a mutex, alerts counted and dropped.
struct EvalOnly {
    engine: std::sync::Mutex<ward_rules::Engine>,
}

impl IngestTap for EvalOnly {
    fn observe(&self, batch: &[ward_indexer::ParsedRecord<'_>]) {
        let mut engine = self.engine.lock().unwrap();
        let mut out = Vec::new();
        for r in batch {
            if r.hit.get("source").and_then(|v| v.as_str()) != Some("audit") {
                continue;
            }
            let t = ward_rules::tree_event_time(r.hit).unwrap_or_default();
            out.clear();
            engine.process_tree(r.hit, t, &mut out);
        }
    }
}

/// Thread CPU time spent inside a tap: the rules' own share of the
/// process's CPU, which other load on the machine does not blur as much as
/// the difference between two whole runs.
struct Timed {
    inner: Arc<dyn IngestTap>,
    cpu_ns: Arc<AtomicU64>,
}

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl IngestTap for Timed {
    fn observe(&self, batch: &[ward_indexer::ParsedRecord<'_>]) {
        let start = thread_cpu_ns();
        self.inner.observe(batch);
        self.cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(start), Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Eval,
    On,
}

fn run(
    corpus: &support::Corpus,
    mode: Mode,
    dir: &std::path::Path,
) -> (Measured, u64, u64, Duration) {
    let mut config = StoreConfig::new(dir);
    config.queue_timeout = Duration::from_secs(600);
    let alerts = AlertStore::open(&dir.join("alerts.redb")).unwrap();
    let (rules, errors) = ward_rules::RuleSet::builtin();
    assert!(errors.is_empty());
    let tap_cpu = Arc::new(AtomicU64::new(0));
    let tap: Option<Arc<dyn IngestTap>> = match mode {
        Mode::Off => None,
        Mode::Eval => Some(Arc::new(EvalOnly {
            engine: std::sync::Mutex::new(ward_rules::Engine::new(rules)),
        }) as Arc<dyn IngestTap>),
        Mode::On => Some(Arc::new(RulesTap::new(
            rules,
            alerts.clone(),
            Arc::new(SinksConfig::default()),
            None,
        )) as Arc<dyn IngestTap>),
    };
    config.tap = tap.map(|inner| {
        Arc::new(Timed {
            inner,
            cpu_ns: tap_cpu.clone(),
        }) as Arc<dyn IngestTap>
    });
    let store = Store::open(config).unwrap();
    let next = AtomicUsize::new(0);
    let ((), m) = measure(|| {
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = corpus.batches.get(i) else {
                            break;
                        };
                        let ndjson = wire::decompress(body, DECOMPRESS_LIMIT).unwrap();
                        store.ingest_ndjson_blocking(ndjson).unwrap();
                    }
                });
            }
        });
    });
    let docs = store.num_docs();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.shutdown());
    support::wait_idle(Duration::from_secs(60));
    (
        m,
        docs,
        alerts.count().unwrap(),
        Duration::from_nanos(tap_cpu.load(Ordering::Relaxed)),
    )
}

fn main() {
    let mut events = 200_000usize;
    let mut runs = 2usize;
    let mut one_day = false;
    let mut alert_every = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--events N")
            }
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--one-day" => one_day = true,
            "--alert-every" => {
                alert_every = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&k| k > 0)
                    .expect("--alert-every K (K ≥ 1)")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    // Templates that raise an alert on their own, at any level: with
    // `--alert-every K`, only one copy in K carries them.
    let templates = support::templates();
    let (rules, _) = ward_rules::RuleSet::builtin();
    let raises: Vec<bool> = templates
        .iter()
        .map(|t| {
            let mut engine = ward_rules::Engine::new(rules.clone());
            let mut out = Vec::new();
            engine.process_map(t, ward_rules::event_time(t).unwrap_or_default(), &mut out);
            !out.is_empty()
        })
        .collect();
    println!(
        "{} of {} templates raise alerts; they are in one copy of the fixtures in {alert_every}",
        raises.iter().filter(|r| **r).count(),
        templates.len()
    );
    let corpus = support::corpus_of(templates, events, one_day, |copy, i| {
        !raises[i] || copy % alert_every == 0
    });
    println!(
        "corpus: {} events, {:.1} MB event JSON, {} batches",
        corpus.events,
        corpus.event_bytes as f64 / 1e6,
        corpus.batches.len()
    );
    println!(
        "| run | rules | wall s | CPU s | events/s | events per CPU-s | alerts stored | CPU s in the tap | tap / rest of CPU |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut tap_share = [Vec::new(), Vec::new(), Vec::new()];
    let mut per_cpu = [Vec::new(), Vec::new(), Vec::new()];
    for r in 0..runs {
        // Alternate the order so that drift in machine load hits all modes.
        let order = if r % 2 == 0 {
            [Mode::Off, Mode::Eval, Mode::On]
        } else {
            [Mode::On, Mode::Eval, Mode::Off]
        };
        for mode in order {
            let dir = tempfile::tempdir().unwrap();
            let (m, docs, alerts, tap) = run(&corpus, mode, dir.path());
            let share = tap.as_secs_f64() / (m.cpu.as_secs_f64() - tap.as_secs_f64()).max(1e-9);
            tap_share[mode as usize].push(share);
            assert_eq!(docs as usize, events);
            let eps = events as f64 / m.wall.as_secs_f64();
            let epc = events as f64 / m.cpu.as_secs_f64();
            per_cpu[mode as usize].push(epc);
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {:.2} | {:.1}% |",
                r + 1,
                match mode {
                    Mode::Off => "off",
                    Mode::Eval => "eval only",
                    Mode::On => "on (alerts stored)",
                },
                m.wall.as_secs_f64(),
                m.cpu.as_secs_f64(),
                eps,
                epc,
                alerts,
                tap.as_secs_f64(),
                share * 100.0
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, eval, on) = (mean(&per_cpu[0]), mean(&per_cpu[1]), mean(&per_cpu[2]));
    println!(
        "mean events per CPU-s: off {off:.0}, eval only {eval:.0} (+{:.1}% CPU per event), on {on:.0} (+{:.1}%)",
        (off / eval - 1.0) * 100.0,
        (off / on - 1.0) * 100.0
    );
    println!(
        "mean CPU in the tap per CPU of the rest of ingest: eval only {:.1}%, on {:.1}%",
        mean(&tap_share[1]) * 100.0,
        mean(&tap_share[2]) * 100.0
    );
    println!("load average at end: {}", load().trim());
}
