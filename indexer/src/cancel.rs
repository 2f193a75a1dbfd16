//! Cooperative cancellation of searches, aggregations and export pages.
//!
//! Queries run on the blocking pool, where dropping the request's future
//! (a timeout, a client that went away) does not stop them. A [`Cancel`]
//! travels with the request instead: the HTTP layer holds a
//! [`CancelOnDrop`] for as long as it waits, and the collectors check the
//! flag before each segment and every [`CHECK_EVERY`] matching documents
//! within one. After that, the segment's remaining matches are skipped
//! without being collected (tantivy's loop cannot be left early, but the
//! collecting, where aggregations spend their time, stops), no further
//! segment or partition starts, and the search ends with
//! [`crate::Error::Cancelled`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::Weight;
use tantivy::{DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED};

/// Matching documents collected between two looks at the flag.
pub const CHECK_EVERY: usize = 4096;

/// A request's cancellation flag, with an optional deadline. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
    /// Cancelled once this many matching documents were collected.
    match_budget: Option<u64>,
    /// Matching documents collected so far (updated at each look at the flag).
    visited: Arc<AtomicU64>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Also cancelled once `deadline` has passed.
    pub fn with_deadline(deadline: Instant) -> Cancel {
        Cancel {
            deadline: Some(deadline),
            ..Cancel::default()
        }
    }

    /// Also cancelled once the work has collected `matches` matching
    /// documents (seen at the next look at the flag): a cap on the work
    /// one request may do, whatever the time.
    pub fn with_match_budget(matches: u64) -> Cancel {
        Cancel {
            match_budget: Some(matches),
            ..Cancel::default()
        }
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.match_budget.is_some_and(|b| self.visited() >= b)
    }

    /// Matching documents the work has collected so far, counted in steps
    /// of up to [`CHECK_EVERY`].
    pub fn visited(&self) -> u64 {
        self.visited.load(Ordering::Relaxed)
    }

    fn add_visited(&self, n: usize) {
        self.visited.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A guard that cancels when dropped: held by whoever waits for the result.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }

    pub(crate) fn check(&self) -> tantivy::Result<()> {
        if self.is_cancelled() {
            Err(tantivy::TantivyError::InternalError(
                "the query was cancelled".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// Cancels its [`Cancel`] when dropped: after the work finished that is
/// harmless, before it, it stops the work.
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs `inner` segment by segment, checking `cancel` before each segment
/// and every [`CHECK_EVERY`] matches.
pub(crate) struct Cancellable<'a, C> {
    pub(crate) inner: C,
    pub(crate) cancel: &'a Cancel,
}

impl<C: Collector> Collector for Cancellable<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<C::Child> {
        self.cancel.check()?;
        self.inner.for_segment(ord, reader)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<C::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    /// tantivy's own loop, in blocks, with a look at the flag between them.
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        let mut child = self.for_segment(ord, reader)?;
        let alive = reader.alive_bitset();
        let mut since_check = 0usize;
        if self.requires_scoring() {
            let mut scorer = weight.scorer(reader, 1.0)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    let score: Score = scorer.score();
                    child.collect(doc, score);
                }
                since_check += 1;
                if since_check >= CHECK_EVERY {
                    self.cancel.add_visited(since_check);
                    since_check = 0;
                    self.cancel.check()?;
                }
                doc = scorer.advance();
            }
        } else {
            // tantivy's own (per query type optimised) loop: it cannot be
            // left early, so once cancelled the rest of this segment's
            // matches are skipped without being collected, and no further
            // segment starts.
            let mut stopped = false;
            weight.for_each_no_score(reader, &mut |block| {
                if stopped {
                    return;
                }
                match alive {
                    None => child.collect_block(block),
                    Some(a) => {
                        for &doc in block {
                            if a.is_alive(doc) {
                                child.collect(doc, 0.0);
                            }
                        }
                    }
                }
                since_check += block.len();
                if since_check >= CHECK_EVERY {
                    self.cancel.add_visited(since_check);
                    since_check = 0;
                    stopped = self.cancel.is_cancelled();
                }
            })?;
            self.cancel.check()?;
        }
        self.cancel.add_visited(since_check);
        Ok(child.harvest())
    }
}
