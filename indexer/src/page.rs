//! Pages of hits in time order, and the cursors that continue them.
//!
//! Hits are ordered by (timestamp, `_tie`), newest or oldest first, where
//! `_tie` is a hash of the record's replay key (see [`crate::schema`]).
//! Both values are stored in the record's document, so the order is total
//! (up to a 64-bit hash collision between two records of the same
//! nanosecond) and the same in every partition, before and after merges.
//!
//! A cursor is the sort key of the last hit of a page; the next page holds
//! the hits strictly after it in the order (search-after). Records that
//! arrive meanwhile do not shift pages: a record newer than the cursor (in
//! a newest-first walk) is simply not part of the walk, and an older one is
//! returned when the walk reaches it. Nothing is skipped or repeated, unlike
//! offsets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::Error;
use crate::schema::{TIE, TIMESTAMP};

/// Which hits come first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Newest,
    Oldest,
}

/// A position in the order: greater comes first, in both orders.
pub(crate) type Rank = (i64, u64);

impl SortOrder {
    pub(crate) fn rank(self, nanos: i64, tie: u64) -> Rank {
        match self {
            SortOrder::Newest => (nanos, tie),
            // `!x` reverses the order of i64 and u64 without overflow.
            SortOrder::Oldest => (!nanos, !tie),
        }
    }

    fn tag(self) -> char {
        match self {
            SortOrder::Newest => 'n',
            SortOrder::Oldest => 'o',
        }
    }
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub order: SortOrder,
    pub nanos: i64,
    pub tie: u64,
}

impl Cursor {
    pub(crate) fn from_rank(order: SortOrder, rank: Rank) -> Cursor {
        let (nanos, tie) = match order {
            SortOrder::Newest => rank,
            SortOrder::Oldest => (!rank.0, !rank.1),
        };
        Cursor { order, nanos, tie }
    }

    pub(crate) fn rank(&self) -> Rank {
        self.order.rank(self.nanos, self.tie)
    }

    /// `<n|o><nanoseconds>.<tie in hex>`: opaque to clients.
    pub fn encode(&self) -> String {
        format!("{}{}.{:016x}", self.order.tag(), self.nanos, self.tie)
    }

    /// Parses a cursor given back for a walk in `order`.
    pub fn parse(text: &str, order: SortOrder) -> Result<Cursor, Error> {
        let bad = || Error::InvalidRequest(format!("cursor {text:?} is not a cursor of this API"));
        let mut chars = text.chars();
        let tag = chars.next().ok_or_else(bad)?;
        if tag != order.tag() {
            return Err(Error::InvalidRequest(
                "the cursor belongs to a walk in the other order".into(),
            ));
        }
        let (nanos, tie) = chars.as_str().split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            order,
            nanos: nanos.parse().map_err(|_| bad())?,
            tie: u64::from_str_radix(tie, 16).map_err(|_| bad())?,
        })
    }
}

/// Collects the best `limit` hits after an optional cursor, and counts all
/// matches and the matches after the cursor.
pub(crate) struct PageCollector {
    pub limit: usize,
    pub order: SortOrder,
    pub after: Option<Rank>,
}

/// (matches, matches after the cursor, best hits, best first).
pub(crate) type PageFruit = (u64, u64, Vec<(Rank, DocAddress)>);

impl Collector for PageCollector {
    type Fruit = PageFruit;
    type Child = PageSegment;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegment> {
        let fast = reader.fast_fields();
        Ok(PageSegment {
            ord,
            limit: self.limit,
            order: self.order,
            after: self.after,
            time: fast.date(TIMESTAMP)?,
            tie: fast.u64(TIE).ok(),
            count: 0,
            after_count: 0,
            heap: BinaryHeap::with_capacity(self.limit.min(1024) + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<PageFruit>) -> tantivy::Result<PageFruit> {
        Ok(merge(fruits, self.limit))
    }
}

pub(crate) fn merge(fruits: Vec<PageFruit>, limit: usize) -> PageFruit {
    let mut count = 0;
    let mut after = 0;
    let mut hits = Vec::new();
    for (c, a, h) in fruits {
        count += c;
        after += a;
        hits.extend(h);
    }
    hits.sort_by_key(|h| Reverse(h.0));
    hits.truncate(limit);
    (count, after, hits)
}

pub(crate) struct PageSegment {
    ord: SegmentOrdinal,
    limit: usize,
    order: SortOrder,
    after: Option<Rank>,
    time: Column<tantivy::DateTime>,
    tie: Option<Column<u64>>,
    count: u64,
    after_count: u64,
    /// The best hits so far, the worst of them on top.
    heap: BinaryHeap<Reverse<(Rank, DocId)>>,
}

impl SegmentCollector for PageSegment {
    type Fruit = PageFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.count += 1;
        let nanos = self
            .time
            .first(doc)
            .map_or(i64::MIN, |t| t.into_timestamp_nanos());
        let tie = self.tie.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
        let rank = self.order.rank(nanos, tie);
        if self.after.is_some_and(|a| rank >= a) {
            return;
        }
        self.after_count += 1;
        if self.limit == 0 {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push(Reverse((rank, doc)));
        } else if self.heap.peek().is_some_and(|w| rank > w.0.0) {
            self.heap.pop();
            self.heap.push(Reverse((rank, doc)));
        }
    }

    fn harvest(self) -> PageFruit {
        let ord = self.ord;
        let mut hits: Vec<(Rank, DocAddress)> = self
            .heap
            .into_iter()
            .map(|Reverse((rank, doc))| (rank, DocAddress::new(ord, doc)))
            .collect();
        hits.sort_by_key(|h| Reverse(h.0));
        (self.count, self.after_count, hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_keep_their_order() {
        for order in [SortOrder::Newest, SortOrder::Oldest] {
            let c = Cursor {
                order,
                nanos: -5,
                tie: u64::MAX,
            };
            assert_eq!(Cursor::parse(&c.encode(), order).unwrap(), c);
            assert_eq!(Cursor::from_rank(order, c.rank()), c);
        }
        let c = Cursor {
            order: SortOrder::Newest,
            nanos: 1,
            tie: 2,
        };
        assert!(Cursor::parse(&c.encode(), SortOrder::Oldest).is_err());
        assert!(Cursor::parse("n12", SortOrder::Newest).is_err());
        assert!(Cursor::parse("", SortOrder::Newest).is_err());
        // Oldest first: an earlier time ranks higher.
        let o = SortOrder::Oldest;
        assert!(o.rank(1, 0) > o.rank(2, 0));
        assert!(o.rank(1, 1) > o.rank(1, 2));
    }
}
