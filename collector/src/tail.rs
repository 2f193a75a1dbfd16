//! Discovering and tailing log files, and turning their lines into records.
//!
//! One blocking thread owns every open file: it discovers files (glob
//! expansion on notify events and on a periodic rescan), reads what was
//! appended, parses it, and seals batches by size and age. A sealed batch
//! carries, per file, the offset up to which every byte is in this or an
//! earlier batch; the shipper turns those into checkpoints once the
//! indexer acknowledged the batch.
//!
//! Identity and rotation. A file is known by device + inode + a hash of its
//! first line (its fingerprint), so that a reused inode is a new file, and a
//! renamed file (kubelet's `<n>.log` → `<n>.log.<timestamp>`, the API
//! server's `audit.log` → `audit-<timestamp>.log`) is the same file: its
//! open descriptor is read to its end before it is let go, and a new file
//! at the old name is picked up on the next notify event (or rescan). A
//! rotated or deleted file that is not read to its end within
//! `orphan_max_age` is given up on and its unread bytes are counted
//! (`ward_collector_bytes_abandoned_total`), so that a stuck pipeline cannot
//! hold deleted files open for ever.
//!
//! Compressed rotated files. Kubelet gzips older rotated files, and the API
//! server may compress its rotated audit logs. A file the collector was
//! tailing when it went down may be rotated and compressed before it is
//! back, with lines still unacknowledged. At start, `*.gz` siblings of the
//! tailed files are decompressed (and siblings of the paths the
//! checkpoints know: after a rotation nothing may be at the path until the
//! next write creates a new file): one whose first line has the hash of a
//! checkpointed file, and whose content before the checkpoint's offset ends
//! with the checkpointed bytes, is read from that offset on, under that
//! file's identity (so lines sent before and again have the same ids). A
//! compressed file that matches no checkpoint is read from its start if it
//! was last written within `checkpoint::FORGET_AFTER` (checkpoints are kept
//! that long, so it was never delivered), and left alone otherwise (read
//! and forgotten long ago, or older than the collector). A `.gz` whose
//! uncompressed original is still there is being written by gzip and skipped.
//! The checkpoints learn a file only once a batch of it was acknowledged,
//! so a file's identity (fingerprint, first-line hash, epoch, offset 0) is
//! also saved, in `identities.json`, before the first batch with its lines
//! is sent: a file gzipped before its first checkpoint is matched to that
//! identity and read from its start under it, and the indexer recognises
//! what was already delivered.
//!
//! Truncation and rewrites. The checkpoint keeps a hash of the bytes just
//! before the saved offset; on resume a file whose bytes there differ (or
//! that is now shorter) is read again from the start. While a file is open,
//! a size below the read position or changed bytes before it mean the same
//! (copytruncate). Content read again under the same fingerprint gets a new
//! epoch, which is part of its record ids, so it is never taken for a
//! replay of what was there before.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use ward_event::Stream;
use ward_event::audit::{self, Parsed};
use ward_event::hash::{self, Fnv64};
use ward_event::partial::{LogLine, PartialMerger};
use ward_event::path::{PodRef, pod_ref};
use ward_event::wire::{BatchWriter, RawRecord};
use ward_event::{Flag, Record, RecordId, SourceKind, cri, docker};

use crate::checkpoint::{Checkpoints, FORGET_AFTER, FilePosition};
use crate::encode;
use crate::kube::{PodMeta, SharedPods};
use crate::metrics::Metrics;
use crate::{CollectorConfig, Error};

mod wake;

pub use wake::Waker;

/// Bytes read from one file per turn, so that one busy file cannot starve
/// the others (less when batches are smaller, so that they stay near their
/// bound: a batch is sealed between turns). Every file is read into the
/// same buffer; a file keeps only its unfinished last line.
const READ_CHUNK: usize = 256 * 1024;
/// A file's buffer for its unfinished line is given back when it holds
/// less than a quarter of a capacity above this.
const KEEP_LINE_BUF: usize = 64 * 1024;
/// Encoded records are compressed into a zstd frame of their own once
/// they reach this many bytes: a batch is a series of frames, so that its
/// uncompressed form is never held whole, and zstd's window (and memory)
/// is bounded by the frame, however large the batch.
const FRAME_BYTES: usize = 1024 * 1024;
/// How often every file is read when a directory could not be watched.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// A discovery asked for by an event runs this long after the event: a
/// burst (a pod's folders and log files, created one after another) is
/// found by one glob expansion, and by then the watcher watches the new
/// folders (it adds their watches only after reporting their creation).
const DISCOVER_SETTLE: Duration = Duration::from_millis(100);
/// Bytes of a file's start that go into its fingerprint.
const HEAD_BYTES: usize = 256;
/// Bytes before a position that are hashed to recognise the same content.
const TAIL_BYTES: usize = 64;
/// A rotated or deleted file is let go only after this long without new
/// data: the runtime may still finish a write to the old file after the rename.
const ORPHAN_LINGER: Duration = Duration::from_secs(1);
/// How often a full channel to the shipper is tried again.
const SEND_WAIT: Duration = Duration::from_millis(20);
/// While reading is paused, how often rotated or deleted files are checked.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_millis(500);
/// The fingerprint in the ids of a file's records before it is identified.
const UNIDENTIFIED: &str = "unidentified";
/// How often file sizes are sampled for the checkpoint-lag gauge.
const SIZES_EVERY: Duration = Duration::from_secs(1);

/// A sealed batch of records and the file positions it completes.
#[derive(Debug)]
pub struct Batch {
    pub body: Body,
    pub records: usize,
    pub positions: Vec<FilePosition>,
    /// Told whether the batch is durable (acknowledged by the indexer or in
    /// the spool); used by the audit webhook, whose answer waits for it.
    pub durable: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// A batch's records, one JSON object per line.
#[derive(Debug)]
pub enum Body {
    /// Not compressed yet (the shipper compresses it): webhook batches.
    Ndjson(Vec<u8>),
    /// A zstd frame, compressed while the batch was built: file batches.
    Zstd(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Audit,
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerFormat {
    Cri,
    Docker,
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
    /// See the module docs: bumped when the file is read again from the start.
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

type GzReader = flate2::read::MultiGzDecoder<std::io::BufReader<File>>;

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
}

pub struct Tailer {
    config: CollectorConfig,
    resume: HashMap<String, FilePosition>,
    files: Vec<TailedFile>,
    out: Output,
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

/// The batch being built, and the positions it completes.
struct Output {
    node: String,
    cluster: Option<String>,
    max_line_bytes: usize,
    /// Records encoded since the last frame was compressed.
    writer: BatchWriter,
    /// The batch so far: zstd frames (see [`FRAME_BYTES`]).
    body: Vec<u8>,
    /// One compression context, reused for every frame.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    zstd_level: i32,
    /// Uncompressed bytes and records already in `body`.
    batch_bytes: usize,
    batch_records: usize,
    /// `,"cluster":…,"node":…` of every record.
    cluster_node: Vec<u8>,
    /// zstd failed (it cannot, short of memory), or the identities could
    /// not be saved: the tailer stops with this error, and what was not
    /// acknowledged is read again at start.
    failed: Option<Error>,
    batch_started: Option<Instant>,
    positions: HashMap<String, FilePosition>,
    merged: Vec<LogLine>,
    /// Pod metadata from the Kubernetes API, when `--kube-metadata` is on.
    pods: Option<SharedPods>,
}

/// A record's `kubernetes` object: what the path tells, and what the
/// Kubernetes API adds.
#[derive(serde::Serialize)]
struct Kubernetes<'a> {
    #[serde(flatten)]
    pod: &'a PodRef,
    #[serde(flatten)]
    meta: Option<&'a PodMeta>,
}

/// The body of a container record (the same shape as
/// `ward_event::record::ContainerEvent`, with the API's metadata).
#[derive(serde::Serialize)]
struct ContainerBody<'a> {
    message: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<Stream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<Kubernetes<'a>>,
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
        // Identities matter only for gzipped files (see `open_gz`): a file
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
            out: Output {
                node: config.node.clone(),
                cluster: config.cluster.clone(),
                max_line_bytes: config.max_line_bytes,
                writer: BatchWriter::new(),
                body: Vec::new(),
                compressor: None,
                zstd_level: config.zstd_level,
                batch_bytes: 0,
                batch_records: 0,
                cluster_node: cluster_node(config.cluster.as_deref(), &config.node),
                failed: None,
                batch_started: None,
                positions: HashMap::new(),
                merged: Vec::new(),
                pods,
            },
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

    fn discover(&mut self, cause: Scan) {
        let counter = match cause {
            Scan::Start => &self.metrics.scans_start,
            Scan::Event => &self.metrics.scans_event,
            Scan::Rescan => &self.metrics.scans_rescan,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.sizes_stale = true;
        let mut seen: Vec<(PathBuf, Kind)> = Vec::new();
        let patterns = self
            .config
            .container_globs
            .iter()
            .map(|p| (p, Kind::Container))
            .chain(self.config.audit_logs.iter().map(|p| (p, Kind::Audit)));
        for (pattern, kind) in patterns {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                seen.push((path, kind));
            }
        }
        for file in &mut self.files {
            file.orphaned = !seen.iter().any(|(p, _)| *p == file.path)
                || std::fs::metadata(&file.path)
                    .map(|m| (m.dev(), m.ino()))
                    .ok()
                    != Some(file.dev_ino);
            if file.orphaned {
                file.orphaned_since.get_or_insert_with(Instant::now);
            } else {
                file.orphaned_since = None;
                check_rewritten(file);
            }
        }
        // Once, at startup: files rotated while the collector was down may
        // still hold unacknowledged lines, also where nothing is at the
        // live path yet; later rotations keep the open descriptor, so the
        // live path needs no sibling scan.
        let mut candidates: Vec<(PathBuf, Kind, bool)> = Vec::new();
        if !self.scanned_siblings {
            self.scanned_siblings = true;
            for (path, kind) in seen.iter().cloned().chain(self.known_live_paths(&seen)) {
                for sibling in rotated_siblings(&path) {
                    if !seen.iter().any(|(p, _)| *p == sibling)
                        && !candidates.iter().any(|(p, _, _)| *p == sibling)
                    {
                        candidates.push((sibling, kind, true));
                    }
                }
            }
        }
        let seen = seen.into_iter().map(|(p, k)| (p, k, false));
        for (path, kind, rotated_candidate) in candidates.into_iter().chain(seen) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let dev_ino = (meta.dev(), meta.ino());
            // The same file under another name (a symlink, or after a rename) is
            // tailed once.
            if let Some(existing) = self.files.iter_mut().find(|f| f.dev_ino == dev_ino) {
                if existing.orphaned && !rotated_candidate {
                    existing.real_path = std::fs::canonicalize(&path).unwrap_or(path.clone());
                    existing.path = path;
                    existing.parts = None;
                    existing.orphaned = false;
                    existing.orphaned_since = None;
                    existing.dirty = true;
                }
                continue;
            }
            let compressed = rotated_candidate && path.extension().is_some_and(|e| e == "gz");
            match File::open(&path) {
                Ok(file) => {
                    tracing::debug!(path = %path.display(), rotated_candidate, "tailing file");
                    let real_path = std::fs::canonicalize(&path).unwrap_or(path.clone());
                    let mut tailed = TailedFile::new(
                        path,
                        real_path,
                        kind,
                        file,
                        dev_ino,
                        self.config.max_line_bytes,
                        rotated_candidate,
                    );
                    if compressed {
                        let known = (&self.resume, &self.identities_at_start[..]);
                        if !open_gz(&mut tailed, &meta, &self.config.node, known) {
                            continue;
                        }
                        note_identity(&mut self.identities, &mut self.identities_unsaved, &tailed);
                    }
                    self.files.push(tailed);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open log file")
                }
            }
        }
        self.metrics
            .files_tracked
            .store(self.files.len() as u64, Ordering::Relaxed);
        // Targets outside the watched roots (symlinked files) are watched
        // through their directories, so that their writes and rotations
        // are events too.
        let extra = self
            .files
            .iter()
            .filter(|f| !f.orphaned && !wake::under_any(&f.real_path, &self.roots))
            .filter_map(|f| f.real_path.parent().map(Path::to_path_buf))
            .collect();
        self.wakes.watch_extra(extra);
    }

    /// Paths the previous run read files at (from the checkpoints and the
    /// saved identities) that match a configured pattern but were not
    /// found by it now: a file rotated while the collector was down leaves
    /// nothing at its path until the next write creates a new one, and its
    /// rotated (maybe gzipped) self, with lines not yet acknowledged, must
    /// still be found by the sibling scan at start.
    fn known_live_paths(&self, seen: &[(PathBuf, Kind)]) -> Vec<(PathBuf, Kind)> {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let patterns: Vec<(glob::Pattern, Kind)> = self
            .config
            .container_globs
            .iter()
            .map(|p| (p, Kind::Container))
            .chain(self.config.audit_logs.iter().map(|p| (p, Kind::Audit)))
            .filter_map(|(p, kind)| Some((glob::Pattern::new(p).ok()?, kind)))
            .collect();
        let mut done: std::collections::HashSet<&Path> =
            seen.iter().map(|(p, _)| p.as_path()).collect();
        let mut known: Vec<(PathBuf, Kind)> = Vec::new();
        for position in self.resume.values().chain(&self.identities_at_start) {
            let path = Path::new(&position.path);
            if !done.insert(path) {
                continue;
            }
            if let Some((_, kind)) = patterns
                .iter()
                .find(|(pattern, _)| pattern.matches_path_with(path, options))
            {
                known.push((path.to_path_buf(), *kind));
            }
        }
        known
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
            self.out.start_over(file);
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
            if !file.orphaned
                && std::fs::metadata(&file.path)
                    .map(|m| (m.dev(), m.ino()))
                    .ok()
                    != Some(file.dev_ino)
            {
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
        self.out.batch_bytes + self.out.writer.bytes() >= self.config.batch_max_bytes
            || self
                .out
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.config.batch_max_age)
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
        let out = &mut self.out;
        out.compress_staged(true);
        if out.failed.is_some() {
            return false;
        }
        if out.batch_records == 0 {
            return true;
        }
        let mut batch = Batch {
            records: std::mem::take(&mut out.batch_records),
            body: Body::Zstd(std::mem::take(&mut out.body)),
            positions: out.positions.drain().map(|(_, p)| p).collect(),
            durable: None,
        };
        out.batch_bytes = 0;
        out.batch_started = None;
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

impl Output {
    /// Takes `new` bytes read from the file (which follow its unfinished
    /// line, if any) and turns every complete line into records; what is
    /// left of a line stays in the file's small buffer.
    fn consume(&mut self, file: &mut TailedFile, new: &[u8]) {
        let mut rest = new;
        if !file.buf.is_empty() {
            let mut pending = std::mem::take(&mut file.buf);
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    pending.extend_from_slice(&rest[..=nl]);
                    rest = &rest[nl + 1..];
                    let used = self.consume_lines(file, &pending);
                    debug_assert_eq!(used, pending.len());
                    pending.clear();
                    file.buf = pending;
                }
                None => {
                    pending.extend_from_slice(rest);
                    let used = self.consume_lines(file, &pending);
                    pending.drain(..used);
                    file.buf = pending;
                    rest = &[];
                }
            }
        }
        let used = self.consume_lines(file, rest);
        file.buf.extend_from_slice(&rest[used..]);
        if file.buf.capacity() > KEEP_LINE_BUF && file.buf.len() < file.buf.capacity() / 4 {
            file.buf.shrink_to(file.buf.len().max(KEEP_LINE_BUF / 4));
        }
        self.note_position(file);
        self.compress_staged(false);
    }

    /// Turns every complete line of `data` (which starts at the file's
    /// `buf_offset`) into records, and splits a line longer than the bound
    /// that has no end yet; moves `buf_offset` past what it consumed and
    /// returns how many bytes that is.
    fn consume_lines(&mut self, file: &mut TailedFile, data: &[u8]) -> usize {
        let max_line = self.max_line_bytes;
        if file.kind == Kind::Container {
            self.refresh_parts(file);
        }
        let mut start = 0usize;
        while let Some(pos) = memchr::memchr(b'\n', &data[start..]) {
            let end = start + pos;
            let mut line = &data[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let offset = file.buf_offset + start as u64;
            let piece = std::mem::take(&mut file.oversized_pieces);
            if piece > 0 {
                // The tail of an oversized line: a flagged piece like the others.
                self.emit_raw(file, offset, piece, line, None, vec![Flag::Split]);
            } else if !line.is_empty() {
                self.handle_line(file, offset, line);
            }
            start = end + 1;
        }
        // A line with no end in sight: emit it in bounded pieces.
        while data.len() - start > max_line {
            let offset = file.buf_offset + start as u64;
            let piece_bytes = &data[start..start + max_line];
            let piece = file.oversized_pieces;
            file.oversized_pieces += 1;
            let reason = format!("line longer than {max_line} bytes; split into pieces");
            self.emit_raw(
                file,
                offset,
                piece,
                piece_bytes,
                Some(reason),
                vec![Flag::Split],
            );
            start += max_line;
        }
        file.buf_offset += start as u64;
        start
    }

    /// Compresses the records encoded so far into a frame of the batch,
    /// once they are [`FRAME_BYTES`] (or any amount when `now`).
    fn compress_staged(&mut self, now: bool) {
        if self.writer.is_empty() || self.failed.is_some() {
            return;
        }
        if !now && self.writer.bytes() < FRAME_BYTES {
            return;
        }
        if self.compressor.is_none() {
            match zstd::bulk::Compressor::new(self.zstd_level) {
                Ok(c) => self.compressor = Some(c),
                Err(e) => {
                    self.failed = Some(Error::Compress(e.to_string()));
                    return;
                }
            }
        }
        let Some(compressor) = self.compressor.as_mut() else {
            return;
        };
        match compressor.compress(self.writer.as_bytes()) {
            Ok(frame) if self.body.is_empty() => self.body = frame,
            Ok(frame) => self.body.extend_from_slice(&frame),
            Err(e) => {
                self.failed = Some(Error::Compress(e.to_string()));
                return;
            }
        }
        self.batch_bytes += self.writer.bytes();
        self.batch_records += self.writer.records();
        self.writer.clear();
    }

    fn failure(&mut self) -> Result<(), Error> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Encodes the file's per-record constants, again when its path or
    /// its pod's API metadata changed.
    fn refresh_parts(&mut self, file: &mut TailedFile) {
        let meta = self.pod_meta(file);
        let same_meta = match (&meta, &file.parts_meta) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if file.parts.is_some() && same_meta {
            return;
        }
        let mut file_offset = b"\"file\":".to_vec();
        encode::string(&mut file_offset, &file.path.display().to_string());
        file_offset.extend_from_slice(b",\"offset\":");
        let mut kubernetes = Vec::new();
        if let Some(pod) = &file.pod {
            kubernetes.extend_from_slice(b",\"kubernetes\":");
            let k = Kubernetes {
                pod,
                meta: meta.as_deref(),
            };
            if let Err(e) = serde_json::to_writer(&mut kubernetes, &k) {
                tracing::error!(error = %e, "cannot encode pod metadata");
                kubernetes.clear();
            }
        }
        file.parts = Some(encode::FileParts {
            file_offset,
            kubernetes,
        });
        file.parts_meta = meta;
    }

    fn note_position(&mut self, file: &TailedFile) {
        let Some(fp) = &file.fingerprint else { return };
        let safe = file
            .merger
            .oldest_open_offset()
            .map_or(file.buf_offset, |o| o.min(file.buf_offset));
        self.positions.insert(
            fp.clone(),
            FilePosition {
                fingerprint: fp.clone(),
                path: file.path.display().to_string(),
                offset: safe,
                epoch: file.epoch,
                tail_hash: match &file.gz {
                    // What was read last is at hand; anything before it is not.
                    Some(_) => (safe > 0 && safe == file.read_offset).then(|| hash_hex(&file.tail)),
                    None => tail_hash(&file.file, safe),
                },
                head_hash: file.head_hash.clone(),
            },
        );
    }

    /// The file was truncated or rewritten: what was open is flushed, and
    /// the file is identified and read again from its start.
    fn start_over(&mut self, file: &mut TailedFile) {
        self.flush_partials(file);
        file.previous = file.fingerprint.take().map(|fp| (fp, file.epoch));
        file.buf.clear();
        file.tail.clear();
        file.buf_offset = 0;
        file.read_offset = 0;
        file.oversized_pieces = 0;
        file.format = None;
    }

    fn handle_line(&mut self, file: &mut TailedFile, offset: u64, line: &[u8]) {
        match file.kind {
            Kind::Audit => self.handle_audit(file, offset, line),
            Kind::Container => self.handle_container(file, offset, line),
        }
    }

    fn handle_audit(&mut self, file: &TailedFile, offset: u64, line: &[u8]) {
        let (text, invalid_utf8) = lossy(line);
        let parsed = audit::parse_line(&text);
        let list = parsed.len() > 1;
        for (i, parsed) in parsed.into_iter().enumerate() {
            // The events of an `EventList` line are told apart in their ids.
            let item = list.then_some(i);
            match parsed {
                Parsed::Event { raw, timestamp } => {
                    let mut flags = Vec::new();
                    if invalid_utf8 {
                        flags.push(Flag::InvalidUtf8);
                    }
                    let timestamp = timestamp.unwrap_or_else(|| {
                        flags.push(Flag::TimeInferred);
                        Utc::now()
                    });
                    let envelope = self.envelope(
                        file,
                        offset,
                        0,
                        item,
                        SourceKind::Audit,
                        timestamp,
                        flags,
                        None,
                    );
                    if let Err(e) = self.writer.push_raw(&envelope, raw) {
                        tracing::error!(error = %e, "cannot encode audit event");
                    }
                    self.batch_started.get_or_insert_with(Instant::now);
                }
                Parsed::Invalid { raw, error } => {
                    let mut flags = vec![];
                    if invalid_utf8 {
                        flags.push(Flag::InvalidUtf8);
                    }
                    let raw = raw.to_owned();
                    self.push_raw_text(file, offset, 0, item, &raw, Some(error.to_string()), flags);
                }
            }
        }
    }

    fn handle_container(&mut self, file: &mut TailedFile, offset: u64, line: &[u8]) {
        let format = *file.format.get_or_insert(if line.first() == Some(&b'{') {
            ContainerFormat::Docker
        } else {
            ContainerFormat::Cri
        });
        let parsed = match format {
            ContainerFormat::Cri => cri::parse(line),
            ContainerFormat::Docker => docker::parse(line),
        };
        match parsed {
            // A whole line by itself: encoded straight from the read buffer.
            Ok(chunk)
                if !chunk.partial
                    && !file.merger.is_open(chunk.stream)
                    && chunk.message.len() <= self.max_line_bytes =>
            {
                self.write_container(
                    file,
                    offset,
                    0,
                    &chunk.timestamp,
                    chunk.stream,
                    &chunk.message,
                    &[],
                );
            }
            Ok(chunk) => {
                let mut merged = std::mem::take(&mut self.merged);
                file.merger.push(offset, chunk, &mut merged);
                for line in merged.drain(..) {
                    self.emit_container(file, line);
                }
                self.merged = merged;
            }
            Err(e) => self.emit_raw(file, offset, 0, line, Some(e.to_string()), vec![]),
        }
    }

    fn emit_container(&mut self, file: &TailedFile, line: LogLine) {
        self.write_container(
            file,
            line.offset,
            line.piece,
            &line.timestamp,
            line.stream,
            &line.message,
            &line.flags,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn write_container(
        &mut self,
        file: &TailedFile,
        offset: u64,
        piece: u32,
        timestamp: &chrono::DateTime<Utc>,
        stream: Stream,
        message: &[u8],
        flags: &[Flag],
    ) {
        let Some(parts) = &file.parts else {
            // Parts are set before any container line is consumed.
            tracing::error!(path = %file.path.display(), "container line before its file was set up");
            return;
        };
        let (message, invalid_utf8) = lossy(message);
        let mut with_invalid;
        let flags = if invalid_utf8 {
            with_invalid = flags.to_vec();
            with_invalid.push(Flag::InvalidUtf8);
            &with_invalid[..]
        } else {
            flags
        };
        let line = encode::ContainerLine {
            fingerprint: file.fingerprint.as_deref().unwrap_or(UNIDENTIFIED),
            epoch: file.epoch,
            offset,
            piece,
            timestamp,
            stream,
            message: &message,
            flags,
        };
        let cluster_node = &self.cluster_node;
        self.writer
            .push_encoded(|out| encode::container(out, cluster_node, parts, &line));
        self.batch_started.get_or_insert_with(Instant::now);
    }

    fn emit_raw(
        &mut self,
        file: &TailedFile,
        offset: u64,
        piece: u32,
        line: &[u8],
        error: Option<String>,
        mut flags: Vec<Flag>,
    ) {
        let (text, invalid_utf8) = lossy(line);
        if invalid_utf8 {
            flags.push(Flag::InvalidUtf8);
        }
        let text = text.into_owned();
        self.push_raw_text(file, offset, piece, None, &text, error, flags);
    }

    /// A line kept as is because it did not parse (or is a piece of one).
    #[allow(clippy::too_many_arguments)]
    fn push_raw_text(
        &mut self,
        file: &TailedFile,
        offset: u64,
        piece: u32,
        item: Option<usize>,
        text: &str,
        error: Option<String>,
        mut flags: Vec<Flag>,
    ) {
        if error.is_some() {
            flags.insert(0, Flag::ParseError);
        }
        flags.push(Flag::TimeInferred);
        let source = match file.kind {
            Kind::Audit => SourceKind::Audit,
            Kind::Container => SourceKind::Container,
        };
        let envelope = self.envelope(file, offset, piece, item, source, Utc::now(), flags, error);
        let meta = self.pod_meta(file);
        let record = envelope.with_event(ContainerBody {
            message: std::borrow::Cow::Borrowed(text),
            stream: None,
            kubernetes: file.pod.as_ref().map(|pod| Kubernetes {
                pod,
                meta: meta.as_deref(),
            }),
        });
        if let Err(e) = self.writer.push(&record) {
            tracing::error!(error = %e, "cannot encode raw line");
        }
        self.batch_started.get_or_insert_with(Instant::now);
    }

    #[allow(clippy::too_many_arguments)]
    fn envelope(
        &self,
        file: &TailedFile,
        offset: u64,
        piece: u32,
        item: Option<usize>,
        source: SourceKind,
        timestamp: chrono::DateTime<Utc>,
        flags: Vec<Flag>,
        parse_error: Option<String>,
    ) -> RawRecord {
        let id = RecordId::File {
            fingerprint: file.fingerprint.as_deref().unwrap_or(UNIDENTIFIED),
            epoch: file.epoch,
            offset,
            piece,
            item,
        };
        Record {
            id: id.to_string(),
            source,
            timestamp,
            cluster: self.cluster.clone(),
            node: Some(self.node.clone()),
            flags,
            parse_error,
            file: Some(file.path.display().to_string()),
            offset: Some(offset),
            event: (),
        }
    }

    /// The API's metadata of the file's pod, if known.
    fn pod_meta(&self, file: &TailedFile) -> Option<Arc<PodMeta>> {
        let pod = file.pod.as_ref()?;
        self.pods.as_ref()?.read().ok()?.lookup(pod)
    }

    fn flush_partials(&mut self, file: &mut TailedFile) {
        if file.kind == Kind::Container {
            self.refresh_parts(file);
        }
        let mut merged = std::mem::take(&mut self.merged);
        file.merger.flush(&mut merged);
        for line in merged.drain(..) {
            self.emit_container(file, line);
        }
        self.merged = merged;
        self.note_position(file);
    }
}

/// Why a discovery ran (`ward_collector_discovery_scans_total{cause}`).
#[derive(Debug, Clone, Copy)]
enum Scan {
    Start,
    /// An event said files appeared, went or were renamed.
    Event,
    /// The rescan interval passed: a safety net for missed events.
    Rescan,
}

/// What one read of a file found.
#[derive(Debug, Clone, Copy)]
enum ReadOutcome {
    /// Nothing new (or not readable yet).
    Nothing,
    /// New bytes; `at_eof` when the read stopped short of a full chunk.
    Bytes { at_eof: bool },
}

/// The directories to watch: the literal prefix of each glob (the nearest
/// existing directory).
fn watch_roots(config: &CollectorConfig) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    for pattern in config.container_globs.iter().chain(&config.audit_logs) {
        let mut root = PathBuf::new();
        for part in Path::new(pattern).components() {
            let s = part.as_os_str().to_string_lossy();
            if s.contains(['*', '?', '[']) {
                break;
            }
            root.push(part);
        }
        while !root.as_os_str().is_empty() && !root.is_dir() {
            root = root.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        if !root.as_os_str().is_empty() && !roots.iter().any(|r| root.starts_with(r)) {
            roots.retain(|r| !r.starts_with(&root));
            roots.push(root);
        }
    }
    roots
}

enum Identified {
    /// Identified; reading resumes where the checkpoints say.
    Yes,
    /// Identified, but the bytes before the saved position changed: read
    /// again from the start in a new epoch.
    Reset,
    /// Too short to identify yet.
    NotYet,
    /// A rotated sibling that cannot be identified (no complete first line).
    Unknown,
}

/// Reads the head of a new file to fingerprint it, and finds where to resume.
fn identify(
    file: &mut TailedFile,
    node: &str,
    resume: &HashMap<String, FilePosition>,
) -> Identified {
    let mut head = vec![0u8; HEAD_BYTES];
    let n = match file.file.read_at(&mut head, 0) {
        Ok(n) => n,
        Err(_) => return Identified::NotYet,
    };
    let head = &head[..n];
    // Until the first line is complete the head may still change.
    let head = match memchr::memchr(b'\n', head) {
        Some(end) => &head[..=end],
        None if n == HEAD_BYTES => head,
        None if file.rotated_candidate => return Identified::Unknown,
        None => return Identified::NotYet,
    };
    let fp = fingerprint(node, file.dev_ino, head);
    let head_hash = hash_hex(head);
    // After a truncation the same fingerprint means the same first line
    // with other content after it: a new epoch keeps the ids apart.
    let after_truncation = file
        .previous
        .take()
        .filter(|(old, _)| *old == fp)
        .map(|(_, epoch)| epoch + 1);
    let mut saved = resume.get(&fp);
    if file.rotated_candidate && saved.is_none() {
        // A copy (copytruncate's) of a file that was being read: resume
        // where that file was, if the bytes there are the same.
        saved = resume.values().find(|p| {
            p.head_hash.as_deref() == Some(head_hash.as_str())
                && p.tail_hash.is_some()
                && tail_hash(&file.file, p.offset) == p.tail_hash
        });
        if let Some(original) = saved {
            tracing::info!(path = %file.path.display(), offset = original.offset, "rotated copy of a file read before; resuming where it was");
        }
    }
    let mut outcome = Identified::Yes;
    let (epoch, offset) = match (after_truncation, saved) {
        (Some(epoch), saved) => (epoch.max(saved.map_or(0, |s| s.epoch + 1)), 0),
        (None, None) => (0, 0),
        (None, Some(saved)) => {
            let len = file.file.metadata().map(|m| m.len()).unwrap_or(0);
            let same = saved.offset <= len
                && (saved.tail_hash.is_none()
                    || tail_hash(&file.file, saved.offset) == saved.tail_hash);
            if same {
                (saved.epoch, saved.offset)
            } else {
                tracing::info!(path = %file.path.display(), offset = saved.offset, len, "file truncated or rewritten since the checkpoint; reading it again from the start");
                outcome = Identified::Reset;
                (saved.epoch + 1, 0)
            }
        }
    };
    tracing::debug!(path = %file.path.display(), fingerprint = %fp, epoch, offset, "identified file");
    file.fingerprint = Some(fp);
    file.head_hash = Some(head_hash);
    file.epoch = epoch;
    file.read_offset = offset;
    file.buf_offset = offset;
    file.tail.clear();
    if offset > 0 {
        let start = offset.saturating_sub(TAIL_BYTES as u64);
        let mut tail = vec![0u8; (offset - start) as usize];
        if file.file.read_exact_at(&mut tail, start).is_ok() {
            file.tail = tail;
        }
    }
    outcome
}

/// Remembers a newly identified file's identity (see `Tailer::identities`).
fn note_identity(
    identities: &mut HashMap<String, FilePosition>,
    unsaved: &mut bool,
    file: &TailedFile,
) {
    let Some(fp) = &file.fingerprint else { return };
    if identities.get(fp).is_some_and(|p| p.epoch == file.epoch) {
        return;
    }
    identities.insert(
        fp.clone(),
        FilePosition {
            fingerprint: fp.clone(),
            path: file.path.display().to_string(),
            offset: 0,
            epoch: file.epoch,
            tail_hash: None,
            head_hash: file.head_hash.clone(),
        },
    );
    *unsaved = true;
}

/// Whether the bytes before the read position are still those that were
/// read; if not (copytruncate followed by quick writes, or an in-place
/// rewrite), the file is read again from its start.
fn check_rewritten(file: &mut TailedFile) {
    if file.tail.is_empty() || file.fingerprint.is_none() {
        return;
    }
    let start = file.read_offset - file.tail.len() as u64;
    let mut now = vec![0u8; file.tail.len()];
    let same = file.file.read_exact_at(&mut now, start).is_ok() && now == file.tail;
    if !same {
        // Shrinking is handled (and counted) where reads happen; this makes
        // the next read see a file "shorter" than its position.
        tracing::info!(path = %file.path.display(), "file rewritten in place; reading it again from the start");
        file.read_offset = u64::MAX;
    }
}

/// Keeps the last [`TAIL_BYTES`] bytes read.
fn remember_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.len() >= TAIL_BYTES {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
    } else {
        tail.extend_from_slice(chunk);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// Hash of up to [`TAIL_BYTES`] bytes before `offset` (None at offset 0 or
/// when they cannot be read).
fn tail_hash(file: &File, offset: u64) -> Option<String> {
    if offset == 0 {
        return None;
    }
    let start = offset.saturating_sub(TAIL_BYTES as u64);
    let mut bytes = vec![0u8; (offset - start) as usize];
    file.read_exact_at(&mut bytes, start).ok()?;
    Some(hash_hex(&bytes))
}

fn hash_hex(bytes: &[u8]) -> String {
    hash::hex(hash::fnv64(bytes))
}

/// A decoder of the gzip file at `path`, moved to `offset` of its content,
/// and the up to [`TAIL_BYTES`] bytes before that offset; None when the
/// content is shorter than `offset`.
fn gz_at(path: &Path, offset: u64) -> std::io::Result<Option<(GzReader, Vec<u8>)>> {
    let file = File::open(path)?;
    let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
    let skip = offset.saturating_sub(TAIL_BYTES as u64);
    let skipped = std::io::copy(&mut (&mut gz).take(skip), &mut std::io::sink())?;
    if skipped < skip {
        return Ok(None);
    }
    let mut tail = Vec::with_capacity(TAIL_BYTES);
    (&mut gz).take(offset - skip).read_to_end(&mut tail)?;
    if (tail.len() as u64) < offset - skip {
        return Ok(None);
    }
    Ok(Some((gz, tail)))
}

/// Identifies a compressed rotated file and finds where to read it from
/// (see the module docs). Returns false when it is not to be read.
/// `known`: the checkpoints, and the identities of files the previous run
/// read (offset 0), which are used only when no checkpoint matches.
fn open_gz(
    file: &mut TailedFile,
    meta: &std::fs::Metadata,
    node: &str,
    (resume, identities): (&HashMap<String, FilePosition>, &[FilePosition]),
) -> bool {
    let path = file.path.clone();
    let warn = |e: std::io::Error| {
        tracing::warn!(path = %path.display(), error = %e, "cannot read compressed rotated file");
        false
    };
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let read = File::open(&path).and_then(|f| {
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f))
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
    });
    if let Err(e) = read {
        return warn(e);
    }
    let head = match memchr::memchr(b'\n', &head) {
        Some(end) => &head[..=end],
        None if head.len() == HEAD_BYTES => &head[..],
        // No complete first line: nothing that was ever tailed.
        None => return false,
    };
    let own = fingerprint(node, file.dev_ino, head);
    let head_hash = hash_hex(head);
    // Read before under its own name (a restart while reading it), or the
    // file it was compressed from, if the content at its checkpoint agrees.
    let saved = resume.get(&own).or_else(|| {
        let unknown_identities = identities
            .iter()
            .filter(|p| !resume.contains_key(&p.fingerprint));
        resume
            .values()
            .chain(unknown_identities)
            .filter(|p| p.head_hash.as_deref() == Some(head_hash.as_str()))
            .filter(|p| match gz_at(&path, p.offset) {
                Ok(Some((_, tail))) => {
                    p.tail_hash.is_none() || p.tail_hash == Some(hash_hex(&tail))
                }
                _ => false,
            })
            .max_by_key(|p| (p.epoch, p.offset))
    });
    let (fp, epoch, offset) = match saved {
        Some(p) => (p.fingerprint.clone(), p.epoch, p.offset),
        None => {
            let recent = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < FORGET_AFTER);
            if !recent {
                tracing::debug!(path = %path.display(), "compressed rotated file unknown to the checkpoints and old: read before, not again");
                return false;
            }
            (own, 0, 0)
        }
    };
    let (gz, tail) = match gz_at(&path, offset) {
        Ok(Some(at)) => at,
        Ok(None) => {
            tracing::warn!(path = %path.display(), offset, "compressed rotated file shorter than its checkpoint; not read");
            return false;
        }
        Err(e) => return warn(e),
    };
    tracing::info!(path = %path.display(), fingerprint = %fp, offset, "reading compressed rotated file");
    file.fingerprint = Some(fp);
    file.head_hash = Some(head_hash);
    file.epoch = epoch;
    file.read_offset = offset;
    file.buf_offset = offset;
    file.tail = tail;
    file.gz = Some(gz);
    true
}

/// Rotated siblings of a tailed file: kubelet's `<n>.log.<timestamp>` and
/// the API server's `audit-<timestamp>.log`, and both gzipped (`.gz`).
/// Symlinks (`/var/log/containers`) are followed to where kubelet rotates.
fn rotated_siblings(path: &Path) -> Vec<PathBuf> {
    // A symlink whose file was just rotated away dangles: follow it by hand.
    let real = std::fs::canonicalize(path)
        .or_else(|_| std::fs::read_link(path).map(|to| path.parent().unwrap_or(path).join(to)))
        .unwrap_or_else(|_| path.to_path_buf());
    let (Some(dir), Some(name)) = (real.parent(), real.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let stem = name.strip_suffix(".log").unwrap_or(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let rest = n.strip_prefix(stem)?;
            // `x.gz` beside `x` is gzip still at work: `x` is read instead.
            let gzip_at_work = n
                .strip_suffix(".gz")
                .is_some_and(|original| dir.join(original).exists());
            let rotated = (rest.starts_with('.') || rest.starts_with('-'))
                && n != name
                && !gzip_at_work
                && !n.ends_with(".tmp");
            rotated.then(|| e.path())
        })
        .collect()
}

/// A file's identity: node, device and inode, and its first line, so that
/// an inode reused by a new file is a new identity.
fn fingerprint(node: &str, (dev, ino): (u64, u64), head: &[u8]) -> String {
    let mut h = Fnv64::new();
    h.write(node.as_bytes());
    h.write(&dev.to_le_bytes());
    h.write(&ino.to_le_bytes());
    h.write(head);
    hash::hex(h.finish())
}

fn lossy(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, bool) {
    let text = String::from_utf8_lossy(bytes);
    let invalid = matches!(text, std::borrow::Cow::Owned(_));
    (text, invalid)
}

/// `,"cluster":"…","node":"…"`, as serde writes them for a record.
fn cluster_node(cluster: Option<&str>, node: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(cluster) = cluster {
        out.extend_from_slice(b",\"cluster\":");
        encode::string(&mut out, cluster);
    }
    out.extend_from_slice(b",\"node\":");
    encode::string(&mut out, node);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    /// Fingerprints and hashes are in checkpoints on disk: a change here
    /// makes every file read again from its start.
    #[test]
    fn persisted_identities_are_pinned() {
        let head = b"{\"kind\":\"Event\"}\n";
        assert_eq!(fingerprint("n1", (2049, 131), head), "5f010529e7dd5fa0");
        assert_eq!(hash_hex(b"foobar"), "85944171f73967e8");
    }

    /// The hand-written container record is byte for byte what serde
    /// writes for the same record.
    #[test]
    fn fast_container_records_equal_serde_records() {
        let pod = pod_ref(Path::new("/var/log/pods/prod_web-1_0f0e-uid/app/3.log")).unwrap();
        let meta = PodMeta {
            labels: BTreeMap::from([("app".into(), "web \"x\"".into())]),
            annotations: BTreeMap::new(),
            owner: None,
            node_name: Some("n1".into()),
        };
        let path = "/var/log/pods/prod_web-1_0f0e-uid/app/3.log";
        for (meta, cluster, epoch, piece, flags, message) in [
            (None, None, 0, 0, vec![], &b"hello \"world\"\t\x01"[..]),
            (
                Some(&meta),
                Some("prod"),
                2,
                3,
                vec![Flag::Split, Flag::Unterminated],
                "ünï ✓ \\ end".as_bytes(),
            ),
            (None, Some("c"), 0, 0, vec![], b"bad \xff\xfe utf8"),
        ] {
            let timestamp = chrono::DateTime::from_timestamp(1_714_557_600, 123_456_789).unwrap();
            let (text, invalid) = lossy(message);
            let mut all_flags = flags.clone();
            if invalid {
                all_flags.push(Flag::InvalidUtf8);
            }
            let epoch_part = if epoch > 0 {
                format!("~{epoch}")
            } else {
                String::new()
            };
            let piece_part = if piece > 0 {
                format!(".{piece}")
            } else {
                String::new()
            };
            let record = Record {
                id: format!("abc{epoch_part}:42{piece_part}"),
                source: SourceKind::Container,
                timestamp,
                cluster: cluster.map(str::to_owned),
                node: Some("n1".to_owned()),
                flags: all_flags,
                parse_error: None,
                file: Some(path.to_owned()),
                offset: Some(42),
                event: ContainerBody {
                    message: text.clone(),
                    stream: Some(Stream::Stderr),
                    kubernetes: Some(Kubernetes { pod: &pod, meta }),
                },
            };
            let expected = serde_json::to_string(&record).unwrap();

            let mut file_offset = b"\"file\":".to_vec();
            encode::string(&mut file_offset, path);
            file_offset.extend_from_slice(b",\"offset\":");
            let mut kubernetes = b",\"kubernetes\":".to_vec();
            serde_json::to_writer(&mut kubernetes, &Kubernetes { pod: &pod, meta }).unwrap();
            let parts = encode::FileParts {
                file_offset,
                kubernetes,
            };
            let mut with_invalid = flags.clone();
            if invalid {
                with_invalid.push(Flag::InvalidUtf8);
            }
            let mut ours = Vec::new();
            encode::container(
                &mut ours,
                &cluster_node(cluster, "n1"),
                &parts,
                &encode::ContainerLine {
                    fingerprint: "abc",
                    epoch,
                    offset: 42,
                    piece,
                    timestamp: &timestamp,
                    stream: Stream::Stderr,
                    message: &text,
                    flags: &with_invalid,
                },
            );
            assert_eq!(String::from_utf8(ours).unwrap(), expected);
        }
    }
}
