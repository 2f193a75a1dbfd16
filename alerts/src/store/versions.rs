//! Rule versions: the metadata of each version of a rule, stored once
//! under a fingerprint and shared by the alerts it raised, and a cache of
//! the versions known to be stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use ward_rules::Level;

use crate::error::{Error, db};

/// The metadata of one version of a rule, stored once and shared by the
/// alerts it raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RuleVersion {
    pub(super) rule_id: String,
    pub(super) title: String,
    pub(super) level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) author: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tags: Vec<String>,
}

impl RuleVersion {
    pub(super) fn of(a: &ward_rules::Alert) -> RuleVersion {
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
    pub(super) fn fingerprint(a: &ward_rules::Alert) -> u64 {
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
    pub(super) fn key(&self) -> u64 {
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

/// Rule versions known to be in the `rule_versions` table, so that
/// storing and reading alerts does not look them up each time.
#[derive(Default)]
pub(super) struct VersionCache(Mutex<HashMap<u64, Arc<RuleVersion>>>);

impl VersionCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<RuleVersion>>> {
        // The map only caches what the table holds; a panic elsewhere
        // cannot leave it wrong.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rule version `fingerprint`, from the cache or `table`; an alert
    /// row referring to one the table lacks is an error.
    pub(super) fn get(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        fingerprint: u64,
    ) -> Result<Arc<RuleVersion>, Error> {
        self.find(table, fingerprint)?
            .ok_or(Error::MissingRuleVersion(fingerprint))
    }

    /// The rule version `fingerprint`, from the cache or `table`, if stored.
    pub(super) fn find(
        &self,
        table: &impl ReadableTable<u64, &'static [u8]>,
        fingerprint: u64,
    ) -> Result<Option<Arc<RuleVersion>>, Error> {
        if let Some(v) = self.lock().get(&fingerprint) {
            return Ok(Some(v.clone()));
        }
        let Some(value) = table.get(fingerprint).map_err(db)? else {
            return Ok(None);
        };
        let version: Arc<RuleVersion> = Arc::new(serde_json::from_slice(value.value())?);
        self.lock().insert(fingerprint, version.clone());
        Ok(Some(version))
    }

    /// Versions a committed transaction added.
    pub(super) fn extend(&self, added: HashMap<u64, Arc<RuleVersion>>) {
        self.lock().extend(added);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use redb::ReadableTableMetadata;
    use ward_rules::Level;

    use super::super::tests::alert;
    use super::super::{AlertStore, NewAlert, RULE_VERSIONS, RuleAlertCounts, Status, StoredAlert};

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
}
