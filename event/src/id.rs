//! Record ids: every shape a record's `id` (`ward.id`) takes, written here
//! only.
//!
//! Ids are stored and compared across restarts (replays are recognised by
//! them, alerts are keyed by them when an event has no `auditID`), so a
//! shape must never change; ARCHITECTURE.md describes them.

use std::borrow::Cow;
use std::fmt;

/// A record's id, borrowed from what it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordId<'a> {
    /// A line read from a file:
    /// `<fingerprint>[~<epoch>]:<offset>[.<piece>][#<item>]`. `epoch`
    /// (written when above 0) counts the times the file was read again from
    /// its start (truncated or rewritten), `offset` is the line's byte
    /// offset in the file, `piece` (when above 0) numbers the pieces of a
    /// line split for its size, and `item` the events of one line holding an
    /// audit `EventList`.
    File {
        fingerprint: &'a str,
        epoch: u32,
        offset: u64,
        piece: u32,
        item: Option<usize>,
    },
    /// An audit event that came by webhook: `audit:<auditID>:<stage>`, so
    /// that a body the API server sends again is recognised as a replay.
    AuditEvent { audit_id: &'a str, stage: &'a str },
    /// An item of a webhook body that is not an event:
    /// `audit:raw:<FNV-1a of its text, 16 hex digits>`.
    AuditRaw { text: &'a str },
    /// A record of the query API's own audit trail (`source: ward`):
    /// `ward-api/<process id>/<Unix time in ns>/<sequence number>`.
    WardApi { pid: u32, nanos: i64, seq: u64 },
}

impl RecordId<'_> {
    /// Appends the id's text (not JSON-escaped: ids of files are ASCII, and
    /// callers of the other shapes escape).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match *self {
            RecordId::File {
                fingerprint,
                epoch,
                offset,
                piece,
                item,
            } => {
                // On the collector's per-line path: no formatting machinery.
                out.extend_from_slice(fingerprint.as_bytes());
                if epoch > 0 {
                    out.push(b'~');
                    decimal(out, u64::from(epoch));
                }
                out.push(b':');
                decimal(out, offset);
                if piece > 0 {
                    out.push(b'.');
                    decimal(out, u64::from(piece));
                }
                if let Some(item) = item {
                    out.push(b'#');
                    decimal(out, item as u64);
                }
            }
            RecordId::AuditEvent { audit_id, stage } => {
                out.extend_from_slice(b"audit:");
                out.extend_from_slice(audit_id.as_bytes());
                out.push(b':');
                out.extend_from_slice(stage.as_bytes());
            }
            RecordId::AuditRaw { text } => {
                out.extend_from_slice(b"audit:raw:");
                let hash = crate::hash::hex(crate::hash::fnv64(text.as_bytes()));
                out.extend_from_slice(hash.as_bytes());
            }
            RecordId::WardApi { pid, nanos, seq } => {
                out.extend_from_slice(b"ward-api/");
                decimal(out, u64::from(pid));
                out.push(b'/');
                if nanos < 0 {
                    out.push(b'-');
                }
                decimal(out, nanos.unsigned_abs());
                out.push(b'/');
                decimal(out, seq);
            }
        }
    }
}

impl fmt::Display for RecordId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(48);
        self.write_to(&mut bytes);
        // Always UTF-8: the parts are `str`s and ASCII.
        match String::from_utf8_lossy(&bytes) {
            Cow::Borrowed(text) => f.write_str(text),
            Cow::Owned(text) => f.write_str(&text),
        }
    }
}

/// Appends `n` in decimal.
#[inline]
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes of stored ids: if this test fails, replays of records
    /// stored before the change are no longer recognised.
    #[test]
    fn shapes_are_pinned() {
        let file = |epoch, offset, piece, item| RecordId::File {
            fingerprint: "5f010529e7dd5fa0",
            epoch,
            offset,
            piece,
            item,
        };
        for (id, text) in [
            (file(0, 0, 0, None), "5f010529e7dd5fa0:0"),
            (file(0, 42, 0, None), "5f010529e7dd5fa0:42"),
            (file(2, 42, 0, None), "5f010529e7dd5fa0~2:42"),
            (file(0, 42, 3, None), "5f010529e7dd5fa0:42.3"),
            (file(1, 42, 0, Some(0)), "5f010529e7dd5fa0~1:42#0"),
            (
                file(1, u64::MAX, 7, Some(12)),
                "5f010529e7dd5fa0~1:18446744073709551615.7#12",
            ),
            (
                RecordId::AuditEvent {
                    audit_id: "a1",
                    stage: "ResponseComplete",
                },
                "audit:a1:ResponseComplete",
            ),
            (
                RecordId::AuditEvent {
                    audit_id: "a1",
                    stage: "",
                },
                "audit:a1:",
            ),
            (
                RecordId::AuditRaw { text: "foobar" },
                "audit:raw:85944171f73967e8",
            ),
            (
                RecordId::WardApi {
                    pid: 7,
                    nanos: 1_714_557_600_123_456_789,
                    seq: 3,
                },
                "ward-api/7/1714557600123456789/3",
            ),
            (
                RecordId::WardApi {
                    pid: 7,
                    nanos: -5,
                    seq: 0,
                },
                "ward-api/7/-5/0",
            ),
        ] {
            assert_eq!(id.to_string(), text);
            let mut bytes = Vec::new();
            id.write_to(&mut bytes);
            assert_eq!(bytes, text.as_bytes());
        }
    }
}
