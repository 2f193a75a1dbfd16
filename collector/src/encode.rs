//! Hand-written JSON for the one record shape that is on the per-line hot
//! path: a whole container line. The bytes are the same as serde_json
//! writes for `Record<ContainerBody>` (a unit test compares them), without
//! building the id, the file name or the `kubernetes` object per line and
//! with a string escaper that skips clean 8-byte words at once.

use chrono::{DateTime, Datelike, Timelike, Utc};
use ward_event::{Flag, RecordId, Stream};

/// Appends `value` as a JSON string (with its quotes), escaped the way
/// serde_json escapes: `"`, `\`, and control characters; the short forms
/// `\b \f \n \r \t`, `\u00XX` for the others.
pub fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    escaped(out, value.as_bytes());
    out.push(b'"');
}

/// Whether any of the 8 bytes of `w` is below 0x20, `"` or `\`.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

#[inline]
fn escape_of(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => b"\\u00",
        _ => return None,
    })
}

/// `bytes` is UTF-8 (the caller checked); only ASCII bytes are escaped, so
/// multi-byte characters pass through unchanged.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    let mut i = 0;
    let escape_at = |out: &mut Vec<u8>, start: &mut usize, j: usize| {
        let b = bytes[j];
        if let Some(esc) = escape_of(b) {
            out.extend_from_slice(&bytes[*start..j]);
            out.extend_from_slice(esc);
            if esc == b"\\u00" {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            *start = j + 1;
        }
    };
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if word_needs_escape(u64::from_le_bytes(word)) {
            for j in i..i + 8 {
                escape_at(out, &mut start, j);
            }
        }
        i += 8;
    }
    for j in i..bytes.len() {
        escape_at(out, &mut start, j);
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `n` in decimal (as record ids write their numbers).
pub use ward_event::id::decimal as uint;

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Appends the time as a JSON string, as chrono's `Serialize` writes it
/// (RFC 3339, `Z`, fraction of 0, 3, 6 or 9 digits); years outside
/// 0..=9999 and leap seconds go through chrono itself.
pub fn timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, t);
        return;
    }
    out.push(b'"');
    let year = year as u32;
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, t.month());
    out.push(b'-');
    two(out, t.day());
    out.push(b'T');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    let (value, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if digits > 0 {
        out.push(b'.');
        let mut buf = [b'0'; 9];
        let mut v = value;
        for slot in buf[..digits].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..digits]);
    }
    out.extend_from_slice(b"Z\"");
}

fn flag_name(flag: Flag) -> &'static str {
    match flag {
        Flag::TimeInferred => "time_inferred",
        Flag::ParseError => "parse_error",
        Flag::Split => "split",
        Flag::Unterminated => "unterminated",
        Flag::InvalidUtf8 => "invalid_utf8",
    }
}

/// What stays the same for every line of one file, encoded once.
#[derive(Debug, Default)]
pub struct FileParts {
    /// `"file":"<path>","offset":`
    pub file_offset: Vec<u8>,
    /// `,"kubernetes":{…}` or nothing.
    pub kubernetes: Vec<u8>,
}

/// One whole container line.
pub struct ContainerLine<'a> {
    pub id: RecordId<'a>,
    /// The line's byte offset in its file (also in `id`).
    pub offset: u64,
    pub timestamp: &'a DateTime<Utc>,
    pub stream: Stream,
    /// UTF-8 (invalid bytes already replaced, and flagged).
    pub message: &'a str,
    pub flags: &'a [Flag],
}

/// Appends the record (no newline). `cluster_node` is
/// `,"cluster":"…","node":"…"` (each only if set).
pub fn container(out: &mut Vec<u8>, cluster_node: &[u8], file: &FileParts, line: &ContainerLine) {
    out.extend_from_slice(b"{\"id\":\"");
    line.id.write_to(out);
    out.extend_from_slice(b"\",\"source\":\"container\",\"timestamp\":");
    timestamp(out, line.timestamp);
    out.extend_from_slice(cluster_node);
    if !line.flags.is_empty() {
        out.extend_from_slice(b",\"flags\":[");
        for (i, flag) in line.flags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(flag_name(*flag).as_bytes());
            out.push(b'"');
        }
        out.push(b']');
    }
    out.push(b',');
    out.extend_from_slice(&file.file_offset);
    uint(out, line.offset);
    out.extend_from_slice(b",\"event\":{\"message\":");
    string(out, line.message);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(line.stream.as_str().as_bytes());
    out.push(b'"');
    out.extend_from_slice(&file.kubernetes);
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain ascii text longer than eight bytes".into(),
            "quote \" backslash \\ tab\t nl\n cr\r bell\u{7} bs\u{8} ff\u{c} nul\0 del\u{7f}"
                .into(),
            "ünïcödé → ✓ 𝄞 and \"quotes\" at the end\"".into(),
            "\u{1f}\u{1}abcdefg\"".into(),
        ];
        cases.extend((0u8..128).map(|b| format!("xxxxxxx{}yyyyyyyy", b as char)));
        for s in cases {
            let mut ours = Vec::new();
            string(&mut ours, &s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn timestamps_and_numbers_match_chrono_and_serde() {
        let times = [
            (1_700_000_000, 0),
            (1_700_000_000, 5),
            (1_700_000_000, 120_000_000),
            (1_700_000_000, 123_456_000),
            (1_700_000_000, 999_999_999),
            (0, 1),
            (-62_135_596_800, 0),           // year 1
            (253_402_300_799, 999_000_000), // 9999-12-31
            (253_402_300_800, 0),           // year 10000: chrono's own path
        ];
        for (secs, nanos) in times {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut ours = Vec::new();
            timestamp(&mut ours, &t);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&t).unwrap()
            );
        }
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut ours = Vec::new();
            uint(&mut ours, n);
            assert_eq!(ours, n.to_string().into_bytes());
        }
    }
}
