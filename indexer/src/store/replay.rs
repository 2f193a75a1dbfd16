//! Replay detection: whether a record is already in its partition, so that
//! a resent batch is acknowledged without storing it twice, in memory that
//! does not grow with the partition (ARCHITECTURE.md, "Replays").
//!
//! The writer asks [`ReplayGuard::check`] about a batch's keys for one
//! partition, registers each record it adds with [`ReplayGuard::insert`],
//! and commits or rolls back what it registered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tantivy::index::SegmentId;
use tantivy::schema::Field;
use tantivy::{DateTime, IndexReader, SegmentReader};

use crate::Error;
use crate::partition::Day;
use crate::schema::{TIE, TIMESTAMP};

/// What a record is recognised by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum RecordKey {
    /// Its own time and its tie-breaker, `_tie`, a 64-bit hash of its
    /// replay key ([`crate::schema::tie_of`]): both are fast columns of
    /// the committed index. Two records are taken for one only if they
    /// have the same nanosecond and the same 64-bit hash.
    Timed { nanos: i64, tie: u64 },
    /// A record whose time was inferred (when its line was read) has
    /// another time when replayed: it is known by its whole replay key,
    /// the `_key` term only such records get.
    Whole(Box<str>),
}

impl RecordKey {
    /// The key of a record built for storage.
    pub(super) fn of(time_inferred: bool, nanos: i64, tie: u64, key: &str) -> RecordKey {
        if time_inferred {
            RecordKey::Whole(key.into())
        } else {
            RecordKey::Timed { nanos, tie }
        }
    }
}

/// Bits of a segment's filter per record: with [`PROBES`] probes, about
/// one false "maybe" in 2,000 (each costs one pass over the segment's
/// matching time range).
const FILTER_BITS_PER_KEY: usize = 16;
const PROBES: u64 = 8;
/// What one key of the recent window costs: the set's entry (key and
/// control byte at 7/8 load) and the eviction queue's copy.
const WINDOW_BYTES_PER_KEY: usize = 64;

/// One partition's replay detection.
///
/// - **Recent window**: the exact keys of its last `window` committed
///   records and of those added since the last commit (never evicted before
///   they are committed). A collector's or API server's prompt resend is
///   found here.
/// - **Outside the window** (evicted, or committed before the partition
///   was opened for writing): a bitset of the seconds of the day that hold
///   such records, built at opening from each segment's time range (its
///   column's minimum and maximum: no record is read). A record whose
///   second holds none is new without a lookup, which is every record of
///   a live stream.
/// - **Lookup**: the others are looked for in the committed segments whose
///   time range holds them, through a filter per segment (built from the
///   segment's `timestamp` and `_tie` columns the first time a lookup needs
///   it, kept while the segment lives) and, where the filter says maybe, one
///   pass over the segment's records in the batch's time range. Records with
///   inferred times are looked up by their `_key` term.
pub(super) struct ReplayGuard {
    capacity: usize,
    keys: HashSet<RecordKey>,
    /// Committed keys in commit order: the front is evicted first.
    order: VecDeque<RecordKey>,
    pending: Vec<RecordKey>,
    seconds: Seconds,
    /// Some record with an inferred time is outside the window.
    whole_outside: bool,
    filters: HashMap<SegmentId, Arc<Filter>>,
    key_field: Field,
}

/// What a lookup cost, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LookupCost {
    /// Records that had to be looked up outside the window.
    pub(super) records: u64,
    /// Passes over a segment's records (after a filter said maybe).
    pub(super) passes: u64,
    /// Filters built.
    pub(super) filters_built: u64,
}

impl ReplayGuard {
    /// The guard of a partition of `day` that `reader` reads. Reads only
    /// each segment's column headers and `_key` term count.
    pub(super) fn open(
        reader: &IndexReader,
        day: Day,
        key_field: Field,
        capacity: usize,
    ) -> Result<ReplayGuard, Error> {
        let day_start = day.start().timestamp_nanos_opt().unwrap_or(i64::MIN);
        let mut seconds = Seconds::new(day_start);
        let mut whole_outside = false;
        for segment in reader.searcher().segment_readers() {
            if segment.num_docs() == 0 {
                continue;
            }
            let times = segment.fast_fields().date(TIMESTAMP)?;
            seconds.set_range(nanos(times.min_value()), nanos(times.max_value()));
            whole_outside |= segment.inverted_index(key_field)?.terms().num_terms() > 0;
        }
        Ok(ReplayGuard {
            capacity: capacity.max(1),
            keys: HashSet::new(),
            order: VecDeque::new(),
            pending: Vec::new(),
            seconds,
            whole_outside,
            filters: HashMap::new(),
            key_field,
        })
    }

    /// For each of `keys` (records of one batch for this partition),
    /// whether it is new: not in the window and not committed before.
    /// Registers nothing (see [`ReplayGuard::insert`]).
    pub(super) fn check(
        &mut self,
        reader: &IndexReader,
        keys: &[&RecordKey],
    ) -> Result<(Vec<bool>, LookupCost), Error> {
        let mut fresh = vec![true; keys.len()];
        let mut cost = LookupCost::default();
        let mut timed: Vec<(usize, i64, u64)> = Vec::new();
        let mut whole: Vec<usize> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if self.keys.contains(*key) {
                fresh[i] = false;
                continue;
            }
            match key {
                RecordKey::Timed { nanos, tie } if self.seconds.maybe(*nanos) => {
                    timed.push((i, *nanos, *tie))
                }
                RecordKey::Whole(_) if self.whole_outside => whole.push(i),
                _ => {}
            }
        }
        if timed.is_empty() && whole.is_empty() {
            return Ok((fresh, cost));
        }
        cost.records = (timed.len() + whole.len()) as u64;
        let searcher = reader.searcher();
        let live: HashSet<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(SegmentReader::segment_id)
            .collect();
        self.filters.retain(|id, _| live.contains(id));
        for segment in searcher.segment_readers() {
            if !timed.is_empty() {
                self.look_up_timed(segment, &mut timed, &mut fresh, &mut cost)?;
            }
            if !whole.is_empty() {
                let terms = segment.inverted_index(self.key_field)?;
                whole.retain(|&i| {
                    let RecordKey::Whole(key) = keys[i] else {
                        return false;
                    };
                    let found = terms.terms().get(key.as_bytes()).ok().flatten().is_some();
                    if found {
                        fresh[i] = false;
                    }
                    !found
                });
            }
        }
        Ok((fresh, cost))
    }

    /// Looks for `timed` keys in one segment; those found are marked not
    /// fresh and leave `timed`.
    fn look_up_timed(
        &mut self,
        segment: &SegmentReader,
        timed: &mut Vec<(usize, i64, u64)>,
        fresh: &mut [bool],
        cost: &mut LookupCost,
    ) -> Result<(), Error> {
        if segment.num_docs() == 0 {
            return Ok(());
        }
        let fast = segment.fast_fields();
        let times = fast.date(TIMESTAMP)?;
        let (min, max) = (nanos(times.min_value()), nanos(times.max_value()));
        if !timed.iter().any(|&(_, t, _)| (min..=max).contains(&t)) {
            return Ok(());
        }
        let filter = match self.filters.get(&segment.segment_id()) {
            Some(f) => f.clone(),
            None => {
                let built = Arc::new(Filter::of_segment(segment)?);
                cost.filters_built += 1;
                self.filters.insert(segment.segment_id(), built.clone());
                built
            }
        };
        let maybe: HashSet<(i64, u64)> = timed
            .iter()
            .filter(|&&(_, t, tie)| (min..=max).contains(&t) && filter.maybe(t, tie))
            .map(|&(_, t, tie)| (t, tie))
            .collect();
        if maybe.is_empty() {
            return Ok(());
        }
        // One pass over the segment's records in the candidates' range.
        cost.passes += 1;
        let lo = maybe.iter().map(|k| k.0).min().unwrap_or(min);
        let hi = maybe.iter().map(|k| k.0).max().unwrap_or(max);
        let ties = fast.u64(TIE)?;
        let mut docs = Vec::new();
        times.get_docids_for_value_range(
            DateTime::from_timestamp_nanos(lo)..=DateTime::from_timestamp_nanos(hi),
            0..segment.max_doc(),
            &mut docs,
        );
        let mut found: HashSet<(i64, u64)> = HashSet::new();
        for doc in docs {
            if let (Some(t), Some(tie)) = (times.first(doc), ties.first(doc)) {
                let key = (nanos(t), tie);
                if maybe.contains(&key) {
                    found.insert(key);
                }
            }
        }
        timed.retain(|&(i, t, tie)| {
            let hit = found.contains(&(t, tie));
            if hit {
                fresh[i] = false;
            }
            !hit
        });
        Ok(())
    }

    /// Registers a record being added; false if it was registered already
    /// (the same record twice in what is not committed yet).
    pub(super) fn insert(&mut self, key: RecordKey) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        self.keys.insert(key.clone());
        self.pending.push(key);
        true
    }

    /// The partition committed: what was registered is known for good; the
    /// oldest committed keys beyond the window's capacity leave it.
    pub(super) fn commit(&mut self) {
        self.order.extend(self.pending.drain(..));
        while self.order.len() > self.capacity {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            self.keys.remove(&key);
            match key {
                RecordKey::Timed { nanos, .. } => self.seconds.set_range(nanos, nanos),
                RecordKey::Whole(_) => self.whole_outside = true,
            }
        }
    }

    /// The partition rolled back: what was registered since is forgotten.
    pub(super) fn rollback(&mut self) {
        for key in self.pending.drain(..) {
            self.keys.remove(&key);
        }
    }

    /// Keys in the window.
    pub(super) fn window_len(&self) -> usize {
        self.keys.len()
    }

    /// Bytes the window and the filters take, about.
    pub(super) fn memory_bytes(&self) -> (usize, usize) {
        let window = self.keys.len() * WINDOW_BYTES_PER_KEY;
        let filters = self.filters.values().map(|f| f.bytes()).sum::<usize>() + Seconds::WORDS * 8;
        (window, filters)
    }
}

fn nanos(t: DateTime) -> i64 {
    t.into_timestamp_nanos()
}

/// Which seconds of the day hold records outside the window. Times outside
/// the day (which the partition's records should not have) all count as
/// holding some.
struct Seconds {
    day_start: i64,
    bits: Vec<u64>,
    outside_day: bool,
}

impl Seconds {
    const SECONDS: usize = 86_400;
    const WORDS: usize = Self::SECONDS.div_ceil(64);

    fn new(day_start: i64) -> Seconds {
        Seconds {
            day_start,
            bits: vec![0; Self::WORDS],
            outside_day: false,
        }
    }

    fn second(&self, nanos: i64) -> Option<usize> {
        let s = nanos.checked_sub(self.day_start)?.div_euclid(1_000_000_000);
        usize::try_from(s).ok().filter(|&s| s < Self::SECONDS)
    }

    fn set_range(&mut self, from: i64, to: i64) {
        let (a, b) = match (self.second(from), self.second(to)) {
            (Some(a), Some(b)) => (a, b),
            (a, b) => {
                self.outside_day = true;
                (a.unwrap_or(0), b.unwrap_or(Self::SECONDS - 1))
            }
        };
        for s in a..=b.max(a) {
            self.bits[s / 64] |= 1 << (s % 64);
        }
    }

    fn maybe(&self, nanos: i64) -> bool {
        match self.second(nanos) {
            Some(s) => self.bits[s / 64] & (1 << (s % 64)) != 0,
            None => self.outside_day,
        }
    }
}

/// A Bloom filter of one segment's (time, `_tie`) keys: no false "no".
struct Filter {
    bits: Vec<u64>,
    /// Number of bits minus one (a power of two).
    mask: u64,
}

impl Filter {
    fn of_segment(segment: &SegmentReader) -> Result<Filter, Error> {
        let fast = segment.fast_fields();
        let times = fast.date(TIMESTAMP)?;
        let ties = fast.u64(TIE)?;
        let n = segment.max_doc() as usize;
        let bits = (n.max(64) * FILTER_BITS_PER_KEY).next_power_of_two();
        let mut filter = Filter {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
        };
        for doc in 0..segment.max_doc() {
            if let (Some(t), Some(tie)) = (times.first(doc), ties.first(doc)) {
                filter.add(nanos(t), tie);
            }
        }
        Ok(filter)
    }

    /// Two hashes of the key; probes at `h1 + i * h2`.
    fn hashes(nanos: i64, tie: u64) -> (u64, u64) {
        let h1 = mix(tie ^ (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let h2 = mix(h1 ^ 0xD6E8_FEB8_6659_FD93) | 1;
        (h1, h2)
    }

    fn add(&mut self, nanos: i64, tie: u64) {
        let (h1, h2) = Self::hashes(nanos, tie);
        for i in 0..PROBES {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn maybe(&self, nanos: i64, tie: u64) -> bool {
        let (h1, h2) = Self::hashes(nanos, tie);
        (0..PROBES).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// A 64-bit finalizer (splitmix64's): spreads a hash's bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_mark_ranges_and_times_outside_the_day() {
        let day_start = 1_700_000_000 * 1_000_000_000;
        let mut s = Seconds::new(day_start);
        let sec = |n: i64| day_start + n * 1_000_000_000;
        assert!(!s.maybe(sec(10)));
        s.set_range(sec(10), sec(12) + 5);
        assert!(s.maybe(sec(10)) && s.maybe(sec(11) + 7) && s.maybe(sec(12)));
        assert!(!s.maybe(sec(9)) && !s.maybe(sec(13)));
        assert!(!s.maybe(day_start - 1), "nothing outside the day yet");
        s.set_range(day_start - 1, day_start - 1);
        assert!(s.maybe(day_start - 5), "outside the day counts once seen");
        assert!(s.maybe(sec(0)), "the range is clamped to the day");
    }

    #[test]
    fn a_filter_has_no_false_no_and_few_false_maybes() {
        let n = 20_000u64;
        let bits = (n as usize * FILTER_BITS_PER_KEY).next_power_of_two();
        let mut f = Filter {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
        };
        for i in 0..n {
            f.add(i as i64 * 1000, mix(i));
        }
        assert!((0..n).all(|i| f.maybe(i as i64 * 1000, mix(i))));
        let false_maybes = (n..n * 11)
            .filter(|&i| f.maybe(i as i64 * 1000, mix(i)))
            .count();
        // Expected about one in 2,000 (16 bits and 8 probes per key).
        assert!(false_maybes < 200, "{false_maybes} false maybes in 200,000");
    }
}
