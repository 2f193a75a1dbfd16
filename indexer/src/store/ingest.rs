//! Ingest batching: a batch's records are parsed once, shown to the tap,
//! redacted, built into documents and queued for the writer; the caller
//! waits for the commit that acknowledges them.

use std::sync::atomic::Ordering;

use crossbeam_channel::SendTimeoutError;
use tokio::sync::oneshot;
use ward_event::SourceKind;
use ward_event::wire::{self, DecodedRecord};

use super::replay::RecordKey;
use super::writer::{Ack, Pending, WriterMsg};
use super::{IngestReceipt, IngestTap, Store};
use crate::Error;
use crate::document::{self, ParsedRecord, Prepared};
use crate::partition::Day;
use crate::redact::{Redactor, Tally};
use crate::schema::WardSchema;
use crate::tree::{Node, Object};

/// A batch as it reaches the store.
enum Batch {
    /// Records already decoded (Ward's own, tests).
    Records(Vec<DecodedRecord>),
    /// NDJSON records as a sender wrote them.
    Ndjson(Vec<u8>),
}

/// Turns a batch's records into documents. Without a tap, one at a time,
/// so that each record's tree is dropped before the next is parsed; with
/// one, the batch's trees are kept until the tap has seen them all.
struct BatchBuilder<'s, 'b> {
    schema: &'s WardSchema,
    redactor: &'s Redactor,
    tap: Option<&'s dyn IngestTap>,
    /// The batch's records, kept for the tap.
    kept: Vec<Prepared<'b>>,
    docs: Vec<Pending>,
    /// Counted once the writer has taken the batch.
    redactions: Tally,
}

impl<'b> BatchBuilder<'_, 'b> {
    fn add(&mut self, record: Prepared<'b>) {
        if self.tap.is_some() {
            self.kept.push(record);
        } else {
            self.build(record);
        }
    }

    /// Shows the kept records to the tap and builds their documents.
    fn finish(mut self) -> (Vec<Pending>, Tally) {
        if let Some(tap) = self.tap {
            let kept = std::mem::take(&mut self.kept);
            let parsed: Vec<ParsedRecord<'_>> = kept.iter().map(Prepared::parsed).collect();
            tap.observe(&parsed);
            drop(parsed);
            self.docs.reserve(kept.len());
            for record in kept {
                self.build(record);
            }
        }
        (self.docs, self.redactions)
    }

    fn build(&mut self, record: Prepared<'_>) {
        let document::Built {
            doc,
            digest,
            tie,
            time_inferred,
            key,
            timestamp_nanos,
        } = record.build(self.schema, Some((self.redactor, &mut self.redactions)));
        self.docs.push(Pending {
            key: RecordKey::of(time_inferred, timestamp_nanos, tie, &key),
            day: Day::of_nanos(timestamp_nanos),
            digest,
            doc,
        });
    }
}

impl Store {
    /// Indexes a batch and returns once it is committed: durable and searchable.
    pub async fn ingest(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        self.ingest_on_pool(Batch::Records(records)).await
    }

    /// Indexes a batch of NDJSON records as a sender wrote it (see
    /// `ward_event::wire`), parsing each event once into a tree that
    /// borrows from `ndjson`. A line that is not a record fails the batch
    /// with its number; so does a record with source `ward`, which only
    /// Ward itself writes (through [`Store::ingest`]).
    pub async fn ingest_ndjson(&self, ndjson: Vec<u8>) -> Result<IngestReceipt, Error> {
        self.ingest_on_pool(Batch::Ndjson(ndjson)).await
    }

    async fn ingest_on_pool(&self, batch: Batch) -> Result<IngestReceipt, Error> {
        let store = self.clone();
        let (ack, acked) = oneshot::channel();
        let records = tokio::task::spawn_blocking(move || store.enqueue(batch, ack))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;
        let (duplicates, expired) = acked
            .await
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        self.inner
            .stats
            .batches_acknowledged
            .fetch_add(1, Ordering::Relaxed);
        Ok(IngestReceipt {
            records,
            duplicates,
            expired,
        })
    }

    /// Like [`Store::ingest`], for callers outside an async runtime (benches).
    pub fn ingest_blocking(&self, records: Vec<DecodedRecord>) -> Result<IngestReceipt, Error> {
        self.ingest_here(Batch::Records(records))
    }

    /// Like [`Store::ingest_ndjson`], for callers outside an async runtime.
    pub fn ingest_ndjson_blocking(&self, ndjson: Vec<u8>) -> Result<IngestReceipt, Error> {
        self.ingest_here(Batch::Ndjson(ndjson))
    }

    fn ingest_here(&self, batch: Batch) -> Result<IngestReceipt, Error> {
        let (ack, acked) = oneshot::channel();
        let records = self.enqueue(batch, ack)?;
        let (duplicates, expired) = acked
            .blocking_recv()
            .map_err(|_| Error::Unavailable("the index writer stopped".into()))?
            .map_err(Error::Unavailable)?;
        Ok(IngestReceipt {
            records,
            duplicates,
            expired,
        })
    }

    fn batch_builder(&self) -> BatchBuilder<'_, '_> {
        BatchBuilder {
            schema: &self.inner.schema,
            redactor: &self.inner.redactor,
            tap: self.inner.tap.as_deref(),
            kept: Vec::new(),
            docs: Vec::new(),
            redactions: Tally::default(),
        }
    }

    /// Builds the batch's documents, shows its records to the tap, and
    /// hands the documents to the writer; returns how many records it had.
    fn enqueue(&self, batch: Batch, ack: Ack) -> Result<usize, Error> {
        let (docs, redactions) = match batch {
            Batch::Records(mut records) => {
                let events: Vec<_> = records
                    .iter_mut()
                    .map(|r| std::mem::take(&mut r.event))
                    .collect();
                let mut builder = self.batch_builder();
                for (record, event) in records.into_iter().zip(&events) {
                    builder.add(Prepared::new(record.with_event(Object::of_map(event))));
                }
                builder.finish()
            }
            Batch::Ndjson(ndjson) => {
                let mut builder = self.batch_builder();
                for record in wire::records::<Object>(&ndjson) {
                    let record = record?;
                    // An event's own `source` wins in the hit, so it is
                    // checked too: the trail of `source:ward` records is
                    // evidence, and nobody else may add to it.
                    // Keywords match without regard to case, so `Ward`
                    // would be found by `source:ward` just the same.
                    if record.source == SourceKind::Ward
                        || record
                            .event
                            .get("source")
                            .and_then(Node::as_str)
                            .is_some_and(|s| {
                                s.trim().eq_ignore_ascii_case(SourceKind::Ward.as_str())
                            })
                    {
                        return Err(Error::InvalidRequest(
                            "records with source \"ward\" are written only by Ward itself".into(),
                        ));
                    }
                    builder.add(Prepared::new(record));
                }
                builder.finish()
            }
        };
        let count = docs.len();
        match self
            .inner
            .tx
            .send_timeout(WriterMsg::Batch { docs, ack }, self.inner.queue_timeout)
        {
            Ok(()) => {
                self.inner.redactor.count(&redactions);
                Ok(count)
            }
            Err(SendTimeoutError::Timeout(_)) => Err(Error::Unavailable(
                "the index writer is busy; retry later".into(),
            )),
            Err(SendTimeoutError::Disconnected(_)) => {
                Err(Error::Unavailable("the index writer stopped".into()))
            }
        }
    }
}
