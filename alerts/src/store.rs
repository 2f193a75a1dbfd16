//! The alert store: alerts, their status history and the delivery queue in
//! one redb database (`<data>/alerts.redb`).
//!
//! Tables:
//!
//! | table | key → value | what |
//! | --- | --- | --- |
//! | `alerts` | id → JSON alert row | every alert, ids in insertion order |
//! | `rule_versions` | fingerprint → JSON rule metadata | title, level, description, author and tags of each rule version alerts refer to |
//! | `dedup_keys` | `rule id \n auditID` (bytes) → id | one alert per rule and triggering event |
//! | `queue` | sequence → JSON [`Delivery`] | deliveries not yet accepted by their sink |
//! | `meta` | name → u64 | id and sequence counters |
//! | `counters` | `delivered:<sink>` / `failed:<sink>` → u64 | delivery outcomes |
//!
//! An alert row holds what is particular to the alert and refers to its
//! rule's metadata by fingerprint, so the rule's description and tags are
//! stored once per rule version, not once per alert: an attack can raise
//! an alert for most events, and the description is most of an alert's
//! bytes. Editing a rule's text makes a new version; older alerts keep
//! showing the metadata they were raised with. Rows written before this
//! layout (the whole alert as JSON) are still read.
//!
//! An alert, its de-duplication key and its deliveries are written in one
//! transaction: after a crash there is never an alert without its
//! deliveries, nor a delivery without its alert. A status change rewrites
//! the alert and appends to its history in one transaction too.
//!
//! While the indexer runs, redb holds an exclusive lock on the file, and
//! its bytes mid-commit are no consistent copy; backups therefore go
//! through [`AlertStore::export`], an NDJSON dump written from one read
//! transaction, and [`AlertStore::import`] (see `dump`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use ward_rules::Level;

use crate::error::{Error, db};

mod dump;

pub use dump::DumpCounts;

const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DEDUP: TableDefinition<&[u8], u64> = TableDefinition::new("dedup_keys");
/// The de-duplication table of earlier releases: `&str` keys, which redb
/// checks as UTF-8 on every comparison. Moved into [`DEDUP`] at open.
const DEDUP_TEXT: TableDefinition<&str, u64> = TableDefinition::new("dedup");
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RULE_VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("rule_versions");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Largest page of a listing.
pub const MAX_LIMIT: usize = 10_000;

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
    fn dedup_key(&self, key: &mut Vec<u8>) {
        let event = self.audit_id.as_deref().unwrap_or(&self.event_id);
        key.clear();
        key.extend_from_slice(self.alert.rule_id.as_bytes());
        key.push(b'\n');
        key.extend_from_slice(event.as_bytes());
    }

    /// The alert's own part, referring to its rule version by `rule`.
    fn into_row(self, rule: u64, now: DateTime<Utc>) -> AlertRow {
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

/// The metadata of one version of a rule, stored once and shared by the
/// alerts it raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RuleVersion {
    rule_id: String,
    title: String,
    level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    author: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

impl RuleVersion {
    fn of(a: &ward_rules::Alert) -> RuleVersion {
        RuleVersion {
            rule_id: a.rule_id.to_string(),
            title: a.title.to_string(),
            level: a.level,
            description: a.description.as_deref().map(str::to_owned),
            author: a.author.as_deref().map(str::to_owned),
            tags: a.tags.to_vec(),
        }
    }

    /// A stable 64-bit fingerprint of the metadata, the version's
    /// key. It is persisted, so it must not depend on the Rust release
    /// (as `std`'s hasher may).
    fn fingerprint(a: &ward_rules::Alert) -> u64 {
        fingerprint_of(
            &a.rule_id,
            &a.title,
            a.level,
            a.description.as_deref(),
            a.author.as_deref(),
            &a.tags,
        )
    }

    /// The fingerprint of this version: the same as [`Self::fingerprint`]
    /// of any alert it was made from (an import rebuilds the key from the
    /// metadata a dump holds).
    fn key(&self) -> u64 {
        fingerprint_of(
            &self.rule_id,
            &self.title,
            self.level,
            self.description.as_deref(),
            self.author.as_deref(),
            &self.tags,
        )
    }
}

fn fingerprint_of(
    rule_id: &str,
    title: &str,
    level: Level,
    description: Option<&str>,
    author: Option<&str>,
    tags: &[String],
) -> u64 {
    let mut h = Fingerprint::default();
    h.field(rule_id.as_bytes());
    h.field(title.as_bytes());
    h.field(level.as_str().as_bytes());
    h.field(description.unwrap_or("\u{0}none").as_bytes());
    h.field(author.unwrap_or("\u{0}none").as_bytes());
    for tag in tags {
        h.field(tag.as_bytes());
    }
    h.finish()
}

/// A word-at-a-time multiplicative hash: fast enough to run per alert,
/// and defined here so that it never changes under a stored fingerprint.
struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(Self::K);
    }

    /// Hashes `bytes` and their length, so that ("ab", "c") and ("a", "bc")
    /// differ.
    fn field(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(u64::from_le_bytes(tail));
        self.mix(bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        // A final avalanche so that close inputs spread over all bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

/// One alert as stored under its id: what is particular to it, and the
/// fingerprint of its rule version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AlertRow {
    rule: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    correlation: bool,
    timestamp: DateTime<Utc>,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    event_ids: Vec<String>,
    audit_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<BTreeMap<String, Option<String>>>,
    status: Status,
    /// Status changes after the initial `open` (by `ward`, at `created`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<StatusChange>,
}

impl AlertRow {
    fn into_stored(self, id: u64, rule: &RuleVersion) -> StoredAlert {
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

/// A stored value of the `alerts` table: a row, or an alert written whole
/// by an earlier release.
enum Stored {
    Row(AlertRow),
    Whole(StoredAlert),
}

impl Stored {
    fn decode(bytes: &[u8]) -> Result<Stored, Error> {
        match serde_json::from_slice::<AlertRow>(bytes) {
            Ok(row) => Ok(Stored::Row(row)),
            Err(row_error) => serde_json::from_slice::<StoredAlert>(bytes)
                .map(Stored::Whole)
                .map_err(|_| Error::Encoding(row_error)),
        }
    }
}

/// How many alerts a rule raised ([`AlertStore::rule_counts`]).
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
}

impl AlertFilter {
    fn matches(&self, a: &StoredAlert) -> bool {
        self.level.is_none_or(|l| a.level == l)
            && self.min_level.is_none_or(|l| a.level >= l)
            && self.rule.as_deref().is_none_or(|r| a.rule_id == r)
            && self.status.is_none_or(|s| a.status == s)
            && self.start.is_none_or(|t| a.timestamp >= t)
            && self.end.is_none_or(|t| a.timestamp < t)
    }
}

/// A delivery of one alert to one sink, waiting in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub alert_id: u64,
    pub sink: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Deliveries due now (queue sequence, delivery), and when the next of
/// the others is due.
pub type DueDeliveries = (Vec<(u64, Delivery)>, Option<DateTime<Utc>>);

/// Delivery outcomes of one sink, kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    pub delivered: u64,
    pub failed: u64,
}

/// The alert database. Cheap to clone; safe to share between threads
/// (redb serialises write transactions and lets reads run beside them).
#[derive(Clone)]
pub struct AlertStore {
    db: Arc<Database>,
    /// Rule versions known to be in the `rule_versions` table, so that
    /// storing and reading alerts does not look them up each time.
    versions: Arc<Mutex<HashMap<u64, Arc<RuleVersion>>>>,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertStore")
    }
}

impl AlertStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<AlertStore, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let database = Database::create(path).map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        {
            txn.open_table(ALERTS).map_err(db)?;
            let mut dedup = txn.open_table(DEDUP).map_err(db)?;
            migrate_text_dedup(&txn, &mut dedup)?;
            txn.open_table(QUEUE).map_err(db)?;
            txn.open_table(META).map_err(db)?;
            txn.open_table(COUNTERS).map_err(db)?;
            txn.open_table(RULE_VERSIONS).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(AlertStore {
            db: Arc::new(database),
            versions: Arc::default(),
        })
    }

    fn versions(&self) -> MutexGuard<'_, HashMap<u64, Arc<RuleVersion>>> {
        // The map only caches what the table holds; a panic elsewhere
        // cannot leave it wrong.
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rule version `fingerprint`, from the cache or `table`; an alert
    /// row referring to one the table lacks is an error.
    fn version(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        fingerprint: u64,
    ) -> Result<Arc<RuleVersion>, Error> {
        self.find_version(table, fingerprint)?
            .ok_or(Error::MissingRuleVersion(fingerprint))
    }

    /// The rule version `fingerprint`, from the cache or `table`, if stored.
    fn find_version(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        fingerprint: u64,
    ) -> Result<Option<Arc<RuleVersion>>, Error> {
        if let Some(v) = self.versions().get(&fingerprint) {
            return Ok(Some(v.clone()));
        }
        let Some(value) = table.get(fingerprint).map_err(db)? else {
            return Ok(None);
        };
        let version: Arc<RuleVersion> = Arc::new(serde_json::from_slice(value.value())?);
        self.versions().insert(fingerprint, version.clone());
        Ok(Some(version))
    }

    /// Decodes a value of the `alerts` table.
    fn decode(
        &self,
        versions: &impl ReadableTable<u64, &'static [u8]>,
        id: u64,
        bytes: &[u8],
    ) -> Result<StoredAlert, Error> {
        match Stored::decode(bytes)? {
            Stored::Row(row) => {
                let version = self.version(versions, row.rule)?;
                Ok(row.into_stored(id, &version))
            }
            Stored::Whole(alert) => Ok(alert),
        }
    }

    /// Stores the alerts that are not stored yet (by rule and `auditID`),
    /// and queues a delivery to each sink `route` names for them, in one
    /// transaction. Returns the alerts that were new.
    pub fn insert(
        &self,
        alerts: Vec<NewAlert>,
        route: &dyn Fn(&StoredAlert) -> Vec<String>,
    ) -> Result<Vec<StoredAlert>, Error> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut stored = Vec::new();
        // Versions this transaction adds: cached only once it committed.
        let mut added: HashMap<u64, Arc<RuleVersion>> = HashMap::new();
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(ALERTS).map_err(db)?;
            let mut dedup = txn.open_table(DEDUP).map_err(db)?;
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            let mut versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
            let mut next_id = meta.get("next_alert").map_err(db)?.map_or(1, |v| v.value());
            let mut next_seq = meta
                .get("next_delivery")
                .map_err(db)?
                .map_or(1, |v| v.value());
            let (mut row_bytes, mut key) = (Vec::new(), Vec::new());
            for new in alerts {
                new.dedup_key(&mut key);
                if dedup.get(key.as_slice()).map_err(db)?.is_some() {
                    continue;
                }
                let fingerprint = RuleVersion::fingerprint(&new.alert);
                let known = match added.get(&fingerprint) {
                    Some(v) => Some(v.clone()),
                    None => self.find_version(&versions, fingerprint)?,
                };
                let version = match known {
                    Some(v) => v,
                    None => {
                        let v = Arc::new(RuleVersion::of(&new.alert));
                        versions
                            .insert(fingerprint, serde_json::to_vec(&*v)?.as_slice())
                            .map_err(db)?;
                        added.insert(fingerprint, v.clone());
                        v
                    }
                };
                let id = next_id;
                next_id += 1;
                dedup.insert(key.as_slice(), id).map_err(db)?;
                let row = new.into_row(fingerprint, now);
                row_bytes.clear();
                serde_json::to_writer(&mut row_bytes, &row)?;
                table.insert(id, row_bytes.as_slice()).map_err(db)?;
                let alert = row.into_stored(id, &version);
                for sink in route(&alert) {
                    let delivery = Delivery {
                        alert_id: id,
                        sink,
                        attempts: 0,
                        next_attempt: now,
                        last_error: None,
                    };
                    queue
                        .insert(next_seq, serde_json::to_vec(&delivery)?.as_slice())
                        .map_err(db)?;
                    next_seq += 1;
                }
                stored.push(alert);
            }
            meta.insert("next_alert", next_id).map_err(db)?;
            meta.insert("next_delivery", next_seq).map_err(db)?;
        }
        if stored.is_empty() {
            txn.abort().map_err(db)?;
        } else {
            txn.commit().map_err(db)?;
            self.versions().extend(added);
        }
        Ok(stored)
    }

    pub fn get(&self, id: u64) -> Result<StoredAlert, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(ALERTS).map_err(db)?;
        let versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
        let value = table.get(id).map_err(db)?.ok_or(Error::NotFound(id))?;
        self.decode(&versions, id, value.value())
    }

    /// Alerts matching `filter`, newest stored first.
    pub fn list(&self, filter: &AlertFilter) -> Result<Vec<StoredAlert>, Error> {
        if filter.limit > MAX_LIMIT {
            return Err(Error::InvalidRequest(format!(
                "limit must be at most {MAX_LIMIT}"
            )));
        }
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(ALERTS).map_err(db)?;
        let versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db)?.rev() {
            if out.len() >= filter.limit {
                break;
            }
            let (id, value) = entry.map_err(db)?;
            let alert = self.decode(&versions, id.value(), value.value())?;
            if filter.matches(&alert) {
                out.push(alert);
            }
        }
        Ok(out)
    }

    /// Alerts per rule id, all of them and those still open: the hit
    /// counts of the rules listing. A full scan (tens of milliseconds per
    /// 100,000 alerts, see the crate docs), fine for a page an analyst
    /// opens now and then.
    pub fn rule_counts(&self) -> Result<BTreeMap<String, RuleAlertCounts>, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(ALERTS).map_err(db)?;
        let versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
        let mut out: BTreeMap<String, RuleAlertCounts> = BTreeMap::new();
        let mut count = |rule_id: &str, status: Status| {
            let counts = match out.get_mut(rule_id) {
                Some(c) => c,
                None => out.entry(rule_id.to_owned()).or_default(),
            };
            counts.alerts += 1;
            if status == Status::Open {
                counts.open += 1;
            }
        };
        for entry in table.iter().map_err(db)? {
            let (_, value) = entry.map_err(db)?;
            match Stored::decode(value.value())? {
                Stored::Row(row) => {
                    let version = self.version(&versions, row.rule)?;
                    count(&version.rule_id, row.status);
                }
                Stored::Whole(alert) => count(&alert.rule_id, alert.status),
            }
        }
        Ok(out)
    }

    /// Number of stored alerts.
    pub fn count(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(ALERTS).map_err(db)?;
        table.len().map_err(db)
    }

    /// Sets an alert's status and appends the change to its history.
    pub fn set_status(
        &self,
        id: u64,
        status: Status,
        by: &str,
        comment: Option<String>,
    ) -> Result<StoredAlert, Error> {
        let change = StatusChange {
            status,
            by: by.to_owned(),
            at: Utc::now(),
            comment,
        };
        let txn = self.db.begin_write().map_err(db)?;
        let alert = {
            let mut table = txn.open_table(ALERTS).map_err(db)?;
            let versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
            let stored = {
                let value = table.get(id).map_err(db)?.ok_or(Error::NotFound(id))?;
                Stored::decode(value.value())?
            };
            match stored {
                Stored::Row(mut row) => {
                    row.status = status;
                    row.changes.push(change);
                    table
                        .insert(id, serde_json::to_vec(&row)?.as_slice())
                        .map_err(db)?;
                    let version = self.version(&versions, row.rule)?;
                    row.into_stored(id, &version)
                }
                Stored::Whole(mut alert) => {
                    alert.status = status;
                    alert.history.push(change);
                    table
                        .insert(id, serde_json::to_vec(&alert)?.as_slice())
                        .map_err(db)?;
                    alert
                }
            }
        };
        txn.commit().map_err(db)?;
        Ok(alert)
    }

    /// Up to `max` deliveries due at `now`, oldest queued first, and the
    /// earliest time one of the others is due.
    pub fn due_deliveries(&self, now: DateTime<Utc>, max: usize) -> Result<DueDeliveries, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let queue = txn.open_table(QUEUE).map_err(db)?;
        let mut due = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        for entry in queue.iter().map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let d: Delivery = serde_json::from_slice(value.value())?;
            if d.next_attempt <= now && due.len() < max {
                due.push((key.value(), d));
            } else if d.next_attempt > now {
                next = Some(next.map_or(d.next_attempt, |n| n.min(d.next_attempt)));
            } else {
                next = Some(now);
            }
        }
        Ok((due, next))
    }

    /// The sink accepted the delivery: it leaves the queue.
    pub fn delivery_succeeded(&self, seq: u64, sink: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            queue.remove(seq).map_err(db)?;
            bump(&txn, &format!("delivered:{sink}"))?;
        }
        txn.commit().map_err(db)
    }

    /// The delivery failed: it stays queued with its next attempt.
    pub fn delivery_failed(&self, seq: u64, delivery: &Delivery) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            queue
                .insert(seq, serde_json::to_vec(delivery)?.as_slice())
                .map_err(db)?;
            bump(&txn, &format!("failed:{}", delivery.sink))?;
        }
        txn.commit().map_err(db)
    }

    /// Deliveries waiting in the queue.
    pub fn queue_len(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let queue = txn.open_table(QUEUE).map_err(db)?;
        queue.len().map_err(db)
    }

    /// Delivered and failed attempts per sink, since the store was created.
    pub fn sink_counts(&self) -> Result<BTreeMap<String, SinkCounts>, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let counters = txn.open_table(COUNTERS).map_err(db)?;
        let mut out: BTreeMap<String, SinkCounts> = BTreeMap::new();
        for entry in counters.iter().map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let key = key.value();
            if let Some(sink) = key.strip_prefix("delivered:") {
                out.entry(sink.to_owned()).or_default().delivered = value.value();
            } else if let Some(sink) = key.strip_prefix("failed:") {
                out.entry(sink.to_owned()).or_default().failed = value.value();
            }
        }
        Ok(out)
    }
}

/// Moves the entries of the `&str`-keyed de-duplication table of earlier
/// releases into `dedup`, and deletes it.
fn migrate_text_dedup(
    txn: &redb::WriteTransaction,
    dedup: &mut redb::Table<'_, &'static [u8], u64>,
) -> Result<(), Error> {
    let exists = txn
        .list_tables()
        .map_err(db)?
        .any(|t| t.name() == DEDUP_TEXT.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(DEDUP_TEXT).map_err(db)?;
        for entry in old.iter().map_err(db)? {
            let (key, id) = entry.map_err(db)?;
            dedup
                .insert(key.value().as_bytes(), id.value())
                .map_err(db)?;
        }
    }
    txn.delete_table(DEDUP_TEXT).map_err(db)?;
    Ok(())
}

fn bump(txn: &redb::WriteTransaction, key: &str) -> Result<(), Error> {
    let mut counters = txn.open_table(COUNTERS).map_err(db)?;
    let n = counters.get(key).map_err(db)?.map_or(0, |v| v.value());
    counters.insert(key, n + 1).map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(super) fn alert(rule: &str, audit_id: &str, level: Level) -> NewAlert {
        let (set, errors) = ward_rules::RuleSet::from_sources(&[(
            "t",
            format!(
                "title: T {rule}\nid: {rule}\nlevel: {level}\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n  s: {{verb: get}}\n  condition: s\n"
            ),
        )]);
        assert!(errors.is_empty(), "{errors:?}");
        let mut engine = ward_rules::Engine::new(set);
        let mut out = Vec::new();
        let ev = serde_json::json!({"verb": "get", "auditID": audit_id});
        engine.process(&ev, Utc::now(), &mut out);
        NewAlert {
            alert: out.pop().unwrap(),
            event_id: format!("rec-{audit_id}"),
            audit_id: Some(audit_id.into()),
            cluster: Some("c1".into()),
            namespace: None,
            user: Some("bob".into()),
        }
    }

    fn rule_versions(store: &AlertStore) -> u64 {
        let txn = store.db.begin_read().unwrap();
        txn.open_table(RULE_VERSIONS).unwrap().len().unwrap()
    }

    #[test]
    fn rule_metadata_is_stored_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let store = AlertStore::open(&path).unwrap();
        let none = |_: &StoredAlert| Vec::new();
        let batch: Vec<NewAlert> = (0..50)
            .map(|i| alert("r1", &format!("a{i}"), Level::High))
            .chain((0..50).map(|i| alert("r2", &format!("a{i}"), Level::Low)))
            .collect();
        assert_eq!(store.insert(batch, &none).unwrap().len(), 100);
        assert_eq!(rule_versions(&store), 2, "one row per rule, not per alert");

        // The same rule id with a new title is a new version; the alerts
        // already stored keep the title they were raised with.
        let mut edited = alert("r1", "b1", Level::Critical);
        edited.alert.title = "T r1, edited".into();
        let new = store.insert(vec![edited], &none).unwrap();
        assert_eq!(new[0].title, "T r1, edited");
        assert_eq!(new[0].level, Level::Critical);
        assert_eq!(rule_versions(&store), 3);
        drop(store);

        // A fresh process finds the versions in the table, not in its cache.
        let store = AlertStore::open(&path).unwrap();
        assert_eq!(store.get(1).unwrap().title, "T r1");
        assert_eq!(store.get(1).unwrap().level, Level::High);
        assert_eq!(store.get(101).unwrap().title, "T r1, edited");
        let more = store
            .insert(vec![alert("r2", "c1", Level::Low)], &none)
            .unwrap();
        assert_eq!(more[0].title, "T r2");
        assert_eq!(
            rule_versions(&store),
            3,
            "r2's version was found, not added"
        );
        store.set_status(2, Status::Closed, "alice", None).unwrap();
        let counts = store.rule_counts().unwrap();
        assert_eq!(
            counts["r1"],
            RuleAlertCounts {
                alerts: 51,
                open: 50
            }
        );
        assert_eq!(
            counts["r2"],
            RuleAlertCounts {
                alerts: 51,
                open: 51
            }
        );
    }

    /// Stores written by earlier releases (whole alerts as JSON, `&str`
    /// de-duplication keys) open, read, change and de-duplicate as before.
    #[test]
    fn alerts_of_earlier_releases_are_read_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let legacy = StoredAlert {
            id: 1,
            rule_id: "r1".into(),
            title: "Old title".into(),
            level: Level::High,
            description: Some("what to check".into()),
            author: None,
            tags: vec!["attack.t1609".into()],
            correlation: false,
            timestamp: Utc::now(),
            created: Utc::now(),
            cluster: Some("c1".into()),
            namespace: None,
            user: Some("bob".into()),
            event_ids: vec!["rec-a1".into()],
            audit_ids: vec!["a1".into()],
            group: None,
            status: Status::Open,
            history: vec![StatusChange {
                status: Status::Open,
                by: "ward".into(),
                at: Utc::now(),
                comment: None,
            }],
        };
        {
            let database = Database::create(&path).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut alerts = txn.open_table(ALERTS).unwrap();
                alerts
                    .insert(1, serde_json::to_vec(&legacy).unwrap().as_slice())
                    .unwrap();
                let mut dedup = txn.open_table(DEDUP_TEXT).unwrap();
                dedup.insert("r1\na1", 1).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("next_alert", 2).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = AlertStore::open(&path).unwrap();
        assert_eq!(store.get(1).unwrap(), legacy);
        assert_eq!(
            store
                .list(&AlertFilter {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap(),
            vec![legacy.clone()]
        );
        let none = |_: &StoredAlert| Vec::new();
        let new = store
            .insert(
                vec![
                    alert("r1", "a1", Level::High),
                    alert("r1", "a2", Level::High),
                ],
                &none,
            )
            .unwrap();
        assert_eq!(new.len(), 1, "the old de-duplication key still counts");
        assert_eq!(new[0].id, 2);
        assert_eq!(
            store.rule_counts().unwrap()["r1"],
            RuleAlertCounts { alerts: 2, open: 2 },
            "old and new rows counted alike"
        );
        let acked = store
            .set_status(1, Status::Acknowledged, "alice", None)
            .unwrap();
        assert_eq!(acked.title, "Old title");
        assert_eq!(acked.history.len(), 2);
        drop(store);
        let store = AlertStore::open(&path).unwrap();
        assert_eq!(store.get(1).unwrap().status, Status::Acknowledged);
        let txn = store.db.begin_read().unwrap();
        assert!(
            txn.list_tables()
                .unwrap()
                .all(|t| t.name() != DEDUP_TEXT.name()),
            "the old table is gone once moved"
        );
    }

    #[test]
    fn dedup_status_history_and_queue_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let store = AlertStore::open(&path).unwrap();
        let route = |_: &StoredAlert| vec!["am".to_string()];
        let new = store
            .insert(
                vec![
                    alert("r1", "a1", Level::High),
                    alert("r1", "a1", Level::High),
                ],
                &route,
            )
            .unwrap();
        assert_eq!(new.len(), 1, "same rule and auditID in one batch");
        let again = store
            .insert(
                vec![
                    alert("r1", "a1", Level::High),
                    alert("r2", "a1", Level::Low),
                ],
                &route,
            )
            .unwrap();
        assert_eq!(again.len(), 1, "a replay is not stored again");
        assert_eq!(again[0].rule_id, "r2");
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.queue_len().unwrap(), 2);

        let changed = store
            .set_status(1, Status::Acknowledged, "alice", Some("looking".into()))
            .unwrap();
        assert_eq!(changed.history.len(), 2);
        assert!(matches!(
            store.set_status(99, Status::Closed, "x", None),
            Err(Error::NotFound(99))
        ));

        let (due, _) = store.due_deliveries(Utc::now(), 10).unwrap();
        assert_eq!(due.len(), 2);
        store.delivery_succeeded(due[0].0, "am").unwrap();
        let mut failed = due[1].1.clone();
        failed.attempts = 1;
        failed.next_attempt = Utc::now() + chrono::TimeDelta::hours(1);
        store.delivery_failed(due[1].0, &failed).unwrap();
        drop(store);

        let store = AlertStore::open(&path).unwrap();
        let a = store.get(1).unwrap();
        assert_eq!(a.status, Status::Acknowledged);
        assert_eq!(a.history[1].by, "alice");
        assert_eq!(a.history[1].comment.as_deref(), Some("looking"));
        let (due, next) = store.due_deliveries(Utc::now(), 10).unwrap();
        assert!(due.is_empty());
        assert!(next.is_some());
        assert_eq!(store.queue_len().unwrap(), 1);
        assert_eq!(
            store.sink_counts().unwrap()["am"],
            SinkCounts {
                delivered: 1,
                failed: 1
            }
        );
        // Ids continue after a reopen; the dedup key is still there.
        let more = store
            .insert(
                vec![
                    alert("r1", "a1", Level::High),
                    alert("r1", "a2", Level::High),
                ],
                &route,
            )
            .unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].id, 3);

        let list = |f: AlertFilter| {
            store
                .list(&AlertFilter { limit: 100, ..f })
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(list(AlertFilter::default()), vec![3, 2, 1]);
        assert_eq!(
            list(AlertFilter {
                level: Some(Level::Low),
                ..Default::default()
            }),
            vec![2]
        );
        assert_eq!(
            list(AlertFilter {
                min_level: Some(Level::Medium),
                status: Some(Status::Open),
                ..Default::default()
            }),
            vec![3]
        );
        assert_eq!(
            list(AlertFilter {
                rule: Some("r1".into()),
                ..Default::default()
            }),
            vec![3, 1]
        );
    }
}
