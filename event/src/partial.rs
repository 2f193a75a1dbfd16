//! Joins partial container log chunks into whole lines, with a size bound.
//!
//! Runtimes split long lines into chunks (`P` … `F` in CRI, `log` values
//! without a final newline in Docker). Chunks of one stream are joined; the
//! two streams of a file interleave freely. A line longer than the bound is
//! cut into [`Flag::Split`] pieces rather than dropped or buffered without
//! end, and a line left open (rotation, timeout) is flushed with
//! [`Flag::Unterminated`].

use crate::cri::Chunk;
use crate::{Flag, Stream};

/// A whole logical line (or a flagged piece of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Offset of the first chunk of the line in its file.
    pub offset: u64,
    /// Index of this piece when the line was split (0 otherwise).
    pub piece: u32,
    /// The time of the line's first chunk.
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub stream: Stream,
    pub message: Vec<u8>,
    pub flags: Vec<Flag>,
}

#[derive(Debug)]
struct Pending {
    offset: u64,
    next_piece: u32,
    timestamp: chrono::DateTime<chrono::Utc>,
    buf: Vec<u8>,
}

/// Per-file merger; see the module docs.
#[derive(Debug)]
pub struct PartialMerger {
    max_line_bytes: usize,
    pending: [Option<Pending>; 2],
}

impl PartialMerger {
    /// `max_line_bytes` bounds a merged line; longer ones are split.
    pub fn new(max_line_bytes: usize) -> PartialMerger {
        PartialMerger {
            max_line_bytes: max_line_bytes.max(4),
            pending: [None, None],
        }
    }

    /// Feeds one chunk read at `offset`; completed lines are appended to `out`.
    pub fn push(&mut self, offset: u64, chunk: Chunk<'_>, out: &mut Vec<LogLine>) {
        let slot = &mut self.pending[chunk.stream as usize];
        if !chunk.partial && slot.is_none() && chunk.message.len() <= self.max_line_bytes {
            out.push(LogLine {
                offset,
                piece: 0,
                timestamp: chunk.timestamp,
                stream: chunk.stream,
                message: chunk.message.into_owned(),
                flags: Vec::new(),
            });
            return;
        }
        let pending = slot.get_or_insert_with(|| Pending {
            offset,
            next_piece: 0,
            timestamp: chunk.timestamp,
            buf: Vec::new(),
        });
        pending.buf.extend_from_slice(&chunk.message);
        while pending.buf.len() > self.max_line_bytes {
            let cut = utf8_boundary(&pending.buf, self.max_line_bytes);
            let rest = pending.buf.split_off(cut);
            let piece = std::mem::replace(&mut pending.buf, rest);
            out.push(LogLine {
                offset: pending.offset,
                piece: pending.next_piece,
                timestamp: pending.timestamp,
                stream: chunk.stream,
                message: piece,
                flags: vec![Flag::Split],
            });
            pending.next_piece += 1;
        }
        if !chunk.partial
            && let Some(done) = slot.take()
        {
            out.push(finish(done, chunk.stream, None));
        }
    }

    /// Emits every open line as [`Flag::Unterminated`] (rotation, timeout, shutdown).
    pub fn flush(&mut self, out: &mut Vec<LogLine>) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(done) = self.pending[stream as usize].take() {
                out.push(finish(done, stream, Some(Flag::Unterminated)));
            }
        }
    }

    /// Whether a line of `stream` is open (its next chunk joins it): when
    /// not, a final chunk within the bound is a whole line by itself, and a
    /// caller may take it as is without going through [`PartialMerger::push`].
    pub fn is_open(&self, stream: Stream) -> bool {
        self.pending[stream as usize].is_some()
    }

    /// The offset of the oldest line still open: a reader that restarts
    /// must resume there, not after the chunks it already consumed.
    pub fn oldest_open_offset(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.offset).min()
    }

    /// The time the oldest open line started, for flush-on-timeout.
    pub fn oldest_open_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.pending.iter().flatten().map(|p| p.timestamp).min()
    }
}

fn finish(done: Pending, stream: Stream, extra: Option<Flag>) -> LogLine {
    let mut flags = Vec::new();
    if done.next_piece > 0 {
        flags.push(Flag::Split);
    }
    flags.extend(extra);
    LogLine {
        offset: done.offset,
        piece: done.next_piece,
        timestamp: done.timestamp,
        stream,
        message: done.buf,
        flags,
    }
}

/// The largest cut point `<= limit` that does not split a UTF-8 sequence
/// (when the bytes are UTF-8 at all).
fn utf8_boundary(buf: &[u8], limit: usize) -> usize {
    let mut cut = limit;
    // At most 3 continuation bytes precede a character's last byte.
    while cut > limit.saturating_sub(3) && cut > 0 && cut < buf.len() && (buf[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 { limit } else { cut }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::cri;

    fn chunk(stream: Stream, partial: bool, msg: &[u8]) -> Chunk<'_> {
        Chunk {
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            stream,
            partial,
            message: Cow::Borrowed(msg),
        }
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut m = PartialMerger::new(1024);
        let mut out = Vec::new();
        m.push(0, chunk(Stream::Stdout, true, b"hel"), &mut out);
        m.push(10, chunk(Stream::Stderr, false, b"err"), &mut out);
        assert_eq!(m.oldest_open_offset(), Some(0));
        m.push(20, chunk(Stream::Stdout, false, b"lo"), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message, b"err");
        assert_eq!(out[1].message, b"hello");
        assert_eq!(out[1].offset, 0);
        assert!(out[1].flags.is_empty());
        assert_eq!(m.oldest_open_offset(), None);
    }

    #[test]
    fn one_mebibyte_line_from_cri_chunks() {
        let part = vec![b'x'; 16 * 1024];
        let mut lines = Vec::new();
        for i in 0..64 {
            let tag = if i == 63 { "F" } else { "P" };
            let mut l = format!("2024-01-01T00:00:00.{i:09}Z stdout {tag} ").into_bytes();
            l.extend_from_slice(&part);
            lines.push(l);
        }
        let mut m = PartialMerger::new(2 * 1024 * 1024);
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            m.push(i as u64 * 100, cri::parse(l).unwrap(), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message.len(), 1024 * 1024);
        assert_eq!(out[0].timestamp.timestamp_subsec_nanos(), 0);
    }

    #[test]
    fn over_the_bound_is_split_not_dropped() {
        let mut m = PartialMerger::new(10);
        let mut out = Vec::new();
        m.push(0, chunk(Stream::Stdout, true, b"0123456789abc"), &mut out);
        m.push(5, chunk(Stream::Stdout, false, b"defghijklmnopq"), &mut out);
        let joined: Vec<u8> = out.iter().flat_map(|l| l.message.clone()).collect();
        assert_eq!(joined, b"0123456789abcdefghijklmnopq");
        assert!(out.iter().all(|l| l.flags.contains(&Flag::Split)));
        let pieces: Vec<u32> = out.iter().map(|l| l.piece).collect();
        assert_eq!(pieces, vec![0, 1, 2]);
        // A single complete chunk over the bound is split too.
        out.clear();
        m.push(9, chunk(Stream::Stderr, false, b"0123456789abc"), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn split_respects_utf8() {
        let mut m = PartialMerger::new(4);
        let mut out = Vec::new();
        m.push(0, chunk(Stream::Stdout, false, "aaéé".as_bytes()), &mut out);
        for l in &out {
            assert!(std::str::from_utf8(&l.message).is_ok(), "{:?}", l.message);
        }
    }

    #[test]
    fn flush_marks_unterminated() {
        let mut m = PartialMerger::new(100);
        let mut out = Vec::new();
        m.push(7, chunk(Stream::Stdout, true, b"open"), &mut out);
        assert!(out.is_empty());
        m.flush(&mut out);
        assert_eq!(out[0].flags, vec![Flag::Unterminated]);
        assert_eq!(out[0].offset, 7);
    }
}
