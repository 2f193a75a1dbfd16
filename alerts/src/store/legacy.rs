//! What earlier releases wrote: alerts stored whole (read as they are) and
//! the `&str`-keyed de-duplication table (moved into `dedup_keys` at open).

use redb::{ReadableTable, TableDefinition, TableHandle};

use super::model::{AlertRow, StoredAlert};
use crate::error::{Error, db};

/// The de-duplication table of earlier releases: `&str` keys, which redb
/// checks as UTF-8 on every comparison. Moved into [`super::DEDUP`] at open.
pub(super) const DEDUP_TEXT: TableDefinition<&str, u64> = TableDefinition::new("dedup");

/// A stored value of the `alerts` table: a row, or an alert written whole
/// by an earlier release.
pub(super) enum Stored {
    Row(AlertRow),
    Whole(StoredAlert),
}

impl Stored {
    pub(super) fn decode(bytes: &[u8]) -> Result<Stored, Error> {
        match serde_json::from_slice::<AlertRow>(bytes) {
            Ok(row) => Ok(Stored::Row(row)),
            Err(row_error) => serde_json::from_slice::<StoredAlert>(bytes)
                .map(Stored::Whole)
                .map_err(|_| Error::Encoding(row_error)),
        }
    }
}

/// Moves the entries of the `&str`-keyed de-duplication table of earlier
/// releases into `dedup`, and deletes it.
pub(super) fn migrate_text_dedup(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use redb::Database;
    use ward_rules::Level;

    use super::super::tests::alert;
    use super::super::{
        ALERTS, AlertFilter, AlertStore, META, RuleAlertCounts, Status, StatusChange, StoredAlert,
    };
    use super::*;

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
}
