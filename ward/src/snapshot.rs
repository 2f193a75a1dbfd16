//! `ward snapshot` and `ward restore`: a consistent copy of a data
//! directory, the alert store included, and bringing one back.
//!
//! The index part is [`ward_indexer::snapshot`]. The alert store
//! (`<data>/alerts.redb`) cannot be copied as a file: redb locks it while
//! the indexer runs, and its bytes mid-commit are not a consistent
//! database. It goes into the snapshot as the NDJSON dump of
//! [`AlertStore::export`] (`alerts.ndjson`), taken
//!
//! - from the file itself when no indexer holds it;
//! - from the running indexer's `GET /api/v1/alerts/export` with
//!   `--alerts-from URL` (an admin token with `--token-file`);
//! - not at all with `--no-alerts`, or when there is no alert store.
//!
//! A locked store without `--alerts-from` fails the snapshot with that
//! hint rather than silently leaving the alerts out. The alerts are taken
//! before the partitions, so the events they point at were committed (or
//! about to be) when the index was copied. `ward restore` imports the dump
//! into a new `alerts.redb` and removes it.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use ward_alerts::{AlertStore, DumpCounts};
use ward_indexer::snapshot::{self, Extra};

/// The alert store's dump inside a snapshot.
const ALERTS_FILE: &str = "alerts.ndjson";
/// The alert store in a data directory (as `ward indexer` opens it).
const ALERTS_STORE: &str = "alerts.redb";

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The indexer's data directory.
    #[arg(long)]
    data: PathBuf,
    /// The snapshot file to write (a zstd-compressed tar).
    #[arg(long)]
    out: PathBuf,
    /// Base URL of the indexer's API to take the alerts from while it runs
    /// (its alert store is locked); needs an admin token (--token-file).
    #[arg(long, conflicts_with = "no_alerts")]
    alerts_from: Option<String>,
    /// File holding the admin token sent to --alerts-from.
    #[arg(long, requires = "alerts_from")]
    token_file: Option<PathBuf>,
    /// PEM CA bundle the --alerts-from certificate must chain to (instead of the system roots).
    #[arg(long, requires = "alerts_from")]
    ca_file: Option<PathBuf>,
    /// Leave the alert store out of the snapshot.
    #[arg(long)]
    no_alerts: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    #[arg(long)]
    snapshot: PathBuf,
    /// The data directory to create (must not exist, or be empty).
    #[arg(long)]
    data: PathBuf,
}

pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    // The dump waits beside the output until it is in the tar.
    let staged = args.out.with_extension("alerts.partial");
    let result = snapshot_via(&args, &staged).await;
    if let Err(e) = std::fs::remove_file(&staged)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %staged.display(), error = %e, "cannot remove the staged alerts dump");
    }
    result
}

async fn snapshot_via(args: &SnapshotArgs, staged: &Path) -> anyhow::Result<()> {
    let alerts = take_alerts(args, staged).await?;
    let extra: Vec<Extra> = alerts
        .iter()
        .map(|c| Extra {
            name: ALERTS_FILE.into(),
            path: staged.to_owned(),
            counts: [
                ("alerts".to_string(), c.alerts),
                ("dedup_keys".to_string(), c.dedup_keys),
                ("deliveries".to_string(), c.deliveries),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    let (data, out) = (args.data.clone(), args.out.clone());
    let manifest = tokio::task::spawn_blocking(move || snapshot::create_with(&data, &out, &extra))
        .await
        .context("the snapshot task panicked")?
        .context("snapshot failed")?;
    let records: u64 = manifest.partitions.iter().map(|p| p.records).sum();
    let alerts = match alerts {
        Some(c) => format!("{} alerts", c.alerts),
        None => "no alert store".into(),
    };
    println!(
        "snapshot {}: {} partitions, {records} records, {alerts}",
        args.out.display(),
        manifest.partitions.len()
    );
    Ok(())
}

/// Writes the alert store's dump to `staged`, from wherever it can be
/// read consistently; `None` when there is none to take.
async fn take_alerts(args: &SnapshotArgs, staged: &Path) -> anyhow::Result<Option<DumpCounts>> {
    if args.no_alerts {
        return Ok(None);
    }
    if let Some(url) = &args.alerts_from {
        return fetch_alerts(args, url, staged).await.map(Some);
    }
    let path = args.data.join(ALERTS_STORE);
    if !path.exists() {
        return Ok(None);
    }
    let store = match AlertStore::open(&path) {
        Ok(store) => store,
        Err(e) if e.is_in_use() => bail!(
            "the alert store {} is locked by a running indexer: pass --alerts-from <the indexer's API URL> \
             (with --token-file holding an admin token) to take the alerts from it, \
             or --no-alerts to snapshot without them",
            path.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the alert store {}", path.display()));
        }
    };
    let file =
        File::create(staged).with_context(|| format!("cannot write {}", staged.display()))?;
    let counts = store
        .export(file)
        .with_context(|| format!("cannot export the alert store {}", path.display()))?;
    Ok(Some(counts))
}

/// Streams `GET <url>/api/v1/alerts/export` into `staged` and returns the
/// counts of its end line, which a complete export always has.
async fn fetch_alerts(args: &SnapshotArgs, url: &str, staged: &Path) -> anyhow::Result<DumpCounts> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {}", ca.display()))?;
        if certs.is_empty() {
            bail!("--ca-file {}: no certificate in it", ca.display());
        }
        builder = builder.tls_certs_only(certs);
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    let endpoint = format!("{}/api/v1/alerts/export", url.trim_end_matches('/'));
    let mut request = client.get(&endpoint);
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let mut response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!(
            "{endpoint} answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    let mut file = std::io::BufWriter::new(
        File::create(staged).with_context(|| format!("cannot write {}", staged.display()))?,
    );
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("the alerts export from {endpoint} broke off"))?
    {
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", staged.display()))?;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", staged.display()))?;
    end_counts(staged).with_context(|| format!("the alerts export from {endpoint} is incomplete"))
}

/// The counts of a dump's end line (its last line).
fn end_counts(path: &Path) -> anyhow::Result<DumpCounts> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // The end line is well under a KiB; the last 4 KiB hold it whole.
    file.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let tail = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let last = tail.rsplit(|b| *b == b'\n').next().unwrap_or_default();
    let line: Value = serde_json::from_slice(last).unwrap_or(Value::Null);
    match line.get("end") {
        Some(end) => Ok(serde_json::from_value(end.clone())?),
        None => bail!("it has no end line"),
    }
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let manifest = snapshot::restore(&args.snapshot, &args.data).context("restore failed")?;
    let alerts = if manifest.extra.iter().any(|e| e.name == ALERTS_FILE) {
        let dump = args.data.join(ALERTS_FILE);
        let file = File::open(&dump).with_context(|| format!("cannot read {}", dump.display()))?;
        let counts = AlertStore::import(&args.data.join(ALERTS_STORE), BufReader::new(file))
            .with_context(|| {
                format!(
                    "the partitions are restored into {}, but the alerts could not be imported (the dump is {})",
                    args.data.display(),
                    dump.display()
                )
            })?;
        std::fs::remove_file(&dump).with_context(|| format!("cannot remove {}", dump.display()))?;
        format!("{} alerts", counts.alerts)
    } else {
        "no alert store".into()
    };
    println!(
        "restored {} partitions, {alerts} into {} (snapshot of {}); run `ward verify --data {}`",
        manifest.partitions.len(),
        args.data.display(),
        manifest.created,
        args.data.display()
    );
    Ok(())
}
