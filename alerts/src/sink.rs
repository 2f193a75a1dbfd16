//! Sinks: where alerts go, chosen per level or rule (`ward indexer --sinks
//! FILE`), and the bodies each kind of sink is sent.
//!
//! ```yaml
//! sinks:
//!   - name: oncall
//!     type: alertmanager          # POST <url>/api/v2/alerts
//!     url: http://127.0.0.1:9093
//!     min_level: high             # default when neither levels nor rules: medium
//!     resend_secs: 60             # refresh Alertmanager's in-memory alerts
//!     ends_after_secs: 86400      # endsAt, unless sent again
//!   - name: soc
//!     type: webhook               # the stored alert as JSON
//!     url: https://soc.example/hooks/ward
//!     headers: {Authorization: "Bearer ..."}
//!     levels: [medium, high, critical]
//!   - name: chat
//!     type: slack                 # Slack-style incoming webhook: {"text": ...}
//!     url: https://hooks.slack.example/services/T/B/X
//!     rules: [b6f8f1b4-6a2c-4c4e-9b9d-2b9b6d0d6c11]
//! retry:                          # jittered exponential backoff per sink
//!   initial_ms: 1000
//!   max_ms: 300000
//! ```
//!
//! Unknown keys are refused, so a typo (`min-level`) fails the start
//! instead of silently routing nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_rules::Level;

use crate::error::Error;
use crate::store::StoredAlert;

/// The sinks file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// What kind of receiver a sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Generic JSON webhook: the stored alert.
    Webhook,
    /// Prometheus Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
    /// Slack-style incoming webhook (`{"text": ...}`).
    Slack,
}

/// One sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// For Alertmanager, its base URL (`/api/v2/alerts` is appended unless
    /// the URL already ends with it).
    pub url: String,
    /// Extra request headers (tokens, tenant ids).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only alerts of these levels.
    #[serde(default)]
    pub levels: Vec<Level>,
    /// Only alerts of this level or above (default `medium` when neither
    /// `levels` nor `rules` is given).
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Only alerts of these rule ids.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Per request.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Alertmanager: `endsAt` is this long after the delivery (or after
    /// the alert's time, when that is later), so an alert that is not sent
    /// again resolves by itself.
    #[serde(default = "default_ends_after_secs")]
    pub ends_after_secs: u64,
    /// Alertmanager: every this many seconds, send again every alert of
    /// the last `ends_after_secs` this sink takes (closed ones with
    /// `endsAt` at their closing), as Prometheus does: Alertmanager keeps
    /// alerts in memory only, so this is what restores them after it
    /// restarts. 0 turns it off.
    #[serde(default = "default_resend_secs")]
    pub resend_secs: u64,
}

fn default_resend_secs() -> u64 {
    60
}

fn default_timeout_secs() -> u64 {
    10
}

fn default_ends_after_secs() -> u64 {
    24 * 3600
}

/// Backoff between attempts of a sink that failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

fn default_initial_ms() -> u64 {
    1000
}

fn default_max_ms() -> u64 {
    300_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

impl RetryConfig {
    /// Delay before attempt `failures + 1`: exponential, capped, with
    /// jitter in [d/2, d] so that many deliveries do not retry in step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .initial_ms
            .max(1)
            .saturating_mul(1u64 << failures.saturating_sub(1).min(30));
        let d = exp.min(self.max_ms.max(1));
        let jittered = rand::random_range(d / 2..=d);
        Duration::from_millis(jittered)
    }
}

impl SinksConfig {
    /// Reads and checks a sinks file (YAML, or JSON, which is YAML too).
    pub fn load(path: &Path) -> Result<SinksConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        SinksConfig::parse(&text).map_err(|reason| Error::Config {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<SinksConfig, String> {
        let config: SinksConfig = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        for s in &config.sinks {
            if s.name.trim().is_empty() {
                return Err("a sink has an empty name".into());
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!("sink name {:?} is used twice", s.name));
            }
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return Err(format!(
                    "sink {:?}: url must start with http:// or https://",
                    s.name
                ));
            }
            reqwest::Url::parse(&s.url).map_err(|e| format!("sink {:?}: url: {e}", s.name))?;
            for (k, v) in &s.headers {
                reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("sink {:?}: invalid header name {k:?}", s.name))?;
                reqwest::header::HeaderValue::from_str(v)
                    .map_err(|_| format!("sink {:?}: invalid value of header {k:?}", s.name))?;
            }
        }
        Ok(config)
    }

    /// Names of the sinks that take `alert`.
    pub fn route(&self, alert: &StoredAlert) -> Vec<String> {
        self.sinks
            .iter()
            .filter(|s| s.takes(alert))
            .map(|s| s.name.clone())
            .collect()
    }

    pub fn sink(&self, name: &str) -> Option<&SinkConfig> {
        self.sinks.iter().find(|s| s.name == name)
    }
}

impl SinkConfig {
    /// Whether this sink takes `alert`: every given criterion must hold.
    pub fn takes(&self, alert: &StoredAlert) -> bool {
        let min = match (
            self.min_level,
            self.levels.is_empty() && self.rules.is_empty(),
        ) {
            (Some(l), _) => Some(l),
            (None, true) => Some(Level::Medium),
            (None, false) => None,
        };
        min.is_none_or(|m| alert.level >= m)
            && (self.levels.is_empty() || self.levels.contains(&alert.level))
            && (self.rules.is_empty() || self.rules.contains(&alert.rule_id))
    }

    /// The URL a delivery is POSTed to.
    pub fn endpoint(&self) -> String {
        match self.kind {
            SinkKind::Alertmanager
                if !self.url.trim_end_matches('/').ends_with("/api/v2/alerts") =>
            {
                format!("{}/api/v2/alerts", self.url.trim_end_matches('/'))
            }
            _ => self.url.clone(),
        }
    }

    /// The JSON body sent for `alert` at `now`.
    pub fn body(&self, alert: &StoredAlert, now: DateTime<Utc>) -> Value {
        match self.kind {
            SinkKind::Webhook => serde_json::to_value(alert).unwrap_or(Value::Null),
            SinkKind::Alertmanager => alertmanager_body(alert, now, self.ends_after_secs),
            SinkKind::Slack => json!({ "text": slack_text(alert) }),
        }
    }
}

/// One Alertmanager alert. Each Ward alert is its own Alertmanager alert
/// (`alert_id` label): Ward de-duplicates already, and two people running
/// the same suspicious command are two things to look at. Route and group
/// in Alertmanager on `alertname`, `rule_id`, `severity`, `cluster`.
pub fn alertmanager_body(alert: &StoredAlert, now: DateTime<Utc>, ends_after_secs: u64) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), alert.title.clone().into());
    labels.insert("rule_id".into(), alert.rule_id.clone().into());
    labels.insert("severity".into(), alert.level.as_str().into());
    labels.insert("level".into(), alert.level.as_str().into());
    labels.insert("alert_id".into(), alert.id.to_string().into());
    labels.insert("source".into(), "ward".into());
    for (k, v) in [
        ("cluster", &alert.cluster),
        ("namespace", &alert.namespace),
        ("user", &alert.user),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            labels.insert(k.into(), v.into());
        }
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), alert.title.clone().into());
    if let Some(d) = &alert.description {
        annotations.insert("description".into(), d.trim().into());
    }
    annotations.insert("audit_ids".into(), alert.audit_ids.join(",").into());
    annotations.insert("event_ids".into(), alert.event_ids.join(",").into());
    annotations.insert("event_time".into(), alert.timestamp.to_rfc3339().into());
    let closed_at = (alert.status == crate::store::Status::Closed)
        .then(|| alert.history.last().map(|h| h.at))
        .flatten();
    let ends = closed_at.unwrap_or_else(|| {
        alert.timestamp.max(now)
            + TimeDelta::seconds(i64::try_from(ends_after_secs).unwrap_or(i64::MAX / 2_000))
    });
    json!([{
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.timestamp.to_rfc3339(),
        "endsAt": ends.max(alert.timestamp).to_rfc3339(),
    }])
}

fn slack_text(alert: &StoredAlert) -> String {
    let mut text = format!(
        "*[{}] {}*\nrule `{}`",
        alert.level.as_str().to_uppercase(),
        alert.title,
        alert.rule_id
    );
    for (k, v) in [
        ("cluster", &alert.cluster),
        ("namespace", &alert.namespace),
        ("user", &alert.user),
    ] {
        if let Some(v) = v {
            text.push_str(&format!(" · {k} `{v}`"));
        }
    }
    text.push_str(&format!(
        "\nat {} · auditID {}",
        alert.timestamp.to_rfc3339(),
        alert.audit_ids.join(", ")
    ));
    if let Some(d) = &alert.description {
        text.push('\n');
        text.push_str(d.trim());
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unknown_keys_and_bad_sinks_are_refused() {
        assert!(SinksConfig::parse("sinks: []\nretries: {}\n").is_err());
        assert!(
            SinksConfig::parse(
                "sinks:\n- {name: a, type: webhook, url: 'http://x', min-level: high}\n"
            )
            .unwrap_err()
            .contains("min-level")
        );
        assert!(SinksConfig::parse("sinks:\n- {name: a, type: pager, url: 'http://x'}\n").is_err());
        assert!(
            SinksConfig::parse(
                "sinks:\n- {name: a, type: webhook, url: 'http://x'}\n- {name: a, type: slack, url: 'http://y'}\n"
            )
            .unwrap_err()
            .contains("twice")
        );
        assert!(
            SinksConfig::parse("sinks:\n- {name: a, type: webhook, url: 'ftp://x'}\n").is_err()
        );
        let ok = SinksConfig::parse(
            "sinks:\n- {name: am, type: alertmanager, url: 'http://127.0.0.1:9093/', headers: {X-Tenant: t1}}\nretry: {initial_ms: 10}\n",
        )
        .unwrap();
        assert_eq!(
            ok.sinks[0].endpoint(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(ok.retry.max_ms, 300_000);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let r = RetryConfig {
            initial_ms: 100,
            max_ms: 1000,
        };
        for _ in 0..50 {
            let d1 = r.backoff(1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = r.backoff(3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d20 = r.backoff(20).as_millis();
            assert!((500..=1000).contains(&d20), "{d20}");
        }
    }
}
