//! Ward's storage engine: durable ingest into tantivy, the query language,
//! and search.
//!
//! This is the only crate of Ward that talks to tantivy; everything above it
//! (the HTTP API, the CLI) speaks in [`SearchRequest`]s and JSON hits.
//!
//! - [`schema`]: the index schema and how a record maps onto it;
//! - [`document`]: one decoded record → one tantivy document;
//! - [`query`]: the Lucene-like query language (parser and AST);
//! - [`compile`]: query AST → tantivy query;
//! - [`store`]: the single writer with group commit, replay detection,
//!   retention, and search over partitions;
//! - [`page`]: time-ordered pages and their cursors (search-after);
//! - [`live_tail`]: live tail of committed records (not to be confused
//!   with the collector's `tail`, which follows files);
//! - [`partition`]: one tantivy index per UTC day, and the data directory's layout;
//! - [`aggregate`]: date histograms and terms top-N within a budget;
//! - [`cancel`]: cooperative cancellation of queries whose request timed out;
//! - [`chain`]: per-partition hash chains and the ledger (tamper evidence);
//! - [`verify`]: recomputes the chains from the stored records;
//! - [`snapshot`]: consistent copies while the indexer runs, and restore;
//! - [`redact`]: Secret data and credentials removed before storage;
//! - `tree` (from `ward-event`): an event's JSON borrowed from its batch, as ingest parses it.
//!
//! Crash semantics: a batch is acknowledged only after the tantivy commits
//! that contain it have returned, and tantivy's commit is atomic and
//! durable (it fsyncs segment files and then atomically replaces
//! `meta.json`). A crash before the commit loses only unacknowledged
//! batches, which the sender still holds and resends. Chain entries are
//! fsynced before the commit they describe; see [`chain`].

pub mod aggregate;
pub mod cancel;
pub mod chain;
pub mod compile;
pub mod document;
mod error;
pub mod live_tail;
pub mod page;
pub mod partition;
pub mod query;
pub mod redact;
pub mod schema;
pub mod snapshot;
pub mod store;
/// Event trees live in `ward-event`, shared with the rules engine.
pub use ward_event::tree;
pub mod verify;

pub use cancel::Cancel;
pub use document::ParsedRecord;
pub use error::Error;
pub use page::SortOrder;
pub use store::{
    IngestReceipt, IngestTap, Retention, SearchHit, SearchRequest, SearchResponse, Store,
    StoreConfig, StoreStats,
};
