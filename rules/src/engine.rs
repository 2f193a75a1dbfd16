//! The streaming evaluator: one event in, zero or more alerts out.
//!
//! Detection rules are stateless; the [`Engine`] only keeps state for
//! correlations. Correlation windows slide over *event* time (the time the
//! caller passes in, normally the API server's `requestReceivedTimestamp`),
//! never wall-clock time, so replaying a day-old log gives the same alerts
//! as watching it live, and a burst that straddles a clock-minute boundary is
//! still one burst.
//!
//! State is bounded: at most [`EngineConfig::max_groups`] groups per
//! correlation (the stalest group is evicted first) and
//! [`EngineConfig::max_events_per_group`] events per group (the oldest go
//! first); every eviction is counted in [`EngineStats`] so that an operator
//! can tell when a correlation may have missed something. Groups idle for
//! longer than the correlation's timespan are dropped as event time moves on.
//!
//! With suppression on (the default), a correlation alerts once per group
//! and then stays quiet for that group for one timespan, however many more
//! events keep its condition true.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::field::{self, FieldCache, Slot};
use crate::rule::{CorrKind, Level, RuleInfo};
use crate::ruleset::{CorrRule, Input, RuleSet};
use ward_event::tree::{self, Members, Node, Object};

/// One detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    // Shared strings: an alert is a handful of reference-count increments,
    // not copies of the rule's title, description and tags.
    pub rule_id: Arc<str>,
    pub title: Arc<str>,
    pub level: Level,
    pub author: Option<Arc<str>>,
    /// Event time of the event that triggered the alert.
    pub timestamp: DateTime<Utc>,
    /// `auditID`s of the triggering event, or for a correlation of every
    /// event in the window that contributed.
    pub audit_ids: Vec<String>,
    /// For correlations: the group-by field values (null when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<BTreeMap<String, Option<String>>>,
    pub tags: Arc<[String]>,
    pub description: Option<Arc<str>>,
    /// True when raised by a correlation rule.
    pub correlation: bool,
}

impl Alert {
    /// The per-rule part of every alert of `info`, built once per engine.
    fn template(info: &RuleInfo) -> Alert {
        Alert {
            rule_id: info.id.as_str().into(),
            title: info.title.as_str().into(),
            level: info.level,
            author: info.author.as_deref().map(Arc::from),
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
            audit_ids: Vec::new(),
            group: None,
            tags: info.tags.clone().into(),
            description: info.description.as_deref().map(Arc::from),
            correlation: info.correlation,
        }
    }

    fn new(template: &Alert, timestamp: DateTime<Utc>, audit_ids: Vec<String>) -> Alert {
        Alert {
            timestamp,
            audit_ids,
            ..template.clone()
        }
    }
}

/// Limits and behaviour of correlation state.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Groups kept per correlation rule.
    pub max_groups: usize,
    /// Events kept per group (keep above every correlation threshold).
    pub max_events_per_group: usize,
    /// Alert once per group and timespan instead of on every event that
    /// keeps the condition true.
    pub suppress: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_groups: 10_000,
            max_events_per_group: 1_000,
            suppress: true,
        }
    }
}

/// Counters for what the engine did and what it had to drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    pub events: u64,
    pub alerts: u64,
    /// Correlation groups evicted because `max_groups` was reached.
    pub evicted_groups: u64,
    /// Events dropped from a group because `max_events_per_group` was
    /// reached.
    pub evicted_events: u64,
    /// Events older than their group's window when they arrived.
    pub late_events: u64,
}

#[derive(Debug)]
struct Entry {
    time: DateTime<Utc>,
    /// Which of the correlation's input rules this event matched.
    mask: u64,
    value: Option<String>,
    audit_id: Option<String>,
}

#[derive(Debug)]
struct Group {
    entries: VecDeque<Entry>,
    newest: DateTime<Utc>,
    suppressed_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct CorrState {
    groups: HashMap<Vec<Option<String>>, Group>,
    next_sweep: Option<DateTime<Utc>>,
}

/// Evaluates a [`RuleSet`] over a stream of parsed audit events.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    config: EngineConfig,
    states: Vec<CorrState>,
    /// Reused per event: detection rules that matched and feed correlations.
    hits: Vec<u32>,
    det_hit: Vec<bool>,
    fired: Vec<bool>,
    /// Reused per event: candidate rules from the index.
    cands: Vec<u32>,
    /// Per rule (same order as `RuleSet::rules`), the shared alert fields.
    templates: Vec<Alert>,
    stats: EngineStats,
    /// Reused per event: the field memo's slots (see `field::FieldCache`).
    slots: Vec<Slot>,
}

impl Engine {
    pub fn new(rules: impl Into<Arc<RuleSet>>) -> Engine {
        Engine::with_config(rules, EngineConfig::default())
    }

    pub fn with_config(rules: impl Into<Arc<RuleSet>>, config: EngineConfig) -> Engine {
        let rules = rules.into();
        let n_corr = rules.corrs.len();
        let n_det = rules.dets.len();
        Engine {
            states: (0..n_corr).map(|_| CorrState::default()).collect(),
            hits: Vec::new(),
            det_hit: vec![false; n_det],
            fired: vec![false; n_corr],
            cands: Vec::new(),
            templates: rules.infos.iter().map(Alert::template).collect(),
            rules,
            config,
            stats: EngineStats::default(),
            slots: Vec::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Number of live correlation groups, over all correlation rules.
    pub fn groups(&self) -> usize {
        self.states.iter().map(|s| s.groups.len()).sum()
    }

    /// Evaluates one event. Events that are not JSON objects match nothing.
    pub fn process(&mut self, event: &Value, event_time: DateTime<Utc>, out: &mut Vec<Alert>) {
        if let Value::Object(m) = event {
            self.process_map(m, event_time, out);
        }
    }

    /// Evaluates one event given as its top-level map.
    pub fn process_map(
        &mut self,
        ev: &Map<String, Value>,
        event_time: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) {
        self.process_tree(&Object::of_map(ev), event_time, out);
    }

    /// Evaluates one event given as a tree (what the indexer parses each
    /// event into: rules on the ingest stream build no `serde_json` map).
    pub fn process_tree(
        &mut self,
        ev: &Object<'_>,
        event_time: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) {
        let ev = &ev.0;
        let Engine {
            rules,
            config,
            states,
            hits,
            det_hit,
            fired,
            cands,
            templates,
            stats,
            slots,
        } = self;
        stats.events += 1;
        let before = out.len();
        slots.clear();
        slots.resize(rules.n_fields, Slot::default());
        let mut cache = FieldCache::new(slots);
        cands.clear();
        rules.prefilter.collect(ev, cands, &mut cache);
        // Rule order, so alerts come out in a stable order.
        cands.sort_unstable();
        cands.dedup();
        for &k in cands.iter() {
            let k = k as usize;
            let det = &rules.dets[k];
            if det.detection.matches_with(ev, &mut cache)
                && det.filters.iter().all(|f| f.matches_with(ev, &mut cache))
            {
                if det.emit {
                    out.push(Alert::new(
                        &templates[det.info],
                        event_time,
                        audit_id(ev).into_iter().collect(),
                    ));
                }
                if det.feeds {
                    hits.push(k as u32);
                }
            }
        }
        if !hits.is_empty() {
            for h in hits.iter() {
                det_hit[*h as usize] = true;
            }
            fired.fill(false);
            for (c, corr) in rules.corrs.iter().enumerate() {
                let mut mask = 0u64;
                let mut first = None;
                for (pos, input) in corr.inputs.iter().enumerate() {
                    let hit = match input {
                        Input::Det(d) => det_hit[*d],
                        Input::Corr(k) => fired[*k],
                    };
                    if hit {
                        mask |= 1 << pos;
                        first.get_or_insert(pos);
                    }
                }
                let Some(first) = first else { continue };
                let template = &templates[corr.info];
                if let Some(alert) =
                    states[c].update(corr, template, ev, event_time, mask, first, config, stats)
                {
                    fired[c] = true;
                    if corr.emit {
                        out.push(alert);
                    }
                }
            }
            for h in hits.iter() {
                det_hit[*h as usize] = false;
            }
            hits.clear();
        }
        stats.alerts += (out.len() - before) as u64;
    }
}

fn audit_id(ev: &Members<'_>) -> Option<String> {
    tree::get(ev, "auditID")
        .and_then(Node::as_str)
        .map(str::to_owned)
}

impl CorrState {
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        corr: &CorrRule,
        template: &Alert,
        ev: &Members<'_>,
        time: DateTime<Utc>,
        mask: u64,
        first: usize,
        config: &EngineConfig,
        stats: &mut EngineStats,
    ) -> Option<Alert> {
        let ts = corr.timespan;
        // Drop groups that have been idle for a whole window, once per
        // window of event time.
        if self.next_sweep.is_none_or(|t| time >= t) {
            self.groups.retain(|_, g| g.newest + ts >= time);
            self.next_sweep = Some(time + ts);
        }
        let key: Vec<Option<String>> = corr
            .group_by
            .iter()
            .map(|(_, fields)| field::first_text(ev, &fields[first]))
            .collect();
        if !self.groups.contains_key(&key) && self.groups.len() >= config.max_groups.max(1) {
            let stalest = self
                .groups
                .iter()
                .min_by_key(|(_, g)| g.newest)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.groups.remove(&k);
                stats.evicted_groups += 1;
            }
        }
        let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
            entries: VecDeque::new(),
            newest: time,
            suppressed_until: None,
        });
        if time + ts < g.newest {
            stats.late_events += 1;
            return None;
        }
        if time > g.newest {
            g.newest = time;
        }
        let cutoff = g.newest - ts;
        while g.entries.front().is_some_and(|e| e.time < cutoff) {
            g.entries.pop_front();
        }
        let value = match (corr.kind, &corr.field) {
            (CorrKind::ValueCount, Some(f)) => field::first_text(ev, f),
            _ => None,
        };
        let entry = Entry {
            time,
            mask,
            value,
            audit_id: audit_id(ev),
        };
        // Usually the newest: insert keeps the window in time order even
        // when events arrive slightly out of order.
        let pos = g.entries.partition_point(|e| e.time <= time);
        g.entries.insert(pos, entry);
        while g.entries.len() > config.max_events_per_group.max(1) {
            g.entries.pop_front();
            stats.evicted_events += 1;
        }
        let n_inputs = corr.inputs.len() as u64;
        let count = match corr.kind {
            CorrKind::EventCount => g.entries.len() as u64,
            CorrKind::ValueCount => {
                let mut vals: Vec<&str> = g
                    .entries
                    .iter()
                    .filter_map(|e| e.value.as_deref())
                    .collect();
                vals.sort_unstable();
                vals.dedup();
                vals.len() as u64
            }
            CorrKind::Temporal => {
                u64::from(g.entries.iter().fold(0u64, |m, e| m | e.mask).count_ones())
            }
            CorrKind::TemporalOrdered => {
                // Greedy: the earliest event of each step in turn.
                let mut step = 0u64;
                for e in &g.entries {
                    if step < n_inputs && e.mask & (1 << step) != 0 {
                        step += 1;
                    }
                }
                step
            }
        };
        let holds = match &corr.condition {
            Some(c) => c.holds(count),
            None => count >= n_inputs,
        };
        if !holds {
            return None;
        }
        if config.suppress {
            if g.suppressed_until.is_some_and(|t| time < t) {
                return None;
            }
            g.suppressed_until = Some(time + ts);
        }
        let mut alert = Alert::new(
            template,
            time,
            g.entries
                .iter()
                .filter_map(|e| e.audit_id.clone())
                .collect(),
        );
        alert.group = Some(
            corr.group_by
                .iter()
                .zip(key)
                .map(|((name, _), v)| (name.clone(), v))
                .collect(),
        );
        Some(alert)
    }
}
