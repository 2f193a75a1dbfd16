//! Redaction: secrets never reach the index.
//!
//! Runs after detection rules have seen a record (they need the original)
//! and before it is stored:
//!
//! - In audit events, the values under `data` and `stringData` of Secret
//!   objects in `requestObject` / `responseObject` (and the items of a
//!   `SecretList`) become `sha256:<hex>` of the value. The hash keeps them
//!   comparable ("was the same value written twice?") without revealing
//!   them. The `last-applied-configuration` annotation of a Secret repeats
//!   its data, so it is hashed whole.
//! - In container log messages, configurable patterns (bearer tokens, AWS
//!   keys, passwords in URLs by default) are masked.
//!
//! A redacted record says so in `ward.redacted` (which rules fired), and
//! every redaction is counted per rule for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use regex::{Regex, RegexSet};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::tree::{self, Node, Object};

/// The name under which Secret-data redactions are counted.
pub const SECRET_DATA: &str = "secret-data";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A masking pattern for container messages.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: String,
    pub regex: String,
    /// The replacement, with `$1`-style references to the regex's groups.
    pub replacement: String,
}

impl Pattern {
    pub fn new(name: &str, regex: &str, replacement: &str) -> Pattern {
        Pattern {
            name: name.into(),
            regex: regex.into(),
            replacement: replacement.into(),
        }
    }

    /// Parses `NAME=REGEX` (the replacement is `[REDACTED:NAME]`).
    pub fn parse(spec: &str) -> Result<Pattern, Error> {
        let (name, regex) = spec.split_once('=').ok_or_else(|| {
            Error::InvalidRequest(format!("redaction pattern {spec:?} is not NAME=REGEX"))
        })?;
        Ok(Pattern::new(name, regex, &format!("[REDACTED:{name}]")))
    }
}

/// The patterns on by default.
pub fn default_patterns() -> Vec<Pattern> {
    vec![
        Pattern::new(
            "bearer-token",
            r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
            "${1}[REDACTED:bearer-token]",
        ),
        Pattern::new(
            "aws-access-key-id",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            "[REDACTED:aws-access-key-id]",
        ),
        Pattern::new(
            "aws-secret-access-key",
            r#"(?i)(aws_secret_access_key["']?\s*[=:]\s*["']?)[A-Za-z0-9/+=]{40}"#,
            "${1}[REDACTED:aws-secret-access-key]",
        ),
        Pattern::new(
            "url-password",
            r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]+:)[^@\s/]+@",
            "${1}[REDACTED:url-password]@",
        ),
    ]
}

/// Redactions made but not yet counted. Ingest counts a batch's only once
/// the writer has taken the batch: a refused batch is sent again, and its
/// redactions would be counted twice.
#[derive(Debug, Default)]
pub struct Tally {
    secret: u64,
    /// Per pattern, in the redactor's order.
    patterns: Vec<u64>,
}

/// How records are redacted, with its counters.
#[derive(Debug)]
pub struct Redactor {
    secrets: bool,
    set: RegexSet,
    patterns: Vec<(Pattern, Regex)>,
    counts: Vec<AtomicU64>,
    secret_count: AtomicU64,
}

impl Redactor {
    /// A redactor hashing Secret data (when `secrets`) and masking `patterns`.
    pub fn new(secrets: bool, patterns: Vec<Pattern>) -> Result<Redactor, Error> {
        let compiled = patterns
            .into_iter()
            .map(|p| {
                Regex::new(&p.regex).map(|r| (p.clone(), r)).map_err(|e| {
                    Error::InvalidRequest(format!("redaction pattern {}: {e}", p.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let set = RegexSet::new(compiled.iter().map(|(p, _)| p.regex.as_str()))
            .map_err(|e| Error::InvalidRequest(format!("redaction patterns: {e}")))?;
        Ok(Redactor {
            secrets,
            set,
            counts: compiled.iter().map(|_| AtomicU64::new(0)).collect(),
            patterns: compiled,
            secret_count: AtomicU64::new(0),
        })
    }

    /// The default: Secret data hashed, the default patterns masked.
    pub fn default_on() -> Redactor {
        // The default patterns are fixed and tested; they compile.
        Redactor::new(true, default_patterns()).unwrap_or_else(|_| Redactor::off())
    }

    /// Redacts nothing.
    pub fn off() -> Redactor {
        Redactor {
            secrets: false,
            set: RegexSet::empty(),
            patterns: Vec::new(),
            counts: Vec::new(),
            secret_count: AtomicU64::new(0),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.secrets || !self.patterns.is_empty()
    }

    /// Redaction counts per rule name, Secret data first.
    pub fn counts(&self) -> Vec<(&str, u64)> {
        let mut out = Vec::with_capacity(self.patterns.len() + 1);
        if self.secrets {
            out.push((SECRET_DATA, self.secret_count.load(Ordering::Relaxed)));
        }
        for ((p, _), n) in self.patterns.iter().zip(&self.counts) {
            out.push((p.name.as_str(), n.load(Ordering::Relaxed)));
        }
        out
    }

    /// Whether [`Redactor::redact`] could change `hit`: it holds a Secret
    /// (or a list) under `requestObject` / `responseObject`, or a message
    /// one of the patterns matches. Only such records take the road
    /// through a `serde_json` map at ingest.
    pub(crate) fn may_change(&self, hit: &Object<'_>) -> bool {
        match hit.get("source").and_then(Node::as_str) {
            Some("audit") if self.secrets => {
                ["requestObject", "responseObject"].iter().any(|key| {
                    let kind = hit
                        .get(key)
                        .and_then(Node::as_members)
                        .and_then(|o| tree::get(o, "kind"))
                        .and_then(Node::as_str);
                    matches!(kind, Some("Secret" | "SecretList" | "List"))
                })
            }
            Some("container") if !self.patterns.is_empty() => hit
                .get("message")
                .and_then(Node::as_str)
                .is_some_and(|m| self.set.is_match(m)),
            _ => false,
        }
    }

    /// Redacts a hit in place and counts it; true if anything was replaced.
    pub fn redact(&self, hit: &mut Map<String, Value>) -> bool {
        let mut tally = Tally::default();
        let redacted = self.redact_into(hit, &mut tally);
        self.count(&tally);
        redacted
    }

    /// Adds a tally to the counters.
    pub(crate) fn count(&self, tally: &Tally) {
        if tally.secret > 0 {
            self.secret_count.fetch_add(tally.secret, Ordering::Relaxed);
        }
        for (counter, n) in self.counts.iter().zip(&tally.patterns) {
            if *n > 0 {
                counter.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    /// Redacts a hit in place, counting into `tally`; true if anything was
    /// replaced.
    pub(crate) fn redact_into(&self, hit: &mut Map<String, Value>, tally: &mut Tally) -> bool {
        let mut fired: Vec<String> = Vec::new();
        let source = match hit.get("source").and_then(Value::as_str) {
            Some("audit") => Some(true),
            Some("container") => Some(false),
            _ => None,
        };
        if self.secrets && source == Some(true) {
            let mut n = 0;
            for key in ["requestObject", "responseObject"] {
                if let Some(object) = hit.get_mut(key) {
                    n += redact_secret_object(object);
                }
            }
            if n > 0 {
                tally.secret += n;
                fired.push(SECRET_DATA.into());
            }
        }
        if !self.patterns.is_empty()
            && source == Some(false)
            && let Some(Value::String(message)) = hit.get_mut("message")
        {
            let matches = self.set.matches(message);
            if matches.matched_any() {
                for i in matches.iter() {
                    let (pattern, regex) = &self.patterns[i];
                    let replaced = regex.replace_all(message, pattern.replacement.as_str());
                    if let std::borrow::Cow::Owned(text) = replaced {
                        *message = text;
                        if tally.patterns.len() < self.patterns.len() {
                            tally.patterns.resize(self.patterns.len(), 0);
                        }
                        tally.patterns[i] += 1;
                        fired.push(pattern.name.clone());
                    }
                }
            }
        }
        if fired.is_empty() {
            return false;
        }
        if let Some(Value::Object(ward)) = hit.get_mut("ward") {
            ward.insert(
                "redacted".into(),
                Value::Array(fired.into_iter().map(Value::String).collect()),
            );
        }
        true
    }
}

/// Hashes the data of a Secret or of each Secret in a list; returns how
/// many values were replaced.
fn redact_secret_object(object: &mut Value) -> u64 {
    let Some(map) = object.as_object_mut() else {
        return 0;
    };
    match map.get("kind").and_then(Value::as_str) {
        Some("Secret") => redact_secret(map),
        Some("SecretList") | Some("List") => map
            .get_mut("items")
            .and_then(Value::as_array_mut)
            .map_or(0, |items| items.iter_mut().map(redact_secret_object).sum()),
        _ => 0,
    }
}

fn redact_secret(secret: &mut Map<String, Value>) -> u64 {
    let mut n = 0;
    for key in ["data", "stringData"] {
        if let Some(Value::Object(data)) = secret.get_mut(key) {
            for value in data.values_mut() {
                if !is_hashed(value) {
                    *value = Value::String(hash_value(value));
                    n += 1;
                }
            }
        }
    }
    if let Some(Value::Object(annotations)) = secret
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        && let Some(value) = annotations.get_mut(LAST_APPLIED)
        && !is_hashed(value)
    {
        *value = Value::String(hash_value(value));
        n += 1;
    }
    n
}

fn is_hashed(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.starts_with("sha256:"))
}

fn hash_value(value: &Value) -> String {
    let digest = match value {
        Value::String(s) => Sha256::digest(s.as_bytes()),
        other => Sha256::digest(other.to_string().as_bytes()),
    };
    format!("sha256:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn audit(object: Value) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "source": "audit", "verb": "create", "requestObject": object.clone(),
            "responseObject": object, "ward": {"id": "x"}
        }) else {
            unreachable!()
        };
        map
    }

    /// Ingest redacts only the records `may_change` picks: it must pick
    /// every record `redact` changes.
    #[test]
    fn may_change_picks_every_record_redact_changes() {
        let r = Redactor::default_on();
        let secret = json!({"kind": "Secret", "data": {"k": "dg=="}});
        let mut hits = vec![
            audit(secret.clone()),
            audit(json!({"kind": "SecretList", "items": [secret.clone()]})),
            audit(json!({"kind": "List", "items": [secret.clone()]})),
            audit(json!({"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: "{}"}}})),
            audit(json!({"kind": "ConfigMap", "data": {"k": "v"}})),
            audit(json!("Secret")),
        ];
        for message in [
            "Authorization: Bearer abcdefghijklmnop",
            "key AKIAABCDEFGHIJKLMNOP",
            "aws_secret_access_key = abcdefghijabcdefghijabcdefghijabcdefghij",
            "postgres://user:hunter2@db:5432/x",
            "nothing to hide",
        ] {
            for source in ["container", "audit", "ward"] {
                let Value::Object(hit) = json!({"source": source, "message": message, "ward": {}})
                else {
                    unreachable!()
                };
                hits.push(hit);
            }
        }
        let mut changed = 0;
        for hit in hits {
            let picked = r.may_change(&Object::of_map(&hit));
            let mut redacted = hit.clone();
            if r.redact(&mut redacted) {
                changed += 1;
                assert!(picked, "{hit:?}");
            }
        }
        assert_eq!(changed, 4 + 4, "the cases that redact");
    }

    #[test]
    fn secret_data_is_hashed_in_request_and_response() {
        let r = Redactor::default_on();
        let mut hit = audit(json!({
            "kind": "Secret", "data": {"password": "c2VjcmV0"}, "stringData": {"token": "abc"},
            "metadata": {"name": "db", "annotations": {LAST_APPLIED: "{\"data\":{\"password\":\"c2VjcmV0\"}}"}}
        }));
        r.redact(&mut hit);
        let text = serde_json::to_string(&hit).unwrap();
        assert!(!text.contains("c2VjcmV0"), "{text}");
        assert!(!text.contains("\"abc\""), "{text}");
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(b"c2VjcmV0")));
        assert_eq!(hit["requestObject"]["data"]["password"], json!(expected));
        assert_eq!(hit["responseObject"]["data"]["password"], json!(expected));
        assert_eq!(hit["requestObject"]["metadata"]["name"], json!("db"));
        assert_eq!(hit["ward"]["redacted"], json!([SECRET_DATA]));
        assert_eq!(r.counts()[0], (SECRET_DATA, 6));
    }

    #[test]
    fn secret_lists_and_other_kinds() {
        let r = Redactor::default_on();
        let mut hit = audit(
            json!({"kind": "SecretList", "items": [{"kind": "Secret", "data": {"a": "QQ=="}}]}),
        );
        r.redact(&mut hit);
        assert!(
            hit["responseObject"]["items"][0]["data"]["a"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let mut cm = audit(json!({"kind": "ConfigMap", "data": {"a": "plain"}}));
        r.redact(&mut cm);
        assert_eq!(cm["requestObject"]["data"]["a"], json!("plain"));
        assert!(cm["ward"].get("redacted").is_none());
    }

    #[test]
    fn patterns_mask_container_messages() {
        let r = Redactor::default_on();
        for (line, secret, name) in [
            (
                "curl -H 'Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig' x",
                "eyJhbGci",
                "bearer-token",
            ),
            (
                "using key AKIAIOSFODNN7EXAMPLE now",
                "AKIAIOSFODNN7EXAMPLE",
                "aws-access-key-id",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "wJalrXUtn",
                "aws-secret-access-key",
            ),
            (
                "connecting to postgres://app:hunter2@db:5432/x",
                "hunter2",
                "url-password",
            ),
        ] {
            let Value::Object(mut hit) =
                json!({"source": "container", "message": line, "ward": {}})
            else {
                unreachable!()
            };
            r.redact(&mut hit);
            let message = hit["message"].as_str().unwrap();
            assert!(!message.contains(secret), "{message}");
            assert!(message.contains(&format!("[REDACTED:{name}]")), "{message}");
            assert_eq!(hit["ward"]["redacted"], json!([name]));
        }
        let Value::Object(mut plain) =
            json!({"source": "container", "message": "GET /healthz 200", "ward": {}})
        else {
            unreachable!()
        };
        r.redact(&mut plain);
        assert_eq!(plain["message"], json!("GET /healthz 200"));
        assert!(r.counts().iter().all(|(_, n)| *n == 1 || *n == 0));
    }

    #[test]
    fn off_redacts_nothing() {
        let r = Redactor::off();
        let mut hit = audit(json!({"kind": "Secret", "data": {"a": "QQ=="}}));
        r.redact(&mut hit);
        assert_eq!(hit["requestObject"]["data"]["a"], json!("QQ=="));
        assert!(!r.is_enabled());
    }
}
