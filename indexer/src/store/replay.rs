//! Replay detection: which records a partition already holds, so that a
//! resent batch is acknowledged without storing them twice (see
//! ARCHITECTURE.md, "Crash semantics"). The writer only loads a set,
//! inserts keys, and commits or rolls back what it inserted.

use std::collections::HashSet;
use std::path::Path;

use tantivy::IndexReader;

use crate::Error;
use crate::schema::{TIE, TIMESTAMP};

/// The replay keys of one partition's records, so that a replayed record
/// (a collector resending after a crash, an API server retrying a webhook
/// batch) is recognised without a lookup in the index.
///
/// A record is known by its own time and `_tie`, a 64-bit hash of its
/// replay key ([`crate::schema::tie_of`]); a replay has both the same. Both
/// are fast columns of the committed index, written in the same commit as
/// the records: the set is atomic with the data by construction, and
/// rebuilt from the columns when the partition is opened for writing.
/// Two different records are taken for one only if they have the same
/// nanosecond and the same 64-bit hash.
///
/// A record whose time was inferred (the line had none: it is when the line
/// was read) would have another time when replayed, so it is known by a
/// 128-bit hash of its whole key instead, from the `_key` term that only
/// such records get. (Earlier releases wrote a `_key` term for every record,
/// 0.04 bytes on disk per byte of audit JSON; those partitions' records are
/// known both ways.) The set costs about 32 bytes of memory per record of
/// the partitions being written (normally today's).
pub(super) struct KnownRecords {
    committed: HashSet<RecordKey>,
    /// Added since the last commit; folded in on success, dropped on failure.
    pending: HashSet<RecordKey>,
}

/// What a record is recognised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RecordKey {
    /// Its own time and its tie-breaker.
    Timed { nanos: i64, tie: u64 },
    /// Its whole replay key, hashed to 128 bits (two independent 64-bit
    /// hashes, so that a collision, which would wrongly drop a record, is
    /// out of practical reach).
    Whole(u64, u64),
}

impl RecordKey {
    /// The key of a record built for storage: its time and `_tie`, or its
    /// whole replay key when its time was inferred.
    pub(super) fn of(time_inferred: bool, nanos: i64, tie: u64, key: &str) -> RecordKey {
        if time_inferred {
            Self::whole_of_bytes(key.as_bytes())
        } else {
            RecordKey::Timed { nanos, tie }
        }
    }

    fn whole_of_bytes(key: &[u8]) -> RecordKey {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new()` has fixed keys: stable within a build,
        // which is all a set rebuilt at start-up needs.
        let mut a = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (0x5eed_u16, key).hash(&mut b);
        RecordKey::Whole(a.finish(), b.finish())
    }
}

impl KnownRecords {
    /// The keys of the records committed in the partition `reader` reads.
    pub(super) fn load(
        reader: &IndexReader,
        key_field: tantivy::schema::Field,
    ) -> Result<KnownRecords, Error> {
        let mut committed = HashSet::new();
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            let fast = segment.fast_fields();
            let times = fast.date(TIMESTAMP)?;
            let ties = fast.u64(TIE)?;
            for doc in 0..segment.max_doc() {
                if segment.is_deleted(doc) {
                    continue;
                }
                if let (Some(time), Some(tie)) = (times.first(doc), ties.first(doc)) {
                    committed.insert(RecordKey::Timed {
                        nanos: time.into_timestamp_nanos(),
                        tie,
                    });
                }
            }
            let inverted = segment.inverted_index(key_field)?;
            let mut terms = inverted
                .terms()
                .stream()
                .map_err(|source| Error::io(Path::new("index/_key terms"), source))?;
            while terms.advance() {
                committed.insert(RecordKey::whole_of_bytes(terms.key()));
            }
        }
        Ok(KnownRecords {
            committed,
            pending: HashSet::new(),
        })
    }

    /// Registers a record; false if it is already known (a replay).
    pub(super) fn insert(&mut self, key: RecordKey) -> bool {
        !self.committed.contains(&key) && self.pending.insert(key)
    }

    /// The partition committed: what was inserted since is known for good.
    pub(super) fn commit(&mut self) {
        self.committed.extend(self.pending.drain());
    }

    /// The partition rolled back: what was inserted since is forgotten.
    pub(super) fn rollback(&mut self) {
        self.pending.clear();
    }

    /// Committed records known.
    pub(super) fn len(&self) -> usize {
        self.committed.len()
    }
}
