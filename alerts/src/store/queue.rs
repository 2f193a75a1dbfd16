//! The delivery queue: a delivery per alert and sink until the sink
//! accepts it, and delivery outcomes per sink.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{AlertStore, COUNTERS, QUEUE};
use crate::error::{Error, db};

/// A delivery of one alert to one sink, waiting in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub alert_id: u64,
    pub sink: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Deliveries due now (queue sequence, delivery), and when the next of
/// the others is due.
pub type DueDeliveries = (Vec<(u64, Delivery)>, Option<DateTime<Utc>>);

/// Delivery outcomes of one sink, kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    pub delivered: u64,
    pub failed: u64,
}

impl AlertStore {
    /// Up to `max` deliveries due at `now`, oldest queued first, and the
    /// earliest time one of the others is due.
    pub fn due_deliveries(&self, now: DateTime<Utc>, max: usize) -> Result<DueDeliveries, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let queue = txn.open_table(QUEUE).map_err(db)?;
        let mut due = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        for entry in queue.iter().map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let d: Delivery = serde_json::from_slice(value.value())?;
            if d.next_attempt <= now && due.len() < max {
                due.push((key.value(), d));
            } else if d.next_attempt > now {
                next = Some(next.map_or(d.next_attempt, |n| n.min(d.next_attempt)));
            } else {
                next = Some(now);
            }
        }
        Ok((due, next))
    }

    /// The sink accepted the delivery: it leaves the queue.
    pub fn delivery_succeeded(&self, seq: u64, sink: &str) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            queue.remove(seq).map_err(db)?;
            bump(&txn, &format!("delivered:{sink}"))?;
        }
        txn.commit().map_err(db)
    }

    /// The delivery failed: it stays queued with its next attempt.
    pub fn delivery_failed(&self, seq: u64, delivery: &Delivery) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut queue = txn.open_table(QUEUE).map_err(db)?;
            queue
                .insert(seq, serde_json::to_vec(delivery)?.as_slice())
                .map_err(db)?;
            bump(&txn, &format!("failed:{}", delivery.sink))?;
        }
        txn.commit().map_err(db)
    }

    /// Deliveries waiting in the queue.
    pub fn queue_len(&self) -> Result<u64, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let queue = txn.open_table(QUEUE).map_err(db)?;
        queue.len().map_err(db)
    }

    /// Delivered and failed attempts per sink, since the store was created.
    pub fn sink_counts(&self) -> Result<BTreeMap<String, SinkCounts>, Error> {
        let txn = self.db.begin_read().map_err(db)?;
        let counters = txn.open_table(COUNTERS).map_err(db)?;
        let mut out: BTreeMap<String, SinkCounts> = BTreeMap::new();
        for entry in counters.iter().map_err(db)? {
            let (key, value) = entry.map_err(db)?;
            let key = key.value();
            if let Some(sink) = key.strip_prefix("delivered:") {
                out.entry(sink.to_owned()).or_default().delivered = value.value();
            } else if let Some(sink) = key.strip_prefix("failed:") {
                out.entry(sink.to_owned()).or_default().failed = value.value();
            }
        }
        Ok(out)
    }
}

/// Queues a delivery of alert `alert_id` to each of `sinks`, due `now`,
/// under the sequence numbers from `next_seq` on.
pub(super) fn enqueue(
    queue: &mut redb::Table<'_, u64, &'static [u8]>,
    next_seq: &mut u64,
    alert_id: u64,
    sinks: Vec<String>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    for sink in sinks {
        let delivery = Delivery {
            alert_id,
            sink,
            attempts: 0,
            next_attempt: now,
            last_error: None,
        };
        queue
            .insert(*next_seq, serde_json::to_vec(&delivery)?.as_slice())
            .map_err(db)?;
        *next_seq += 1;
    }
    Ok(())
}

fn bump(txn: &redb::WriteTransaction, key: &str) -> Result<(), Error> {
    let mut counters = txn.open_table(COUNTERS).map_err(db)?;
    let n = counters.get(key).map_err(db)?.map_or(0, |v| v.value());
    counters.insert(key, n + 1).map_err(db)?;
    Ok(())
}
