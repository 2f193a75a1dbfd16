//! The `ward` command: every Ward component in one binary.
//!
//! The CLI turns raw flags into each library's typed configuration and
//! owns process concerns: logging, signals, exit codes.

mod demo;
mod search;
mod serve;

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
    Collector(CollectorArgs),
    /// Search an indexer.
    Search(search::SearchArgs),
    /// Work with detection rules.
    #[command(subcommand)]
    Rules(RulesCommand),
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
    #[arg(long, default_value = "127.0.0.1:7171")]
    listen: SocketAddr,
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
    /// Seal a batch after this many milliseconds.
    #[arg(long, default_value_t = 500)]
    batch_max_age_ms: u64,
    /// Seal a batch at this many uncompressed bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    batch_max_bytes: usize,
}

impl CollectorArgs {
    fn into_config(self) -> CollectorConfig {
        let mut config = CollectorConfig::new(self.indexer, self.state);
        config.container_globs = self.containers;
        config.audit_logs = self.audit_log;
        if let Some(node) = self.node {
            config.node = node;
        }
        config.cluster = self.cluster;
        config.batch_max_age = Duration::from_millis(self.batch_max_age_ms);
        config.batch_max_bytes = self.batch_max_bytes;
        config
    }
}

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
                serve::indexer(&args.data, args.listen, serve::shutdown_signal()).await
            }
            Command::Collector(args) => {
                ward_collector::run(args.into_config(), serve::shutdown_signal())
                    .await
                    .context("collector failed")
            }
            Command::Search(args) => search::run(args).await,
            Command::Rules(RulesCommand::Test { rules, files }) => rules_test(&rules, &files),
        }
    })
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let indexer = tokio::spawn({
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
    println!("Press Ctrl-C to stop.");

    serve::shutdown_signal().await;
    let _ = stop_tx.send(true);
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
