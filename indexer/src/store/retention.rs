//! Retention: removes whole days past the age or size limit, each after
//! its removal is in the ledger (see ARCHITECTURE.md, "Crash semantics"),
//! and keeps the partition and disk gauges current.

use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;

use super::search::reader_of;
use super::writer::Writer;
use crate::Error;
use crate::chain::{self, CommitPayload, EntryBody};
use crate::partition::{self, Day};

impl Writer {
    /// The first day retention keeps, if retention by age is set.
    pub(super) fn oldest_kept_day(&self) -> Option<Day> {
        let age = self.config.retention.max_age?;
        let cutoff = Utc::now() - chrono::Duration::from_std(age).ok()?;
        // A day is removed once it has entirely passed the cutoff.
        Some(Day::of(cutoff))
    }
    /// Removes partitions past retention; updates the size gauges.
    pub(super) fn retention_pass(&mut self) {
        self.last_retention = Some(Instant::now());
        let data_dir = self.config.data_dir.clone();
        let oldest = self.oldest_kept_day();
        let mut sizes: Vec<(Day, u64)> = self
            .indexes
            .keys()
            .map(|day| {
                (
                    *day,
                    partition::disk_usage(&partition::partition_dir(&data_dir, *day)),
                )
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, s)| s).sum();
        let today = Day::of(Utc::now());
        let mut remove: Vec<(Day, u64, String)> = Vec::new();
        for (day, size) in &sizes {
            if oldest.is_some_and(|o| *day < o) {
                remove.push((*day, *size, "age".into()));
                total -= size;
            }
        }
        if let Some(max) = self.config.retention.max_bytes {
            for (day, size) in &sizes {
                if total <= max || *day >= today {
                    break;
                }
                if remove.iter().any(|(d, _, _)| d == day) {
                    continue;
                }
                remove.push((*day, *size, "size".into()));
                total -= size;
            }
        }
        for (day, size, reason) in remove {
            match self.remove_partition(day, &reason) {
                Ok(records) => {
                    sizes.retain(|(d, _)| *d != day);
                    self.stats
                        .partitions_removed
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .partition_bytes_removed
                        .fetch_add(size, Ordering::Relaxed);
                    self.stats
                        .partition_records_removed
                        .fetch_add(records, Ordering::Relaxed);
                    tracing::info!(partition = %day, reason, bytes = size, records, "retention removed a partition");
                }
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "retention could not remove a partition")
                }
            }
        }
        self.stats
            .partitions
            .store(sizes.len() as u64, Ordering::Relaxed);
        self.stats
            .disk_bytes
            .store(sizes.iter().map(|(_, s)| s).sum::<u64>(), Ordering::Relaxed);
    }

    /// Records the removal in the ledger, then deletes the partition.
    fn remove_partition(&mut self, day: Day, reason: &str) -> Result<u64, Error> {
        if let Some(p) = self.open.remove(&day) {
            let _ = p.writer.wait_merging_threads();
        }
        let data_dir = self.config.data_dir.clone();
        let dir = partition::partition_dir(&data_dir, day);
        let (last_seq, head, records) = match self.indexes.get(&day) {
            Some(index) => {
                let payload = CommitPayload::parse(index.load_metas()?.payload.as_deref())
                    .unwrap_or_default();
                let records = reader_of(index)?.searcher().num_docs();
                (payload.chain_seq, payload.chain_head, records)
            }
            None => (0, chain::GENESIS.to_owned(), 0),
        };
        self.ledger.append(EntryBody::PartitionRemoved {
            partition: day.name(),
            reason: reason.into(),
            records,
            last_seq,
            head,
        })?;
        if let Ok(mut views) = self.views.write() {
            views.remove(&day);
        }
        self.indexes.remove(&day);
        // Rename first so that a crash mid-delete leaves no half partition
        // under `partitions/` (searches holding it keep their mmaps).
        let trash = data_dir.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        let doomed = trash.join(format!(
            "{}-{}",
            day.name(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        Ok(records)
    }
}
