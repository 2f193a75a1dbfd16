//! `ward rules test`: replay audit files through a rule set.
//!
//! Files may hold one audit `Event` per line (the log backend), `EventList`
//! documents (the webhook backend), or a single JSON document spread over
//! many lines (a pretty-printed capture). Everything is read first and
//! sorted by event time, because correlations only make sense in time
//! order and files given together may interleave.
//!
//! What is not an audit event is reported on `err` with file, line and
//! reason, and skipped: a test run should show every problem at once, not
//! stop at the first.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::{Engine, Error, RuleSet, event_time};

struct Loaded {
    time: DateTime<Utc>,
    event: Map<String, Value>,
}

/// Runs `rules` over every event of `files` in event-time order, writes one
/// JSON alert per line on `out`, reports unusable input on `err`, and
/// returns the number of alerts. Fails only if a file cannot be read or
/// output cannot be written.
pub fn run_test_files(
    rules: &RuleSet,
    files: &[PathBuf],
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<usize, Error> {
    let mut events = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        read_file(path, &text, &mut events, err).map_err(Error::Output)?;
    }
    // Stable: events with the same time keep their file order.
    events.sort_by_key(|e| e.time);
    let mut engine = Engine::new(rules.clone());
    let mut alerts = Vec::new();
    let mut count = 0;
    for e in &events {
        alerts.clear();
        engine.process_map(&e.event, e.time, &mut alerts);
        for a in &alerts {
            serde_json::to_writer(&mut *out, a).map_err(|e| Error::Output(e.into()))?;
            out.write_all(b"\n").map_err(Error::Output)?;
        }
        count += alerts.len();
    }
    out.flush().map_err(Error::Output)?;
    Ok(count)
}

fn read_file(
    path: &Path,
    text: &str,
    events: &mut Vec<Loaded>,
    err: &mut impl Write,
) -> std::io::Result<()> {
    // Events without a time of their own inherit the previous event's, so
    // they stay where the file put them.
    let mut last_time = DateTime::<Utc>::UNIX_EPOCH;
    let t = text.trim_start();
    let whole = if t.starts_with('{') || t.starts_with('[') {
        serde_json::from_str::<Value>(text).ok()
    } else {
        None
    };
    if let Some(doc) = whole {
        let line = 1 + text[..text.len() - t.len()].matches('\n').count();
        return take(path, line, doc, events, &mut last_time, err);
    }
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(doc) => take(path, line_no, doc, events, &mut last_time, err)?,
            Err(e) => writeln!(err, "{}:{line_no}: not JSON: {e}", path.display())?,
        }
    }
    Ok(())
}

/// Adds the event(s) of one JSON document, reporting what is not an event.
fn take(
    path: &Path,
    line: usize,
    doc: Value,
    events: &mut Vec<Loaded>,
    last_time: &mut DateTime<Utc>,
    err: &mut impl Write,
) -> std::io::Result<()> {
    let items = match doc {
        Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("EventList") => {
            match m.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => {
                    writeln!(err, "{}:{line}: EventList without items", path.display())?;
                    return Ok(());
                }
            }
        }
        Value::Array(items) => items,
        other => vec![other],
    };
    let many = items.len() > 1;
    for (i, item) in items.into_iter().enumerate() {
        let at = if many {
            format!("{}:{line}: item {}", path.display(), i + 1)
        } else {
            format!("{}:{line}", path.display())
        };
        match check(item) {
            Ok(event) => {
                let time = event_time(&event).unwrap_or(*last_time);
                *last_time = time;
                events.push(Loaded { time, event });
            }
            Err(reason) => writeln!(err, "{at}: not an audit event: {reason}")?,
        }
    }
    Ok(())
}

fn check(v: Value) -> Result<Map<String, Value>, String> {
    let Value::Object(m) = v else {
        return Err("not a JSON object".into());
    };
    match m.get("kind") {
        Some(Value::String(k)) if k == "Event" => Ok(m),
        Some(Value::String(k)) => Err(format!("kind is {k:?}, not Event")),
        Some(other) => Err(format!("kind is {other}, not \"Event\"")),
        None if m.contains_key("auditID") || m.contains_key("verb") => Ok(m),
        None => Err("no kind, auditID or verb".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_errors() {
        let mut events = Vec::new();
        let mut err = Vec::new();
        let text = "{\"kind\":\"Event\",\"verb\":\"get\",\"timestamp\":\"2020-01-01T00:00:02Z\"}\n\
                    not json\n\
                    \n\
                    {\"kind\":\"EventList\",\"items\":[{\"kind\":\"Event\",\"verb\":\"list\"},{\"kind\":3}]}\n\
                    {\"kind\":\"Pod\"}\n";
        read_file(Path::new("f.log"), text, &mut events, &mut err).unwrap();
        assert_eq!(events.len(), 2);
        // The untimed list item inherits the previous event's time.
        assert_eq!(events[1].time, events[0].time);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("f.log:2: not JSON"), "{err}");
        assert!(
            err.contains("f.log:4: item 2: not an audit event: kind is 3"),
            "{err}"
        );
        assert!(
            err.contains("f.log:5: not an audit event: kind is \"Pod\""),
            "{err}"
        );

        // One pretty-printed document.
        let mut events = Vec::new();
        let mut err = Vec::new();
        let pretty = "\n{\n  \"kind\": \"Event\",\n  \"verb\": \"get\"\n}\n";
        read_file(Path::new("p.json"), pretty, &mut events, &mut err).unwrap();
        assert_eq!(events.len(), 1);
        assert!(err.is_empty());
        let mut err = Vec::new();
        read_file(
            Path::new("bad.json"),
            "\n{\"kind\": 0}",
            &mut events,
            &mut err,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "bad.json:2: not an audit event: kind is 0, not \"Event\"\n"
        );
    }
}
