//! What an operator sees of an idle or trickling Ward: the CPU a real
//! `ward collector` process uses over quiet files, over a slow trickle of
//! lines and over a bulk write (the same run's reference), and the CPU of a
//! whole `ward up` at rest. BENCHMARKS.md ("Idle and trickle").
//!
//! ```text
//! cargo run --release -p ward-e2e --example idle_bench -- files --files 500 --secs 60
//! cargo run --release -p ward-e2e --example idle_bench -- up --secs 60
//! ```
//!
//! `files` starts a real indexer and collector on loopback (the `ward`
//! binary of the bench's profile, built first), writes one line into each of `--files`
//! kubelet-style files and waits until the collector has them acknowledged.
//! Then, each for `--secs`: nothing is written (idle); `--rate` lines a
//! second are written round-robin over the files (trickle); and finally
//! `--bulk-mib` MiB are appended at once and timed until acknowledged
//! (bulk). CPU is the collector process's user + system time from
//! `/proc/<pid>/stat` over each phase, and its wake-ups and discoveries come
//! from its own `/metrics`.
//!
//! `up` runs `ward up` in a temporary folder, lets its demo story play
//! (`--settle`), and measures the whole process over `--secs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ward_e2e::proc::{cores, cpu_time as cpu_of, loadavg, status_kib};
use ward_e2e::{Process, append, args, free_port, scrape, start_indexer, wait_until};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// A collector over quiet files, then a trickle, then a bulk write.
    Files {
        #[arg(long, default_value_t = 500)]
        files: usize,
        /// Length of the idle and the trickle phase.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Lines a second in the trickle phase, spread over the files.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// MiB appended at once in the bulk phase.
        #[arg(long, default_value_t = 64)]
        bulk_mib: u64,
    },
    /// `ward up` at rest after its demo story.
    Up {
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Seconds to let the demo's first story play before measuring.
        #[arg(long, default_value_t = 15)]
        settle: u64,
    },
}

fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

/// CPU of `pid` while `work` runs, as (CPU time, wall time).
fn measure(pid: u32, work: impl FnOnce()) -> (Duration, Duration) {
    let (cpu0, t0) = (cpu_of(pid), Instant::now());
    work();
    (cpu_of(pid) - cpu0, t0.elapsed())
}

fn share(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
}

fn sum(metrics: &HashMap<String, f64>, prefix: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn cri_line(i: u64, pad: usize) -> String {
    format!(
        "2026-12-07T10:00:00.{:09}Z stdout F GET /api/cart/{i} 200 {:pad$}\n",
        i % 1_000_000_000,
        ""
    )
}

fn files_bench(files: usize, secs: u64, rate: u64, bulk_mib: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("logs");
    let paths: Vec<PathBuf> = (0..files)
        .map(|i| root.join(format!("pods/bench_p{i}_uid-{i}/app/0.log")))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        append(p, cri_line(i as u64, 0).as_bytes());
    }
    let port = free_port();
    let metrics_port = free_port();
    let _indexer = start_indexer("indexer", dir.path(), port, &[]);
    let url = format!("http://127.0.0.1:{port}");
    ward_e2e::Client::new(&url).wait_healthy(Duration::from_secs(60));
    let args = args(&[
        "collector",
        "--indexer",
        &url,
        "--state",
        &dir.path().join("state").display().to_string(),
        "--containers",
        &root.join("pods/*/*/*.log").display().to_string(),
        "--node",
        "bench",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let collector = Process::start("collector", dir.path(), &args);
    let pid = collector.pid().expect("collector pid");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let settled = |lines: f64| {
        wait_until("collector settled", Duration::from_secs(600), || {
            let m = scrape(&metrics_url)?;
            let read = sum(&m, "ward_collector_lines_read_total");
            let lag = m.get("ward_collector_checkpoint_lag_bytes").copied()?;
            (read >= lines && lag == 0.0).then_some(())
        })
    };
    settled(files as f64);
    std::thread::sleep(Duration::from_secs(2));

    println!("machine: {} cores; load {}", cores(), loadavg());
    println!(
        "collector over {files} files; phase | CPU s | wall s | % of a core | wake-ups | discoveries | RSS MiB"
    );
    let report = |name: &str, cpu: Duration, wall: Duration, before: &HashMap<String, f64>| {
        let after = scrape(&metrics_url).unwrap_or_default();
        let delta = |p: &str| sum(&after, p) - sum(before, p);
        println!(
            "{name} | {:.2} | {:.1} | {:.2}% | {} | {} | {:.1}",
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            share(cpu, wall),
            delta("ward_collector_wakeups_total"),
            delta("ward_collector_discovery_scans_total"),
            rss_mib(pid),
        );
    };

    let before = scrape(&metrics_url).unwrap_or_default();
    let (cpu, wall) = measure(pid, || std::thread::sleep(Duration::from_secs(secs)));
    report("idle", cpu, wall, &before);

    // Trickle: `rate` lines a second, each to the next file, at even times.
    let before = scrape(&metrics_url).unwrap_or_default();
    let total = rate * secs;
    let mut written = 0u64;
    let (cpu, wall) = measure(pid, || {
        let start = Instant::now();
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let line = cri_line(i, 80);
            written += line.len() as u64;
            append(&paths[i as usize % files], line.as_bytes());
        }
        settled(files as f64 + total as f64);
    });
    report("trickle", cpu, wall, &before);
    let trickle_mb_per_cpu = written as f64 / 1e6 / cpu.as_secs_f64();
    println!(
        "trickle: {total} lines, {:.2} MB, {:.1} MB per CPU-second, {:.0} µs CPU per line",
        written as f64 / 1e6,
        trickle_mb_per_cpu,
        cpu.as_secs_f64() * 1e6 / total as f64
    );

    // Bulk: the same lines, `bulk_mib` MiB appended over the files at once.
    let before = scrape(&metrics_url).unwrap_or_default();
    let per_file = (bulk_mib * 1024 * 1024 / files as u64).max(1);
    let mut bulk_lines = 0u64;
    let mut bulk_bytes = 0u64;
    let (cpu, wall) = measure(pid, || {
        for p in &paths {
            let mut text = String::new();
            while (text.len() as u64) < per_file {
                text.push_str(&cri_line(bulk_lines, 80));
                bulk_lines += 1;
            }
            bulk_bytes += text.len() as u64;
            append(p, text.as_bytes());
        }
        settled(files as f64 + (total + bulk_lines) as f64);
    });
    report("bulk", cpu, wall, &before);
    let bulk_mb_per_cpu = bulk_bytes as f64 / 1e6 / cpu.as_secs_f64();
    println!(
        "bulk: {bulk_lines} lines, {:.1} MB, {:.1} MB per CPU-second, {:.2} µs CPU per line",
        bulk_bytes as f64 / 1e6,
        bulk_mb_per_cpu,
        cpu.as_secs_f64() * 1e6 / bulk_lines as f64
    );
    println!(
        "trickle costs {:.1}x the bulk CPU per byte",
        bulk_mb_per_cpu / trickle_mb_per_cpu
    );
}

fn up_bench(secs: u64, settle: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let args = args(&[
        "up",
        "--data",
        &dir.path().join("data").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let up = Process::start("up", dir.path(), &args);
    let pid = up.pid().expect("ward up pid");
    ward_e2e::Client::new(format!("http://127.0.0.1:{port}")).wait_healthy(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(settle));
    let (cpu, wall) = measure(pid, || std::thread::sleep(Duration::from_secs(secs)));
    println!("machine: {} cores; load {}", cores(), loadavg());
    println!(
        "ward up at rest: {:.2} CPU s over {:.1} s = {:.2}% of a core; RSS {:.1} MiB",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        share(cpu, wall),
        rss_mib(pid)
    );
}

fn main() {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Files {
            files,
            secs,
            rate,
            bulk_mib,
        } => files_bench(files, secs, rate, bulk_mib),
        Bench::Up { secs, settle } => up_bench(secs, settle),
    }
}
