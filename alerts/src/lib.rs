//! Ward's alerts: detection on the ingest stream, the alert store, sinks,
//! and retro-hunts.
//!
//! - [`RulesTap`] is the indexer's [`ward_indexer::IngestTap`]: it runs the
//!   rule [`ward_rules::Engine`] over each ingested batch's audit records and
//!   stores the alerts it raises.
//! - [`AlertStore`] keeps alerts (de-duplicated by rule and `auditID`, with
//!   status and history) and the delivery queue in one embedded
//!   transactional database; [`AlertStore::export`] writes all of it as
//!   NDJSON from one read transaction (backups, `ward snapshot`) and
//!   [`AlertStore::import`] makes a new store from that.
//! - [`SinksConfig`] says which alerts go where (webhook, Alertmanager,
//!   Slack-style), and [`Dispatcher`] delivers them, retrying with jittered
//!   exponential backoff until the sink accepts.
//! - [`hunt`] runs rules over events already in the index.
//!
//! # Why redb
//!
//! The store needs transactions (an alert, its de-duplication key and its
//! deliveries commit together; a status change and its history entry
//! too), crash safety, and concurrent readers beside one writer; it does
//! not need SQL: every access is by key or a scan in key order. redb gives
//! exactly that, is pure Rust (no C toolchain, nothing to keep in step
//! with a bundled SQLite), and commits durably by default (fsync per
//! transaction, copy-on-write B-trees, no write-ahead log to replay).
//! `rusqlite` with bundled SQLite would have worked too; it brings a C
//! build of SQLite and a schema in SQL strings for queries we write as
//! scans anyway. redb is pinned to 2.x: 3.x and later need Rust 1.89+,
//! above the workspace's 1.88.
//!
//! Listing filters by scanning alerts newest first; an alert is a few
//! hundred bytes, so a scan of 100,000 alerts is some tens of
//! milliseconds. Secondary indexes (by time, by rule) are the next step if
//! that stops being enough.

mod deliver;
mod error;
pub mod hunt;
mod sink;
mod store;
mod tap;

pub use deliver::Dispatcher;
pub use error::Error;
pub use hunt::{HuntAlert, HuntReport, HuntRequest, hunt};
pub use sink::{RetryConfig, SinkConfig, SinkKind, SinksConfig, alertmanager_body};
pub use store::{
    AlertFilter, AlertStore, Delivery, DumpCounts, MAX_LIMIT, NewAlert, RuleAlertCounts,
    SinkCounts, Status, StatusChange, StoredAlert,
};
pub use tap::{RuleLoadError, RulesTap, TapCounts, TapStats};
