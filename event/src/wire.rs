//! The batch format between collector and indexer: newline-delimited JSON
//! records (see [`crate::record`]) compressed with zstd, sent as
//! `Content-Type: application/x-ndjson`, `Content-Encoding: zstd`.
//!
//! Decompression is bounded ([`decompress`]): a batch that inflates past the
//! limit is refused, not buffered, and the zstd window is capped so that a
//! crafted frame cannot make the decoder allocate without bound.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Record};

pub const CONTENT_TYPE: &str = "application/x-ndjson";
pub const CONTENT_ENCODING: &str = "zstd";

/// The largest zstd window a batch may use (2^27 = 128 MiB is zstd's own
/// default cap for decoders; Ward's encoders use far less).
const MAX_WINDOW_LOG: u32 = 27;
/// zstd's smallest window (1 KiB).
const MIN_WINDOW_LOG: u32 = 10;

/// A record whose event body is spliced in as raw JSON text.
pub type RawRecord = Record<()>;

/// Builds one batch of NDJSON records.
#[derive(Debug, Default)]
pub struct BatchWriter {
    buf: Vec<u8>,
    records: usize,
}

impl BatchWriter {
    pub fn new() -> BatchWriter {
        BatchWriter::default()
    }

    /// Appends a record whose event is a serializable value.
    pub fn push<E: Serialize>(&mut self, record: &Record<E>) -> Result<(), serde_json::Error> {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, record) {
            self.buf.truncate(start);
            return Err(e);
        }
        self.buf.push(b'\n');
        self.records += 1;
        Ok(())
    }

    /// Appends a record whose event is `raw_event`, JSON text that the
    /// caller has already validated (the audit parser does). The text is
    /// copied as is, so every field and number keeps its original spelling.
    pub fn push_raw(
        &mut self,
        record: &RawRecord,
        raw_event: &str,
    ) -> Result<(), serde_json::Error> {
        // Pretty-printed JSON (webhook bodies) would break the line framing.
        if raw_event.bytes().any(|b| b == b'\n' || b == b'\r') {
            let value: Value = serde_json::from_str(raw_event)?;
            return self.push(&record.clone().with_event(value));
        }
        let start = self.buf.len();
        serde_json::to_writer(&mut self.buf, record)?;
        // `event` is the struct's last field, so the encoding ends in `null}`.
        const TAIL: &[u8] = b"null}";
        debug_assert!(self.buf.ends_with(TAIL));
        if !self.buf.ends_with(TAIL) {
            self.buf.truncate(start);
            return Err(serde::ser::Error::custom(
                "record encoding does not end with its event",
            ));
        }
        self.buf.truncate(self.buf.len() - TAIL.len());
        self.buf.extend_from_slice(raw_event.trim().as_bytes());
        self.buf.extend_from_slice(b"}\n");
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> usize {
        self.records
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The NDJSON text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the buffer's memory for reuse.
    pub fn clear(&mut self) {
        self.records = 0;
        self.buf.clear();
    }

    /// Appends one record that the caller encodes itself with `encode`
    /// (which must write one JSON object with no newline in it); the
    /// newline is added here.
    pub fn push_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.buf);
        self.buf.push(b'\n');
        self.records += 1;
    }

    /// The NDJSON text, leaving the writer empty for the next batch.
    pub fn take(&mut self) -> Vec<u8> {
        self.records = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Compresses a batch with zstd at `level`.
pub fn compress(ndjson: &[u8], level: i32) -> Vec<u8> {
    // Writing into a Vec cannot fail; the only error is an invalid level,
    // which zstd clamps rather than rejects.
    zstd::bulk::compress(ndjson, level).unwrap_or_else(|_| {
        zstd::bulk::compress(ndjson, zstd::DEFAULT_COMPRESSION_LEVEL).unwrap_or_default()
    })
}

/// Decompresses a batch, refusing to produce more than `limit` bytes.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    // A frame that says up front it inflates past the limit is refused
    // before any work.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(body)
        && size > limit as u64
    {
        return Err(Error::TooLarge { limit });
    }
    let mut decoder =
        zstd::stream::read::Decoder::new(body).map_err(|e| Error::Compression(e.to_string()))?;
    // The window a frame may ask for is capped by the limit too: a frame of
    // a few bytes that declares a 128 MiB window and no content size would
    // otherwise make the decoder allocate that window before producing any
    // output (found by the `ingest_body` fuzz target).
    let limit_log = usize::BITS - limit.max(1).saturating_sub(1).leading_zeros();
    decoder
        .window_log_max(limit_log.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG))
        .map_err(|e| Error::Compression(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // Read one byte past the limit to tell "exactly at" from "over".
    let read = decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            // zstd's own word for a window over `window_log_max`: the frame
            // needs more memory than the limit allows, so it is too large.
            if e.to_string().contains("too much memory") {
                Error::TooLarge { limit }
            } else {
                Error::Compression(e.to_string())
            }
        })?;
    if read > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(out)
}

/// A decoded record: the event is a parsed JSON object.
pub type DecodedRecord = Record<Map<String, Value>>;

/// Decodes every line of a batch. Blank lines are skipped; any other line
/// that is not a record fails the batch with its line number, since the
/// sender produced it and must know.
pub fn decode(ndjson: &[u8]) -> Result<Vec<DecodedRecord>, Error> {
    records(ndjson).collect()
}

/// The records of a batch, each decoded when it is reached, with events of
/// type `E`, which may borrow from `ndjson` (the indexer parses events
/// into trees of borrowed strings). Lines as in [`decode`].
pub fn records<'a, E: Deserialize<'a>>(
    ndjson: &'a [u8],
) -> impl Iterator<Item = Result<Record<E>, Error>> + 'a {
    // A batch that is UTF-8 (every batch Ward writes) is checked once and
    // split with `memchr`, and its lines parsed as text: serde_json then
    // does not check each string again.
    let (text, bytes) = match std::str::from_utf8(ndjson) {
        Ok(text) => (Some(text.split('\n')), None),
        Err(_) => (None, Some(ndjson.split(|&b| b == b'\n'))),
    };
    let lines = text
        .into_iter()
        .flatten()
        .map(Line::Text)
        .chain(bytes.into_iter().flatten().map(Line::Bytes));
    lines
        .enumerate()
        .filter(|(_, line)| !line.bytes().iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            let decoded = match line {
                Line::Text(text) => serde_json::from_str(text),
                Line::Bytes(bytes) => serde_json::from_slice(bytes),
            };
            decoded.map_err(|e| Error::Record {
                line: i + 1,
                reason: e.to_string(),
            })
        })
}

/// A line of a batch: text when the whole batch is UTF-8.
enum Line<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Line<'a> {
    fn bytes(&self) -> &'a [u8] {
        match self {
            Line::Text(text) => text.as_bytes(),
            Line::Bytes(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;

    use super::*;
    use crate::{Flag, SourceKind};

    fn envelope() -> RawRecord {
        Record {
            id: "n1/abc/0".into(),
            source: SourceKind::Audit,
            timestamp: DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            cluster: Some("prod".into()),
            node: Some("n1".into()),
            flags: vec![Flag::TimeInferred],
            parse_error: None,
            file: Some("/var/log/audit.log".into()),
            offset: Some(0),
            event: (),
        }
    }

    #[test]
    fn raw_events_are_spliced_verbatim_and_round_trip() {
        let mut w = BatchWriter::new();
        let raw = r#"{"kind":"Event","verb":"get","n":1.50}"#;
        w.push_raw(&envelope(), raw).unwrap();
        w.push_raw(&envelope(), "{\n  \"kind\": \"Event\"\n}")
            .unwrap();
        w.push(&envelope().with_event(json!({"message": "hi"})))
            .unwrap();
        assert_eq!(w.records(), 3);
        let text = w.take();
        assert!(String::from_utf8_lossy(&text).contains(raw), "verbatim");
        let decoded = decode(&decompress(&compress(&text, 3), 1 << 20).unwrap()).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].event["verb"], "get");
        assert_eq!(decoded[1].event["kind"], "Event");
        assert_eq!(decoded[2].event["message"], "hi");
        assert_eq!(decoded[0].flags, vec![Flag::TimeInferred]);
        assert_eq!(decoded[0].timestamp.timestamp_subsec_nanos(), 5);
    }

    #[test]
    fn a_batch_may_be_several_frames() {
        // The collector compresses a batch a frame at a time.
        let mut body = compress(b"{\"a\":1}\n", 3);
        body.extend_from_slice(&compress(b"{\"b\":2}\n", 3));
        assert_eq!(
            decompress(&body, 1 << 20).unwrap(),
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        // The limit holds over all frames together.
        assert_eq!(decompress(&body, 10), Err(Error::TooLarge { limit: 10 }));
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![b'a'; 1 << 20];
        let z = compress(&big, 3);
        assert!(z.len() < 1024, "a bomb: small on the wire");
        assert_eq!(decompress(&z, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(
            decompress(&z, (1 << 20) - 1),
            Err(Error::TooLarge {
                limit: (1 << 20) - 1
            })
        );
        assert!(matches!(
            decompress(b"not zstd", 100),
            Err(Error::Compression(_))
        ));
        assert!(matches!(
            decompress(&z[..z.len() / 2], 1 << 20),
            Err(Error::Compression(_))
        ));
    }

    #[test]
    fn regression_large_window_frame_is_refused_under_a_small_limit() {
        // A frame whose window (16 MiB) is far above a 64 KiB limit, with
        // no content size in its header.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(24).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &vec![7u8; 1 << 20]).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(
            decompress(&frame, 64 * 1024),
            Err(Error::TooLarge { limit: 64 * 1024 })
        );
        // The same bytes under a limit that fits their window are fine.
        assert_eq!(decompress(&frame, 32 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_bad_line_names_its_number() {
        let err = decode(b"\n{\"id\":1}\n").unwrap_err();
        assert!(matches!(err, Error::Record { line: 2, .. }), "{err:?}");
        // Also in a batch that is not UTF-8 (parsed line by line as bytes).
        let mut w = BatchWriter::new();
        w.push(&envelope().with_event(json!({"m": 1}))).unwrap();
        let first = w.bytes();
        w.push(&envelope().with_event(json!({"m": "\u{1}"})))
            .unwrap();
        let mut batch = w.take();
        // `\u0001"}}\n` ends the batch: put a byte that is not UTF-8 there.
        let at = batch.len() - 10;
        assert_eq!(&batch[at..at + 6], b"\\u0001", "the escaped byte's place");
        batch.splice(at..at + 6, [0xff]);
        match decode(&batch).unwrap_err() {
            Error::Record { line: 2, reason } => assert!(reason.contains("unicode"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let decoded = decode(&batch[..first]).unwrap();
        assert_eq!(decoded[0].event["m"], 1);
    }
}
