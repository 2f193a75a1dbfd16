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
//! The corpus is attack-dense (every copy of the fixtures carries its own
//! auditIDs, so every copy of a triggering event raises new alerts): this is
//! a worst case for the alert store, not a typical cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../indexer/benches/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{DECOMPRESS_LIMIT, Measured, corpus, measure};
use ward_alerts::{AlertStore, RulesTap, SinksConfig};
use ward_event::wire;
use ward_indexer::{IngestTap, Store, StoreConfig};

fn run(corpus: &support::Corpus, tap: bool, dir: &std::path::Path) -> (Measured, u64, u64) {
    let mut config = StoreConfig::new(dir);
    config.queue_timeout = Duration::from_secs(600);
    let alerts = AlertStore::open(&dir.join("alerts.redb")).unwrap();
    let rules_tap = tap.then(|| {
        let (rules, errors) = ward_rules::RuleSet::builtin();
        assert!(errors.is_empty());
        Arc::new(RulesTap::new(
            rules,
            alerts.clone(),
            Arc::new(SinksConfig::default()),
            None,
        ))
    });
    config.tap = rules_tap.clone().map(|t| t as Arc<dyn IngestTap>);
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
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    let corpus = corpus(events);
    println!(
        "corpus: {} events, {:.1} MB event JSON, {} batches",
        corpus.events,
        corpus.event_bytes as f64 / 1e6,
        corpus.batches.len()
    );
    println!("| run | rules | wall s | CPU s | events/s | events per CPU-s | alerts stored |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut per_cpu = [Vec::new(), Vec::new()];
    for r in 0..runs {
        // Alternate the order so that drift in machine load hits both.
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for tap in order {
            let dir = tempfile::tempdir().unwrap();
            let (m, docs, alerts) = run(&corpus, tap, dir.path());
            assert_eq!(docs as usize, events);
            let eps = events as f64 / m.wall.as_secs_f64();
            let epc = events as f64 / m.cpu.as_secs_f64();
            per_cpu[usize::from(tap)].push(epc);
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
                r + 1,
                if tap { "on" } else { "off" },
                m.wall.as_secs_f64(),
                m.cpu.as_secs_f64(),
                eps,
                epc,
                alerts
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (mean(&per_cpu[0]), mean(&per_cpu[1]));
    println!(
        "mean events per CPU-s: off {off:.0}, on {on:.0}; rules cost {:.1}% of CPU per event",
        (off / on - 1.0) * 100.0
    );
    println!("load average at end: {}", load().trim());
}
