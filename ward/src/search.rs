//! `ward search`: the analyst's command-line client of the query API:
//! search (a page, or every page with `--all`), aggregations
//! (`--histogram`, `--terms`), live tail (`--tail`) and export
//! (`--export ndjson|csv`, with progress on stderr).

use std::io::Write;

use anyhow::Context;
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
    /// `newest` or `oldest` first.
    #[arg(long, default_value = "newest")]
    order: String,
    /// Continue after this cursor (from a previous page).
    #[arg(long)]
    cursor: Option<String>,
    /// Date histogram: `auto` or an interval such as `5m` (prints counts).
    #[arg(long)]
    histogram: Option<String>,
    /// Top values of a keyword field, e.g. `user.username` (prints counts).
    #[arg(long)]
    terms: Option<String>,
    /// How many top values `--terms` prints.
    #[arg(long, default_value_t = 10)]
    size: usize,
    /// Follow: print matching events as they are indexed (Ctrl-C stops).
    #[arg(long, conflicts_with_all = ["histogram", "terms", "export"])]
    tail: bool,
    /// Stream every match, oldest first, as `ndjson` or `csv` to stdout.
    #[arg(long, conflicts_with_all = ["histogram", "terms"])]
    export: Option<String>,
    /// File holding a bearer token for the API.
    #[arg(long, env = "WARD_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Query, e.g. 'verb:create AND objectRef.subresource:exec'.
    query: String,
}

fn request(
    args: &SearchArgs,
    endpoint: &str,
    params: &[(&str, String)],
) -> anyhow::Result<reqwest::RequestBuilder> {
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/{endpoint}", args.server.trim_end_matches('/'));
    let mut all: Vec<(&str, String)> = vec![("q", args.query.clone())];
    if let Some(s) = &args.start {
        all.push(("start", s.clone()));
    }
    if let Some(e) = &args.end {
        all.push(("end", e.clone()));
    }
    all.extend(params.iter().cloned());
    let mut builder = client.get(url).query(&all);
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        builder = builder.bearer_auth(token.trim());
    }
    Ok(builder)
}

/// The response, or the server's error with the query position marked.
async fn send(
    args: &SearchArgs,
    builder: reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    let resp = builder.send().await.context("cannot reach the server")?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    Err(server_error(&args.query, status, &body))
}

/// The server's error answer, with a caret under the failing position of
/// a query error.
fn server_error(query: &str, status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    let message = body["error"].as_str().unwrap_or("unknown error");
    match body["position"].as_u64() {
        Some(pos) => anyhow::anyhow!("{message}\n  {query}\n  {}^", " ".repeat(pos as usize)),
        None => anyhow::anyhow!("{status}: {message}"),
    }
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    if args.tail {
        return tail(&args).await;
    }
    if let Some(format) = &args.export {
        return export(&args, format).await;
    }
    if args.histogram.is_some() || args.terms.is_some() {
        return aggregate(&args).await;
    }
    let mut params = vec![
        ("limit", args.limit.to_string()),
        ("order", args.order.clone()),
    ];
    if let Some(c) = &args.cursor {
        params.push(("cursor", c.clone()));
    }
    let resp = request(&args, "search", &params)?
        .send()
        .await
        .context("cannot reach the server")?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the server's answer is not JSON")?;
    if !status.is_success() {
        return Err(server_error(&args.query, status, &body));
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
        if let Some(c) = body["cursor"].as_str() {
            writeln!(out, "-- more: --cursor {c}")?;
        }
    }
    Ok(())
}

async fn aggregate(args: &SearchArgs) -> anyhow::Result<()> {
    let mut params = Vec::new();
    if let Some(h) = &args.histogram {
        params.push(("histogram", h.clone()));
    }
    if let Some(t) = &args.terms {
        params.push(("terms", t.clone()));
        params.push(("size", args.size.to_string()));
    }
    let body: Value = send(args, request(args, "aggregate", &params)?)
        .await?
        .json()
        .await
        .context("the server's answer is not JSON")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{body}")?;
        return Ok(());
    }
    writeln!(out, "{} matches", body["total"])?;
    if let Some(buckets) = body["histogram"]["buckets"].as_array() {
        let max = buckets
            .iter()
            .filter_map(|b| b["count"].as_u64())
            .max()
            .unwrap_or(1)
            .max(1);
        writeln!(
            out,
            "per {}:",
            body["histogram"]["interval"].as_str().unwrap_or("?")
        )?;
        for b in buckets {
            let n = b["count"].as_u64().unwrap_or(0);
            let bar = "#".repeat(((n * 40).div_ceil(max)) as usize);
            writeln!(
                out,
                "  {}  {n:>8}  {bar}",
                b["start"].as_str().unwrap_or("?")
            )?;
        }
    }
    if let Some(buckets) = body["terms"]["buckets"].as_array() {
        writeln!(
            out,
            "top {}:",
            body["terms"]["field"].as_str().unwrap_or("?")
        )?;
        for b in buckets {
            writeln!(
                out,
                "  {:>8}  {}",
                b["count"],
                b["key"].as_str().unwrap_or("?")
            )?;
        }
        writeln!(out, "  {:>8}  (other)", body["terms"]["other"])?;
    }
    Ok(())
}

async fn tail(args: &SearchArgs) -> anyhow::Result<()> {
    let mut resp = send(args, request(args, "tail", &[])?).await?;
    let mut pending = Vec::new();
    let mut event = String::new();
    while let Some(chunk) = resp.chunk().await.context("the tail stream broke")? {
        pending.extend_from_slice(&chunk);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let mut out = std::io::stdout().lock();
                match event.as_str() {
                    "hit" if args.json => writeln!(out, "{data}")?,
                    "hit" => {
                        let hit: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                        writeln!(out, "{}", summary(&hit))?;
                    }
                    _ => eprintln!("tail: {event} {data}"),
                }
            }
        }
    }
    Ok(())
}

async fn export(args: &SearchArgs, format: &str) -> anyhow::Result<()> {
    let mut resp = send(
        args,
        request(args, "export", &[("format", format.to_owned())])?,
    )
    .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = std::time::Instant::now();
    let mut last = started;
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await.context("the export stream broke")? {
        out.write_all(&chunk)?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if last.elapsed() >= std::time::Duration::from_millis(500) {
            last = std::time::Instant::now();
            eprint!(
                "\rexported {lines} lines, {:.1} MiB, {:.0} s",
                bytes as f64 / 1048576.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush()?;
    eprintln!(
        "\rexported {lines} lines, {:.1} MiB in {:.1} s",
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
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
