//! Kubernetes API server audit events (`audit.k8s.io/v1` `Event`, and the
//! `EventList` bodies of the webhook backend).
//!
//! Events are validated and their time is read without building a tree:
//! the event's JSON text is passed on untouched, so that every field the API
//! server wrote is kept exactly as written, and the indexer parses it once.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::Error;
use crate::time::parse_rfc3339;

/// One item of an audit line or webhook body.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    /// A valid event: its original JSON text and its own time, if it has one.
    Event {
        raw: &'a str,
        timestamp: Option<DateTime<Utc>>,
    },
    /// Something that is not an audit event, kept raw with the reason.
    Invalid { raw: &'a str, error: Error },
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Probe<'a> {
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    requestReceivedTimestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stageTimestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    auditID: Option<IgnoredAny>,
    #[serde(default)]
    verb: Option<IgnoredAny>,
}

enum Probed<'a> {
    Event(Option<DateTime<Utc>>),
    List(Vec<&'a RawValue>),
}

fn probe(raw: &str) -> Result<Probed<'_>, Error> {
    // serde_json would also read a JSON array into a struct, by position.
    if !raw.trim_start().starts_with('{') {
        return Err(Error::Audit("not a JSON object".into()));
    }
    let p: Probe<'_> = serde_json::from_str(raw).map_err(|e| Error::Audit(e.to_string()))?;
    match p.kind.as_deref() {
        Some("Event") => {}
        None if p.auditID.is_some() || p.verb.is_some() => {}
        Some("EventList") => {
            return Ok(Probed::List(p.items.unwrap_or_default()));
        }
        Some(other) => {
            return Err(Error::Audit(format!(
                "kind is {:?}, not Event",
                crate::time::truncate_for_message(other)
            )));
        }
        None => return Err(Error::Audit("no kind, auditID or verb".into())),
    }
    // The event's own time: when the API server received the request, else
    // when this stage was emitted, else the pre-v1 `timestamp`.
    let timestamp = [&p.requestReceivedTimestamp, &p.stageTimestamp, &p.timestamp]
        .into_iter()
        .flatten()
        .find_map(|t| parse_rfc3339(t).ok());
    Ok(Probed::Event(timestamp))
}

/// Parses one line of an audit log file: an Event, or an EventList whose
/// items are returned one by one. Never fails: what does not parse comes
/// back as [`Parsed::Invalid`].
pub fn parse_line(line: &str) -> Vec<Parsed<'_>> {
    match probe(line) {
        Ok(Probed::Event(timestamp)) => vec![Parsed::Event {
            raw: line,
            timestamp,
        }],
        Ok(Probed::List(items)) => items.into_iter().map(|i| parse_item(i.get())).collect(),
        Err(error) => vec![Parsed::Invalid { raw: line, error }],
    }
}

/// Parses a webhook body: an EventList (what the API server sends) or a
/// single Event. Fails only when the body is not JSON or not an audit
/// object at all; list items that are not events come back as
/// [`Parsed::Invalid`] so that they are kept and flagged.
pub fn parse_body(body: &str) -> Result<Vec<Parsed<'_>>, Error> {
    match probe(body)? {
        Probed::Event(timestamp) => Ok(vec![Parsed::Event {
            raw: body.trim(),
            timestamp,
        }]),
        Probed::List(items) => Ok(items.into_iter().map(|i| parse_item(i.get())).collect()),
    }
}

/// The records of one webhook body (see [`parse_body`]), as a batch: one
/// record per event, with source `audit`, the given cluster and node, and
/// the id `audit:<auditID>:<stage>` so that a body the API server sends
/// again is recognised as a replay. Items that are not events are kept raw
/// and flagged, with an id from a hash of their text.
pub fn webhook_batch(
    body: &str,
    cluster: Option<&str>,
    node: Option<&str>,
) -> Result<crate::wire::BatchWriter, Error> {
    #[derive(Deserialize)]
    #[allow(non_snake_case)]
    struct Ids<'a> {
        #[serde(default, borrow)]
        auditID: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        stage: Option<Cow<'a, str>>,
    }
    let mut writer = crate::wire::BatchWriter::new();
    for item in parse_body(body)? {
        let (raw, timestamp, error) = match item {
            Parsed::Event { raw, timestamp } => (raw, timestamp, None),
            Parsed::Invalid { raw, error } => (raw, None, Some(error.to_string())),
        };
        let ids: Option<Ids<'_>> = serde_json::from_str(raw).ok();
        let id = match ids {
            Some(Ids {
                auditID: Some(audit_id),
                stage,
            }) if error.is_none() => crate::RecordId::AuditEvent {
                audit_id: &audit_id,
                stage: &stage.unwrap_or_default(),
            }
            .to_string(),
            _ => crate::RecordId::AuditRaw { text: raw }.to_string(),
        };
        let mut flags = Vec::new();
        if error.is_some() {
            flags.push(crate::Flag::ParseError);
        }
        let timestamp = timestamp.unwrap_or_else(|| {
            flags.push(crate::Flag::TimeInferred);
            Utc::now()
        });
        let envelope = crate::Record {
            id,
            source: crate::SourceKind::Audit,
            timestamp,
            cluster: cluster.map(str::to_owned),
            node: node.map(str::to_owned),
            flags,
            parse_error: error.clone(),
            file: None,
            offset: None,
            event: (),
        };
        let pushed = if error.is_some() {
            writer.push(&envelope.with_event(serde_json::json!({ "message": raw })))
        } else {
            writer.push_raw(&envelope, raw)
        };
        pushed.map_err(|e| Error::Audit(e.to_string()))?;
    }
    Ok(writer)
}

fn parse_item(raw: &str) -> Parsed<'_> {
    match probe(raw) {
        Ok(Probed::Event(timestamp)) => Parsed::Event { raw, timestamp },
        Ok(Probed::List(_)) => Parsed::Invalid {
            raw,
            error: Error::Audit("EventList nested in an EventList".into()),
        },
        Err(error) => Parsed::Invalid { raw, error },
    }
}

/// The time of an already parsed event, by the same precedence as the parser.
pub fn event_time(event: &serde_json::Map<String, serde_json::Value>) -> Option<DateTime<Utc>> {
    ["requestReceivedTimestamp", "stageTimestamp", "timestamp"]
        .iter()
        .filter_map(|k| event.get(*k)?.as_str())
        .find_map(|t| parse_rfc3339(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api","verb":"get","requestReceivedTimestamp":"2024-05-01T10:00:00.123456Z","stageTimestamp":"2024-05-01T10:00:01Z"}"#;

    #[test]
    fn event_time_precedence() {
        let parsed = parse_line(EVENT);
        let Parsed::Event { raw, timestamp } = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(*raw, EVENT);
        assert_eq!(
            timestamp.unwrap().to_rfc3339(),
            "2024-05-01T10:00:00.123456+00:00"
        );
        let only_stage = r#"{"kind":"Event","stageTimestamp":"2024-05-01T10:00:01Z"}"#;
        let Parsed::Event { timestamp, .. } = &parse_line(only_stage)[0] else {
            panic!()
        };
        assert_eq!(timestamp.unwrap().to_rfc3339(), "2024-05-01T10:00:01+00:00");
        let old = r#"{"kind":"Event","timestamp":"2017-09-11T19:55:05Z"}"#;
        let Parsed::Event { timestamp, .. } = &parse_line(old)[0] else {
            panic!()
        };
        assert!(timestamp.is_some());
        let none = r#"{"kind":"Event","verb":"get"}"#;
        assert!(matches!(
            parse_line(none)[0],
            Parsed::Event {
                timestamp: None,
                ..
            }
        ));
    }

    #[test]
    fn malformed_is_kept_with_reason() {
        for bad in [
            r#"{"kind": 0}"#,
            "[1,2]",
            "{\"kind\":\"Pod\"}",
            "{trunc",
            "{}",
        ] {
            let parsed = parse_line(bad);
            assert!(
                matches!(&parsed[0], Parsed::Invalid { raw, .. } if *raw == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_list_splits_and_flags_bad_items() {
        let body = format!(
            "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{EVENT},\n  {{\"kind\":3}}]}}"
        );
        let items = parse_body(&body).unwrap();
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0], Parsed::Event { raw, .. } if raw == EVENT));
        assert!(matches!(items[1], Parsed::Invalid { .. }));
        assert!(parse_body("not json").is_err());
        assert_eq!(parse_body(EVENT).unwrap().len(), 1);
    }

    #[test]
    fn webhook_batch_ids_survive_resends() {
        let body = format!("{{\"kind\":\"EventList\",\"items\":[{EVENT},{{\"kind\":3}}]}}");
        let decode = |w: crate::wire::BatchWriter| {
            let mut w = w;
            crate::wire::decode(&w.take()).unwrap()
        };
        let a = decode(webhook_batch(&body, Some("prod"), None).unwrap());
        let b = decode(webhook_batch(&body, Some("prod"), None).unwrap());
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].id, "audit:a1:ResponseComplete");
        assert_eq!(a[0].cluster.as_deref(), Some("prod"));
        assert_eq!(a[0].event["verb"], "get");
        assert!(a[1].has_flag(crate::Flag::ParseError));
        assert_eq!(a[1].id, b[1].id, "a resent invalid item keeps its id");
        assert!(webhook_batch("{", None, None).is_err());
    }
}
