//! Verification: recomputes every hash chain from the stored records and
//! says, partition by partition, whether what is on disk is what was
//! committed.
//!
//! Reads only committed state (each partition's last commit and the chain
//! entries it covers), so it can run while the indexer is writing. It
//! never writes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use tantivy::schema::Value as _;
use tantivy::{Index, ReloadPolicy, TantivyDocument};

use crate::chain::{self, CommitPayload, Digest32, EntryBody, GENESIS, HmacKey};
use crate::partition::{self, Day};
use crate::{Error, schema::WardSchema};

/// The verdict on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every committed batch is there, unchanged, and nothing else.
    Intact,
    /// Removed by retention, as the ledger records.
    Removed,
    /// Batches altered, removed or added, or the chain itself broken.
    Tampered,
    /// The index cannot be read (files missing or corrupt).
    Unreadable,
    /// The ledger says it exists, but it is gone without a removal entry.
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub partition: String,
    pub status: Status,
    /// Committed batches per the chain.
    pub batches: u64,
    /// Records found.
    pub records: u64,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Problems with the ledger itself.
    pub ledger: Vec<String>,
    pub partitions: Vec<PartitionReport>,
}

impl Report {
    /// True when the ledger and every partition are intact (or removed by
    /// retention as recorded).
    pub fn is_intact(&self) -> bool {
        self.ledger.is_empty()
            && self
                .partitions
                .iter()
                .all(|p| matches!(p.status, Status::Intact | Status::Removed))
    }
}

/// Checks the ledger and every partition under `data_dir`.
pub fn verify(data_dir: &Path, key: Option<&HmacKey>) -> Result<Report, Error> {
    let mut ledger_problems = Vec::new();
    let (entries, _) = chain::read_entries(&data_dir.join(partition::LEDGER_FILE))?;
    let mut prev = GENESIS.to_owned();
    // partition -> Some(reason) when removed, None when live.
    let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (entry, _) in &entries {
        if let Some(problem) = chain::check_entry(entry, &prev, key) {
            ledger_problems.push(format!("ledger: {problem}"));
        }
        prev = entry.hash.clone();
        match &entry.body {
            EntryBody::PartitionCreated { partition } => {
                state.insert(partition.clone(), None);
            }
            EntryBody::PartitionRemoved {
                partition,
                reason,
                records,
                ..
            } => {
                state.insert(
                    partition.clone(),
                    Some(format!(
                        "removed by retention ({reason}, {records} records)"
                    )),
                );
            }
            EntryBody::Batch { .. } => {
                ledger_problems.push(format!("ledger: entry {} is not a ledger entry", entry.seq))
            }
        }
    }
    let on_disk = partition::list(data_dir)?;
    let mut reports = Vec::new();
    for day in &on_disk {
        let mut report = verify_partition(data_dir, *day, key);
        match state.get(&day.name()) {
            Some(None) => {}
            Some(Some(_)) => report
                .problems
                .push("the ledger records this partition as removed, yet it is on disk".into()),
            None => report
                .problems
                .push("not in the ledger: this partition was added".into()),
        }
        if report.status == Status::Intact && !report.problems.is_empty() {
            report.status = Status::Tampered;
        }
        reports.push(report);
    }
    for (name, removed) in &state {
        if on_disk.iter().any(|d| &d.name() == name) {
            continue;
        }
        reports.push(match removed {
            Some(reason) => PartitionReport {
                partition: name.clone(),
                status: Status::Removed,
                batches: 0,
                records: 0,
                problems: vec![reason.clone()],
            },
            None => PartitionReport {
                partition: name.clone(),
                status: Status::Missing,
                batches: 0,
                records: 0,
                problems: vec!["the partition is gone and the ledger records no removal".into()],
            },
        });
    }
    reports.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(Report {
        ledger: ledger_problems,
        partitions: reports,
    })
}

fn verify_partition(data_dir: &Path, day: Day, key: Option<&HmacKey>) -> PartitionReport {
    let mut report = PartitionReport {
        partition: day.name(),
        status: Status::Intact,
        batches: 0,
        records: 0,
        problems: Vec::new(),
    };
    match check_partition(data_dir, day, key, &mut report) {
        Ok(()) => {
            if !report.problems.is_empty() {
                report.status = Status::Tampered;
            }
        }
        Err(e) => {
            report.status = Status::Unreadable;
            report.problems.push(e.to_string());
        }
    }
    report
}

/// Records of one partition grouped by batch: (count, digests).
type Groups = HashMap<Option<u64>, Vec<Digest32>>;

fn check_partition(
    data_dir: &Path,
    day: Day,
    key: Option<&HmacKey>,
    report: &mut PartitionReport,
) -> Result<(), Error> {
    let schema = WardSchema::new();
    let index = partition::open_index(data_dir, day, &schema, false)?;
    // The commit read and the records read must be the same commit; retry
    // if the indexer committed in between.
    let (payload, groups) = loop {
        let before = index.load_metas()?.opstamp;
        let payload = CommitPayload::parse(index.load_metas()?.payload.as_deref());
        let groups = read_groups(&index, &schema)?;
        if index.load_metas()?.opstamp == before {
            break (payload, groups);
        }
    };
    let committed = payload.as_ref().map_or(0, |p| p.chain_seq);
    let (entries, _) =
        chain::read_entries(&partition::partition_dir(data_dir, day).join(partition::CHAIN_FILE))?;
    let mut prev = GENESIS.to_owned();
    let mut expected: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut last = (0u64, GENESIS.to_owned());
    for (entry, _) in entries.iter().filter(|(e, _)| e.seq <= committed) {
        if let Some(problem) = chain::check_entry(entry, &prev, key) {
            report.problems.push(format!("chain: {problem}"));
        }
        prev = entry.hash.clone();
        last = (entry.seq, entry.hash.clone());
        match &entry.body {
            EntryBody::Batch {
                records,
                events_sha256,
            } => {
                expected.insert(entry.seq, (*records, events_sha256.clone()));
            }
            _ => report
                .problems
                .push(format!("chain: entry {} is not a batch entry", entry.seq)),
        }
    }
    if let Some(payload) = &payload
        && (last.0 != payload.chain_seq || last.1 != payload.chain_head)
    {
        report.problems.push(format!(
            "chain: the last commit covers entry {} ({}), the chain file ends at entry {}",
            payload.chain_seq, payload.chain_head, last.0
        ));
    }
    report.batches = expected.len() as u64;
    report.records = groups.values().map(|v| v.len() as u64).sum();
    let mut groups = groups;
    for (seq, (records, digest)) in &expected {
        match groups.remove(&Some(*seq)) {
            None => report.problems.push(format!(
                "batch {seq}: removed (all {records} records are missing)"
            )),
            Some(mut digests) => {
                let found = digests.len() as u64;
                if hex::encode(chain::batch_digest(&mut digests)) != *digest {
                    report.problems.push(if found == *records {
                        format!("batch {seq}: altered ({records} records, contents differ)")
                    } else {
                        format!("batch {seq}: altered ({records} records committed, {found} found)")
                    });
                }
            }
        }
    }
    let mut extra: Vec<_> = groups.into_iter().collect();
    extra.sort_by_key(|(seq, _)| *seq);
    for (seq, digests) in extra {
        report.problems.push(match seq {
            Some(seq) => format!(
                "batch {seq}: added ({} records in no committed batch)",
                digests.len()
            ),
            None => format!("{} records without a batch: added", digests.len()),
        });
    }
    Ok(())
}

fn read_groups(index: &Index, schema: &WardSchema) -> Result<Groups, Error> {
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher: tantivy::Searcher = tantivy::IndexReader::searcher(&reader);
    let mut groups: Groups = HashMap::new();
    for segment in searcher.segment_readers() {
        let batches = segment.fast_fields().u64("_batch")?;
        let store = segment
            .get_store_reader(8)
            .map_err(|source| Error::io(Path::new("doc store"), source))?;
        for doc_id in 0..segment.max_doc() {
            if segment.is_deleted(doc_id) {
                continue;
            }
            let doc: TantivyDocument = store.get(doc_id)?;
            let source = doc
                .get_first(schema.source_doc)
                .and_then(|v| v.as_bytes())
                .unwrap_or_default();
            groups
                .entry(batches.first(doc_id))
                .or_default()
                .push(chain::record_digest(source));
        }
    }
    Ok(groups)
}
