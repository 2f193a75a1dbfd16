//! The collector's counters and gauges, and their Prometheus text rendering
//! for `GET /metrics` (`--metrics-listen`).
//!
//! Plain atomics rather than a metrics library: the set is small and fixed,
//! every stage updates its own numbers without locks on the per-line path,
//! and the text format is a few lines of code. The names are the ones the
//! alerts in `deploy/prometheus/` use.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per source kind (audit, container) counters.
#[derive(Debug, Default)]
pub struct PerKind {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub audit: PerKind,
    pub container: PerKind,
    /// Audit events received on the webhook.
    pub webhook_events: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batch_retries: AtomicU64,
    pub batches_spooled: AtomicU64,
    pub batches_dead_lettered: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Records dropped because the spool was full and `--spool-full drop` was chosen.
    pub records_dropped: AtomicU64,
    pub files_tracked: AtomicU64,
    /// Bytes of rotated or deleted files given up on after the bound.
    pub bytes_abandoned: AtomicU64,
    /// Files truncated or rewritten in place, read again from the start.
    pub files_reset: AtomicU64,
    /// Times the tailing loop woke from sleep, on an event or a deadline.
    pub wakeups_event: AtomicU64,
    pub wakeups_timer: AtomicU64,
    /// Discoveries (glob expansions), by cause.
    pub scans_start: AtomicU64,
    pub scans_event: AtomicU64,
    pub scans_rescan: AtomicU64,
    /// Size of every tracked file, by fingerprint (from the tailer).
    sizes: Mutex<HashMap<String, u64>>,
    /// Acknowledged (or spooled) offset of every file, by fingerprint.
    acked: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    pub fn set_sizes(&self, sizes: HashMap<String, u64>) {
        if let Ok(mut s) = self.sizes.lock() {
            *s = sizes;
        }
    }

    /// Whether a batch with lines of this file was acknowledged.
    pub fn is_acked(&self, fingerprint: &str) -> bool {
        self.acked
            .lock()
            .map(|a| a.contains_key(fingerprint))
            .unwrap_or(false)
    }

    pub fn set_acked(&self, fingerprint: &str, offset: u64) {
        if let Ok(mut a) = self.acked.lock() {
            a.insert(fingerprint.to_owned(), offset);
        }
    }

    /// Whether a file (by fingerprint) is being tailed.
    pub fn is_tailed(&self, fingerprint: &str) -> bool {
        self.sizes
            .lock()
            .map(|s| s.contains_key(fingerprint))
            .unwrap_or(true)
    }

    /// Bytes of tracked files not yet acknowledged by the indexer or the spool.
    pub fn checkpoint_lag(&self) -> u64 {
        let (Ok(sizes), Ok(acked)) = (self.sizes.lock(), self.acked.lock()) else {
            return 0;
        };
        sizes
            .iter()
            .map(|(fp, size)| size.saturating_sub(acked.get(fp).copied().unwrap_or(0)))
            .sum()
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "ward_collector_lines_read_total",
            "counter",
            "Lines read, by source kind.",
            &[
                ("{source=\"audit\"}", get(&self.audit.lines)),
                ("{source=\"container\"}", get(&self.container.lines)),
                ("{source=\"webhook\"}", get(&self.webhook_events)),
            ],
        );
        metric(
            "ward_collector_bytes_read_total",
            "counter",
            "Bytes read from log files, by source kind.",
            &[
                ("{source=\"audit\"}", get(&self.audit.bytes)),
                ("{source=\"container\"}", get(&self.container.bytes)),
            ],
        );
        metric(
            "ward_collector_batches_sent_total",
            "counter",
            "Batches the indexer acknowledged.",
            &[("", get(&self.batches_sent))],
        );
        metric(
            "ward_collector_batch_retries_total",
            "counter",
            "Failed attempts to send a batch that will be retried.",
            &[("", get(&self.batch_retries))],
        );
        metric(
            "ward_collector_batches_spooled_total",
            "counter",
            "Batches written to the on-disk spool.",
            &[("", get(&self.batches_spooled))],
        );
        metric(
            "ward_collector_batches_dead_lettered_total",
            "counter",
            "Batches the indexer refused for good, kept in the dead-letter folder.",
            &[("", get(&self.batches_dead_lettered))],
        );
        metric(
            "ward_collector_spool_bytes",
            "gauge",
            "Bytes held in the on-disk spool.",
            &[("", get(&self.spool_bytes))],
        );
        metric(
            "ward_collector_checkpoint_lag_bytes",
            "gauge",
            "Bytes of tracked files not yet acknowledged.",
            &[("", self.checkpoint_lag())],
        );
        metric(
            "ward_collector_records_dropped_total",
            "counter",
            "Records dropped by policy (--spool-full drop).",
            &[("", get(&self.records_dropped))],
        );
        metric(
            "ward_collector_files_tracked",
            "gauge",
            "Files open for tailing.",
            &[("", get(&self.files_tracked))],
        );
        metric(
            "ward_collector_bytes_abandoned_total",
            "counter",
            "Bytes of rotated or deleted files not read before the time bound.",
            &[("", get(&self.bytes_abandoned))],
        );
        metric(
            "ward_collector_files_reset_total",
            "counter",
            "Files found truncated or rewritten and read again from the start.",
            &[("", get(&self.files_reset))],
        );
        metric(
            "ward_collector_wakeups_total",
            "counter",
            "Times the tailing loop woke from sleep, by cause (a file event or a deadline).",
            &[
                ("{cause=\"event\"}", get(&self.wakeups_event)),
                ("{cause=\"timer\"}", get(&self.wakeups_timer)),
            ],
        );
        metric(
            "ward_collector_discovery_scans_total",
            "counter",
            "Glob expansions looking for new, rotated or deleted files, by cause.",
            &[
                ("{cause=\"start\"}", get(&self.scans_start)),
                ("{cause=\"event\"}", get(&self.scans_event)),
                ("{cause=\"rescan\"}", get(&self.scans_rescan)),
            ],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_unacknowledged_bytes_only() {
        let m = Metrics::default();
        m.set_sizes(HashMap::from([("a".into(), 100), ("b".into(), 50)]));
        m.set_acked("a", 40);
        assert_eq!(m.checkpoint_lag(), 60 + 50);
        m.records_dropped.fetch_add(3, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("ward_collector_checkpoint_lag_bytes 110\n"),
            "{text}"
        );
        assert!(text.contains("ward_collector_records_dropped_total 3\n"));
        assert!(text.contains("ward_collector_lines_read_total{source=\"audit\"} 0\n"));
    }
}
