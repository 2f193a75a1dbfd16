//! Following log files: the loop that discovers, reads and lets go of
//! files, and hands sealed batches to the shipper.
//!
//! One blocking thread owns every open file ([`Tailer::run`]). A sealed
//! batch carries, per file, the offset up to which every byte is in this or
//! an earlier batch; the shipper turns those into checkpoints once the
//! indexer acknowledged the batch. How a file is known across renames,
//! truncation, compression and restarts is described once, in
//! ARCHITECTURE.md (crash semantics, collector). The submodules:
//! - `discover`: glob expansion, rotated or deleted files, watch roots;
//! - `identity`: fingerprints, head and tail hashes, rewrite checks;
//! - `rotated`: rotated siblings found at start, gzipped ones;
//! - `record`: lines into records (envelopes, container and audit records);
//! - `batch`: the batch encoder (zstd frames, file positions);
//! - `wake`: which file events wake the loop.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use ward_event::partial::PartialMerger;
use ward_event::path::{PodRef, pod_ref};

use crate::checkpoint::{Checkpoints, FilePosition};
use crate::encode;
use crate::kube::{PodMeta, SharedPods};
use crate::metrics::Metrics;
use crate::{CollectorConfig, Error};

use batch::BatchEncoder;
use discover::{Scan, watch_roots};
use identity::{Identified, check_rewritten, identify, note_identity, remember_tail};
use record::ContainerFormat;
use rotated::GzReader;

mod batch;
mod discover;
mod identity;
mod record;
mod rotated;
mod wake;

pub use batch::{Batch, Body};
pub use wake::Waker;

/// Bytes read from one file per turn, so that one busy file cannot starve
/// the others (less when batches are smaller, so that they stay near their
/// bound: a batch is sealed between turns). Every file is read into the
/// same buffer; a file keeps only its unfinished last line.
const READ_CHUNK: usize = 256 * 1024;
/// How often every file is read when a directory could not be watched.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A discovery asked for by an event runs this long after the event: a
/// burst (a pod's folders and log files, created one after another) is
/// found by one glob expansion, and by then the watcher watches the new
/// folders (it adds their watches only after reporting their creation).
const DISCOVER_SETTLE: Duration = Duration::from_millis(100);
/// A rotated or deleted file is let go only after this long without new
/// data: the runtime may still finish a write to the old file after the rename.
const ORPHAN_LINGER: Duration = Duration::from_secs(1);
/// How often a full channel to the shipper is tried again.
const SEND_WAIT: Duration = Duration::from_millis(20);
/// While reading is paused, how often rotated or deleted files are checked.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often file sizes are sampled for the checkpoint-lag gauge.
const SIZES_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Audit,
    Container,
}

struct TailedFile {
    path: PathBuf,
    /// `path` with symlinks resolved when the file was opened: the path
    /// its data events name.
    real_path: PathBuf,
    /// May have bytes not read yet: a data event named it, or the last
    /// read stopped before its end.
    dirty: bool,
    kind: Kind,
    file: File,
    dev_ino: (u64, u64),
    fingerprint: Option<String>,
    /// Hash of the first line alone (see `FilePosition::head_hash`).
    head_hash: Option<String>,
    /// Bumped when the file is read again from the start (see
    /// ARCHITECTURE.md, crash semantics).
    epoch: u32,
    /// The identity before a truncation, to tell whether the epoch moves on.
    previous: Option<(String, u32)>,
    /// The last bytes before `read_offset`, to notice in-place rewrites.
    tail: Vec<u8>,
    /// The unfinished last line (bytes read but not consumed); `buf[0]` is
    /// at file offset `buf_offset`.
    buf: Vec<u8>,
    buf_offset: u64,
    /// Where the next read starts.
    read_offset: u64,
    /// Pieces already emitted of a physical line longer than the bound.
    oversized_pieces: u32,
    merger: PartialMerger,
    format: Option<ContainerFormat>,
    pod: Option<PodRef>,
    last_data: Instant,
    /// The path no longer names this file (rotated or deleted).
    orphaned: bool,
    orphaned_since: Option<Instant>,
    /// Found beside a tailed file at startup (a rotated sibling): read
    /// from where the checkpoints say, from where they say for the file it
    /// is a copy of, or else from its start (rotated while the collector
    /// was down, before it was ever read).
    rotated_candidate: bool,
    /// The parts of a record that are the same for every line, and the
    /// API metadata they were encoded with.
    parts: Option<encode::FileParts>,
    parts_meta: Option<Arc<PodMeta>>,
    /// A compressed rotated file: read through this decoder, front to end.
    gz: Option<GzReader>,
}

impl TailedFile {
    fn new(
        path: PathBuf,
        real_path: PathBuf,
        kind: Kind,
        file: File,
        dev_ino: (u64, u64),
        max_line_bytes: usize,
        rotated_candidate: bool,
    ) -> TailedFile {
        let pod = (kind == Kind::Container).then(|| pod_ref(&path)).flatten();
        TailedFile {
            path,
            real_path,
            dirty: true,
            kind,
            file,
            dev_ino,
            fingerprint: None,
            head_hash: None,
            epoch: 0,
            previous: None,
            tail: Vec::new(),
            buf: Vec::new(),
            buf_offset: 0,
            read_offset: 0,
            oversized_pieces: 0,
            merger: PartialMerger::new(max_line_bytes),
            format: None,
            pod,
            last_data: Instant::now(),
            orphaned: rotated_candidate,
            orphaned_since: rotated_candidate.then(Instant::now),
            rotated_candidate,
            parts: None,
            parts_meta: None,
            gz: None,
        }
    }

    /// The file was truncated or rewritten (what was open is flushed
    /// first): it is identified and read again from its start.
    fn start_over(&mut self) {
        self.previous = self.fingerprint.take().map(|fp| (fp, self.epoch));
        self.buf.clear();
        self.tail.clear();
        self.buf_offset = 0;
        self.read_offset = 0;
        self.oversized_pieces = 0;
        self.format = None;
    }
}

pub struct Tailer {
    config: CollectorConfig,
    resume: HashMap<String, FilePosition>,
    files: Vec<TailedFile>,
    out: BatchEncoder,
    metrics: Arc<Metrics>,
    scanned_siblings: bool,
    sizes_sampled: Option<Instant>,
    /// Something was read or discovered since sizes were last sampled.
    sizes_stale: bool,
    wakes: wake::Wakes,
    /// The watched roots, canonicalized.
    roots: Vec<PathBuf>,
    /// Every file is read into this one buffer.
    read_buf: Vec<u8>,
    /// Identities of files read in this run (offset 0), saved before a
    /// batch with their lines is sent; see `checkpoint::load_identities`.
    identities: HashMap<String, FilePosition>,
    identities_unsaved: bool,
    /// The identities saved by the previous run.
    identities_at_start: Vec<FilePosition>,
}

impl Tailer {
    pub fn new(
        config: CollectorConfig,
        checkpoints: &Checkpoints,
        metrics: Arc<Metrics>,
        pods: Option<SharedPods>,
    ) -> Result<Tailer, Error> {
        if config.container_globs.is_empty()
            && config.audit_logs.is_empty()
            && config.audit_webhook.is_none()
        {
            return Err(Error::Config(
                "nothing to collect: give --containers, --audit-log or --audit-webhook".into(),
            ));
        }
        for pattern in config.container_globs.iter().chain(&config.audit_logs) {
            glob::Pattern::new(pattern)
                .map_err(|e| Error::Config(format!("bad glob {pattern:?}: {e}")))?;
        }
        let identities: HashMap<String, FilePosition> =
            crate::checkpoint::load_identities(&config.state_dir)?
                .into_iter()
                .map(|p| (p.fingerprint.clone(), p))
                .collect();
        // Identities matter only for gzipped files (see `rotated::open_gz`): a file
        // that kept its inode is recognised by its fingerprint, and a
        // copy (copytruncate's) by the checkpoint of what it was copied from.
        let identities_at_start = identities.values().cloned().collect();
        let roots: Vec<PathBuf> = watch_roots(&config)
            .into_iter()
            .map(|r| std::fs::canonicalize(&r).unwrap_or(r))
            .collect();
        let wakes = wake::Wakes::new(&roots)?;
        Ok(Tailer {
            resume: checkpoints
                .all()
                .map(|p| (p.fingerprint.clone(), p.clone()))
                .collect(),
            identities_at_start,
            identities,
            identities_unsaved: false,
            out: BatchEncoder::new(&config, pods),
            config,
            files: Vec::new(),
            metrics,
            scanned_siblings: false,
            sizes_sampled: None,
            sizes_stale: true,
            wakes,
            roots,
            read_buf: Vec::new(),
        })
    }

    /// Wakes [`Tailer::run`] from another thread, so that it sees `stop`
    /// at once rather than at its next deadline.
    pub fn waker(&self) -> Waker {
        self.wakes.waker()
    }

    /// Tails until `stop` is set, then seals and sends the last batch.
    ///
    /// The loop reads the files that events named (or every file, when
    /// events were lost or a directory could not be watched), discovers
    /// files when events ask for it and on the rescan interval, and sleeps
    /// until the next event or deadline: it costs nothing while nothing is
    /// written (see `wake`).
    pub fn run(mut self, tx: mpsc::Sender<Batch>, stop: &AtomicBool) -> Result<(), Error> {
        let mut last_scan: Option<Instant> = None;
        // When the first event asking for a discovery since the last one came.
        let mut scan_wanted: Option<Instant> = None;
        let mut timed_out = false;
        while !stop.load(Ordering::SeqCst) {
            let wake = self.wakes.take();
            let now = Instant::now();
            if wake.files {
                scan_wanted.get_or_insert(now);
            }
            let cause = match last_scan {
                None => Some(Scan::Start),
                Some(t) if now >= t + self.config.rescan_interval => Some(Scan::Rescan),
                _ if scan_wanted.is_some_and(|t| now >= t + DISCOVER_SETTLE) => Some(Scan::Event),
                _ => None,
            };
            if let Some(cause) = cause {
                self.discover(cause);
                last_scan = Some(Instant::now());
                scan_wanted = None;
            }
            let poll = timed_out && self.wakes.polling;
            if wake.all || poll {
                self.files.iter_mut().for_each(|f| f.dirty = true);
            } else if !wake.paths.is_empty() {
                for file in &mut self.files {
                    file.dirty |=
                        wake.paths.contains(&file.real_path) || wake.paths.contains(&file.path);
                }
            }
            self.read_all(&tx);
            self.flush_stale_partials();
            self.sample_sizes();
            if self.batch_due() && !self.seal(&tx) {
                return self.out.failure();
            }
            self.out.failure()?;
            if self.files.iter().any(|f| f.dirty) {
                // More to read: no sleep.
                timed_out = false;
                continue;
            }
            let last_scan = last_scan.unwrap_or(now);
            let deadline = self.next_deadline(last_scan, scan_wanted);
            let woken = self
                .wakes
                .wait(deadline.saturating_duration_since(Instant::now()));
            timed_out = !woken;
            let counter = match woken {
                true => &self.metrics.wakeups_event,
                false => &self.metrics.wakeups_timer,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.seal(&tx);
        self.out.failure()
    }

    /// When the loop must look again without an event: the rescan, a
    /// discovery an event asked for, the open batch's age, a partial line's
    /// timeout, a rotated file's linger, the size gauge, or the next poll.
    fn next_deadline(&self, last_scan: Instant, scan_wanted: Option<Instant>) -> Instant {
        let now = Instant::now();
        let mut next = last_scan + self.config.rescan_interval;
        if let Some(asked) = scan_wanted {
            next = next.min(asked + DISCOVER_SETTLE);
        }
        if let Some(started) = self.out.batch_started {
            next = next.min(started + self.config.batch_max_age);
        }
        for file in &self.files {
            if file.merger.oldest_open_offset().is_some() {
                next = next.min(file.last_data + self.config.partial_timeout);
            }
            if file.orphaned {
                // Its writes are events of another path: read it each turn.
                next = next.min(now + ORPHAN_CHECK_EVERY);
            }
        }
        if self.sizes_stale
            && let Some(sampled) = self.sizes_sampled
        {
            next = next.min(sampled + SIZES_EVERY);
        }
        if self.wakes.polling {
            next = next.min(now + POLL_EVERY);
        }
        next
    }

    /// Samples the size of every tracked file for the checkpoint-lag gauge.
    fn sample_sizes(&mut self) {
        if !self.sizes_stale
            || self
                .sizes_sampled
                .is_some_and(|t| t.elapsed() < SIZES_EVERY)
        {
            return;
        }
        self.sizes_stale = false;
        self.sizes_sampled = Some(Instant::now());
        let sizes = self
            .files
            .iter()
            .filter_map(|f| {
                let fp = f.fingerprint.as_ref()?;
                if f.gz.is_some() {
                    // Its uncompressed size is not known before its end.
                    return Some((fp.clone(), f.read_offset));
                }
                let len = f.file.metadata().ok()?.len();
                Some((fp.clone(), len))
            })
            .collect();
        self.metrics.set_sizes(sizes);
    }

    /// Reads what the files that may have new bytes appended (those an
    /// event named, those not read to their end, and rotated or deleted
    /// ones), and lets go of finished ones.
    fn read_all(&mut self, tx: &mpsc::Sender<Batch>) {
        let mut i = 0;
        while i < self.files.len() {
            if !self.files[i].dirty && !self.files[i].orphaned {
                i += 1;
                continue;
            }
            let at_eof = match self.read_file(i) {
                ReadOutcome::Bytes { at_eof } => at_eof,
                ReadOutcome::Nothing => true,
            };
            self.files[i].dirty = !at_eof;
            // Seal as soon as the batch is full, not after a turn over every
            // file: with hundreds of backlogged files a turn reads hundreds
            // of MiB, which would all sit in one batch in memory.
            if self.batch_due() {
                let tracked = self.files.len();
                if !self.seal(tx) {
                    return;
                }
                // Waiting to send may have given up on overdue files.
                if self.files.len() != tracked {
                    continue;
                }
            }
            let file = &self.files[i];
            let unknown = file.rotated_candidate && file.fingerprint.is_none() && at_eof;
            let finished = file.orphaned
                && at_eof
                && file.merger.oldest_open_offset().is_none()
                && file.last_data.elapsed() >= ORPHAN_LINGER;
            let overdue = file.orphaned
                && file
                    .orphaned_since
                    .is_some_and(|t| t.elapsed() >= self.config.orphan_max_age);
            if overdue && !finished && !unknown {
                self.abandon(i);
                continue;
            }
            if unknown || finished {
                let mut done = self.files.swap_remove(i);
                tracing::debug!(path = %done.path.display(), "finished rotated or deleted file");
                self.out.flush_partials(&mut done);
                continue;
            }
            i += 1;
        }
        self.metrics
            .files_tracked
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    fn read_file(&mut self, index: usize) -> ReadOutcome {
        let file = &mut self.files[index];
        if file.fingerprint.is_none() {
            // A newly identified file counts in the lag gauge before any
            // batch with its lines is sealed (see `seal`).
            self.sizes_sampled = None;
            match identify(file, &self.config.node, &self.resume) {
                Identified::Yes => {}
                Identified::Reset => {
                    self.metrics.files_reset.fetch_add(1, Ordering::Relaxed);
                }
                Identified::NotYet | Identified::Unknown => return ReadOutcome::Nothing,
            }
            note_identity(&mut self.identities, &mut self.identities_unsaved, file);
        } else if file.gz.is_none() {
            // Rewritten in place since the last read (copytruncate and
            // quick writes): read again from the start.
            check_rewritten(file);
        }
        // Shorter than what was read: truncated (copytruncate) or replaced in place.
        if file.gz.is_none()
            && file
                .file
                .metadata()
                .is_ok_and(|m| m.len() < file.read_offset)
        {
            tracing::info!(path = %file.path.display(), offset = file.read_offset, "file truncated; reading it again from the start");
            self.out.flush_partials(file);
            file.start_over();
            self.metrics.files_reset.fetch_add(1, Ordering::Relaxed);
            return ReadOutcome::Bytes { at_eof: false };
        }
        let chunk_len = READ_CHUNK.min(self.config.batch_max_bytes.max(4096));
        if self.read_buf.len() < chunk_len {
            self.read_buf.resize(chunk_len, 0);
        }
        let chunk = &mut self.read_buf[..chunk_len];
        let read = match &mut file.gz {
            // Sequential: the decoder is always at `read_offset`.
            Some(gz) => gz.read(chunk),
            None => file
                .file
                .seek(SeekFrom::Start(file.read_offset))
                .and_then(|_| file.file.read(chunk)),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(path = %file.path.display(), error = %e, "read failed");
                return ReadOutcome::Nothing;
            }
        };
        if n == 0 {
            return ReadOutcome::Nothing;
        }
        self.sizes_stale = true;
        let chunk = &self.read_buf[..n];
        file.read_offset += n as u64;
        remember_tail(&mut file.tail, chunk);
        file.last_data = Instant::now();
        let per_kind = match file.kind {
            Kind::Audit => &self.metrics.audit,
            Kind::Container => &self.metrics.container,
        };
        per_kind.bytes.fetch_add(n as u64, Ordering::Relaxed);
        per_kind.lines.fetch_add(
            memchr::memchr_iter(b'\n', chunk).count() as u64,
            Ordering::Relaxed,
        );
        self.out.consume(file, chunk);
        ReadOutcome::Bytes {
            at_eof: n < chunk_len,
        }
    }

    /// Lets go of a rotated or deleted file before its end, counting the
    /// bytes left unread.
    fn abandon(&mut self, index: usize) {
        let mut done = self.files.swap_remove(index);
        let left = match &mut done.gz {
            Some(gz) => {
                let rest = std::io::copy(gz, &mut std::io::sink()).unwrap_or(0);
                rest + (done.read_offset - done.buf_offset)
            }
            None => {
                let len = done.file.metadata().map(|m| m.len()).unwrap_or(0);
                len.saturating_sub(done.buf_offset)
            }
        };
        self.metrics
            .bytes_abandoned
            .fetch_add(left, Ordering::Relaxed);
        tracing::warn!(path = %done.path.display(), bytes = left, "gave up on rotated or deleted file before its end");
        self.out.flush_partials(&mut done);
        self.metrics
            .files_tracked
            .store(self.files.len() as u64, Ordering::Relaxed);
    }

    /// While reading is paused, rotated or deleted files past their bound
    /// are still let go, so that their disk space is freed in bounded time.
    fn abandon_overdue(&mut self) {
        for file in &mut self.files {
            // Without a rescan, a path that names no file or another one
            // still tells that this file was rotated or deleted.
            if !file.orphaned && discover::moved_away(file) {
                file.orphaned = true;
                file.orphaned_since = Some(Instant::now());
            }
        }
        let max_age = self.config.orphan_max_age;
        while let Some(i) = self
            .files
            .iter()
            .position(|f| f.orphaned && f.orphaned_since.is_some_and(|t| t.elapsed() >= max_age))
        {
            self.abandon(i);
        }
    }

    fn flush_stale_partials(&mut self) {
        let timeout = self.config.partial_timeout;
        for file in &mut self.files {
            if file.merger.oldest_open_offset().is_some() && file.last_data.elapsed() >= timeout {
                self.out.flush_partials(file);
            }
        }
    }

    fn batch_due(&self) -> bool {
        self.out
            .due(self.config.batch_max_bytes, self.config.batch_max_age)
    }

    /// Saves the identities of files first read since the last save, before
    /// a batch with their lines goes out. Identities of files no longer
    /// tailed whose lines were acknowledged (so the checkpoints know them)
    /// are dropped. Returns false, with the error kept, when they cannot be
    /// saved.
    fn save_identities(&mut self) -> bool {
        if !self.identities_unsaved {
            return true;
        }
        let files = &self.files;
        let metrics = &self.metrics;
        self.identities.retain(|fp, _| {
            files
                .iter()
                .any(|f| f.fingerprint.as_deref() == Some(fp.as_str()))
                || !metrics.is_acked(fp)
        });
        let all = self.identities.values().cloned().collect();
        match crate::checkpoint::save_identities(&self.config.state_dir, all) {
            Ok(()) => {
                self.identities_unsaved = false;
                true
            }
            Err(e) => {
                self.out.failed = Some(e);
                false
            }
        }
    }

    /// Sends the current batch, waiting while the shipper is busy (this is
    /// where reading pauses when the indexer and the spool cannot keep up).
    /// Returns false when the shipper is gone.
    fn seal(&mut self, tx: &mpsc::Sender<Batch>) -> bool {
        // The lag gauge must know every file whose lines the batch holds
        // before their acknowledgements can come back: otherwise it reads 0
        // while files are still being read.
        self.sample_sizes();
        if !self.save_identities() {
            return false;
        }
        let Some(mut batch) = self.out.take_batch() else {
            // Nothing to send, or failed (the error is kept for the loop).
            return self.out.failed.is_none();
        };
        let mut waiting_since = Instant::now();
        loop {
            match tx.try_send(batch) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(b)) => {
                    batch = b;
                    if waiting_since.elapsed() >= ORPHAN_CHECK_EVERY {
                        waiting_since = Instant::now();
                        self.abandon_overdue();
                    }
                    std::thread::sleep(SEND_WAIT);
                }
            }
        }
    }
}

/// What one read of a file found.
#[derive(Debug, Clone, Copy)]
enum ReadOutcome {
    /// Nothing new (or not readable yet).
    Nothing,
    /// New bytes; `at_eof` when the read stopped short of a full chunk.
    Bytes { at_eof: bool },
}
