//! The alert store as NDJSON, and a new store from such a dump: what
//! `GET /api/v1/alerts/export` streams, what `ward snapshot` puts into a
//! snapshot as `alerts.ndjson`, and what `ward restore` imports.
//!
//! Why a dump and not a copy of `alerts.redb`: redb holds an exclusive
//! lock on the file while the indexer runs, and the bytes of a database in
//! the middle of a commit are not a consistent database. The dump is
//! written from one read transaction, beside the running writer, so it is
//! one committed state; and it is text a responder can read, grep or load
//! into other tools without Ward.
//!
//! One JSON object per line; every line after the first has one key, its
//! kind:
//!
//! | line | what |
//! | --- | --- |
//! | `{"format": "ward-alerts", "version": 1, "created": …, "alerts": n, "dedup_keys": n, "deliveries": n}` | first line |
//! | `{"alert": {…}}` | each alert as the API serves it ([`StoredAlert`]: status and history included) |
//! | `{"dedup": {"key": "<rule id>\n<auditID>", "alert_id": 7}}` | each de-duplication key, so a replay after a restore still raises nothing |
//! | `{"delivery": {"seq": 3, "alert_id": 7, "sink": …}}` | each delivery still queued ([`Delivery`]) |
//! | `{"meta": {"name": "next_alert", "value": 8}}` | the id and sequence counters |
//! | `{"counter": {"name": "delivered:am", "value": 5}}` | delivery outcomes per sink |
//! | `{"end": {"alerts": n, "dedup_keys": n, "deliveries": n}}` | last line |
//!
//! An export that broke off (a dropped HTTP stream) has no `end` line, and
//! an import refuses it rather than restoring part of the alerts. An
//! import writes everything in one transaction into a new file, renamed
//! into place once committed: the store is the whole dump or absent.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::model::AlertRow;
use super::versions::RuleVersion;
use super::{
    ALERTS, AlertStore, COUNTERS, DEDUP, Delivery, META, QUEUE, RULE_VERSIONS, Status, StoredAlert,
};
use crate::error::{Error, db};

/// The first line's `format`.
const FORMAT: &str = "ward-alerts";
/// The format version this release writes and reads.
const VERSION: u32 = 1;
/// Longest line an import reads. An alert is a few hundred bytes to a few
/// KiB (a correlation lists every `auditID` of its window); a longer line
/// is not a dump, and reading it whole could exhaust memory.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

/// How much a dump holds (also its first and last line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpCounts {
    pub alerts: u64,
    pub dedup_keys: u64,
    pub deliveries: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    created: DateTime<Utc>,
    #[serde(flatten)]
    counts: DumpCounts,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Alert(Box<StoredAlert>),
    Dedup {
        key: String,
        alert_id: u64,
    },
    Delivery {
        seq: u64,
        #[serde(flatten)]
        delivery: Delivery,
    },
    Meta {
        name: String,
        value: u64,
    },
    Counter {
        name: String,
        value: u64,
    },
    End(DumpCounts),
}

/// Serialises `value` as one line into `out`, through `buf`.
fn write_line(
    out: &mut impl Write,
    buf: &mut Vec<u8>,
    value: &impl Serialize,
) -> Result<(), Error> {
    buf.clear();
    serde_json::to_writer(&mut *buf, value)?;
    buf.push(b'\n');
    out.write_all(buf).map_err(Error::DumpIo)
}

impl AlertStore {
    /// Writes every alert, de-duplication key, queued delivery and counter
    /// as NDJSON (see the module docs) from one read transaction: a
    /// consistent state, taken while the writer goes on.
    pub fn export(&self, out: impl Write) -> Result<DumpCounts, Error> {
        let mut out = BufWriter::with_capacity(64 * 1024, out);
        let txn = self.db.begin_read().map_err(db)?;
        let alerts = txn.open_table(ALERTS).map_err(db)?;
        let versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
        let dedup = txn.open_table(DEDUP).map_err(db)?;
        let queue = txn.open_table(QUEUE).map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        let counters = txn.open_table(COUNTERS).map_err(db)?;
        let counts = DumpCounts {
            alerts: alerts.len().map_err(db)?,
            dedup_keys: dedup.len().map_err(db)?,
            deliveries: queue.len().map_err(db)?,
        };
        let mut buf = Vec::with_capacity(4096);
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            created: Utc::now(),
            counts,
        };
        write_line(&mut out, &mut buf, &header)?;
        for entry in alerts.iter().map_err(db)? {
            let (id, value) = entry.map_err(db)?;
            let alert = self.decode(&versions, id.value(), value.value())?;
            write_line(&mut out, &mut buf, &Entry::Alert(Box::new(alert)))?;
        }
        for entry in dedup.iter().map_err(db)? {
            let (key, id) = entry.map_err(db)?;
            // Keys are made of a rule id and an auditID, both text.
            let key = String::from_utf8(key.value().to_vec()).map_err(|_| Error::Dump {
                line: 0,
                reason: format!("de-duplication key of alert {} is not UTF-8", id.value()),
            })?;
            let line = Entry::Dedup {
                key,
                alert_id: id.value(),
            };
            write_line(&mut out, &mut buf, &line)?;
        }
        for entry in queue.iter().map_err(db)? {
            let (seq, value) = entry.map_err(db)?;
            let line = Entry::Delivery {
                seq: seq.value(),
                delivery: serde_json::from_slice(value.value())?,
            };
            write_line(&mut out, &mut buf, &line)?;
        }
        for entry in meta.iter().map_err(db)? {
            let (name, value) = entry.map_err(db)?;
            let line = Entry::Meta {
                name: name.value().to_owned(),
                value: value.value(),
            };
            write_line(&mut out, &mut buf, &line)?;
        }
        for entry in counters.iter().map_err(db)? {
            let (name, value) = entry.map_err(db)?;
            let line = Entry::Counter {
                name: name.value().to_owned(),
                value: value.value(),
            };
            write_line(&mut out, &mut buf, &line)?;
        }
        write_line(&mut out, &mut buf, &Entry::End(counts))?;
        out.flush().map_err(Error::DumpIo)?;
        tracing::debug!(
            alerts = counts.alerts,
            dedup_keys = counts.dedup_keys,
            deliveries = counts.deliveries,
            "alert store exported"
        );
        Ok(counts)
    }

    /// Creates a store at `path` from a dump [`AlertStore::export`] wrote,
    /// keeping ids, statuses, histories, de-duplication keys, the delivery
    /// queue and the counters. Refuses an existing `path`; a malformed or
    /// cut-short dump leaves nothing behind.
    pub fn import(path: &Path, input: impl BufRead) -> Result<DumpCounts, Error> {
        if path.exists() {
            return Err(Error::InvalidRequest(format!(
                "{} exists; import into a new file",
                path.display()
            )));
        }
        let staging = path.with_extension("importing");
        let io = |p: &Path| {
            let path = p.to_owned();
            move |source| Error::Io { path, source }
        };
        if staging.exists() {
            std::fs::remove_file(&staging).map_err(io(&staging))?;
        }
        let result = AlertStore::open(&staging).and_then(|store| store.load(input));
        match result {
            Ok(counts) => {
                // `load` took the store's only handle and dropped it: the
                // database is closed and its file can move.
                std::fs::rename(&staging, path).map_err(io(path))?;
                Ok(counts)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                Err(e)
            }
        }
    }

    /// Reads the dump into this (new, empty) store in one transaction.
    fn load(self, mut input: impl BufRead) -> Result<DumpCounts, Error> {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        let bad = |line: u64, reason: String| Error::Dump { line, reason };
        if !next_line(&mut input, &mut buf, &mut line_no)? {
            return Err(bad(1, "empty: not an alerts dump".into()));
        }
        let header: Header = serde_json::from_slice(&buf)
            .map_err(|e| bad(1, format!("not an alerts dump ({e})")))?;
        if header.format != FORMAT {
            return Err(bad(
                1,
                format!("format {:?} is not {FORMAT:?}", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(bad(
                1,
                format!(
                    "format version {} (this release reads version {VERSION})",
                    header.version
                ),
            ));
        }
        let mut seen = DumpCounts::default();
        let (mut max_id, mut max_seq) = (0u64, 0u64);
        let mut end: Option<DumpCounts> = None;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut alerts = txn.open_table(ALERTS).map_err(db)?;
            let mut versions = txn.open_table(RULE_VERSIONS).map_err(db)?;
            let mut dedup = txn.open_table(DEDUP).map_err(db)?;
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            let mut counters = txn.open_table(COUNTERS).map_err(db)?;
            let mut row = Vec::new();
            while next_line(&mut input, &mut buf, &mut line_no)? {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if end.is_some() {
                    return Err(bad(line_no, "a line after the end line".into()));
                }
                let entry: Entry =
                    serde_json::from_slice(&buf).map_err(|e| bad(line_no, e.to_string()))?;
                match entry {
                    Entry::Alert(alert) => {
                        let id = alert.id;
                        if alerts.get(id).map_err(db)?.is_some() {
                            return Err(bad(line_no, format!("alert {id} appears twice")));
                        }
                        row.clear();
                        match encode(*alert) {
                            Encoded::Row(r, version) => {
                                let key = version.key();
                                if versions.get(key).map_err(db)?.is_none() {
                                    versions
                                        .insert(key, serde_json::to_vec(&version)?.as_slice())
                                        .map_err(db)?;
                                }
                                serde_json::to_writer(&mut row, &r.with_rule(key))?;
                            }
                            Encoded::Whole(a) => serde_json::to_writer(&mut row, &a)?,
                        }
                        alerts.insert(id, row.as_slice()).map_err(db)?;
                        max_id = max_id.max(id);
                        seen.alerts += 1;
                    }
                    Entry::Dedup { key, alert_id } => {
                        if alerts.get(alert_id).map_err(db)?.is_none() {
                            return Err(bad(
                                line_no,
                                format!(
                                    "de-duplication key of alert {alert_id}, which no earlier line holds"
                                ),
                            ));
                        }
                        dedup.insert(key.as_bytes(), alert_id).map_err(db)?;
                        seen.dedup_keys += 1;
                    }
                    Entry::Delivery { seq, delivery } => {
                        if alerts.get(delivery.alert_id).map_err(db)?.is_none() {
                            return Err(bad(
                                line_no,
                                format!(
                                    "delivery of alert {}, which no earlier line holds",
                                    delivery.alert_id
                                ),
                            ));
                        }
                        queue
                            .insert(seq, serde_json::to_vec(&delivery)?.as_slice())
                            .map_err(db)?;
                        max_seq = max_seq.max(seq);
                        seen.deliveries += 1;
                    }
                    Entry::Meta { name, value } => {
                        meta.insert(name.as_str(), value).map_err(db)?;
                    }
                    Entry::Counter { name, value } => {
                        counters.insert(name.as_str(), value).map_err(db)?;
                    }
                    Entry::End(counts) => {
                        if counts != seen {
                            return Err(bad(
                                line_no,
                                format!("the end line counts {counts:?}, the dump holds {seen:?}"),
                            ));
                        }
                        end = Some(counts);
                    }
                }
            }
            if end.is_none() {
                return Err(bad(
                    line_no,
                    "the dump ends without its end line: it was cut short".into(),
                ));
            }
            // New ids and sequences continue after the imported ones, even
            // if a hand-edited dump left its counters out.
            for (name, floor) in [("next_alert", max_id + 1), ("next_delivery", max_seq + 1)] {
                let current = meta.get(name).map_err(db)?.map_or(1, |v| v.value());
                if current < floor {
                    meta.insert(name, floor).map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        tracing::info!(
            alerts = seen.alerts,
            dedup_keys = seen.dedup_keys,
            deliveries = seen.deliveries,
            "alert store imported"
        );
        Ok(seen)
    }
}

/// Reads the next line into `buf` (without its newline), refusing one
/// longer than [`MAX_LINE`]; false at the end of the input.
fn next_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    line_no: &mut u64,
) -> Result<bool, Error> {
    buf.clear();
    *line_no += 1;
    let limit = MAX_LINE as u64 + 1;
    let n = input
        .by_ref()
        .take(limit)
        .read_until(b'\n', buf)
        .map_err(Error::DumpIo)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(Error::Dump {
            line: *line_no,
            reason: format!("longer than {MAX_LINE} bytes: not an alerts dump"),
        });
    }
    Ok(true)
}

/// How an imported alert is stored.
enum Encoded {
    /// As the store writes alerts: a row and its rule version.
    Row(AlertRow, RuleVersion),
    /// Whole, as earlier releases wrote them: for an alert whose history
    /// does not start with the `open` by `ward` at its creation that a row
    /// implies, so that nothing of it is lost.
    Whole(StoredAlert),
}

fn encode(a: StoredAlert) -> Encoded {
    let canonical = a.history.first().is_some_and(|first| {
        first.status == Status::Open
            && first.by == "ward"
            && first.at == a.created
            && first.comment.is_none()
    });
    if !canonical {
        return Encoded::Whole(a);
    }
    let version = RuleVersion {
        rule_id: a.rule_id,
        title: a.title,
        level: a.level,
        description: a.description,
        author: a.author,
        tags: a.tags,
    };
    let row = AlertRow {
        rule: 0,
        correlation: a.correlation,
        timestamp: a.timestamp,
        created: a.created,
        cluster: a.cluster,
        namespace: a.namespace,
        user: a.user,
        event_ids: a.event_ids,
        audit_ids: a.audit_ids,
        group: a.group,
        status: a.status,
        changes: a.history.into_iter().skip(1).collect(),
    };
    Encoded::Row(row, version)
}

impl AlertRow {
    fn with_rule(mut self, rule: u64) -> AlertRow {
        self.rule = rule;
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use ward_rules::Level;

    use super::super::tests::alert;
    use super::*;
    use crate::{AlertFilter, SinkCounts};

    fn everything(store: &AlertStore) -> Vec<StoredAlert> {
        store
            .list(&AlertFilter {
                limit: crate::MAX_LIMIT,
                ..Default::default()
            })
            .unwrap()
    }

    fn queue(store: &AlertStore) -> BTreeMap<u64, Delivery> {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(QUEUE).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), serde_json::from_slice(v.value()).unwrap())
            })
            .collect()
    }

    /// A store with alerts of two rules, a status change with a comment,
    /// a delivered, a failed and a waiting delivery.
    fn populated(path: &Path) -> AlertStore {
        let store = AlertStore::open(path).unwrap();
        let route = |_: &StoredAlert| vec!["am".to_string()];
        let batch = vec![
            alert("r1", "a1", Level::High),
            alert("r1", "a2", Level::High),
            alert("r2", "a1", Level::Low),
        ];
        assert_eq!(store.insert(batch, &route).unwrap().len(), 3);
        store
            .set_status(2, Status::Acknowledged, "alice", Some("on it".into()))
            .unwrap();
        store.set_status(3, Status::Closed, "bob", None).unwrap();
        let (due, _) = store.due_deliveries(Utc::now(), 10).unwrap();
        store.delivery_succeeded(due[0].0, "am").unwrap();
        let mut failed = due[1].1.clone();
        failed.attempts = 1;
        failed.last_error = Some("connection refused".into());
        store.delivery_failed(due[1].0, &failed).unwrap();
        store
    }

    fn export(store: &AlertStore) -> Vec<u8> {
        let mut out = Vec::new();
        store.export(&mut out).unwrap();
        out
    }

    #[test]
    fn export_then_import_keeps_alerts_dedup_queue_and_counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = populated(&dir.path().join("alerts.redb"));
        let dump = export(&store);
        let text = String::from_utf8(dump.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("{\"format\":\"ward-alerts\",\"version\":1"));
        assert!(
            lines[1].starts_with("{\"alert\":{\"id\":1,"),
            "{}",
            lines[1]
        );
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("{\"end\":{\"alerts\":3,\"dedup_keys\":3,\"deliveries\":2}")
        );

        let path = dir.path().join("restored/alerts.redb");
        let counts = AlertStore::import(&path, dump.as_slice()).unwrap();
        assert_eq!(
            counts,
            DumpCounts {
                alerts: 3,
                dedup_keys: 3,
                deliveries: 2
            }
        );
        let restored = AlertStore::open(&path).unwrap();
        assert_eq!(everything(&restored), everything(&store));
        assert_eq!(restored.get(2).unwrap().history[1].by, "alice");
        assert_eq!(queue(&restored), queue(&store));
        assert_eq!(
            restored.sink_counts().unwrap()["am"],
            SinkCounts {
                delivered: 1,
                failed: 1
            }
        );
        assert_eq!(
            restored.rule_counts().unwrap(),
            store.rule_counts().unwrap()
        );
        // A second export is the same dump, but for its time of writing.
        let again = export(&restored);
        let tail = |d: &[u8]| {
            String::from_utf8(d.to_vec())
                .unwrap()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(tail(&again), tail(&dump));

        // Replays stay de-duplicated; ids and sequences go on where they were.
        let route = |_: &StoredAlert| vec!["am".to_string()];
        let replay = || {
            vec![
                alert("r1", "a1", Level::High),
                alert("r2", "a1", Level::Low),
                alert("r2", "a9", Level::Low),
            ]
        };
        let new = restored.insert(replay(), &route).unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].id, store.insert(replay(), &route).unwrap()[0].id);
        let slots = |s: &AlertStore| {
            queue(s)
                .into_iter()
                .map(|(seq, d)| (seq, d.alert_id))
                .collect::<Vec<_>>()
        };
        assert_eq!(slots(&restored), slots(&store));
    }

    #[test]
    fn alerts_whose_history_a_row_cannot_hold_are_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = populated(&dir.path().join("alerts.redb"));
        let text = String::from_utf8(export(&store)).unwrap();
        // As an earlier release might have written it: the first history
        // entry is not the store's implied `open` by `ward`.
        let edited = text.replacen("\"by\":\"ward\"", "\"by\":\"importer\"", 1);
        let path = dir.path().join("other.redb");
        AlertStore::import(&path, edited.as_bytes()).unwrap();
        let restored = AlertStore::open(&path).unwrap();
        assert_eq!(restored.get(1).unwrap().history[0].by, "importer");
        assert_eq!(restored.get(2).unwrap(), store.get(2).unwrap());
    }

    #[test]
    fn malformed_dumps_are_refused_with_the_line_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = populated(&dir.path().join("alerts.redb"));
        let text = String::from_utf8(export(&store)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len();
        let cut = lines[..n - 1].join("\n");
        let twice = format!("{}\n{}\n{}", lines[0], lines[1], lines[1..].join("\n"));
        let orphan = format!(
            "{}\n{{\"dedup\":{{\"key\":\"r9\\nx\",\"alert_id\":99}}}}\n{}",
            lines[..n - 1].join("\n"),
            lines[n - 1]
        );
        let long = format!("{}\n{}\n", lines[0], "x".repeat(MAX_LINE + 10));
        let cases: Vec<(&str, String, u64, &str)> = vec![
            ("empty", String::new(), 1, "empty"),
            ("not json", "hello\n".into(), 1, "not an alerts dump"),
            (
                "other format",
                "{\"format\":\"x\",\"version\":1,\"created\":\"2024-01-01T00:00:00Z\",\"alerts\":0,\"dedup_keys\":0,\"deliveries\":0}\n".into(),
                1,
                "is not",
            ),
            (
                "newer version",
                lines[0].replace("\"version\":1", "\"version\":2"),
                1,
                "version 2",
            ),
            ("cut short", cut, n as u64, "cut short"),
            ("duplicate alert", twice, 3, "appears twice"),
            ("orphan key", orphan, n as u64, "no earlier line"),
            ("unknown kind", format!("{}\n{{\"nope\":1}}\n", lines[0]), 2, "unknown variant"),
            ("overlong line", long, 2, "longer than"),
            (
                "after the end",
                format!("{text}{{\"meta\":{{\"name\":\"x\",\"value\":1}}}}\n"),
                n as u64 + 1,
                "after the end",
            ),
        ];
        for (what, input, want_line, want) in cases {
            let path = dir.path().join("bad.redb");
            match AlertStore::import(&path, input.as_bytes()) {
                Err(Error::Dump { line, reason }) => {
                    assert_eq!(line, want_line, "{what}: {reason}");
                    assert!(reason.contains(want), "{what}: {reason}");
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(!path.exists(), "{what}: nothing left behind");
            assert!(!path.with_extension("importing").exists(), "{what}");
        }
        // An open store is locked: a backup must go through its holder.
        let second = AlertStore::open(&dir.path().join("alerts.redb")).unwrap_err();
        assert!(second.is_in_use(), "{second}");
        // An existing store is never overwritten.
        let existing = dir.path().join("alerts.redb");
        let err = AlertStore::import(&existing, text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
    }
}
