//! The `ward` command: every Ward component in one binary.
//!
//! The CLI turns raw flags into each library's typed configuration and
//! owns process concerns: logging, signals, exit codes.

mod demo;
mod detect;
mod search;
mod serve;
mod snapshot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ward_collector::CollectorConfig;

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    version,
    about = "Security log and audit pipeline for Kubernetes"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `ward=debug`.
    #[arg(long, global = true, env = "WARD_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run indexer, collector and a demo cluster's activity on local folders.
    Up(UpArgs),
    /// Run the indexer: ingest, storage, search API and dashboard.
    Indexer(IndexerArgs),
    /// Run the node collector: tail logs and ship them to the indexer.
    // Boxed: its many flags make it much larger than the other variants.
    Collector(Box<CollectorArgs>),
    /// Search an indexer.
    Search(search::SearchArgs),
    /// Work with detection rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Check the data directory's hash chains against the stored events.
    Verify(VerifyArgs),
    /// Write a consistent copy of a data directory, alerts included (also while the indexer runs).
    Snapshot(snapshot::SnapshotArgs),
    /// Restore a snapshot (index and alerts) into a new data directory.
    Restore(snapshot::RestoreArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The indexer's data directory.
    #[arg(long)]
    data: PathBuf,
    /// The key the chains were signed with (`ward indexer --hmac-key`).
    #[arg(long)]
    hmac_key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Run rules over files of audit events and print one JSON alert per line.
    Test {
        /// Rule files or directories (default: the built-in Kubernetes pack).
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
        /// Audit event files: one Event per line, or EventList documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rules over events an indexer already holds (retro-hunt); prints
    /// one JSON alert per line. Alerts are not stored.
    Hunt(detect::HuntArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Where indexes, collector state and demo logs are kept.
    #[arg(long, default_value = "ward-data")]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7171")]
    listen: SocketAddr,
    /// Do not generate demo activity (tail only what --containers / --audit-log name).
    #[arg(long)]
    no_demo: bool,
}

#[derive(Debug, Args)]
struct IndexerArgs {
    /// Data directory of the index.
    #[arg(long)]
    data: PathBuf,
    /// Ingest listener (collectors, audit webhook); also the API's unless
    /// --api-listen is given.
    #[arg(long, default_value = "127.0.0.1:7171")]
    listen: SocketAddr,
    /// Serve search, dashboard, probes and /metrics on this address instead,
    /// with TLS but without client certificates.
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    /// Remove days older than this (e.g. `30d`, `12h`); by default data is kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Remove the oldest days while the index is larger than this (e.g. `500GiB`).
    #[arg(long, value_parser = parse_size)]
    retention_size: Option<u64>,
    /// Sign each hash-chain entry with HMAC-SHA256 and this key file (16 bytes or more).
    #[arg(long)]
    hmac_key: Option<PathBuf>,
    /// Store Secret data and credentials in log lines as they came (not recommended).
    #[arg(long)]
    no_redaction: bool,
    /// Extra masking pattern for container messages, `NAME=REGEX` (repeatable).
    #[arg(long = "redact-pattern")]
    redact_patterns: Vec<String>,
    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it issued (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Bearer tokens, one `<role>:<token>` per line; when given, ingest and
    /// the audit webhook need a collector, audit-webhook, ingest or admin token.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// The URL browsers use to reach the dashboard and API (repeatable), e.g.
    /// `https://ward.example.com`: its host is accepted in `Host`, besides
    /// the listen addresses (DNS-rebinding defence).
    #[arg(long = "public-url")]
    public_urls: Vec<String>,
    /// Serve without --tokens on an address other hosts can reach (every
    /// endpoint open to them); refused otherwise.
    #[arg(long, conflicts_with = "tokens")]
    insecure_no_auth: bool,
    /// Load --tokens even if its group (not the indexer's own) or others may
    /// read it (a loud warning is logged); refused otherwise.
    #[arg(long, requires = "tokens")]
    tokens_readable: bool,
    /// Serve /metrics without a token even with --tokens (for a scraper on
    /// a trusted network; the metrics count every namespace).
    #[arg(long)]
    metrics_open: bool,
    /// Cluster recorded on audit webhook events that do not name one with `?cluster=`.
    #[arg(long)]
    cluster: Option<String>,
    /// Sigma rule file or directory run on ingested audit events, besides
    /// the built-in pack (repeatable); reloaded when the files change.
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Do not load the built-in Kubernetes audit pack.
    #[arg(long)]
    no_builtin_rules: bool,
    /// Alert sinks file (YAML): webhooks, Alertmanager, Slack, per level or rule.
    #[arg(long)]
    sinks: Option<PathBuf>,
    /// API requests per second allowed per token (0: no limit), with --rate-burst.
    #[arg(long, default_value_t = 20.0)]
    rate_limit: f64,
    /// Requests a token may send at once before --rate-limit applies.
    #[arg(long, default_value_t = 40)]
    rate_burst: u32,
    /// Live tails one token may hold open (without --tokens: all callers together).
    #[arg(long, default_value_t = 8)]
    max_tails_per_token: usize,
    /// Live tails all callers may hold open together.
    #[arg(long, default_value_t = 64)]
    max_tails: usize,
    /// Longest a search, aggregation or timeline request may run (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Replay keys kept exactly in memory per partition being written (about
    /// 64 bytes each); older replays are looked up in the index.
    #[arg(long, default_value_t = 256 * 1024)]
    replay_window: usize,
}

impl IndexerArgs {
    fn store_config(&self) -> anyhow::Result<ward_indexer::StoreConfig> {
        let mut config = ward_indexer::StoreConfig::new(&self.data);
        config.replay_window = self.replay_window;
        config.retention = ward_indexer::Retention {
            max_age: self.retention,
            max_bytes: self.retention_size,
        };
        config.hmac_key = self
            .hmac_key
            .as_deref()
            .map(ward_indexer::chain::HmacKey::from_file)
            .transpose()
            .context("--hmac-key")?;
        let mut patterns = ward_indexer::redact::default_patterns();
        for spec in &self.redact_patterns {
            patterns.push(ward_indexer::redact::Pattern::parse(spec).context("--redact-pattern")?);
        }
        config.redactor = std::sync::Arc::new(if self.no_redaction {
            ward_indexer::redact::Redactor::off()
        } else {
            ward_indexer::redact::Redactor::new(true, patterns).context("--redact-pattern")?
        });
        Ok(config)
    }

    fn security(&self) -> anyhow::Result<serve::Security> {
        let (tls, api_tls) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (
                Some(ward_query_api::tls::server_config(
                    cert,
                    key,
                    self.client_ca.as_deref(),
                )?),
                Some(ward_query_api::tls::server_config(cert, key, None)?),
            ),
            _ => (None, None),
        };
        let tokens = self
            .tokens
            .as_deref()
            .map(|path| ward_query_api::auth::Tokens::load(path, self.tokens_readable))
            .transpose()
            .context("--tokens")?
            .map(std::sync::Arc::new);
        Ok(serve::Security {
            tls,
            api_tls,
            options: ward_query_api::ApiOptions {
                tokens,
                cluster: self.cluster.clone(),
                alerts: None,
                metrics_open: self.metrics_open,
                allowed_hosts: allowed_hosts(
                    std::iter::once(self.listen).chain(self.api_listen),
                    &self.public_urls,
                )?,
            },
        })
    }

    fn api_config(&self) -> ward_query_api::ApiConfig {
        ward_query_api::ApiConfig {
            rate_limit_per_sec: self.rate_limit,
            rate_limit_burst: self.rate_burst,
            request_timeout: self.request_timeout,
            max_tails_per_caller: self.max_tails_per_token,
            max_tails: self.max_tails,
            ..ward_query_api::ApiConfig::default()
        }
    }

    fn detection(&self) -> detect::Detection {
        detect::Detection {
            builtin: !self.no_builtin_rules,
            rules: self.rules.clone(),
            sinks: self.sinks.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct CollectorArgs {
    /// Base URL of the indexer.
    #[arg(long)]
    indexer: String,
    /// Directory for checkpoints and other state.
    #[arg(long)]
    state: PathBuf,
    /// Glob of container log files (repeatable), e.g. '/var/log/pods/*/*/*.log'.
    #[arg(long = "containers")]
    containers: Vec<String>,
    /// API server audit log file or glob (repeatable).
    #[arg(long = "audit-log")]
    audit_log: Vec<String>,
    /// Node name recorded on every record (default: $NODE_NAME, then the hostname).
    #[arg(long)]
    node: Option<String>,
    /// Cluster name recorded on every record.
    #[arg(long)]
    cluster: Option<String>,
    /// Seal a batch after this long (e.g. `500ms`, `2s`); a bare number is
    /// milliseconds, the unit of the old name `--batch-max-age-ms`.
    #[arg(
        long,
        alias = "batch-max-age-ms",
        default_value = "500ms",
        value_parser = parse_duration_or_millis
    )]
    batch_max_age: Duration,
    /// Seal a batch at this many uncompressed bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    batch_max_bytes: usize,
    /// PEM CA bundle the indexer's certificate must chain to (instead of the system roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs --client-key).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// File holding the bearer token sent to the indexer.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Accept the API server's audit webhook on this address (`POST /api/v1/k8s/audit`).
    #[arg(long)]
    audit_webhook: Option<SocketAddr>,
    /// PEM certificate chain the audit webhook serves TLS with (needs --audit-webhook-tls-key).
    #[arg(long, requires_all = ["audit_webhook", "audit_webhook_tls_key"])]
    audit_webhook_tls_cert: Option<PathBuf>,
    /// PEM private key of --audit-webhook-tls-cert.
    #[arg(long, requires = "audit_webhook_tls_cert")]
    audit_webhook_tls_key: Option<PathBuf>,
    /// PEM CA bundle: the API server must present a client certificate it issued.
    #[arg(long, requires = "audit_webhook_tls_cert")]
    audit_webhook_client_ca: Option<PathBuf>,
    /// File holding the bearer token the API server must send to the audit webhook.
    #[arg(long, requires = "audit_webhook")]
    audit_webhook_token_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Add pod labels, allow-listed annotations, owner and node from the
    /// Kubernetes API (in a pod: its service account's API server, token and CA).
    #[arg(long)]
    kube_metadata: bool,
    /// API server URL for --kube-metadata outside a pod (no token, system roots).
    #[arg(long, requires = "kube_metadata")]
    kube_api_server: Option<String>,
    /// Annotation key copied onto records with --kube-metadata (repeatable).
    #[arg(long = "kube-annotation")]
    kube_annotations: Vec<String>,
    /// Largest size of the on-disk spool of batches the indexer could not take yet.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    spool_max_bytes: u64,
    /// When the spool is full: `block` (pause reading, lose nothing) or `drop` (counted).
    #[arg(long, default_value = "block")]
    spool_full: ward_collector::SpoolFull,
    /// Give up on a rotated or deleted file not read to its end after this
    /// long (e.g. `5m`); a bare number is seconds, the unit of the old name
    /// `--orphan-max-age-secs`.
    #[arg(
        long,
        alias = "orphan-max-age-secs",
        default_value = "5m",
        value_parser = parse_duration_or_secs
    )]
    orphan_max_age: Duration,
    /// Look for new, rotated and deleted files this often even without file
    /// events (which find them at once); a safety net for missed events.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    rescan_interval: Duration,
}

impl CollectorArgs {
    fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut config = CollectorConfig::new(self.indexer, self.state);
        config.container_globs = self.containers;
        config.audit_logs = self.audit_log;
        if let Some(node) = self.node {
            config.node = node;
        }
        config.cluster = self.cluster;
        config.batch_max_age = self.batch_max_age;
        config.batch_max_bytes = self.batch_max_bytes;
        config.ca_file = self.ca_file;
        config.client_cert = self.client_cert;
        config.client_key = self.client_key;
        config.token_file = self.token_file;
        config.audit_webhook = self.audit_webhook;
        config.audit_webhook_tls = self.audit_webhook_tls_cert.zip(self.audit_webhook_tls_key);
        config.audit_webhook_client_ca = self.audit_webhook_client_ca;
        config.audit_webhook_token_file = self.audit_webhook_token_file;
        config.metrics_listen = self.metrics_listen;
        config.kube_api = match (self.kube_metadata, self.kube_api_server) {
            (false, _) => None,
            (true, Some(server)) => Some(ward_collector::kube::KubeApi {
                server,
                token_file: None,
                ca_file: None,
            }),
            (true, None) => Some(ward_collector::kube::KubeApi::in_cluster()?),
        };
        config.kube_annotations = self.kube_annotations;
        config.spool_max_bytes = self.spool_max_bytes;
        config.spool_full = self.spool_full;
        config.orphan_max_age = self.orphan_max_age;
        config.rescan_interval = self.rescan_interval;
        Ok(config)
    }
}

/// mimalloc instead of glibc's allocator: ingest builds and drops a
/// `serde_json` map with a string per key and value for every record, and
/// tantivy allocates per term; with mimalloc the indexer ingested 12% more
/// events per CPU-second and raw tantivy 15% more (BENCHMARKS.md). Quickwit
/// and Vector also replace the system allocator (with jemalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Indexer(args) => {
                let indexer = serve::Indexer {
                    store: args.store_config()?,
                    listen: args.listen,
                    api_listen: args.api_listen,
                    security: args.security()?,
                    detection: args.detection(),
                    api: args.api_config(),
                    insecure_no_auth: args.insecure_no_auth,
                };
                serve::run_indexer(indexer, serve::shutdown_signal()).await
            }
            Command::Verify(args) => verify(&args),
            Command::Snapshot(args) => snapshot::snapshot(args).await,
            Command::Restore(args) => snapshot::restore(&args),
            Command::Collector(args) => {
                ward_collector::run((*args).into_config()?, serve::shutdown_signal())
                    .await
                    .context("collector failed")
            }
            Command::Search(args) => search::run(args).await,
            Command::Rules(RulesCommand::Test { rules, files }) => rules_test(&rules, &files),
            Command::Rules(RulesCommand::Hunt(args)) => detect::hunt(args).await,
        }
    })
}

/// The `Host`s browser-facing endpoints answer: each listen address
/// (`localhost` too for a loopback one) and each `--public-url`'s host.
/// `None` (not checked) when every address is unspecified (`0.0.0.0`) and
/// no public URL names the host browsers use.
pub(crate) fn allowed_hosts(
    listens: impl Iterator<Item = SocketAddr>,
    public_urls: &[String],
) -> anyhow::Result<Option<Vec<String>>> {
    let mut hosts = Vec::new();
    for addr in listens {
        let port = addr.port();
        if addr.ip().is_unspecified() {
            continue;
        }
        hosts.push(addr.to_string());
        if addr.ip().is_loopback() {
            hosts.extend([
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]);
        }
    }
    for url in public_urls {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("--public-url {url:?}: not a URL (https://host[:port])"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if authority.is_empty() {
            anyhow::bail!("--public-url {url:?} names no host");
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']');
        if !has_port {
            let default = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            hosts.push(format!("{authority}:{default}"));
        }
        hosts.push(authority);
    }
    if hosts.is_empty() {
        tracing::info!(
            "the Host header is not checked: every listen address is unspecified and no --public-url was given"
        );
        return Ok(None);
    }
    Ok(Some(hosts))
}

/// `ward verify`: exit status 0 only when everything is intact.
fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let key = args
        .hmac_key
        .as_deref()
        .map(ward_indexer::chain::HmacKey::from_file)
        .transpose()
        .context("--hmac-key")?;
    let report = ward_indexer::verify::verify(&args.data, key.as_ref()).context("verify failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.ledger {
            println!("ledger: {problem}");
        }
        for p in &report.partitions {
            let status = serde_json::to_value(p.status)?;
            println!(
                "{}  {:<10}  {} batches, {} records",
                p.partition,
                status.as_str().unwrap_or("?"),
                p.batches,
                p.records
            );
            for problem in &p.problems {
                println!("    {problem}");
            }
        }
    }
    if report.is_intact() {
        Ok(())
    } else {
        anyhow::bail!("the data directory is not intact")
    }
}

/// A duration flag that once took a bare number of milliseconds and kept
/// that name as an alias: `500ms`, `2s` as for every duration flag, or a
/// bare number in milliseconds as before.
fn parse_duration_or_millis(text: &str) -> Result<Duration, String> {
    parse_duration_or_bare(text, Duration::from_millis)
}

/// As [`parse_duration_or_millis`], for a flag that took seconds.
fn parse_duration_or_secs(text: &str) -> Result<Duration, String> {
    parse_duration_or_bare(text, Duration::from_secs)
}

/// Humantime (`500ms`, `5m`, `30d`), or a bare number in `unit`: the
/// duration flags that took numbers in a unit of their own name
/// (`--batch-max-age-ms`) take durations now, and keep that name as an
/// alias in which old command lines still mean what they meant.
fn parse_duration_or_bare(text: &str, unit: fn(u64) -> Duration) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(n) => Ok(unit(n)),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}")),
    }
}

/// `500GiB`, `20G`, `1048576`: binary units, with or without `iB`/`B`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 500GiB"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => return Err(format!("unknown size unit {other:?} (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `ward rules test`: load errors on stderr, never fatal; alerts on stdout.
fn rules_test(rules: &[PathBuf], files: &[PathBuf]) -> anyhow::Result<()> {
    let (ruleset, errors) = if rules.is_empty() {
        ward_rules::RuleSet::builtin()
    } else {
        ward_rules::RuleSet::load(rules)
    };
    let mut stderr = std::io::stderr().lock();
    for e in &errors {
        use std::io::Write;
        writeln!(stderr, "rule load error: {e}")?;
    }
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    ward_rules::run_test_files(&ruleset, files, &mut stdout, &mut stderr)
        .context("rules test failed")?;
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data = std::path::absolute(&args.data).context("bad --data")?;
    let demo_dir = data.join("demo");
    let url = format!("http://{}", args.listen);
    // Another instance (or anything) on the port would take the demo's
    // collector's batches: fail now, before anything starts.
    match std::net::TcpListener::bind(args.listen) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "{} is already in use (another `ward up` or indexer?): stop it or pick another --listen",
            args.listen
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", args.listen)),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut indexer = tokio::spawn({
        let data = data.join("indexer");
        let stop = stopped(stop_rx.clone());
        async move { serve::indexer(&data, args.listen, stop).await }
    });
    let mut config = CollectorConfig::new(url.clone(), data.join("collector"));
    config.container_globs = vec![format!("{}/pods/*/*/*.log", demo_dir.display())];
    config.audit_logs = vec![format!("{}/audit/audit.log", demo_dir.display())];
    config.node = "demo-node-1".into();
    config.cluster = Some("demo".into());
    let collector = tokio::spawn(ward_collector::run(config, stopped(stop_rx.clone())));
    let generator = (!args.no_demo)
        .then(|| tokio::spawn(demo::run(demo_dir.clone(), stopped(stop_rx.clone()))));

    println!("Ward is running.");
    println!("  dashboard:  {url}/");
    println!("  data:       {}", data.display());
    println!("Try:");
    println!("  ward search 'objectRef.subresource:exec'");
    println!("  ward search 'verb:create AND objectRef.resource:clusterrolebindings'");
    println!("  ward search 'responseStatus.code:403'");
    println!("  ward search 'kubernetes.namespace:shop AND message:\"connection refused\"'");
    println!("  curl -s '{url}/api/v1/search?q=user.username:system\\:anonymous&limit=5'");
    println!("  curl -s '{url}/api/v1/alerts?min_level=medium'   # alerts of the built-in rules");
    println!("Press Ctrl-C to stop.");

    // Stop on a signal, or at once if the indexer fails (its port taken
    // meanwhile, its data unreadable).
    let indexer_result = tokio::select! {
        () = serve::shutdown_signal() => None,
        joined = &mut indexer => Some(joined),
    };
    let _ = stop_tx.send(true);
    if let Some(joined) = indexer_result {
        joined.context("indexer panicked")??;
        anyhow::bail!("the indexer stopped");
    }
    if let Some(g) = generator {
        g.await.context("demo generator panicked")??;
    }
    collector
        .await
        .context("collector panicked")?
        .context("collector failed")?;
    indexer.await.context("indexer panicked")??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::{Cli, Command, parse_size};

    /// The collector's config from these flags after the required ones.
    fn collector(flags: &[&str]) -> ward_collector::CollectorConfig {
        let args = ["ward", "collector", "--indexer", "http://x", "--state", "s"];
        let cli = Cli::try_parse_from(args.iter().chain(flags)).unwrap();
        let Command::Collector(args) = cli.command else {
            panic!("not the collector")
        };
        args.into_config().unwrap()
    }

    #[test]
    fn duration_flags_take_durations_and_their_old_names_the_old_unit() {
        let defaults = collector(&[]);
        assert_eq!(defaults.batch_max_age, Duration::from_millis(500));
        assert_eq!(defaults.orphan_max_age, Duration::from_secs(300));

        let new = collector(&["--batch-max-age", "2s", "--orphan-max-age", "1m"]);
        assert_eq!(new.batch_max_age, Duration::from_secs(2));
        assert_eq!(new.orphan_max_age, Duration::from_secs(60));

        let old = collector(&["--batch-max-age-ms", "100", "--orphan-max-age-secs", "1"]);
        assert_eq!(old.batch_max_age, Duration::from_millis(100));
        assert_eq!(old.orphan_max_age, Duration::from_secs(1));

        let old_form = ["--batch-max-age-ms=250", "--orphan-max-age-secs=30"];
        let old = collector(&old_form);
        assert_eq!(old.batch_max_age, Duration::from_millis(250));
        assert_eq!(old.orphan_max_age, Duration::from_secs(30));

        let args = ["ward", "collector", "--indexer", "x", "--state", "s"];
        for bad in [
            ["--batch-max-age", "5 parsecs"],
            ["--orphan-max-age-secs", "-1"],
        ] {
            assert!(
                Cli::try_parse_from(args.iter().chain(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allowed_hosts_come_from_listen_addresses_and_public_urls() {
        let listens = [
            "127.0.0.1:7171".parse().unwrap(),
            "0.0.0.0:7172".parse().unwrap(),
        ];
        let hosts = super::allowed_hosts(
            listens.into_iter(),
            &[
                "https://Ward.Example.com/ui".into(),
                "http://10.0.0.5:8080".into(),
            ],
        )
        .unwrap()
        .unwrap();
        for want in [
            "127.0.0.1:7171",
            "localhost:7171",
            "ward.example.com",
            "ward.example.com:443",
            "10.0.0.5:8080",
        ] {
            assert!(hosts.iter().any(|h| h == want), "{want} in {hosts:?}");
        }
        assert!(!hosts.iter().any(|h| h.ends_with(":7172")), "{hosts:?}");
        let open = super::allowed_hosts(["0.0.0.0:7171".parse().unwrap()].into_iter(), &[]);
        assert_eq!(open.unwrap(), None);
        assert!(super::allowed_hosts(std::iter::empty(), &["ward.example.com".into()]).is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500GiB"), Ok(500 << 30));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("4KB"), Ok(4096));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
