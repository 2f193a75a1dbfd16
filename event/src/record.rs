//! The record: one container log line or one audit event, with what Ward
//! knows about where it came from.
//!
//! On the wire a record is one JSON object per line:
//! `{"id":…,"source":…,"timestamp":…,"cluster":…,"node":…,"flags":[…],…,"event":{…}}`
//! where `event` is the original audit event (every field kept as sent) or
//! the container line's body (`message`, `stream`, `kubernetes`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a record was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Kubernetes API server audit event.
    Audit,
    /// A line a container wrote to stdout or stderr.
    Container,
    /// Ward's own activity (for example the query audit trail).
    Ward,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Audit => "audit",
            SourceKind::Container => "container",
            SourceKind::Ward => "ward",
        }
    }
}

/// The output stream of a container line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub(crate) fn parse(value: &[u8]) -> Option<Stream> {
        match value {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Something an analyst must know about how a record was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The line carried no timestamp of its own: `timestamp` is when it was read.
    TimeInferred,
    /// The line did not parse: the record keeps it raw in `event.message`,
    /// with the reason in `parse_error`.
    ParseError,
    /// The line was longer than the size bound: this record is one piece of it.
    Split,
    /// A partial line was flushed without its final chunk (rotation, timeout).
    Unterminated,
    /// The line was not valid UTF-8: invalid bytes were replaced with U+FFFD.
    InvalidUtf8,
}

/// One record as it travels from collector to indexer.
///
/// `E` is the event body: `&RawValue` or a serializable struct when the
/// collector encodes; when the indexer decodes, a tree borrowing from the
/// batch ([`crate::tree`]) or a `serde_json::Map`, so that the event is
/// parsed exactly once on each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<E> {
    /// Stable identity of the record: the same line read twice (after a
    /// restart, a retry) gets the same id, which is what lets the indexer
    /// drop replays.
    pub id: String,
    pub source: SourceKind,
    /// The record's own time (see [`crate::audit::event_time`]), or the read
    /// time with [`Flag::TimeInferred`].
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The file the record was read from, for records read from files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Byte offset of the record's first byte in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Always serialized last: [`crate::wire::BatchWriter`] relies on it to
    /// splice raw event JSON in without re-encoding it.
    pub event: E,
}

impl<E> Record<E> {
    pub fn has_flag(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// The same envelope around another body.
    pub fn with_event<F>(self, event: F) -> Record<F> {
        Record {
            id: self.id,
            source: self.source,
            timestamp: self.timestamp,
            cluster: self.cluster,
            node: self.node,
            flags: self.flags,
            parse_error: self.parse_error,
            file: self.file,
            offset: self.offset,
            event,
        }
    }
}

/// The body of a container log record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerEvent<'a> {
    pub message: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<&'a crate::path::PodRef>,
}

/// The body of a record whose line did not parse: the line, as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawEvent<'a> {
    pub message: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<&'a crate::path::PodRef>,
}
