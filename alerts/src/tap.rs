//! The ingest tap: detection rules on the live stream.
//!
//! The indexer parses each record once and shows every batch to its
//! [`IngestTap`] before storing it; [`RulesTap`] runs the [`Engine`] over
//! the batch's audit records, in batch order, and stores what it raises in
//! the [`AlertStore`] with a delivery queued per sink, in one transaction.
//!
//! - The engine sits behind a mutex: correlation state is sequential, and
//!   batches arrive on several blocking threads at once.
//! - A batch can be seen twice (a collector resending after a lost
//!   acknowledgement, an API server retrying a webhook call). Records
//!   whose id the tap saw recently are skipped, so a replay does not feed a
//!   correlation window twice; and alerts are de-duplicated by rule and
//!   `auditID` in the store, which also covers replays older than the
//!   recent-id memory or across restarts.
//! - The tap cannot refuse a batch. If the alert store fails, the error is
//!   logged and counted, and the batch's ids are forgotten so that a resend
//!   is evaluated again.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use ward_indexer::tree::{self, Node, Object};
use ward_indexer::{IngestTap, ParsedRecord};
use ward_rules::{Engine, LoadError, RuleSet};

use crate::sink::SinksConfig;
use crate::store::{AlertStore, NewAlert};

/// Record ids remembered for replay detection.
const RECENT_IDS: usize = 1 << 20;

/// Counters of the tap.
#[derive(Debug, Default)]
pub struct TapStats {
    /// Audit records evaluated.
    pub events: AtomicU64,
    /// Records skipped because the tap saw them recently (replays).
    pub replayed: AtomicU64,
    /// Alerts the rules raised (before de-duplication).
    pub raised: AtomicU64,
    /// Alerts stored (new after de-duplication).
    pub stored: AtomicU64,
    /// Failed writes to the alert store.
    pub store_errors: AtomicU64,
}

/// A snapshot of [`TapStats`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TapCounts {
    pub events: u64,
    pub replayed: u64,
    pub raised: u64,
    pub stored: u64,
    pub store_errors: u64,
}

struct State {
    engine: Engine,
    seen: RecentIds,
    /// Why rule documents of the last load were skipped.
    load_errors: Vec<RuleLoadError>,
}

/// A rule document the last load skipped, as the dashboard and the API
/// show it ([`LoadError`] holds an I/O error and cannot be kept as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleLoadError {
    /// The file, or `builtin:<name>`.
    pub source: String,
    /// 1-based document of a multi-document file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub error: String,
}

impl From<&LoadError> for RuleLoadError {
    fn from(e: &LoadError) -> RuleLoadError {
        RuleLoadError {
            source: e.source.to_string(),
            document: e.document,
            rule: e.rule.clone(),
            error: e.error.to_string(),
        }
    }
}

/// Runs rules over ingested audit records and stores their alerts.
pub struct RulesTap {
    state: Mutex<State>,
    store: AlertStore,
    sinks: Arc<SinksConfig>,
    wake: Option<Arc<Notify>>,
    stats: TapStats,
}

impl RulesTap {
    /// `wake` is notified when alerts with deliveries were stored (the
    /// [`crate::Dispatcher`]'s waker).
    pub fn new(
        rules: RuleSet,
        store: AlertStore,
        sinks: Arc<SinksConfig>,
        wake: Option<Arc<Notify>>,
    ) -> RulesTap {
        RulesTap {
            state: Mutex::new(State {
                engine: Engine::new(rules),
                seen: RecentIds::new(RECENT_IDS),
                load_errors: Vec::new(),
            }),
            store,
            sinks,
            wake,
            stats: TapStats::default(),
        }
    }

    /// Swaps in a new rule set (rule files changed). Correlation windows
    /// start empty again.
    pub fn replace_rules(&self, rules: RuleSet) {
        let mut state = self.lock();
        state.engine = Engine::new(rules);
    }

    /// Remembers why documents of the last load were skipped, for
    /// [`RulesTap::load_errors`]; the loader calls it with every load.
    pub fn set_load_errors(&self, errors: &[LoadError]) {
        self.lock().load_errors = errors.iter().map(RuleLoadError::from).collect();
    }

    /// The documents the last load skipped, and why.
    pub fn load_errors(&self) -> Vec<RuleLoadError> {
        self.lock().load_errors.clone()
    }

    /// The rules running now (for a retro-hunt with the live rules).
    pub fn rules(&self) -> RuleSet {
        self.lock().engine.rules().clone()
    }

    /// Number of loaded rules (detections and correlations).
    pub fn rule_count(&self) -> usize {
        self.lock().engine.rules().rules().len()
    }

    pub fn counts(&self) -> TapCounts {
        let s = &self.stats;
        TapCounts {
            events: s.events.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            raised: s.raised.load(Ordering::Relaxed),
            stored: s.stored.load(Ordering::Relaxed),
            store_errors: s.store_errors.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside the engine must not stop detection for good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evaluates a batch; returns the alerts raised, and the ids it took.
    fn evaluate<'b>(&self, batch: &[ParsedRecord<'b>]) -> (Vec<NewAlert>, Vec<&'b str>) {
        let mut raised = Vec::new();
        let mut taken = Vec::new();
        let mut out = Vec::new();
        let (mut events, mut replayed) = (0u64, 0u64);
        let mut state = self.lock();
        let State { engine, seen, .. } = &mut *state;
        for record in batch {
            let hit = record.hit;
            if hit.get("source").and_then(Node::as_str) != Some("audit") {
                continue;
            }
            if !seen.insert(record.id) {
                replayed += 1;
                continue;
            }
            taken.push(record.id);
            events += 1;
            let time = ward_rules::tree_event_time(hit)
                .unwrap_or_else(|| DateTime::<Utc>::from_timestamp_nanos(record.timestamp_nanos));
            out.clear();
            engine.process_tree(hit, time, &mut out);
            for alert in out.drain(..) {
                raised.push(NewAlert {
                    alert,
                    event_id: record.id.to_owned(),
                    audit_id: text(hit, &["auditID"]),
                    cluster: text(hit, &["cluster"]),
                    namespace: text(hit, &["objectRef", "namespace"]),
                    user: text(hit, &["user", "username"]),
                });
            }
        }
        drop(state);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats.replayed.fetch_add(replayed, Ordering::Relaxed);
        (raised, taken)
    }
}

fn text(hit: &Object<'_>, path: &[&str]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut members = &hit.0;
    for p in parents {
        members = tree::get(members, p)?.as_members()?;
    }
    tree::get(members, last)?.as_str().map(str::to_owned)
}

impl IngestTap for RulesTap {
    fn observe(&self, batch: &[ParsedRecord<'_>]) {
        let (raised, taken) = self.evaluate(batch);
        if raised.is_empty() {
            return;
        }
        self.stats
            .raised
            .fetch_add(raised.len() as u64, Ordering::Relaxed);
        let sinks = &self.sinks;
        match self.store.insert(raised, &|a| sinks.route(a)) {
            Ok(stored) => {
                self.stats
                    .stored
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                for a in &stored {
                    // Low and informational alerts are hunting context, and
                    // an attack can raise one for most events: not a log
                    // line each.
                    if a.level >= ward_rules::Level::Medium {
                        tracing::info!(alert_id = a.id, rule_id = %a.rule_id, level = %a.level, title = %a.title, "alert raised");
                    } else {
                        tracing::debug!(alert_id = a.id, rule_id = %a.rule_id, level = %a.level, title = %a.title, "alert raised");
                    }
                }
                if !stored.is_empty()
                    && let Some(w) = &self.wake
                {
                    w.notify_one();
                }
            }
            Err(e) => {
                self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot store alerts; a resent batch will be evaluated again");
                let mut state = self.lock();
                for id in taken {
                    state.seen.forget(id);
                }
            }
        }
    }
}

/// A bounded set of recently seen record ids (128-bit hashes), oldest
/// forgotten first.
struct RecentIds {
    set: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> RecentIds {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn key(id: &str) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut a = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (0x7a9_u16, id).hash(&mut b);
        (a.finish(), b.finish())
    }

    /// False if `id` was seen recently.
    fn insert(&mut self, id: &str) -> bool {
        let key = RecentIds::key(id);
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn forget(&mut self, id: &str) {
        self.set.remove(&RecentIds::key(id));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn recent_ids_are_bounded() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "a was forgotten when c came");
        r.forget("c");
        assert!(r.insert("c"));
    }
}
