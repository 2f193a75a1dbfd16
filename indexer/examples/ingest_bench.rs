//! One-shot ingest benchmark: Ward's end-to-end ingest against raw tantivy
//! indexing of the same documents, measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p ward-indexer --example ingest_bench -- --events 1000000
//! ```
//!
//! Options: `--events N` (1,000,000), `--senders N` (batches in flight, 4),
//! `--threads N` and `--heap-mib N` (tantivy writer, Ward's defaults),
//! `--commit-ms N` (Ward's group commit interval, 250), `--search-threads N`
//! (threads searching in a loop during Ward's ingest, 0), `--one-day`
//! (event times spread over one day, as live ingest; by default the
//! fixtures' own times, which span years), `--dir PATH`
//! (where the indexes are written; a temporary directory by default),
//! `--only ward|raw`.
//!
//! See `benches/support/mod.rs` for what each path does, and BENCHMARKS.md
//! for results.

#[path = "../benches/support/mod.rs"]
mod support;

/// The allocator of the `ward` binary, so that the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use support::{Measured, Settings};
use ward_indexer::schema::WardSchema;

struct Args {
    events: usize,
    settings: Settings,
    dir: Option<std::path::PathBuf>,
    /// Print where the bytes of Ward's index go, per field and structure.
    space: bool,
    only: Option<String>,
    one_day: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        settings: Settings::default(),
        dir: None,
        space: false,
        only: None,
        one_day: false,
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
            "--senders" => args.settings.senders = number(value()),
            "--threads" => args.settings.writer_threads = number(value()),
            "--heap-mib" => args.settings.writer_heap_bytes = number(value()) * 1024 * 1024,
            "--commit-ms" => {
                args.settings.commit_interval = Duration::from_millis(number(value()) as u64)
            }
            "--one-day" => args.one_day = true,
            "--search-threads" => args.settings.search_threads = number(value()),
            "--replay-every" => args.settings.replay_every = number(value()),
            "--replay-lag" => args.settings.replay_lag = number(value()),
            "--dir" => args.dir = Some(value().into()),
            "--only" => args.only = Some(value()),
            "--space" => args.space = true,
            "--bench" => {} // passed by `cargo bench`-style runners
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn usage(reason: &str) -> ! {
    eprintln!(
        "{reason}\nusage: ingest_bench [--events N] [--senders N] [--threads N] [--heap-mib N] [--commit-ms N] [--search-threads N] [--replay-every N] [--replay-lag N] [--one-day] [--dir PATH] [--only ward|raw] [--space]"
    );
    std::process::exit(2)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo.lines().next().unwrap_or("").to_owned();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cores} cores, {model}, {}",
        mem.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Row {
    name: &'static str,
    m: Measured,
}

fn main() {
    let args = parse_args();
    let s = args.settings;
    println!("machine: {}", machine());
    println!("load average at start: {}", loadavg());
    println!(
        "settings: {} events, writer threads {}, writer heap {} MiB, {} batches in flight, commit interval {} ms",
        args.events,
        s.writer_threads,
        s.writer_heap_bytes / (1024 * 1024),
        s.senders,
        s.commit_interval.as_millis()
    );

    let (corpus, gen_time) = support::measure(|| support::corpus_with(args.events, args.one_day));
    println!(
        "corpus: {} events, {:.1} MB event JSON, {:.1} MB NDJSON records, {:.1} MB zstd-3 in {} batches (generated in {:.1} s)",
        corpus.events,
        mb(corpus.event_bytes),
        mb(corpus.ndjson_bytes),
        mb(corpus.compressed_bytes),
        corpus.batches.len(),
        gen_time.wall.as_secs_f64()
    );
    let base = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let run_ward = args.only.as_deref() != Some("raw");
    let run_raw = args.only.as_deref() != Some("ward");
    let mut rows: Vec<Row> = Vec::new();

    let mut ward = None;
    if run_ward {
        let dir = base.path().join("ward");
        let r = support::run_ward(&corpus, &s, &dir);
        assert_eq!(r.docs, corpus.events as u64, "every event is searchable");
        if s.search_threads > 0 {
            println!(
                "ward: {} searches completed during ingest ({:.1}/s) on {} threads",
                r.searches,
                r.searches as f64 / r.ingest.wall.as_secs_f64(),
                s.search_threads
            );
        }
        if s.replay_every > 0 {
            println!(
                "ward: {} records sent again (every {} batches, the batch {} earlier), all recognised as replays",
                r.replayed, s.replay_every, s.replay_lag
            );
        }
        println!(
            "ward: {} commits; {:.1} CPU-s of merges after the last ack; index {:.1} MB",
            r.commits,
            r.trailing_cpu.as_secs_f64(),
            mb(r.index_bytes)
        );
        rows.push(Row {
            name: "Ward end to end (decompress → decode → build → group commit, until all acked)",
            m: r.ingest,
        });
        ward = Some(r);
        if args.space {
            print_space_usage(&dir, corpus.event_bytes);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    let mut raw = None;
    let mut raws: Vec<(&str, support::RawRun)> = Vec::new();
    if run_raw {
        let schema = WardSchema::new();
        let (profile, profiled) = support::profile_phases(&corpus, &schema, 50);
        let total = profile.decompress + profile.decode + profile.build;
        println!();
        println!(
            "single-threaded phases, {profiled} events, nothing kept (as in the ingest path):"
        );
        println!("| phase | µs/event | MB/s of event JSON | share |");
        println!("|---|---:|---:|---:|");
        let bytes_per_event = corpus.event_bytes as f64 / corpus.events as f64;
        for (name, d) in [
            ("wire::decompress", profile.decompress),
            ("wire::records (event trees)", profile.decode),
            ("Prepared::build", profile.build),
        ] {
            let us = d.as_secs_f64() * 1e6 / profiled as f64;
            println!(
                "| {name} | {us:.2} | {:.1} | {:.0}% |",
                bytes_per_event / us,
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            );
        }
        println!();
        let mut phases = support::Phases::default();
        for (ward_settings, name) in [
            (
                true,
                "raw tantivy, Ward's index settings (zstd-3 docstore, 1 MiB blocks)",
            ),
            (
                false,
                "raw tantivy, tantivy's default settings (LZ4 docstore, 16 KiB blocks)",
            ),
        ] {
            let (docs, built) = support::build_documents(&corpus, &schema);
            phases = built;
            println!(
                "documents built outside the timed region; RSS now {} MiB",
                support::status_kib("VmRSS") / 1024
            );
            let dir = base.path().join("raw");
            std::fs::create_dir_all(&dir).expect("create raw index dir");
            let r = support::run_raw(docs, &s, &dir, ward_settings);
            assert_eq!(r.docs, corpus.events as u64, "every document is searchable");
            println!(
                "{name}: commit {:.2} s; {:.1} CPU-s of merges after the commit; index {:.1} MB",
                r.commit.wall.as_secs_f64(),
                r.trailing_cpu.as_secs_f64(),
                mb(r.index_bytes)
            );
            rows.push(Row { name, m: r.index });
            raws.push((name, r));
            std::fs::remove_dir_all(&dir).ok();
        }
        let r = raws[0].1;
        let per_event = |d: Duration| d.as_secs_f64() * 1e6 / corpus.events as f64;
        println!();
        println!(
            "single-threaded phases before tantivy (whole corpus, all documents kept in memory for the raw run):"
        );
        println!("| phase | wall s | µs/event | MB/s of event JSON |");
        println!("|---|---:|---:|---:|");
        for (name, d) in [
            ("wire::decompress", phases.decompress),
            ("wire::records (event trees)", phases.decode),
            ("Prepared::build", phases.build),
        ] {
            println!(
                "| {name} | {:.2} | {:.2} | {:.1} |",
                d.as_secs_f64(),
                per_event(d),
                mb(corpus.event_bytes) / d.as_secs_f64()
            );
        }
        raw = Some(r);
    }

    println!();
    println!(
        "| path | wall s | CPU s | cores used | events/s | MB/s (event JSON) | events per CPU-s | MB per CPU-s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let wall = row.m.wall.as_secs_f64();
        let cpu = row.m.cpu.as_secs_f64();
        println!(
            "| {} | {wall:.2} | {cpu:.2} | {:.2} | {:.0} | {:.1} | {:.0} | {:.1} |",
            row.name,
            row.m.cores(),
            corpus.events as f64 / wall,
            mb(corpus.event_bytes) / wall,
            corpus.events as f64 / cpu,
            mb(corpus.event_bytes) / cpu,
        );
    }
    if let (Some(w), Some(_)) = (ward, raw) {
        println!();
        for (name, r) in &raws {
            println!(
                "ratio Ward / {name}: {:.1}% by wall time (events/s), {:.1}% by CPU time (events per CPU-s); target ≥ 60%",
                100.0 * r.index.wall.as_secs_f64() / w.ingest.wall.as_secs_f64(),
                100.0 * r.index.cpu.as_secs_f64() / w.ingest.cpu.as_secs_f64(),
            );
        }
        println!(
            "index bytes on disk per byte of event JSON: Ward {:.3}, {}",
            w.index_bytes as f64 / corpus.event_bytes as f64,
            raws.iter()
                .map(|(name, r)| format!(
                    "{name} {:.3}",
                    r.index_bytes as f64 / corpus.event_bytes as f64
                ))
                .collect::<Vec<_>>()
                .join(", "),
        );
    } else if let Some(w) = ward {
        println!(
            "index bytes on disk per byte of event JSON: Ward {:.3}",
            w.index_bytes as f64 / corpus.event_bytes as f64
        );
    }
    println!(
        "peak RSS (VmHWM): {} MiB",
        support::status_kib("VmHWM") / 1024
    );
    println!("load average at end: {}", loadavg());
}

/// Bytes of every index under `dir` (Ward's day partitions), per field and
/// per structure (terms, postings, positions, fast columns, stored
/// documents), as a share of the event JSON that went in.
fn print_space_usage(dir: &std::path::Path, event_bytes: u64) {
    use std::collections::BTreeMap;
    let mut per_field: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut store = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.join("meta.json").exists() {
            let index = tantivy::Index::open_in_dir(&d).expect("open partition");
            WardSchema::register_tokenizers(&index);
            let reader = index.reader().expect("reader");
            let usage = reader.searcher().space_usage().expect("space usage");
            for segment in usage.segments() {
                store += segment.store().total().get_bytes();
                for (what, fields) in [
                    ("terms", segment.termdict()),
                    ("postings", segment.postings()),
                    ("positions", segment.positions()),
                    ("fast", segment.fast_fields()),
                    ("fieldnorms", segment.fieldnorms()),
                ] {
                    for u in fields.fields() {
                        *per_field
                            .entry((u.field_name().to_owned(), what))
                            .or_default() += u.total().get_bytes();
                    }
                }
            }
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    let share = |b: u64| b as f64 / event_bytes.max(1) as f64;
    println!("\nwhere the index bytes go (per byte of event JSON):");
    println!("| field | structure | bytes | per JSON byte |");
    println!("|---|---|---:|---:|");
    println!(
        "| (stored documents) | store | {store} | {:.4} |",
        share(store)
    );
    let mut rows: Vec<_> = per_field.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    for ((field, what), bytes) in rows.into_iter().filter(|r| r.1 > 0) {
        println!("| {field} | {what} | {bytes} | {:.4} |", share(bytes));
    }
}
