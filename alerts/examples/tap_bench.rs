//! Ingest throughput with detection on versus off, in one run: the same
//! replicated audit corpus (the indexer bench's, see
//! `indexer/benches/support/mod.rs`) through `Store::ingest_blocking` with
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
//! The corpus is attack-dense (every copy of the fixtures carries its own
//! auditIDs, so every copy of a triggering event raises new alerts): this is
//! a worst case for the alert store, not a typical cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../indexer/benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    fn observe(&self, batch: &[ward_indexer::ParsedRecord]) {
        let mut engine = self.engine.lock().unwrap();
        let mut out = Vec::new();
        for r in batch {
            if r.hit.get("source").and_then(|v| v.as_str()) != Some("audit") {
                continue;
            }
            let t = ward_rules::event_time(&r.hit).unwrap_or_default();
            out.clear();
            engine.process_map(&r.hit, t, &mut out);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Eval,
    On,
}

fn run(corpus: &support::Corpus, mode: Mode, dir: &std::path::Path) -> (Measured, u64, u64) {
    let mut config = StoreConfig::new(dir);
    config.queue_timeout = Duration::from_secs(600);
    let alerts = AlertStore::open(&dir.join("alerts.redb")).unwrap();
    let (rules, errors) = ward_rules::RuleSet::builtin();
    assert!(errors.is_empty());
    config.tap = match mode {
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
                        let records = wire::decode(&ndjson).unwrap();
                        store.ingest_blocking(records).unwrap();
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
    (m, docs, alerts.count().unwrap())
}

fn main() {
    let mut events = 200_000usize;
    let mut runs = 2usize;
    let mut one_day = false;
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
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    let corpus = support::corpus_with(events, one_day);
    println!(
        "corpus: {} events, {:.1} MB event JSON, {} batches",
        corpus.events,
        corpus.event_bytes as f64 / 1e6,
        corpus.batches.len()
    );
    println!("| run | rules | wall s | CPU s | events/s | events per CPU-s | alerts stored |");
    println!("|---|---|---:|---:|---:|---:|---:|");
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
            let (m, docs, alerts) = run(&corpus, mode, dir.path());
            assert_eq!(docs as usize, events);
            let eps = events as f64 / m.wall.as_secs_f64();
            let epc = events as f64 / m.cpu.as_secs_f64();
            per_cpu[mode as usize].push(epc);
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
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
                alerts
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
    println!("load average at end: {}", load().trim());
}
