//! Collector throughput: read → parse → batch → compress → send, against
//! `zstd -3` on the same bytes, measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p ward-collector --example ship_bench -- --mib 256 --files 8
//! cargo run --release -p ward-collector --example ship_bench -- --mib 64 --files 500 --skip-zstd
//! ```
//!
//! The run writes `--mib` MiB of CRI container log lines into `--files`
//! kubelet-style files (`pods/<ns>_<pod>_<uid>/<container>/0.log`) in a
//! temporary directory, starts an in-process HTTP server on loopback that
//! acknowledges every batch without decompressing or indexing it, runs the
//! real collector (`ward_collector::run`) on those files, and stops it once
//! its checkpoints reach the end of every file. Wall time runs from the
//! collector's start to the last acknowledged batch; CPU time is this
//! process's (collector and the acknowledging server) over the same span.
//! Then `zstd -3 -T1 -c <files> > /dev/null` runs on the same files (its
//! CPU time is read from the waited-for child).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use ward_collector::CollectorConfig;

struct Args {
    mib: u64,
    files: usize,
    skip_zstd: bool,
    dir: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        mib: 256,
        files: 8,
        skip_zstd: false,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--mib" => args.mib = value().parse().unwrap_or_else(|_| usage("--mib: a number")),
            "--files" => {
                args.files = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--files: a number"))
            }
            "--skip-zstd" => args.skip_zstd = true,
            "--dir" => args.dir = Some(value().into()),
            "--bench" => {}
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args.files = args.files.max(1);
    args
}

fn usage(reason: &str) -> ! {
    eprintln!("{reason}\nusage: ship_bench [--mib N] [--files N] [--skip-zstd] [--dir PATH]");
    std::process::exit(2)
}

// ---- process accounting (same method as the indexer's ingest bench) ----

/// User + system CPU time of this process (`children`: of its waited-for
/// children), from `/proc/self/stat`.
fn stat_cpu(children: bool) -> Duration {
    const TICKS_PER_SEC: u64 = 100; // USER_HZ
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (a, b) = if children { (12, 13) } else { (10, 11) };
    let ticks = fields.get(a).copied().unwrap_or(0) + fields.get(b).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- realistic container log lines ----

/// A small deterministic generator (xorshift64*): no dependency, same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
}

const PATHS: &[&str] = &[
    "/api/v1/items",
    "/api/v1/orders",
    "/healthz",
    "/metrics",
    "/api/v2/users/search",
    "/static/app.js",
    "/login",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "kube-probe/1.29",
    "Prometheus/2.51.0",
    "curl/8.5.0",
    "Go-http-client/1.1",
];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss, fetching from upstream",
    "connection refused by upstream",
    "retrying after backoff",
    "user authenticated",
    "slow query detected",
];

/// One message of a realistic mix: JSON app logs, nginx access logs,
/// klog controller lines, Java-style lines, occasional stack traces.
fn message(rng: &mut Rng, ts: &str) -> (bool, String) {
    let status = [200, 200, 200, 201, 204, 301, 404, 500][rng.below(8) as usize];
    let ip = format!(
        "10.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    match rng.below(10) {
        0..=3 => (
            false,
            format!(
                r#"{{"level":"{}","ts":"{ts}","caller":"server/handler.go:{}","msg":"{}","method":"{}","path":"{}/{}","status":{status},"duration_ms":{}.{},"request_id":"{}","remote_addr":"{ip}"}}"#,
                rng.pick(&["info", "info", "debug", "warn", "error"]),
                rng.below(900) + 10,
                rng.pick(MESSAGES),
                rng.pick(METHODS),
                rng.pick(PATHS),
                rng.below(100_000),
                rng.below(900),
                rng.below(1000),
                rng.hex(32),
            ),
        ),
        4..=6 => (
            false,
            format!(
                r#"{ip} - - [01/May/2024:10:{:02}:{:02} +0000] "{} {}/{}?page={} HTTP/1.1" {status} {} "-" "{}" {}.{:03}"#,
                rng.below(60),
                rng.below(60),
                rng.pick(METHODS),
                rng.pick(PATHS),
                rng.below(100_000),
                rng.below(50),
                rng.below(100_000),
                rng.pick(AGENTS),
                rng.below(2),
                rng.below(1000),
            ),
        ),
        7 | 8 => (
            false,
            format!(
                r#"I0501 10:{:02}:{:02}.{:06}       1 controller.go:{}] "Reconciling" object="prod/web-{}-{}" generation={} resourceVersion="{}""#,
                rng.below(60),
                rng.below(60),
                rng.below(1_000_000),
                rng.below(400),
                rng.hex(10),
                rng.hex(5),
                rng.below(50),
                rng.below(10_000_000),
            ),
        ),
        _ => {
            if rng.below(20) == 0 {
                // A stack trace line on stderr.
                (
                    true,
                    format!(
                        "panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x{} pc=0x{}] goroutine {} [running]: main.handler(0xc000{})",
                        rng.hex(6),
                        rng.hex(6),
                        rng.below(1000),
                        rng.hex(6)
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "2024-05-01 10:{:02}:{:02}.{:03}  INFO 1 --- [nio-8080-exec-{}] c.e.demo.web.OrderController : Handling order id={} for customer={} total={}.{:02} EUR",
                        rng.below(60),
                        rng.below(60),
                        rng.below(1000),
                        rng.below(200),
                        rng.below(10_000_000),
                        rng.hex(12),
                        rng.below(1000),
                        rng.below(100),
                    ),
                )
            }
        }
    }
}

/// Writes `total` bytes of CRI lines spread over `files` kubelet-style files.
/// About one line in 2000 is longer than 16 KiB and split into `P` chunks.
fn write_logs(root: &Path, files: usize, total: u64) -> Vec<PathBuf> {
    let per_file = total / files as u64;
    let mut paths = Vec::with_capacity(files);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for f in 0..files {
        let dir = root
            .join("pods")
            .join(format!("prod_web-{f}-{}_{}", rng.hex(5), rng.hex(12)))
            .join("app");
        std::fs::create_dir_all(&dir).expect("create pod dir");
        let path = dir.join("0.log");
        let file = std::fs::File::create(&path).expect("create log file");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut written = 0u64;
        let mut nanos = 0u64;
        while written < per_file {
            nanos += 1_000 + rng.below(5_000_000);
            let secs = nanos / 1_000_000_000;
            let ts = format!(
                "2024-05-01T{:02}:{:02}:{:02}.{:09}Z",
                10 + (secs / 3600) % 14,
                (secs / 60) % 60,
                secs % 60,
                nanos % 1_000_000_000
            );
            let (stderr, msg) = message(&mut rng, &ts);
            let stream = if stderr { "stderr" } else { "stdout" };
            let line = if rng.below(2000) == 0 {
                // A long line, cut by the runtime at 16 KiB.
                let long = msg.repeat(20_000 / msg.len() + 1);
                let mut s = String::new();
                let chunks: Vec<&[u8]> = long.as_bytes().chunks(16 * 1024).collect();
                for (i, c) in chunks.iter().enumerate() {
                    let tag = if i + 1 == chunks.len() { "F" } else { "P" };
                    s.push_str(&format!("{ts} {stream} {tag} "));
                    s.push_str(std::str::from_utf8(c).unwrap_or(""));
                    s.push('\n');
                }
                s
            } else {
                format!("{ts} {stream} F {msg}\n")
            };
            out.write_all(line.as_bytes()).expect("write log");
            written += line.len() as u64;
        }
        out.flush().expect("flush log");
        paths.push(path);
    }
    paths
}

// ---- the acknowledging server ----

#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Time and process CPU time of the latest acknowledgement.
    last: Mutex<Option<(Instant, Duration)>>,
}

async fn acknowledge(State(received): State<Arc<Received>>, body: Bytes) -> &'static str {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    if let Ok(mut last) = received.last.lock() {
        *last = Some((Instant::now(), stat_cpu(false)));
    }
    "{}"
}

/// Starts the server on its own thread and runtime; returns its address.
fn start_server(received: Arc<Received>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let app = Router::new()
                .route("/api/v1/ingest", post(acknowledge))
                .layer(DefaultBodyLimit::disable())
                .with_state(received);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("address"))
                .expect("report address");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("server address")
}

/// Sum of the acknowledged offsets in the collector's checkpoints, and how many files.
fn checkpointed(state_dir: &Path) -> (u64, usize) {
    let Ok(bytes) = std::fs::read(state_dir.join("checkpoints.json")) else {
        return (0, 0);
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (0, 0);
    };
    let files = value["files"].as_array().cloned().unwrap_or_default();
    let total = files.iter().filter_map(|f| f["offset"].as_u64()).sum();
    (total, files.len())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let args = parse_args();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    println!(
        "machine: {} cores, {model}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("load average at start: {}", loadavg());

    let base = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create --dir");
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let t = Instant::now();
    let paths = write_logs(base.path(), args.files, args.mib * 1024 * 1024);
    let total: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!(
        "wrote {:.1} MB of CRI lines in {} files in {:.1} s",
        mb(total),
        paths.len(),
        t.elapsed().as_secs_f64()
    );
    let hwm_before = status_kib("VmHWM");

    let received = Arc::new(Received::default());
    let addr = start_server(received.clone());
    let state_dir = base.path().join("state");
    let mut config = CollectorConfig::new(format!("http://{addr}"), &state_dir);
    config.container_globs = vec![format!("{}/pods/*/*/*.log", base.path().display())];
    config.node = "bench".into();
    config.cluster = Some("bench".into());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("collector runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cpu0 = stat_cpu(false);
    let t0 = Instant::now();
    let collector = runtime.spawn(ward_collector::run(config, async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let (offsets, files) = checkpointed(&state_dir);
        if files == paths.len() && offsets >= total {
            break;
        }
        assert!(Instant::now() < deadline, "collector did not finish");
    }
    let (last_ack, last_cpu) = received
        .last
        .lock()
        .ok()
        .and_then(|l| *l)
        .expect("at least one batch acknowledged");
    let wall = last_ack.duration_since(t0);
    let cpu = last_cpu.saturating_sub(cpu0);
    let _ = stop_tx.send(());
    runtime
        .block_on(collector)
        .expect("collector task")
        .expect("collector run");
    let hwm = status_kib("VmHWM");
    let requests = received.requests.load(Ordering::Relaxed);
    let sent = received.bytes.load(Ordering::Relaxed);

    let collector_mbps = mb(total) / wall.as_secs_f64();
    let collector_per_cpu = mb(total) / cpu.as_secs_f64();
    println!(
        "collector: {requests} batches, {:.1} MB sent (compressed, {:.1}x)",
        mb(sent),
        total as f64 / sent.max(1) as f64
    );
    println!();
    println!("| path | wall s | CPU s | cores used | MB/s | MB per CPU-s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| collector read → parse → batch → zstd-3 → POST, until all acked | {:.2} | {:.2} | {:.2} | {collector_mbps:.1} | {collector_per_cpu:.1} |",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64()
    );
    if !args.skip_zstd {
        let ccpu0 = stat_cpu(true);
        let t = Instant::now();
        let status = std::process::Command::new("zstd")
            .args(["-3", "-T1", "-q", "-c"])
            .args(&paths)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run zstd (apt-get install -y zstd)");
        let zwall = t.elapsed();
        let zcpu = stat_cpu(true).saturating_sub(ccpu0);
        assert!(status.success(), "zstd failed: {status}");
        let zstd_per_cpu = mb(total) / zcpu.as_secs_f64();
        println!(
            "| zstd -3 -T1 -c <same files> > /dev/null | {:.2} | {:.2} | {:.2} | {:.1} | {zstd_per_cpu:.1} |",
            zwall.as_secs_f64(),
            zcpu.as_secs_f64(),
            zcpu.as_secs_f64() / zwall.as_secs_f64(),
            mb(total) / zwall.as_secs_f64(),
        );
        println!();
        println!(
            "ratio collector / zstd -3: {:.1}% by MB per CPU-s, {:.1}% by wall MB/s",
            100.0 * collector_per_cpu / zstd_per_cpu,
            100.0 * collector_mbps * zwall.as_secs_f64() / mb(total)
        );
    }
    println!(
        "memory: VmHWM {} MiB with {} files (VmHWM before the collector started: {} MiB)",
        hwm / 1024,
        paths.len(),
        hwm_before / 1024
    );
    println!("load average at end: {}", loadavg());
}
