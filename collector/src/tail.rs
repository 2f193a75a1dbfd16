//! Discovering and tailing log files, and turning their lines into records.
//!
//! One blocking thread owns every open file: it discovers files (glob
//! expansion on notify events and on a periodic rescan), reads what was
//! appended, parses it, and seals batches by size and age. A sealed batch
//! carries, per file, the offset up to which every byte is in this or an
//! earlier batch; the shipper turns those into checkpoints once the
//! indexer acknowledged the batch.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use notify::Watcher;
use tokio::sync::mpsc;
use ward_event::audit::{self, Parsed};
use ward_event::partial::{LogLine, PartialMerger};
use ward_event::path::{PodRef, pod_ref};
use ward_event::record::{ContainerEvent, RawEvent};
use ward_event::wire::{BatchWriter, RawRecord};
use ward_event::{Flag, Record, SourceKind, cri, docker};

use crate::checkpoint::{Checkpoints, FilePosition};
use crate::{CollectorConfig, Error};

/// Bytes read from one file per turn, so that one busy file cannot starve the others.
const READ_CHUNK: usize = 1024 * 1024;
/// How long the loop sleeps when no file had new data and no event came.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Bytes of a file's start that go into its fingerprint.
const HEAD_BYTES: usize = 256;

/// A sealed batch of records and the file positions it completes.
#[derive(Debug)]
pub struct Batch {
    pub ndjson: Vec<u8>,
    pub records: usize,
    pub positions: Vec<FilePosition>,
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
    kind: Kind,
    file: File,
    dev_ino: (u64, u64),
    fingerprint: Option<String>,
    /// Unconsumed bytes; `buf[0]` is at file offset `buf_offset`.
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
}

pub struct Tailer {
    config: CollectorConfig,
    resume: HashMap<String, u64>,
    files: Vec<TailedFile>,
    out: Output,
}

/// The batch being built, and the positions it completes.
struct Output {
    node: String,
    cluster: Option<String>,
    max_line_bytes: usize,
    writer: BatchWriter,
    batch_started: Option<Instant>,
    positions: HashMap<String, FilePosition>,
    merged: Vec<LogLine>,
}

impl Tailer {
    pub fn new(config: CollectorConfig, checkpoints: &Checkpoints) -> Result<Tailer, Error> {
        if config.container_globs.is_empty() && config.audit_logs.is_empty() {
            return Err(Error::Config(
                "nothing to tail: give --containers or --audit-log".into(),
            ));
        }
        for pattern in config.container_globs.iter().chain(&config.audit_logs) {
            glob::Pattern::new(pattern)
                .map_err(|e| Error::Config(format!("bad glob {pattern:?}: {e}")))?;
        }
        Ok(Tailer {
            resume: checkpoints
                .all()
                .map(|p| (p.fingerprint.clone(), p.offset))
                .collect(),
            out: Output {
                node: config.node.clone(),
                cluster: config.cluster.clone(),
                max_line_bytes: config.max_line_bytes,
                writer: BatchWriter::new(),
                batch_started: None,
                positions: HashMap::new(),
                merged: Vec::new(),
            },
            config,
            files: Vec::new(),
        })
    }

    /// Tails until `stop` is set, then seals and sends the last batch.
    pub fn run(mut self, tx: mpsc::Sender<Batch>, stop: &AtomicBool) -> Result<(), Error> {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let mut watcher = notify::recommended_watcher(move |_event| {
            let _ = wake_tx.try_send(());
        })
        .map_err(|e| Error::Config(format!("file watcher: {e}")))?;
        for dir in self.watch_roots() {
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::Recursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on rescans");
            }
        }
        let mut last_scan: Option<Instant> = None;
        let mut woken = true;
        while !stop.load(Ordering::SeqCst) {
            if woken || last_scan.is_none_or(|t| t.elapsed() >= self.config.rescan_interval) {
                self.discover();
                last_scan = Some(Instant::now());
            }
            let read_any = self.read_all();
            self.flush_stale_partials();
            if self.batch_due() && !self.seal(&tx) {
                return Ok(());
            }
            woken = false;
            if !read_any {
                woken = wake_rx.recv_timeout(IDLE_WAIT).is_ok();
            }
        }
        self.seal(&tx);
        Ok(())
    }

    /// The directories to watch: the literal prefix of each glob.
    fn watch_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for pattern in self
            .config
            .container_globs
            .iter()
            .chain(&self.config.audit_logs)
        {
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

    fn discover(&mut self) {
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
        }
        for (path, kind) in seen {
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
                if existing.orphaned {
                    existing.path = path;
                    existing.orphaned = false;
                }
                continue;
            }
            match File::open(&path) {
                Ok(file) => {
                    tracing::debug!(path = %path.display(), "tailing file");
                    let pod = (kind == Kind::Container).then(|| pod_ref(&path)).flatten();
                    self.files.push(TailedFile {
                        path,
                        kind,
                        file,
                        dev_ino,
                        fingerprint: None,
                        buf: Vec::new(),
                        buf_offset: 0,
                        read_offset: 0,
                        oversized_pieces: 0,
                        merger: PartialMerger::new(self.config.max_line_bytes),
                        format: None,
                        pod,
                        last_data: Instant::now(),
                        orphaned: false,
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open log file")
                }
            }
        }
    }

    /// Reads what every file has appended. Returns whether anything was read.
    fn read_all(&mut self) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < self.files.len() {
            let (read, at_eof) = self.read_file(i);
            any |= read;
            let file = &self.files[i];
            if file.orphaned && at_eof && file.merger.oldest_open_offset().is_none() {
                tracing::debug!(path = %file.path.display(), "finished rotated or deleted file");
                let mut done = self.files.swap_remove(i);
                self.out.flush_partials(&mut done);
                continue;
            }
            i += 1;
        }
        any
    }

    fn read_file(&mut self, index: usize) -> (bool, bool) {
        let file = &mut self.files[index];
        if file.fingerprint.is_none() && !identify(file, &self.config.node, &self.resume) {
            return (false, true);
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = match file
            .file
            .seek(SeekFrom::Start(file.read_offset))
            .and_then(|_| file.file.read(&mut chunk))
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(path = %file.path.display(), error = %e, "read failed");
                return (false, true);
            }
        };
        if n == 0 {
            return (false, true);
        }
        file.read_offset += n as u64;
        file.buf.extend_from_slice(&chunk[..n]);
        file.last_data = Instant::now();
        self.out.consume_lines(file);
        (true, n < READ_CHUNK)
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
        self.out.writer.bytes() >= self.config.batch_max_bytes
            || self
                .out
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.config.batch_max_age)
    }

    /// Sends the current batch. Returns false when the shipper is gone.
    fn seal(&mut self, tx: &mpsc::Sender<Batch>) -> bool {
        let out = &mut self.out;
        if out.writer.is_empty() {
            return true;
        }
        let batch = Batch {
            records: out.writer.records(),
            ndjson: out.writer.take(),
            positions: out.positions.drain().map(|(_, p)| p).collect(),
        };
        out.batch_started = None;
        tx.blocking_send(batch).is_ok()
    }
}

impl Output {
    /// Turns every complete line in the file's buffer into records.
    fn consume_lines(&mut self, file: &mut TailedFile) {
        let max_line = self.max_line_bytes;
        let mut start = 0usize;
        while let Some(pos) = memchr::memchr(b'\n', &file.buf[start..]) {
            let end = start + pos;
            let mut line = &file.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let offset = file.buf_offset + start as u64;
            let piece = std::mem::take(&mut file.oversized_pieces);
            if piece > 0 {
                // The tail of an oversized line: a flagged piece like the others.
                let line = line.to_vec();
                self.emit_raw(file, offset, piece, &line, None, vec![Flag::Split]);
            } else if !line.is_empty() {
                let line = line.to_vec();
                self.handle_line(file, offset, &line);
            }
            start = end + 1;
        }
        // A line with no end in sight: emit it in bounded pieces.
        while file.buf.len() - start > max_line {
            let offset = file.buf_offset + start as u64;
            let piece_bytes = file.buf[start..start + max_line].to_vec();
            let piece = file.oversized_pieces;
            file.oversized_pieces += 1;
            let reason = format!("line longer than {max_line} bytes; split into pieces");
            self.emit_raw(
                file,
                offset,
                piece,
                &piece_bytes,
                Some(reason),
                vec![Flag::Split],
            );
            start += max_line;
        }
        file.buf.drain(..start);
        file.buf_offset += start as u64;
        self.note_position(file);
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
            },
        );
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
        for (i, item) in parsed.into_iter().enumerate() {
            let id_suffix = if list { format!("#{i}") } else { String::new() };
            match item {
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
                        &id_suffix,
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
                    self.push_raw_text(
                        file,
                        offset,
                        0,
                        &id_suffix,
                        &raw,
                        Some(error.to_string()),
                        flags,
                    );
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
        let (message, invalid_utf8) = lossy(&line.message);
        let mut flags = line.flags;
        if invalid_utf8 {
            flags.push(Flag::InvalidUtf8);
        }
        let envelope = self.envelope(
            file,
            line.offset,
            line.piece,
            "",
            SourceKind::Container,
            line.timestamp,
            flags,
            None,
        );
        let record = envelope.with_event(ContainerEvent {
            message,
            stream: Some(line.stream),
            kubernetes: file.pod.as_ref(),
        });
        if let Err(e) = self.writer.push(&record) {
            tracing::error!(error = %e, "cannot encode container line");
        }
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
        self.push_raw_text(file, offset, piece, "", &text, error, flags);
    }

    /// A line kept as is because it did not parse (or is a piece of one).
    #[allow(clippy::too_many_arguments)]
    fn push_raw_text(
        &mut self,
        file: &TailedFile,
        offset: u64,
        piece: u32,
        suffix: &str,
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
        let envelope = self.envelope(
            file,
            offset,
            piece,
            suffix,
            source,
            Utc::now(),
            flags,
            error,
        );
        let record = envelope.with_event(RawEvent {
            message: std::borrow::Cow::Borrowed(text),
            kubernetes: file.pod.as_ref(),
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
        suffix: &str,
        source: SourceKind,
        timestamp: chrono::DateTime<Utc>,
        flags: Vec<Flag>,
        parse_error: Option<String>,
    ) -> RawRecord {
        let fp = file.fingerprint.as_deref().unwrap_or("unidentified");
        let id = if piece > 0 {
            format!("{fp}:{offset}.{piece}{suffix}")
        } else {
            format!("{fp}:{offset}{suffix}")
        };
        Record {
            id,
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

    fn flush_partials(&mut self, file: &mut TailedFile) {
        let mut merged = std::mem::take(&mut self.merged);
        file.merger.flush(&mut merged);
        for line in merged.drain(..) {
            self.emit_container(file, line);
        }
        self.merged = merged;
        self.note_position(file);
    }
}

/// Reads the head of a new file to fingerprint it, and finds where to resume.
/// Returns false while the file is too short to identify.
fn identify(file: &mut TailedFile, node: &str, resume: &HashMap<String, u64>) -> bool {
    let mut head = vec![0u8; HEAD_BYTES];
    let n = match file
        .file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.file.read(&mut head))
    {
        Ok(n) => n,
        Err(_) => return false,
    };
    let head = &head[..n];
    // Until the first line is complete the head may still change.
    let head = match memchr::memchr(b'\n', head) {
        Some(end) => &head[..=end],
        None if n == HEAD_BYTES => head,
        None => return false,
    };
    let fp = fingerprint(node, file.dev_ino, head);
    let offset = resume.get(&fp).copied().unwrap_or(0);
    tracing::debug!(path = %file.path.display(), fingerprint = %fp, offset, "identified file");
    file.fingerprint = Some(fp);
    file.read_offset = offset;
    file.buf_offset = offset;
    true
}

/// A file's identity: node, device and inode, and its first line, so that
/// an inode reused by a new file is a new identity.
fn fingerprint(node: &str, (dev, ino): (u64, u64), head: &[u8]) -> String {
    let mut h = Fnv64::new();
    h.write(node.as_bytes());
    h.write(&dev.to_le_bytes());
    h.write(&ino.to_le_bytes());
    h.write(head);
    format!("{:016x}", h.0)
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`,
/// which matters for identities stored in checkpoints.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn lossy(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, bool) {
    let text = String::from_utf8_lossy(bytes);
    let invalid = matches!(text, std::borrow::Cow::Owned(_));
    (text, invalid)
}
