//! Ward's event model and wire format.
//!
//! This crate is shared by the collector (which produces records) and the
//! indexer (which stores them). It holds:
//! - [`record`]: the record envelope every line or audit event travels in;
//! - [`cri`], [`docker`], [`partial`]: container log line parsers and the
//!   merger for partial lines;
//! - [`audit`]: Kubernetes `audit.k8s.io` Event / EventList parsing;
//! - [`id`]: every shape of a record's id; [`hash`]: the hash of persisted
//!   values (FNV-1a);
//! - [`path`]: pod / namespace / container metadata from kubelet log paths;
//! - [`wire`]: the NDJSON + zstd batch format and its bounded decoder;
//! - [`tree`]: an event's JSON as a tree borrowing from its batch, which the
//!   indexer builds documents from and detection rules evaluate.
//!
//! Invariant: this crate depends on nothing of Ward's, and nothing on the
//! per-line hot path uses regular expressions.

pub mod audit;
pub mod cri;
pub mod docker;
mod error;
pub mod hash;
pub mod id;
pub mod partial;
pub mod path;
pub mod record;
pub mod time;
pub mod tree;
pub mod wire;

pub use error::Error;
pub use id::RecordId;
pub use record::{Flag, Record, SourceKind, Stream};
