//! The alert model: an alert as the API serves it, as the rules raise it,
//! and the row stored for it, which refers to its rule version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ward_rules::Level;

use super::versions::RuleVersion;

/// Where an analyst is with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Acknowledged,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Closed => "closed",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Status, String> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Ok(Status::Open),
            "acknowledged" | "ack" => Ok(Status::Acknowledged),
            "closed" => Ok(Status::Closed),
            _ => Err(format!(
                "unknown status {s:?}: expected open, acknowledged or closed"
            )),
        }
    }
}

/// One entry of an alert's status history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: Status,
    /// Who changed it: the token's name, the name the request gave, or
    /// `ward` for the initial `open`.
    pub by: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An alert as stored and served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAlert {
    pub id: u64,
    pub rule_id: String,
    pub title: String,
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Raised by a correlation rule.
    #[serde(default)]
    pub correlation: bool,
    /// Event time of the event that raised it.
    pub timestamp: DateTime<Utc>,
    /// When Ward stored it.
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ward record ids (`ward.id`) of the triggering event(s), searchable in
    /// the index.
    pub event_ids: Vec<String>,
    /// `auditID`s of the triggering event, or for a correlation of every
    /// event in its window.
    pub audit_ids: Vec<String>,
    /// For correlations: the group-by values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<BTreeMap<String, Option<String>>>,
    pub status: Status,
    /// Every status the alert had, oldest first (the first is `open`).
    pub history: Vec<StatusChange>,
}

impl StoredAlert {
    /// Whether a caller limited to `namespaces` may see this alert, by
    /// the rule search applies to events: an alert of a namespace in the
    /// scope. Cluster-scoped alerts (no namespace) are for unscoped callers
    /// only, and so are correlations not grouped by the namespace: their
    /// window may hold other namespaces' events (ids, users, group-by
    /// values).
    pub fn visible_to(&self, namespaces: Option<&[String]>) -> bool {
        let Some(scope) = namespaces else {
            return true;
        };
        let in_scope = |ns: &str| scope.iter().any(|s| s == ns);
        let own = self.namespace.as_deref().is_some_and(in_scope);
        if !self.correlation {
            return own;
        }
        let grouped = self.group.as_ref().and_then(|g| {
            g.get("objectRef.namespace")
                .or_else(|| g.get("kubernetes.namespace"))
        });
        own && matches!(grouped, Some(Some(ns)) if in_scope(ns))
    }
}

/// An alert the rules raised, with what the event adds to it.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub alert: ward_rules::Alert,
    /// The event that raised it: record id and `auditID`. The pair
    /// (rule, `auditID`, else record id) is the de-duplication key.
    pub event_id: String,
    pub audit_id: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub user: Option<String>,
}

impl NewAlert {
    pub(super) fn dedup_key(&self, key: &mut Vec<u8>) {
        let event = self.audit_id.as_deref().unwrap_or(&self.event_id);
        key.clear();
        key.extend_from_slice(self.alert.rule_id.as_bytes());
        key.push(b'\n');
        key.extend_from_slice(event.as_bytes());
    }

    /// The alert's own part, referring to its rule version by `rule`.
    pub(super) fn into_row(self, rule: u64, now: DateTime<Utc>) -> AlertRow {
        let a = self.alert;
        AlertRow {
            rule,
            correlation: a.correlation,
            timestamp: a.timestamp,
            created: now,
            cluster: self.cluster,
            namespace: self.namespace,
            user: self.user,
            event_ids: vec![self.event_id],
            audit_ids: a.audit_ids,
            group: a.group,
            status: Status::Open,
            changes: Vec::new(),
        }
    }
}

/// One alert as stored under its id: what is particular to it, and the
/// fingerprint of its rule version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AlertRow {
    pub(super) rule: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) correlation: bool,
    pub(super) timestamp: DateTime<Utc>,
    pub(super) created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<String>,
    pub(super) event_ids: Vec<String>,
    pub(super) audit_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) group: Option<BTreeMap<String, Option<String>>>,
    pub(super) status: Status,
    /// Status changes after the initial `open` (by `ward`, at `created`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) changes: Vec<StatusChange>,
}

impl AlertRow {
    pub(super) fn into_stored(self, id: u64, rule: &RuleVersion) -> StoredAlert {
        let mut history = Vec::with_capacity(1 + self.changes.len());
        history.push(StatusChange {
            status: Status::Open,
            by: "ward".into(),
            at: self.created,
            comment: None,
        });
        history.extend(self.changes);
        StoredAlert {
            id,
            rule_id: rule.rule_id.clone(),
            title: rule.title.clone(),
            level: rule.level,
            description: rule.description.clone(),
            author: rule.author.clone(),
            tags: rule.tags.clone(),
            correlation: self.correlation,
            timestamp: self.timestamp,
            created: self.created,
            cluster: self.cluster,
            namespace: self.namespace,
            user: self.user,
            event_ids: self.event_ids,
            audit_ids: self.audit_ids,
            group: self.group,
            status: self.status,
            history,
        }
    }
}

/// How many alerts a rule raised ([`super::AlertStore::rule_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleAlertCounts {
    pub alerts: u64,
    pub open: u64,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Exactly this level.
    pub level: Option<Level>,
    /// This level or above.
    pub min_level: Option<Level>,
    pub rule: Option<String>,
    pub status: Option<Status>,
    /// Event time, inclusive.
    pub start: Option<DateTime<Utc>>,
    /// Event time, exclusive.
    pub end: Option<DateTime<Utc>>,
    pub limit: usize,
    /// A caller's namespace scope: only alerts it may see
    /// ([`StoredAlert::visible_to`]); `None` for every alert.
    pub namespaces: Option<Vec<String>>,
}

impl AlertFilter {
    pub(super) fn matches(&self, a: &StoredAlert) -> bool {
        self.level.is_none_or(|l| a.level == l)
            && self.min_level.is_none_or(|l| a.level >= l)
            && self.rule.as_deref().is_none_or(|r| a.rule_id == r)
            && self.status.is_none_or(|s| a.status == s)
            && self.start.is_none_or(|t| a.timestamp >= t)
            && self.end.is_none_or(|t| a.timestamp < t)
            && a.visible_to(self.namespaces.as_deref())
    }
}
