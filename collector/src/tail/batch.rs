//! The batch being built: records encoded into a staging buffer, which is
//! compressed into zstd frames as it grows, and the file positions the
//! batch completes; sealed into a [`Batch`] for the shipper.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ward_event::wire::BatchWriter;

use super::TailedFile;
use super::identity::{hash_hex, tail_hash};
use super::record;
use crate::checkpoint::FilePosition;
use crate::kube::SharedPods;
use crate::{CollectorConfig, Error};

/// Encoded records are compressed into a zstd frame of their own once
/// they reach this many bytes: a batch is a series of frames, so that its
/// uncompressed form is never held whole, and zstd's window (and memory)
/// is bounded by the frame, however large the batch.
const FRAME_BYTES: usize = 1024 * 1024;

/// A sealed batch of records and the file positions it completes.
#[derive(Debug)]
pub struct Batch {
    pub body: Body,
    pub records: usize,
    pub positions: Vec<FilePosition>,
    /// Told whether the batch is durable (acknowledged by the indexer or in
    /// the spool); used by the audit webhook, whose answer waits for it.
    pub durable: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// A batch's records, one JSON object per line.
#[derive(Debug)]
pub enum Body {
    /// Not compressed yet (the shipper compresses it): webhook batches.
    Ndjson(Vec<u8>),
    /// A zstd frame, compressed while the batch was built: file batches.
    Zstd(Vec<u8>),
}

/// The batch being built, and the positions it completes (`record`
/// encodes the records into it).
pub(super) struct BatchEncoder {
    /// What every record is built with.
    pub(super) records: record::Context,
    /// Records encoded since the last frame was compressed.
    pub(super) writer: BatchWriter,
    /// The batch so far: zstd frames (see [`FRAME_BYTES`]).
    body: Vec<u8>,
    /// One compression context, reused for every frame.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    zstd_level: i32,
    /// Uncompressed bytes and records already in `body`.
    batch_bytes: usize,
    batch_records: usize,
    /// zstd failed (it cannot, short of memory), or the identities could
    /// not be saved: the tailer stops with this error, and what was not
    /// acknowledged is read again at start.
    pub(super) failed: Option<Error>,
    pub(super) batch_started: Option<Instant>,
    positions: HashMap<String, FilePosition>,
}

impl BatchEncoder {
    pub(super) fn new(config: &CollectorConfig, pods: Option<SharedPods>) -> BatchEncoder {
        BatchEncoder {
            records: record::Context::new(config, pods),
            writer: BatchWriter::new(),
            body: Vec::new(),
            compressor: None,
            zstd_level: config.zstd_level,
            batch_bytes: 0,
            batch_records: 0,
            failed: None,
            batch_started: None,
            positions: HashMap::new(),
        }
    }

    /// Compresses the records encoded so far into a frame of the batch,
    /// once they are [`FRAME_BYTES`] (or any amount when `now`).
    pub(super) fn compress_staged(&mut self, now: bool) {
        if self.writer.is_empty() || self.failed.is_some() {
            return;
        }
        if !now && self.writer.bytes() < FRAME_BYTES {
            return;
        }
        if self.compressor.is_none() {
            match zstd::bulk::Compressor::new(self.zstd_level) {
                Ok(c) => self.compressor = Some(c),
                Err(e) => {
                    self.failed = Some(Error::Compress(e.to_string()));
                    return;
                }
            }
        }
        let Some(compressor) = self.compressor.as_mut() else {
            return;
        };
        match compressor.compress(self.writer.as_bytes()) {
            Ok(frame) if self.body.is_empty() => self.body = frame,
            Ok(frame) => self.body.extend_from_slice(&frame),
            Err(e) => {
                self.failed = Some(Error::Compress(e.to_string()));
                return;
            }
        }
        self.batch_bytes += self.writer.bytes();
        self.batch_records += self.writer.records();
        self.writer.clear();
    }

    /// Whether the batch reached its size or age bound.
    pub(super) fn due(&self, max_bytes: usize, max_age: Duration) -> bool {
        self.batch_bytes + self.writer.bytes() >= max_bytes
            || self.batch_started.is_some_and(|t| t.elapsed() >= max_age)
    }

    /// Compresses what is staged and takes the batch so far; None when it
    /// is empty or compression failed (see `failed`).
    pub(super) fn take_batch(&mut self) -> Option<Batch> {
        self.compress_staged(true);
        if self.failed.is_some() || self.batch_records == 0 {
            return None;
        }
        let batch = Batch {
            records: std::mem::take(&mut self.batch_records),
            body: Body::Zstd(std::mem::take(&mut self.body)),
            positions: self.positions.drain().map(|(_, p)| p).collect(),
            durable: None,
        };
        self.batch_bytes = 0;
        self.batch_started = None;
        Some(batch)
    }

    pub(super) fn failure(&mut self) -> Result<(), Error> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn note_position(&mut self, file: &TailedFile) {
        let Some(fp) = &file.fingerprint else { return };
        let safe = file
            .merger
            .oldest_open_offset()
            .map_or(file.buf_offset, |o| o.min(file.buf_offset));
        self.positions.insert(
            fp.clone(),
            FilePosition {
                fingerprint: fp.clone(),
                path: file.path.display().to_string(),
                offset: safe,
                epoch: file.epoch,
                tail_hash: match &file.gz {
                    // What was read last is at hand; anything before it is not.
                    Some(_) => (safe > 0 && safe == file.read_offset).then(|| hash_hex(&file.tail)),
                    None => tail_hash(&file.file, safe),
                },
                head_hash: file.head_hash.clone(),
            },
        );
    }
}
