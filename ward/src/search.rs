//! `ward search`: the analyst's command-line client of the search API.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Indexer base URL.
    #[arg(long, env = "WARD_SERVER", default_value = "http://127.0.0.1:7171")]
    server: String,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    start: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    end: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print hits as NDJSON.
    #[arg(long)]
    json: bool,
    /// Query, e.g. 'verb:create AND objectRef.subresource:exec'.
    query: String,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut params = vec![("q", args.query.clone()), ("limit", args.limit.to_string())];
    if let Some(s) = &args.start {
        params.push(("start", s.clone()));
    }
    if let Some(e) = &args.end {
        params.push(("end", e.clone()));
    }
    let url = format!("{}/api/v1/search", args.server.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .query(&params)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("unknown error");
        if let Some(pos) = body["position"].as_u64() {
            bail!(
                "{message}\n  {}\n  {}^",
                args.query,
                " ".repeat(pos as usize)
            );
        }
        bail!("{status}: {message}");
    }
    let mut out = std::io::stdout().lock();
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    for hit in &hits {
        if args.json {
            writeln!(out, "{hit}")?;
        } else {
            writeln!(out, "{}", summary(hit))?;
        }
    }
    if !args.json {
        writeln!(out, "-- {} of {} matches", hits.len(), body["total"])?;
    }
    Ok(())
}

/// One line per hit: time, source, who or where, what.
fn summary(hit: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let time = s(&hit["timestamp"]);
    match hit["source"].as_str() {
        Some("audit") => {
            let code = hit["responseStatus"]["code"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into());
            let ips = hit["sourceIPs"]
                .as_array()
                .and_then(|a| a.first())
                .map(s)
                .unwrap_or_else(|| "-".into());
            format!(
                "{time}  audit      {:<40} {:<7} {} ({code}) from {ips}",
                s(&hit["user"]["username"]),
                s(&hit["verb"]),
                s(&hit["requestURI"])
            )
        }
        _ => {
            let k = &hit["kubernetes"];
            format!(
                "{time}  container  {}/{}/{}  {}",
                s(&k["namespace"]),
                s(&k["pod"]),
                s(&k["container"]),
                s(&hit["message"])
            )
        }
    }
}
