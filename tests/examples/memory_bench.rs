//! The indexer's memory as one day's volume grows, and its time from a
//! restart to the first acknowledged batch (issue 23). BENCHMARKS.md
//! ("Indexer memory and restart").
//!
//! ```text
//! cargo build --release -p ward
//! WARD_BIN=target/release/ward cargo run --release -p ward-e2e --example memory_bench -- --records 4000000
//! ```
//!
//! Starts a real `ward indexer` on loopback and posts `--records` small
//! container records of one day to `POST /api/v1/ingest` (zstd NDJSON
//! batches of `--batch`, four senders), pausing every `--sample-every`
//! records to take the least RssAnon of `/proc/<pid>/status` over 3 s (the
//! writer's buffer and merges come and go). The slope is taken
//! from the first sample at or after 1 million (warm-up) to the last. Then
//! the indexer is stopped (SIGTERM) and started again, and the bench times
//! from the start of the process to the first acknowledged new batch, and
//! then to the acknowledgement of a resent batch of the first records
//! (recognised as replays).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ward_e2e::proc::status_kib;
use ward_e2e::{Process, free_port, start_indexer};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 4_000_000)]
    records: u64,
    #[arg(long, default_value_t = 10_000)]
    batch: u64,
    #[arg(long, default_value_t = 500_000)]
    sample_every: u64,
}

/// The least `key` of `pid` over 3 s without ingest, sampled every 100 ms.
fn settled_kib(pid: u32, key: &str) -> u64 {
    (0..30)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            status_kib(pid, key)
        })
        .min()
        .unwrap_or(0)
}

/// Records `from..to`: small container lines of today, 1 ms apart from 01:00.
fn batch_body(from: u64, to: u64) -> Vec<u8> {
    let day = chrono_free_today();
    let mut ndjson = Vec::with_capacity(((to - from) * 220) as usize);
    for i in from..to {
        let ms = 3_600_000 + i; // from 01:00, 1 ms apart
        let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let _ = writeln!(
            ndjson,
            r#"{{"id":"bench-fp:{off}","source":"container","timestamp":"{day}T{h:02}:{m:02}:{s:02}.{f:03}Z","cluster":"bench","node":"node-1","file":"/var/log/pods/shop_cart_uid/app/0.log","offset":{off},"event":{{"message":"GET /api/cart/{i} 200 12ms","stream":"stdout","kubernetes":{{"namespace":"shop","pod":"cart","container":"app"}}}}}}"#,
            off = i * 120,
        );
    }
    zstd::bulk::compress(&ndjson, 1).expect("zstd")
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn chrono_free_today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn post(http: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Result<(), String> {
    let resp = http
        .post(format!("{url}/api/v1/ingest"))
        .header("content-encoding", "zstd")
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 => Ok(()),
        s => Err(format!("{s}: {}", resp.text().unwrap_or_default())),
    }
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = ward_e2e::Client::new(&url);
    let mut indexer = start_indexer("indexer", dir.path(), port, &[]);
    client.wait_healthy(Duration::from_secs(60));
    let pid = indexer.pid().expect("pid");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");

    println!("records | RssAnon MiB | VmRSS MiB | records/s since last");
    let next = Arc::new(AtomicU64::new(0));
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    let mut target = args.sample_every.min(args.records);
    while target <= args.records {
        let t0 = Instant::now();
        let first = next.load(Ordering::Relaxed);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (next, http, url) = (next.clone(), &http, &url);
                s.spawn(move || {
                    loop {
                        let from = next.fetch_add(args.batch, Ordering::Relaxed);
                        if from >= target {
                            return;
                        }
                        let to = (from + args.batch).min(target);
                        post(http, url, batch_body(from, to)).expect("ingest");
                    }
                });
            }
        });
        next.store(target, Ordering::Relaxed);
        // The writer's buffer and merges come and go: what stays is the
        // least the process holds over a few quiet seconds.
        let anon = settled_kib(pid, "RssAnon");
        println!(
            "{target} | {:.1} | {:.1} | {:.0}",
            anon as f64 / 1024.0,
            status_kib(pid, "VmRSS") as f64 / 1024.0,
            (target - first) as f64 / t0.elapsed().as_secs_f64()
        );
        samples.push((target, anon));
        if target == args.records {
            break;
        }
        target = (target + args.sample_every).min(args.records);
    }
    let wall = started.elapsed();
    let warm = samples
        .iter()
        .find(|(n, _)| *n >= 1_000_000)
        .copied()
        .unwrap_or(samples[0]);
    let last = *samples.last().expect("a sample");
    if last.0 > warm.0 {
        let slope = (last.1 as f64 - warm.1 as f64) / 1024.0 / ((last.0 - warm.0) as f64 / 1e6);
        println!(
            "RssAnon slope from {} to {} records: {slope:.2} MiB per million ({:.0} records/s overall)",
            warm.0,
            last.0,
            args.records as f64 / wall.as_secs_f64()
        );
    }

    indexer.stop();
    let restarted = Instant::now();
    let indexer = start_indexer("indexer-2", dir.path(), port, &[]);
    let new = args.records + 1_000_000;
    loop {
        match post(&http, &url, batch_body(new, new + 100)) {
            Ok(()) => break,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        assert!(restarted.elapsed() < Duration::from_secs(600), "no ack");
    }
    let first_ack = restarted.elapsed();
    let t = Instant::now();
    post(&http, &url, batch_body(0, args.batch)).expect("replayed batch");
    let replay_ack = t.elapsed();
    println!(
        "restart with {} records in the day: first new batch acknowledged {:.2} s after the process started; a resent batch of {} old records then took {:.2} s (RssAnon {:.1} MiB)",
        args.records,
        first_ack.as_secs_f64(),
        args.batch,
        replay_ack.as_secs_f64(),
        status_kib(indexer.pid().expect("pid"), "RssAnon") as f64 / 1024.0
    );
    let metrics = ward_e2e::scrape(&format!("{url}/metrics")).unwrap_or_default();
    for name in [
        "ward_indexer_duplicates_dropped_total",
        "ward_indexer_replay_lookups_total",
        "ward_indexer_replay_lookup_passes_total",
        "ward_indexer_replay_window_keys",
        "ward_indexer_replay_filter_bytes",
    ] {
        println!("{name} {}", metrics.get(name).copied().unwrap_or(-1.0));
    }
    drop::<Process>(indexer);
}
