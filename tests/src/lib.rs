//! Support for Ward's end-to-end tests: build the real `ward` binary, start
//! it as separate processes on loopback ports, and talk to them over HTTP.
//!
//! Nothing here is mocked: the tests see what an operator would see.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `ward` binary, built once per test process with the same cargo and
/// profile as the tests.
pub fn ward_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("WARD_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                "ward",
                "--bin",
                "ward",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "cargo build -p ward failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "ward")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no ward executable")
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running `ward` process; killed when dropped. Its output goes to
/// `<dir>/<name>.log`, which is printed if a test fails.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn start(name: &str, log_dir: &Path, args: &[String]) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let child = Command::new(ward_bin())
            .args(args)
            .env("WARD_LOG", "info,ward_collector=debug")
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("start ward");
        Process {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        status.success(),
                        "{} exited with {status}:\n{}",
                        self.name,
                        self.output()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{} did not stop on SIGTERM:\n{}", self.name, self.output());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("---- {} output ----\n{}", self.name, self.output());
            }
        }
    }
}

/// A blocking client of one indexer.
pub struct Client {
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            base: base.into(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not become healthy", self.base);
    }

    /// `GET /api/v1/search`; panics unless it answers 200.
    pub fn search(&self, q: &str, limit: usize) -> Value {
        let (status, body) = self.search_raw(q, limit);
        assert_eq!(status, 200, "search {q:?}: {body}");
        body
    }

    pub fn search_raw(&self, q: &str, limit: usize) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/api/v1/search", self.base))
            .query(&[("q", q), ("limit", &limit.to_string())])
            .send()
            .expect("search request");
        let status = resp.status().as_u16();
        (status, resp.json().expect("search answer is JSON"))
    }

    /// Polls until `q` has exactly `want` hits, or panics with the last count.
    pub fn wait_for_total(&self, q: &str, want: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.search(q, 10_000);
            let total = body["total"].as_u64().unwrap_or(0);
            if total == want {
                return body;
            }
            assert!(
                total <= want,
                "{q:?}: {total} hits, more than the {want} written"
            );
            if Instant::now() > deadline {
                panic!("{q:?}: {total} hits after {timeout:?}, want {want}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The shared fixtures beside the repository.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(dir.is_dir(), "shared fixtures missing at {}", dir.display());
    dir
}
