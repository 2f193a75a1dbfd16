//! Lines into records: complete lines are cut from what was read (long
//! ones split into flagged pieces), parsed as audit events or CRI / Docker
//! container lines (partial ones merged), and encoded with their envelope
//! (id, time, source, cluster, node, file, offset) into the batch.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use ward_event::Stream;
use ward_event::audit::{self, Parsed};
use ward_event::partial::LogLine;
use ward_event::path::PodRef;
use ward_event::wire::RawRecord;
use ward_event::{Flag, Record, RecordId, SourceKind, cri, docker};

use super::batch::BatchEncoder;
use super::{Kind, TailedFile};
use crate::CollectorConfig;
use crate::encode;
use crate::kube::{PodMeta, SharedPods};

/// A file's buffer for its unfinished line is given back when it holds
/// less than a quarter of a capacity above this.
const KEEP_LINE_BUF: usize = 64 * 1024;
/// The fingerprint in the ids of a file's records before it is identified.
const UNIDENTIFIED: &str = "unidentified";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContainerFormat {
    Cri,
    Docker,
}

/// What every record is built with: where it comes from, the bound on
/// its line, and the API's pod metadata.
pub(super) struct Context {
    node: String,
    cluster: Option<String>,
    max_line_bytes: usize,
    /// `,"cluster":…,"node":…` of every record.
    cluster_node: Vec<u8>,
    /// Lines completed by a file's partial-line merger (reused).
    merged: Vec<LogLine>,
    /// Pod metadata from the Kubernetes API, when `--kube-metadata` is on.
    pods: Option<SharedPods>,
}

impl Context {
    pub(super) fn new(config: &CollectorConfig, pods: Option<SharedPods>) -> Context {
        Context {
            node: config.node.clone(),
            cluster: config.cluster.clone(),
            max_line_bytes: config.max_line_bytes,
            cluster_node: cluster_node(config.cluster.as_deref(), &config.node),
            merged: Vec::new(),
            pods,
        }
    }
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

impl BatchEncoder {
    /// Takes `new` bytes read from the file (which follow its unfinished
    /// line, if any) and turns every complete line into records; what is
    /// left of a line stays in the file's small buffer.
    pub(super) fn consume(&mut self, file: &mut TailedFile, new: &[u8]) {
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
        let max_line = self.records.max_line_bytes;
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
                    && chunk.message.len() <= self.records.max_line_bytes =>
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
                let mut merged = std::mem::take(&mut self.records.merged);
                file.merger.push(offset, chunk, &mut merged);
                for line in merged.drain(..) {
                    self.emit_container(file, line);
                }
                self.records.merged = merged;
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
            id: record_id(file, offset, piece, None),
            offset,
            timestamp,
            stream,
            message: &message,
            flags,
        };
        let cluster_node = &self.records.cluster_node;
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
        Record {
            id: record_id(file, offset, piece, item).to_string(),
            source,
            timestamp,
            cluster: self.records.cluster.clone(),
            node: Some(self.records.node.clone()),
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
        self.records.pods.as_ref()?.read().ok()?.lookup(pod)
    }

    pub(super) fn flush_partials(&mut self, file: &mut TailedFile) {
        if file.kind == Kind::Container {
            self.refresh_parts(file);
        }
        let mut merged = std::mem::take(&mut self.records.merged);
        file.merger.flush(&mut merged);
        for line in merged.drain(..) {
            self.emit_container(file, line);
        }
        self.records.merged = merged;
        self.note_position(file);
    }
}

/// The id of a record from `file`'s line at `offset`.
fn record_id(file: &TailedFile, offset: u64, piece: u32, item: Option<usize>) -> RecordId<'_> {
    RecordId::File {
        fingerprint: file.fingerprint.as_deref().unwrap_or(UNIDENTIFIED),
        epoch: file.epoch,
        offset,
        piece,
        item,
    }
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
    use std::path::Path;

    use ward_event::path::pod_ref;

    use super::*;

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
                    id: RecordId::File {
                        fingerprint: "abc",
                        epoch,
                        offset: 42,
                        piece,
                        item: None,
                    },
                    offset: 42,
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
