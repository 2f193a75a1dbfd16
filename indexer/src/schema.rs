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
//! - `_exists`: one term per path present, for `_exists_:field`;
//! - `message`: container log text, tokenized with positions for phrases;
//! - `_all`: the short string values of audit events (user, IPs, names,
//!   URIs; not request or response bodies), tokenized, for field-less search;
//! - `timestamp` and `responseStatus.code`: fast numeric columns for ranges,
//!   sorting and histograms;
//! - keyword columns (`verb`, `user.username`, `sourceIPs`, …): fast string
//!   columns, with original case, for sorting and terms aggregations.

use tantivy::schema::{
    BytesOptions, DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, STRING,
    Schema, TextFieldIndexing, TextOptions,
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
/// The text field of container lines.
pub const MESSAGE: &str = "message";

/// Field handles of Ward's schema.
#[derive(Clone, Debug)]
pub struct WardSchema {
    pub schema: Schema,
    pub source_doc: Field,
    /// The replay-detection key (see [`crate::store`]): indexed, not stored.
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
}

impl WardSchema {
    pub fn new() -> WardSchema {
        let mut b = Schema::builder();
        let source_doc = b.add_bytes_field("_source", BytesOptions::default().set_stored());
        let key = b.add_text_field("_key", STRING);
        let batch = b.add_u64_field("_batch", NumericOptions::default().set_fast());
        let timestamp = b.add_date_field(
            "timestamp",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Nanoseconds),
        );
        // Raw: `flat_term_text` lowercases the value itself, and the path
        // must keep its case (`objectRef`).
        let flat = b.add_text_field("_flat", STRING);
        let exists = b.add_text_field("_exists", STRING);
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let message = b.add_text_field("message", text.clone());
        let all = b.add_text_field("_all", text);
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
        }
    }

    /// Registers the tokenizers the schema names on an index.
    pub fn register_tokenizers(index: &tantivy::Index) {
        index.tokenizers().register(TEXT_TOKENIZER, text_analyzer());
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
        out.extend(value.chars().map(|c| c.to_ascii_lowercase()));
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
