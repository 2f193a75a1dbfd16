//! Support for Ward's end-to-end tests: build the real `ward` binary, start
//! it as separate processes on loopback ports, and talk to them over HTTP.
//!
//! Nothing here is mocked: the tests see what an operator would see.

pub mod proc;

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
        // A release bench (`--example idle_bench`) measures a release binary.
        let profile = if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        };
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                "ward",
                "--bin",
                "ward",
                "--profile",
                profile,
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

/// The JSON lines a successful `ward` command printed; panics with its
/// stderr if it failed.
pub fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Command-line arguments from string slices.
pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
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
            .env(
                "WARD_LOG",
                std::env::var("E2E_WARD_LOG").unwrap_or("info,ward_collector=debug".into()),
            )
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// Waits for the process to exit on its own, at most `within` (a guard
    /// against a hang, not a measurement); its status, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
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
    /// Bearer token sent with searches (an indexer with `--tokens` needs one).
    token: Option<String>,
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
            token: None,
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
            .query(&[("q", q), ("limit", &limit.to_string())]);
        let resp = match &self.token {
            Some(token) => resp.bearer_auth(token),
            None => resp,
        };
        let resp = resp.send().expect("search request");
        let status = resp.status().as_u16();
        (status, resp.json().expect("search answer is JSON"))
    }

    /// `POST /api/v1/k8s/audit?cluster=e2e` with `token` (an ingest or admin
    /// token, when the indexer has `--tokens`); panics unless it answers 200.
    pub fn post_audit(&self, body: &str, token: Option<&str>) {
        let mut req = self
            .http
            .post(format!("{}/api/v1/k8s/audit?cluster=e2e", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("webhook request");
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "{}", resp.text().unwrap_or_default());
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

/// An audit `EventList` of the first event of each Falco trace named, as
/// the API server's webhook sends it.
pub fn falco_event_list(traces: &[&str]) -> String {
    let items: Vec<Value> = traces
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(fixtures().join("falco-traces").join(t))
                .expect("a Falco trace");
            serde_json::from_str(text.lines().next().expect("a first line")).expect("an event")
        })
        .collect();
    serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
        .to_string()
}

pub use ward_testdata::fixtures;

impl Client {
    /// A client of `base` that uses `http` (for TLS: a CA, a client certificate).
    pub fn with_http(base: impl Into<String>, http: reqwest::blocking::Client) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            base: base.into(),
            http,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with searches.
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    /// The underlying HTTP client, for requests other than search.
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }
}

/// Starts `ward indexer` on `127.0.0.1:port` with its data in `<dir>/data`.
pub fn start_indexer(name: &str, dir: &Path, port: u16, extra: &[String]) -> Process {
    let mut args = vec![
        "indexer".to_string(),
        "--data".into(),
        dir.join("data").display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend_from_slice(extra);
    Process::start(name, dir, &args)
}

/// The samples of a Prometheus text page, by name with labels (`name{a="b"}`).
pub fn scrape(url: &str) -> Option<std::collections::HashMap<String, f64>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?
        .get(url)
        .send()
        .ok()?
        .text()
        .ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Certificates made at test time with the `openssl` command: a CA, a
/// server certificate for 127.0.0.1 and a client certificate, all issued by
/// the CA, plus a second CA that issued nothing the server trusts.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

impl TestPki {
    pub fn generate(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ca = |name: &str| {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        };
        let leaf = |name: &str, issuer: &str, ext: &str| {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{issuer}.crt"),
                "-CAkey",
                &format!("{issuer}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        ca("ca");
        ca("rogue-ca");
        leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        );
        leaf(
            "client",
            "ca",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        );
        leaf(
            "rogue-client",
            "rogue-ca",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        );
        TestPki {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            rogue_client_cert: dir.join("rogue-client.crt"),
            rogue_client_key: dir.join("rogue-client.key"),
        }
    }

    /// A blocking HTTPS client that trusts the test CA, with the given
    /// client certificate and key (or none).
    pub fn client(&self, identity: Option<(&Path, &Path)>) -> reqwest::blocking::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(&self.ca).expect("read ca");
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("ca pem"));
        if let Some((cert, key)) = identity {
            let mut pem = std::fs::read(cert).expect("read cert");
            pem.extend(std::fs::read(key).expect("read key"));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        builder.build().expect("https client")
    }
}

/// Appends `text` to `path`, creating the file and its folders.
pub fn append(path: &Path, text: &[u8]) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text).expect("append");
}

/// An indexer and a collector over `<dir>/logs`, on free loopback ports,
/// started and stopped by the test. The collector tails
/// `logs/pods/*/*/*.log` and `logs/audit/audit.log`, seals batches after
/// 100 ms and serves metrics.
pub struct Rig {
    // Processes first: fields drop in order, and they must stop (and show
    // their logs on failure) before the folder goes.
    pub indexer: Option<Process>,
    pub collector: Option<Process>,
    pub client: Client,
    pub root: PathBuf,
    pub port: u16,
    pub url: String,
    pub metrics_port: u16,
    starts: usize,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("logs");
        std::fs::create_dir_all(&root).expect("logs dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        Rig {
            root,
            port,
            client: Client::new(&url),
            url,
            metrics_port: free_port(),
            indexer: None,
            collector: None,
            dir,
            starts: 0,
        }
    }

    pub fn start_indexer(&mut self) {
        self.starts += 1;
        let name = format!("indexer-{}", self.starts);
        self.indexer = Some(start_indexer(&name, self.dir.path(), self.port, &[]));
        self.client.wait_healthy(Duration::from_secs(60));
    }

    pub fn collector_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "collector",
            "--indexer",
            &self.url,
            "--state",
            &self.dir.path().join("state").display().to_string(),
            "--containers",
            &self.root.join("pods/*/*/*.log").display().to_string(),
            "--audit-log",
            &self.root.join("audit/audit.log").display().to_string(),
            "--node",
            "e2e-node-1",
            "--cluster",
            "e2e",
            "--batch-max-age",
            "100ms",
            "--metrics-listen",
            &format!("127.0.0.1:{}", self.metrics_port),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn start_collector(&mut self, extra: &[&str]) {
        self.starts += 1;
        let name = format!("collector-{}", self.starts);
        let args = self.collector_args(extra);
        self.collector = Some(Process::start(&name, self.dir.path(), &args));
        wait_until("collector metrics", Duration::from_secs(60), || {
            scrape(&self.metrics_url())
        });
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// One metric sample of the running collector.
    pub fn metric(&self, name: &str) -> f64 {
        scrape(&self.metrics_url())
            .and_then(|m| m.get(name).copied())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Message → how many times it was indexed, for one query.
    pub fn messages(&self, q: &str) -> std::collections::BTreeMap<String, usize> {
        let body = self.client.search(q, 10_000);
        let mut counts = std::collections::BTreeMap::new();
        for hit in body["hits"].as_array().expect("hits") {
            *counts
                .entry(hit["message"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        counts
    }
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

/// CRI lines `<prefix> <i>` for every i in `range`, stdout, complete.
/// Audit Event lines `<prefix>-<i>` (auditID and requestURI carry both).
pub fn audit_lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"auditID\":\"{prefix}-{i}\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"requestURI\":\"/api/v1/{prefix}/{i}\",\"requestReceivedTimestamp\":\"2024-05-01T10:00:00Z\"}}\n"
            )
        })
        .collect()
}

pub fn cri_lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            format!(
                "2024-05-01T10:{:02}:{:02}.{:09}Z stdout F {prefix} {i}\n",
                (i / 60) % 60,
                i % 60,
                i
            )
        })
        .collect()
}

/// Writes a secret (a tokens or token file) readable by its owner only, as
/// Ward requires of a tokens file.
pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("make the secret private");
    }
}
