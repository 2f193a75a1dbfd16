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
//! - [`store`]: the index on disk, the single writer with group commit, and search.
//!
//! Crash semantics: a batch is acknowledged only after the tantivy commit
//! that contains it has returned, and tantivy's commit is atomic and
//! durable (it fsyncs segment files and then atomically replaces
//! `meta.json`). A crash before the commit loses only unacknowledged
//! batches, which the sender still holds and resends.

pub mod compile;
pub mod document;
mod error;
pub mod query;
pub mod schema;
pub mod store;

pub use document::ParsedRecord;
pub use error::Error;
pub use store::{
    IngestReceipt, IngestTap, SearchHit, SearchRequest, SearchResponse, Store, StoreConfig,
};
