//! The writer thread: adds each document to the partition of its day, and
//! commits every partition it touched at most every `commit_interval`
//! (group commit), chain entry first; a batch is acknowledged once all of
//! its partitions have committed (see ARCHITECTURE.md, "Crash semantics").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::RecvTimeoutError;
use tantivy::merge_policy::LogMergePolicy;
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument};
use tokio::sync::oneshot;

use super::replay::{RecordKey, ReplayGuard};
use super::search::{View, Views, reader_of};
use super::{StoreConfig, StoreStats};
use crate::Error;
use crate::chain::{self, ChainFile, CommitPayload, Digest32, EntryBody};
use crate::live_tail::TailFeed;
use crate::partition::{self, Day};
use crate::schema::WardSchema;

/// What the writer answers for one batch: (duplicates, expired) or why it failed.
pub(super) type Ack = oneshot::Sender<Result<(usize, usize), String>>;

/// A document on its way to the writer.
pub(super) struct Pending {
    pub(super) key: RecordKey,
    pub(super) day: Day,
    pub(super) digest: Digest32,
    pub(super) doc: TantivyDocument,
}

/// What the writer thread receives.
pub(super) enum WriterMsg {
    Batch { docs: Vec<Pending>, ack: Ack },
    Shutdown(oneshot::Sender<()>),
}

/// A partition open for writing.
pub(super) struct OpenPartition {
    pub(super) writer: IndexWriter<TantivyDocument>,
    reader: IndexReader,
    replays: ReplayGuard,
    chain: ChainFile,
    /// Digests of the records added since the last commit.
    digests: Vec<Digest32>,
    /// The first error of an `add_document`: the commit must then fail.
    failure: Option<String>,
    last_write: Instant,
}

/// The writer thread's state. Retention (a sibling module) works on the
/// fields it shares with the writer.
pub(super) struct Writer {
    schema: WardSchema,
    pub(super) config: StoreConfig,
    pub(super) views: Views,
    /// Every partition on disk, open or not for writing.
    pub(super) indexes: BTreeMap<Day, Index>,
    pub(super) open: BTreeMap<Day, OpenPartition>,
    pub(super) ledger: ChainFile,
    /// Batches waiting for the next commit: (ack, duplicates, expired).
    acks: Vec<(Ack, usize, usize)>,
    since: Option<Instant>,
    pub(super) last_retention: Option<Instant>,
    pub(super) stats: Arc<StoreStats>,
    tail: TailFeed,
    /// Copies of the documents added since the last commit, while someone tails.
    tail_pending: Vec<TantivyDocument>,
}

impl Writer {
    /// The writer of the partitions `indexes` (every one on disk).
    pub(super) fn new(
        schema: WardSchema,
        config: StoreConfig,
        views: Views,
        indexes: BTreeMap<Day, Index>,
        ledger: ChainFile,
        stats: Arc<StoreStats>,
        tail: TailFeed,
    ) -> Writer {
        Writer {
            tail,
            tail_pending: Vec::new(),
            schema,
            config,
            views,
            indexes,
            open: BTreeMap::new(),
            ledger,
            acks: Vec::new(),
            since: None,
            last_retention: None,
            stats,
        }
    }

    /// The thread's loop, until shutdown or until every sender is gone.
    pub(super) fn run(mut self, rx: crossbeam_channel::Receiver<WriterMsg>) {
        self.retention_pass();
        loop {
            let interval = self.config.commit_interval;
            let commit_wait = self
                .since
                .map_or(Duration::MAX, |t| interval.saturating_sub(t.elapsed()));
            let retention_wait = self.last_retention.map_or(Duration::ZERO, |t| {
                self.config.retention_interval.saturating_sub(t.elapsed())
            });
            match rx.recv_timeout(commit_wait.min(retention_wait)) {
                Ok(WriterMsg::Batch { docs, ack }) => {
                    self.add_batch(docs, ack);
                    let since = *self.since.get_or_insert_with(Instant::now);
                    if since.elapsed() < interval {
                        continue;
                    }
                }
                Ok(WriterMsg::Shutdown(done)) => {
                    self.commit();
                    for (_, p) in std::mem::take(&mut self.open) {
                        // Let merges in flight finish rather than leave
                        // half-written files behind.
                        let _ = p.writer.wait_merging_threads();
                    }
                    let _ = done.send(());
                    tracing::info!("index writer stopped");
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    return;
                }
            }
            if self.since.is_some_and(|t| t.elapsed() >= interval) {
                self.commit();
            }
            if self
                .last_retention
                .is_none_or(|t| t.elapsed() >= self.config.retention_interval)
            {
                self.retention_pass();
                self.close_idle_writers();
            }
        }
    }

    fn add_batch(&mut self, docs: Vec<Pending>, ack: Ack) {
        let mut duplicates = 0;
        let mut expired = 0;
        let oldest = self.oldest_kept_day();
        let batch_field = self.schema.batch;
        let tail_wanted = self.tail.wanted();
        // Which records are new, asked of each partition once per batch.
        let mut by_day: BTreeMap<Day, Vec<usize>> = BTreeMap::new();
        for (i, d) in docs.iter().enumerate() {
            if oldest.is_none_or(|o| d.day >= o) {
                by_day.entry(d.day).or_default().push(i);
            }
        }
        let mut fresh = vec![false; docs.len()];
        for (day, indexes) in &by_day {
            let checked = self.partition_for_write(*day).and_then(|partition| {
                let keys: Vec<&RecordKey> = indexes.iter().map(|&i| &docs[i].key).collect();
                partition.replays.check(&partition.reader, &keys)
            });
            match checked {
                Ok((new, cost)) => {
                    for (&i, new) in indexes.iter().zip(new) {
                        fresh[i] = new;
                    }
                    self.stats.note_replay_lookup(cost);
                }
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "cannot open partition for writing");
                    // Refuse the batch: it is resent later.
                    let _ = ack.send(Err(format!("cannot open partition {day}: {e}")));
                    self.forget_pending();
                    return;
                }
            }
        }
        for (
            Pending {
                key,
                day,
                digest,
                mut doc,
            },
            fresh,
        ) in docs.into_iter().zip(fresh)
        {
            if oldest.is_some_and(|o| day < o) {
                expired += 1;
                continue;
            }
            // Open already (above): this only looks it up.
            let partition = match self.partition_for_write(day) {
                Ok(p) => p,
                Err(e) => {
                    let _ = ack.send(Err(format!("cannot open partition {day}: {e}")));
                    self.forget_pending();
                    return;
                }
            };
            if !fresh || !partition.replays.insert(key) {
                duplicates += 1;
                continue;
            }
            let seq = partition.chain.head().1 + 1;
            doc.add_u64(batch_field, seq);
            partition.digests.push(digest);
            partition.last_write = Instant::now();
            let copy = tail_wanted.then(|| doc.clone());
            if let Err(e) = partition.writer.add_document(doc) {
                partition.failure.get_or_insert_with(|| e.to_string());
            }
            if let Some(copy) = copy {
                self.tail_pending.push(copy);
            }
        }
        if duplicates > 0 {
            self.stats
                .duplicates_dropped
                .fetch_add(duplicates as u64, Ordering::Relaxed);
            tracing::info!(duplicates, "dropped replayed records");
        }
        if expired > 0 {
            self.stats
                .records_expired
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::info!(expired, "dropped records older than the retention period");
        }
        self.acks.push((ack, duplicates, expired));
    }

    /// After a failure in the middle of a batch: what it added to
    /// partitions is rolled back with the next commit's failure.
    fn forget_pending(&mut self) {
        for p in self.open.values_mut() {
            if !p.digests.is_empty() {
                p.failure
                    .get_or_insert_with(|| "a batch could not be placed".into());
            }
        }
    }

    fn partition_for_write(&mut self, day: Day) -> Result<&mut OpenPartition, Error> {
        if !self.open.contains_key(&day) {
            let opened = self.open_for_write(day)?;
            self.open.insert(day, opened);
        }
        self.open
            .get_mut(&day)
            .ok_or_else(|| Error::Unavailable("partition vanished".into()))
    }

    fn open_for_write(&mut self, day: Day) -> Result<OpenPartition, Error> {
        let data_dir = &self.config.data_dir;
        let index = match self.indexes.get(&day) {
            Some(index) => index.clone(),
            None => {
                let index = partition::open_index(data_dir, day, &self.schema, true)?;
                self.ledger.append(EntryBody::PartitionCreated {
                    partition: day.name(),
                })?;
                tracing::info!(partition = %day, "partition created");
                self.indexes.insert(day, index.clone());
                self.stats
                    .partitions
                    .store(self.indexes.len() as u64, Ordering::Relaxed);
                index
            }
        };
        let payload = CommitPayload::parse(index.load_metas()?.payload.as_deref());
        let chain = ChainFile::open(
            &partition::partition_dir(data_dir, day).join(partition::CHAIN_FILE),
            Some(payload.map_or(0, |p| p.chain_seq)),
            self.config.hmac_key.clone(),
        )?;
        let writer: IndexWriter<TantivyDocument> = index.writer_with_num_threads(
            self.config.writer_threads.max(1),
            self.config.writer_heap_bytes,
        )?;
        // Bounded segment counts while ingest goes on. A merge rewrites
        // its segments' term dictionaries, so the fewer times a record is
        // merged the better: 8 segments per level (Quickwit merges 10)
        // instead of 4 indexed 13% more events per CPU-second at 1M events,
        // for a few more segments per search (BENCHMARKS.md).
        let mut policy = LogMergePolicy::default();
        policy.set_min_num_segments(8);
        policy.set_max_docs_before_merge(5_000_000);
        writer.set_merge_policy(Box::new(policy));
        let reader = match self.views.read().ok().and_then(|v| v.get(&day).cloned()) {
            Some(view) => view.reader,
            None => {
                let reader = reader_of(&index)?;
                if let Ok(mut views) = self.views.write() {
                    views.insert(
                        day,
                        View {
                            reader: reader.clone(),
                        },
                    );
                }
                reader
            }
        };
        let replays = ReplayGuard::open(&reader, day, self.schema.key, self.config.replay_window)?;
        tracing::debug!(partition = %day, "partition open for writing");
        Ok(OpenPartition {
            writer,
            reader,
            replays,
            chain,
            digests: Vec::new(),
            failure: None,
            last_write: Instant::now(),
        })
    }

    /// The memory gauges of the partitions open for writing.
    pub(super) fn note_memory(&self) {
        let (mut keys, mut window, mut filters) = (0, 0, 0);
        for p in self.open.values() {
            keys += p.replays.window_len();
            let (w, f) = p.replays.memory_bytes();
            window += w;
            filters += f;
        }
        let set = |gauge: &std::sync::atomic::AtomicU64, v: usize| {
            gauge.store(v as u64, Ordering::Relaxed)
        };
        set(&self.stats.partitions_open, self.open.len());
        set(
            &self.stats.writer_heap_bytes,
            self.open.len() * self.config.writer_heap_bytes,
        );
        set(&self.stats.replay_window_keys, keys);
        set(&self.stats.replay_window_bytes, window);
        set(&self.stats.replay_filter_bytes, filters);
    }

    fn commit(&mut self) {
        self.since = None;
        let acks = std::mem::take(&mut self.acks);
        if acks.is_empty() {
            return;
        }
        let mut failure: Option<String> = None;
        let mut added = 0u64;
        for (day, p) in self.open.iter_mut() {
            if p.digests.is_empty() && p.failure.is_none() {
                continue;
            }
            match commit_partition(p) {
                Ok(n) => added += n,
                Err(e) => {
                    tracing::error!(partition = %day, error = %e, "partition commit failed; batches are refused and will be resent");
                    failure.get_or_insert(e);
                }
            }
        }
        self.note_memory();
        let tail_docs = std::mem::take(&mut self.tail_pending);
        let result = match failure {
            None => {
                self.tail.publish(tail_docs);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .records_indexed
                    .fetch_add(added, Ordering::Relaxed);
                let segments: usize = self
                    .views
                    .read()
                    .map(|v| {
                        v.values()
                            .map(|v| v.reader.searcher().segment_readers().len())
                            .sum()
                    })
                    .unwrap_or(0);
                self.stats
                    .segments
                    .store(segments as u64, Ordering::Relaxed);
                Ok(())
            }
            Some(e) => {
                self.stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        };
        for (ack, duplicates, expired) in acks {
            let _ = ack.send(result.clone().map(|()| (duplicates, expired)));
        }
    }

    fn close_idle_writers(&mut self) {
        let today = Day::of(Utc::now());
        let timeout = self.config.idle_writer_timeout;
        let idle: Vec<Day> = self
            .open
            .iter()
            .filter(|(day, p)| {
                **day != today && p.digests.is_empty() && p.last_write.elapsed() >= timeout
            })
            .map(|(day, _)| *day)
            .collect();
        for day in idle {
            if let Some(p) = self.open.remove(&day) {
                let _ = p.writer.wait_merging_threads();
                tracing::debug!(partition = %day, "closed idle partition writer");
            }
        }
        self.note_memory();
    }
}

/// Commits one partition: chain entry first, then the index with the entry
/// named in its payload. Returns the records it added.
fn commit_partition(p: &mut OpenPartition) -> Result<u64, String> {
    let mut digests = std::mem::take(&mut p.digests);
    let records = digests.len() as u64;
    if let Some(e) = p.failure.take() {
        rollback(p);
        return Err(e);
    }
    let (prev_head, prev_seq) = {
        let (h, s) = p.chain.head();
        (h.to_owned(), s)
    };
    let prev_len = p.chain.len();
    let events_sha256 = hex::encode(chain::batch_digest(&mut digests));
    let entry = p
        .chain
        .append(EntryBody::Batch {
            records,
            events_sha256,
        })
        .map_err(|e| e.to_string())?;
    let payload = serde_json::to_string(&CommitPayload {
        chain_seq: entry.seq,
        chain_head: entry.hash.clone(),
    })
    .unwrap_or_default();
    let committed = p.writer.prepare_commit().and_then(|mut prepared| {
        prepared.set_payload(&payload);
        prepared.commit()
    });
    match committed {
        Ok(_) => {
            p.replays.commit();
            if let Err(e) = p.reader.reload() {
                tracing::warn!(error = %e, "index reader reload failed");
            }
            Ok(records)
        }
        Err(e) => {
            if let Err(e) = p.chain.truncate_to(prev_len, prev_head, prev_seq) {
                tracing::error!(error = %e, "cannot take back a chain entry");
            }
            rollback(p);
            Err(e.to_string())
        }
    }
}

fn rollback(p: &mut OpenPartition) {
    p.replays.rollback();
    p.digests.clear();
    if let Err(e) = p.writer.rollback() {
        tracing::error!(error = %e, "index rollback failed");
    }
}
