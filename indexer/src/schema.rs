//! The index schema: how Ward's records map onto tantivy fields.
//!
//! Every record is stored whole (`_source`, zstd-compressed by tantivy's doc
//! store) and indexed in a few generic fields rather than one tantivy field
//! per event field, because audit events carry arbitrary, deeply nested
//! objects (`requestObject`, annotations with dotted keys):
//!
//! - `_flat`: one term per leaf value, `<dotted.path>\0<lowercased value>`,
//!   so that *every* field is searchable by its dotted name, exactly or with
//!   wildcards and regular expressions (which then only scan that path's
//!   slice of the term dictionary);
//! - `_exists`: one term per top-level object that has a value (and
//!   `message`, which is not in `_flat`). Any other `_exists_:field` is its
//!   slice of `_flat` terms (see [`crate::compile`]): a term-range scan at
//!   query time instead of ~50 terms per audit event at ingest.
//!   Partitions written before that change have one `_exists` term per
//!   path, and queries still read them;
//! - `message`: container log text, tokenized with positions for phrases;
//! - `_all`: the short string values of audit events (user, IPs, names,
//!   URIs; not request or response bodies), tokenized with positions for
//!   phrases, for field-less search. Times and the `auditID` are left out:
//!   their tokens (`23t10`, `123456z`, UUID pieces) are new terms in nearly
//!   every event, and nobody searches them without a field (a time range
//!   does that; a field-less `auditID` is matched whole through `_flat`, see
//!   [`crate::compile`]). Leaving them out took `_all` from 0.096 to 0.070
//!   bytes per byte of audit JSON (BENCHMARKS.md);
//! - `timestamp` and `responseStatus.code`: fast numeric columns for ranges,
//!   sorting and histograms;
//! - keyword columns (`verb`, `user.username`, `sourceIPs`, …): fast string
//!   columns, with original case, for sorting and terms aggregations;
//! - `_tie`: a fast u64 hash of the record's replay key, the tie-breaker of
//!   the (timestamp, `_tie`) order that cursors page on, and with
//!   `timestamp` what replays are recognised by (see [`crate::store`]);
//! - `_ip`: one term per string leaf that is an IP address,
//!   `<dotted.path>\0<32 hex digits>`: the address as 16 bytes (IPv4 mapped
//!   into `::ffff:0:0/96`), big-endian, in fixed-width hex, so that the
//!   lexicographic order of the terms is the numeric order of the addresses
//!   and a CIDR block is one contiguous term range (see [`ip_term_text`]).
//!
//! No field has field norms: results are ordered by time, never by score.
//!
//! Fields are only ever appended to the schema, so that a field has the same
//! id in every partition and one compiled query runs on all of them. A
//! partition keeps the schema it was created with (tantivy stores it in
//! `meta.json`), so the options of a field may differ between partitions:
//! partitions created before the storage rework have field norms (and
//! `_exists` terms per path, `_key` terms), and they stay readable. A partition written before `_tie`
//! and `_ip` existed must be re-ingested (there was no release before them).

use tantivy::schema::{
    BytesOptions, DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

/// Words, lowercased; overlong tokens (base64 blobs) are dropped from the
/// index but stay in the stored record.
pub const TEXT_TOKENIZER: &str = "ward_text";

/// Separates a path from its value in `_flat` terms.
pub const PATH_SEPARATOR: char = '\0';

/// Keyword values longer than this are indexed truncated; the stored record
/// keeps them whole.
pub const MAX_KEYWORD_BYTES: usize = 1024;

/// Fast string columns: (dotted name in events, tantivy field name).
pub const KEYWORD_COLUMNS: &[(&str, &str)] = &[
    ("source", "_col_source"),
    ("cluster", "_col_cluster"),
    ("node", "_col_node"),
    ("verb", "_col_verb"),
    ("user.username", "_col_user_username"),
    ("sourceIPs", "_col_source_ips"),
    ("userAgent", "_col_user_agent"),
    ("objectRef.resource", "_col_objectref_resource"),
    ("objectRef.subresource", "_col_objectref_subresource"),
    ("objectRef.namespace", "_col_objectref_namespace"),
    ("objectRef.name", "_col_objectref_name"),
    ("kubernetes.namespace", "_col_kubernetes_namespace"),
    ("kubernetes.pod", "_col_kubernetes_pod"),
    ("kubernetes.container", "_col_kubernetes_container"),
    ("stream", "_col_stream"),
];

/// The dotted name of the numeric status column.
pub const STATUS_CODE: &str = "responseStatus.code";
/// The dotted name of the time column (the record's own time).
pub const TIMESTAMP: &str = "timestamp";
/// The fast tie-breaker column of the time order.
pub const TIE: &str = "_tie";
/// The text field of container lines.
pub const MESSAGE: &str = "message";
/// The API server's id of an audit event.
pub const AUDIT_ID: &str = "auditID";

/// Field handles of Ward's schema.
#[derive(Clone, Debug)]
pub struct WardSchema {
    pub schema: Schema,
    pub source_doc: Field,
    /// The whole replay key, as a term, of records whose time was inferred
    /// (earlier releases wrote it for every record, 0.04 bytes on disk per
    /// byte of audit JSON): the others are recognised by `timestamp` and
    /// `_tie` (see [`crate::store`]).
    pub key: Field,
    /// The hash-chain batch a record was committed in (see [`crate::chain`]).
    pub batch: Field,
    pub timestamp: Field,
    pub flat: Field,
    pub exists: Field,
    pub message: Field,
    pub all: Field,
    pub status_code: Field,
    pub columns: Vec<(&'static str, Field)>,
    /// Tie-breaker of the time order: a hash of the replay key.
    pub tie: Field,
    /// IP addresses of string leaves, normalized (see [`ip_term_text`]).
    pub ip: Field,
}

impl WardSchema {
    pub fn new() -> WardSchema {
        let mut b = Schema::builder();
        let source_doc = b.add_bytes_field("_source", BytesOptions::default().set_stored());
        let key = b.add_text_field("_key", keyword());
        let batch = b.add_u64_field("_batch", NumericOptions::default().set_fast());
        let timestamp = b.add_date_field(
            "timestamp",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Nanoseconds),
        );
        // Raw: `flat_term_text` lowercases the value itself, and the path
        // must keep its case (`objectRef`).
        let flat = b.add_text_field("_flat", keyword());
        let exists = b.add_text_field("_exists", keyword());
        let message = b.add_text_field("message", text(IndexRecordOption::WithFreqsAndPositions));
        let all = b.add_text_field("_all", text(IndexRecordOption::WithFreqsAndPositions));
        let status_code = b.add_u64_field(
            "_status_code",
            NumericOptions::default().set_fast().set_indexed(),
        );
        let columns = KEYWORD_COLUMNS
            .iter()
            .map(|(dotted, name)| {
                let opts = TextOptions::default().set_fast("raw");
                (*dotted, b.add_text_field(name, opts))
            })
            .collect();
        let tie = b.add_u64_field(TIE, NumericOptions::default().set_fast());
        let ip = b.add_text_field("_ip", keyword());
        WardSchema {
            schema: b.build(),
            source_doc,
            key,
            batch,
            timestamp,
            flat,
            exists,
            message,
            all,
            status_code,
            columns,
            tie,
            ip,
        }
    }

    /// Registers the tokenizers the schema names on an index.
    pub fn register_tokenizers(index: &tantivy::Index) {
        index.tokenizers().register(TEXT_TOKENIZER, text_analyzer());
    }

    /// The tantivy name of the fast string column of a dotted field name.
    pub fn column_name(dotted: &str) -> Option<&'static str> {
        KEYWORD_COLUMNS
            .iter()
            .find(|(d, _)| *d == dotted)
            .map(|(_, n)| *n)
    }

    /// The fast string column for a dotted field name, if there is one.
    pub fn column(&self, dotted: &str) -> Option<Field> {
        self.columns
            .iter()
            .find(|(d, _)| *d == dotted)
            .map(|(_, f)| *f)
    }
}

impl Default for WardSchema {
    fn default() -> Self {
        WardSchema::new()
    }
}

/// An untokenized field: one term per value, no frequencies, no norms.
fn keyword() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    )
}

/// A field tokenized by [`text_analyzer`], without norms.
fn text(record: IndexRecordOption) -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(record)
            .set_fieldnorms(false),
    )
}

/// The analyzer of `message` and `_all`, also used to tokenize query text.
pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(256))
        .filter(LowerCaser)
        .build()
}

/// The `_flat` term for a path and value (lowercased, bounded).
pub fn flat_term_text(path: &str, value: &str, out: &mut String) {
    out.clear();
    out.push_str(path);
    out.push(PATH_SEPARATOR);
    let value = truncate_at_char_boundary(value, MAX_KEYWORD_BYTES);
    if value.is_ascii() {
        let start = out.len();
        out.push_str(value);
        out[start..].make_ascii_lowercase();
    } else {
        out.push_str(&value.to_lowercase());
    }
}

pub(crate) fn truncate_at_char_boundary(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Whether a whole string is an RFC 3339 time (`2026-11-23T10:00:00Z`,
/// with fractions and offsets), by shape.
pub fn is_time_text(s: &str) -> bool {
    let b = s.as_bytes();
    (20..=35).contains(&b.len())
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[19..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'Z' | b'z' | b'+' | b'-' | b':'))
}

/// The tie-breaker of a record: FNV-1a ([`ward_event::hash`]) over its
/// replay key. Stable across builds and platforms (it is stored, cursors compare stored values, and
/// with the record's time it is what replays are recognised by).
pub fn tie_of(key: &str) -> u64 {
    ward_event::hash::fnv64(key.as_bytes())
}

/// A string that is an IP address, as 128 bits (IPv4 mapped into IPv6).
/// Cheap to call on every string: most are refused by their first bytes.
pub fn parse_ip(value: &str) -> Option<u128> {
    let bytes = value.as_bytes();
    if bytes.len() < 2 || bytes.len() > 45 {
        return None;
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_hexdigit() || *b == b'.' || *b == b':')
    {
        return None;
    }
    let ip: std::net::IpAddr = value.parse().ok()?;
    Some(ip_bits(ip))
}

pub fn ip_bits(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The `_ip` term of a path and address: fixed-width hex, so that term
/// order is address order.
pub fn ip_term_text(path: &str, bits: u128, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    out.push_str(path);
    out.push(PATH_SEPARATOR);
    let _ = write!(out, "{bits:032x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_recognised_by_shape() {
        for time in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.123456Z",
            "2026-11-23t10:00:00+01:00",
        ] {
            assert!(is_time_text(time), "{time}");
        }
        for other in [
            "2026-11-23",
            "system:serviceaccount:kube-system:replicaset-controller",
            "abcd-11-23T10:00:00Z",
            "2026-11-23T10:00:00Z: connection refused by the webhook",
            "",
        ] {
            assert!(!is_time_text(other), "{other}");
        }
    }
}
