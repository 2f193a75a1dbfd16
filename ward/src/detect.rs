//! Detection in the indexer process (`--rules`, `--no-builtin-rules`,
//! `--sinks`): the alert store, the rules tap, the delivery loop and the
//! rule-file watcher; and `ward rules hunt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use notify::Watcher;
use serde_json::{Value, json};
use ward_alerts::{AlertStore, Dispatcher, RulesTap, SinksConfig};
use ward_rules::RuleSet;

/// What the indexer detects and where alerts go.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Load the built-in Kubernetes audit pack.
    pub builtin: bool,
    /// Rule files or directories, watched for changes.
    pub rules: Vec<PathBuf>,
    /// The sinks file.
    pub sinks: Option<PathBuf>,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            builtin: true,
            rules: Vec::new(),
            sinks: None,
        }
    }
}

/// Everything detection needs at run time.
pub struct Running {
    pub store: AlertStore,
    pub tap: Option<Arc<RulesTap>>,
    pub dispatcher: Dispatcher,
}

/// Loads rules (reporting each bad one), opens the alert store and builds
/// the tap and the dispatcher. Fails only on the store or the sinks file:
/// a bad rule is skipped.
pub fn start(data: &Path, detection: &Detection) -> anyhow::Result<Running> {
    let store = AlertStore::open(&data.join("alerts.redb"))
        .with_context(|| format!("cannot open the alert store in {}", data.display()))?;
    let sinks = match &detection.sinks {
        Some(path) => SinksConfig::load(path)?,
        None => SinksConfig::default(),
    };
    let sinks = Arc::new(sinks);
    let dispatcher = Dispatcher::new(store.clone(), sinks.clone())?;
    let tap = if detection.builtin || !detection.rules.is_empty() {
        let (rules, errors) = load_rules(detection);
        let tap = RulesTap::new(
            rules,
            store.clone(),
            sinks.clone(),
            Some(dispatcher.waker()),
        );
        tap.set_load_errors(&errors);
        Some(Arc::new(tap))
    } else {
        None
    };
    tracing::info!(
        rules = tap.as_ref().map_or(0, |t| t.rule_count()),
        builtin = detection.builtin,
        sinks = sinks.sinks.len(),
        queued = store.queue_len().unwrap_or(0),
        "detection ready"
    );
    Ok(Running {
        store,
        tap,
        dispatcher,
    })
}

/// The rules, and why documents were skipped (kept on the tap for the
/// rules listing of the API and dashboard).
fn load_rules(detection: &Detection) -> (RuleSet, Vec<ward_rules::LoadError>) {
    let (rules, errors) = RuleSet::load_with_builtin(detection.builtin, &detection.rules);
    for e in &errors {
        tracing::warn!(source = %e.source, error = %e, "rule skipped");
    }
    (rules, errors)
}

/// Reloads the rules when a file under `detection.rules` changes, until
/// `stop` resolves. A bad file is reported and skipped; the others keep
/// running.
pub async fn watch_rules(
    detection: Detection,
    tap: Arc<RulesTap>,
    stop: impl std::future::Future<Output = ()>,
) {
    if detection.rules.is_empty() {
        return stop.await;
    }
    let paths: Vec<PathBuf> = detection
        .rules
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watched = paths.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Opening and reading the rule files is an event too: a reload
            // must not ask for the next one (issue 22).
            Ok(e) if !is_change(&e.kind) => false,
            Ok(e) => e
                .paths
                .iter()
                .any(|p| watched.iter().any(|w| p.starts_with(w))),
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch rule files; rules will not reload");
            return stop.await;
        }
    };
    // Watch the directory holding each path: editors replace files by
    // renaming over them, which a watch on the file itself would miss.
    for p in &paths {
        let dir = if p.is_dir() {
            p.as_path()
        } else {
            p.parent().unwrap_or(p.as_path())
        };
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot watch rule path");
        }
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            got = rx.recv() => if got.is_none() { return },
        }
        // Let an editor finish writing, then take every change at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        let d = detection.clone();
        match tokio::task::spawn_blocking(move || load_rules(&d)).await {
            Ok((rules, errors)) => {
                let count = rules.len();
                tap.replace_rules(rules);
                tap.set_load_errors(&errors);
                tracing::info!(rules = count, "rules reloaded");
            }
            Err(e) => tracing::error!(error = %e, "rule reload failed"),
        }
    }
}

/// Whether a file event can mean a rule file changed: not an open, a read
/// or a close after reading (the loader's own doing).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// `ward rules hunt`.
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// Rule files or directories (default: the indexer's live rules).
    #[arg(long = "rules")]
    rules: Vec<PathBuf>,
    /// Start of the range of indexed events (RFC 3339).
    #[arg(long)]
    start: String,
    /// End of the range, exclusive (RFC 3339).
    #[arg(long)]
    end: String,
    /// Indexer base URL.
    #[arg(long, env = "WARD_SERVER", default_value = "http://127.0.0.1:7171")]
    server: String,
    /// File holding an analyst or admin token, when the indexer has tokens.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Stop after this many alerts.
    #[arg(long, default_value_t = 10_000)]
    max_alerts: usize,
}

/// Sends the rules' text to the indexer, prints one JSON alert per line on
/// stdout and a summary (and rule load errors) on stderr.
pub async fn hunt(args: HuntArgs) -> anyhow::Result<()> {
    let mut body = json!({
        "start": args.start,
        "end": args.end,
        "max_alerts": args.max_alerts,
    });
    if !args.rules.is_empty() {
        let (files, errors) = RuleSet::files(&args.rules);
        for e in &errors {
            eprintln!("rule load error: {e}");
        }
        let mut texts = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => texts.push(json!({"name": f.display().to_string(), "text": text})),
                Err(e) => eprintln!("rule load error: {}: {e}", f.display()),
            }
        }
        if texts.is_empty() {
            bail!("no rule file could be read");
        }
        body["rules"] = Value::Array(texts);
    }
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/rules/hunt", args.server.trim_end_matches('/'));
    let mut request = client.post(&url).json(&body);
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .context("the indexer's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "hunt failed ({}): {}",
            status.as_u16(),
            answer["error"].as_str().unwrap_or("no reason given")
        );
    }
    for e in answer["rule_errors"].as_array().into_iter().flatten() {
        eprintln!("rule load error: {}", e.as_str().unwrap_or_default());
    }
    let mut out = std::io::stdout().lock();
    let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
    for a in &alerts {
        use std::io::Write;
        serde_json::to_writer(&mut out, a)?;
        writeln!(out)?;
    }
    eprintln!(
        "{} rules over {} events: {} alerts{}",
        answer["rules"],
        answer["events"],
        alerts.len(),
        if answer["truncated"] == true {
            " (truncated)"
        } else {
            ""
        }
    );
    Ok(())
}
