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
//!
//! One concept per module: `model` (alerts as served, raised and stored),
//! `versions` (rule metadata stored once per version), `queue` (the
//! delivery queue and its counters), `legacy` (what earlier releases
//! wrote), `dump` (export and import). This file opens the store and
//! stores, reads, lists and changes alerts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::error::{Error, db};

mod dump;
mod legacy;
mod model;
mod queue;
mod versions;

pub use dump::DumpCounts;
use legacy::Stored;
pub use model::{AlertFilter, NewAlert, RuleAlertCounts, Status, StatusChange, StoredAlert};
pub use queue::{Delivery, SinkCounts};
use versions::{RuleVersion, VersionCache};

const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DEDUP: TableDefinition<&[u8], u64> = TableDefinition::new("dedup_keys");
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RULE_VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("rule_versions");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Largest page of a listing.
pub const MAX_LIMIT: usize = 10_000;

/// The alert database. Cheap to clone; safe to share between threads
/// (redb serialises write transactions and lets reads run beside them).
#[derive(Clone)]
pub struct AlertStore {
    db: Arc<Database>,
    versions: Arc<VersionCache>,
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
            legacy::migrate_text_dedup(&txn, &mut dedup)?;
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

    /// Decodes a value of the `alerts` table.
    fn decode(
        &self,
        versions: &impl ReadableTable<u64, &'static [u8]>,
        id: u64,
        bytes: &[u8],
    ) -> Result<StoredAlert, Error> {
        match Stored::decode(bytes)? {
            Stored::Row(row) => {
                let version = self.versions.get(versions, row.rule)?;
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
                    None => self.versions.find(&versions, fingerprint)?,
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
                queue::enqueue(&mut queue, &mut next_seq, id, route(&alert), now)?;
                stored.push(alert);
            }
            meta.insert("next_alert", next_id).map_err(db)?;
            meta.insert("next_delivery", next_seq).map_err(db)?;
        }
        if stored.is_empty() {
            txn.abort().map_err(db)?;
        } else {
            txn.commit().map_err(db)?;
            self.versions.extend(added);
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
        self.rule_counts_visible_to(None)
    }

    /// [`AlertStore::rule_counts`] of the alerts a caller limited to
    /// `namespaces` may see ([`StoredAlert::visible_to`]).
    pub fn rule_counts_visible_to(
        &self,
        namespaces: Option<&[String]>,
    ) -> Result<BTreeMap<String, RuleAlertCounts>, Error> {
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
            let (id, value) = entry.map_err(db)?;
            if namespaces.is_some() {
                let alert = self.decode(&versions, id.value(), value.value())?;
                if alert.visible_to(namespaces) {
                    count(&alert.rule_id, alert.status);
                }
                continue;
            }
            match Stored::decode(value.value())? {
                Stored::Row(row) => {
                    let version = self.versions.get(&versions, row.rule)?;
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
                    let version = self.versions.get(&versions, row.rule)?;
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ward_rules::Level;

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
