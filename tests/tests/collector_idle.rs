//! An idle or trickling `ward collector` sleeps: it wakes on events that can
//! mean new data or new files, and on its deadlines, never on its own opens
//! and reads (issue 22: every discovery's glob opened the watched
//! directories, which woke the loop for the next discovery, and an idle
//! collector used a whole core). Checked through its own counters, not the
//! machine's clock: wake-ups and discoveries are bounded by what happened.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use ward_e2e::{Rig, append, cri_lines};

const WAIT: Duration = Duration::from_secs(60);
/// The symlinked file's lines (not the searches' own audit records, whose
/// text holds the query).
const LINKED: &str = "message:linked AND NOT source:ward";

fn pod_file(rig: &Rig, pod: &str) -> PathBuf {
    rig.root
        .join(format!("pods/prod_{pod}_uid-{pod}/app/0.log"))
}

/// The collector's discovery and wake-up counters.
#[derive(Debug, Clone, Copy)]
struct Counters {
    scans_event: f64,
    scans_rescan: f64,
    wakeups: f64,
}

fn counters(rig: &Rig) -> Counters {
    Counters {
        scans_event: rig.metric("ward_collector_discovery_scans_total{cause=\"event\"}"),
        scans_rescan: rig.metric("ward_collector_discovery_scans_total{cause=\"rescan\"}"),
        wakeups: rig.metric("ward_collector_wakeups_total{cause=\"event\"}")
            + rig.metric("ward_collector_wakeups_total{cause=\"timer\"}"),
    }
}

/// Starts a collector over `files` pods with a few lines each, and waits
/// until all of them are indexed.
fn settled_rig(files: usize, rescan: &str) -> Rig {
    let mut rig = Rig::new();
    rig.start_indexer();
    for i in 0..files {
        append(
            &pod_file(&rig, &format!("p{i}")),
            cri_lines("x", 0..3).as_bytes(),
        );
    }
    rig.start_collector(&["--rescan-interval", rescan]);
    rig.client
        .wait_for_total("kubernetes.namespace:prod", 3 * files as u64, WAIT);
    rig
}

#[test]
fn an_idle_collector_does_not_rescan_on_its_own_reads() {
    let rig = settled_rig(50, "1s");
    let before = counters(&rig);
    std::thread::sleep(Duration::from_secs(4));
    let after = counters(&rig);

    // Four seconds at one rescan a second: at most five rescans (one may
    // have been due at the first sample), and no event asked for any.
    let rescans = after.scans_rescan - before.scans_rescan;
    assert!(rescans <= 5.0, "{rescans} rescans in 4 s: {after:?}");
    assert_eq!(after.scans_event, before.scans_event, "{after:?}");
    // Each rescan is one timer wake-up, plus the size gauge's: nothing
    // near the thousands a spinning loop makes.
    let wakeups = after.wakeups - before.wakeups;
    assert!(wakeups <= 12.0, "{wakeups} wake-ups in 4 s: {after:?}");
}

#[test]
fn a_slow_writer_wakes_the_collector_per_write_not_per_scan() {
    let rig = settled_rig(50, "1s");
    let before = counters(&rig);
    let busy = pod_file(&rig, "p7");
    for i in 0..40 {
        append(&busy, cri_lines("slow", i..i + 1).as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.client.wait_for_total("kubernetes.pod:p7", 3 + 40, WAIT);
    let after = counters(&rig);

    // Writes are data events: they read the file, they discover nothing.
    assert_eq!(after.scans_event, before.scans_event, "{after:?}");
    let rescans = after.scans_rescan - before.scans_rescan;
    assert!(rescans <= 5.0 + 2.0, "{rescans} rescans: {after:?}");
    // A write wakes the loop, and so does each batch's age deadline; the
    // 2 s margin covers the wait for the last line to be searchable.
    let wakeups = after.wakeups - before.wakeups;
    assert!(
        wakeups <= 3.0 * 40.0 + 12.0,
        "{wakeups} wake-ups: {after:?}"
    );
}

#[test]
fn new_and_rotated_files_are_found_by_events_without_a_rescan() {
    // With a rescan an hour away, only events can find these files.
    let rig = settled_rig(2, "1h");
    let f = pod_file(&rig, "late");
    append(&f, cri_lines("late", 0..20).as_bytes());
    rig.client.wait_for_total("kubernetes.pod:late", 20, WAIT);

    // kubelet's rotation: rename, then a new file at the old name.
    std::fs::rename(&f, f.with_extension("log.20240501-100000")).unwrap();
    append(&f, cri_lines("late", 20..50).as_bytes());
    rig.client.wait_for_total("kubernetes.pod:late", 50, WAIT);
    assert_eq!(
        rig.metric("ward_collector_discovery_scans_total{cause=\"rescan\"}"),
        0.0
    );
    assert!(rig.metric("ward_collector_discovery_scans_total{cause=\"event\"}") >= 2.0);
}

#[test]
fn files_behind_symlinks_are_read_on_their_targets_events() {
    // `/var/log/containers/*.log` holds symlinks into `/var/log/pods`:
    // writes are events of the targets' directories, which no glob root
    // covers, so the collector watches them too.
    let mut rig = Rig::new();
    rig.start_indexer();
    let links = rig.dir.path().join("containers");
    std::fs::create_dir_all(&links).unwrap();
    let target = rig.dir.path().join("elsewhere/prod_linked_uid-1/app/0.log");
    append(&target, cri_lines("linked", 0..10).as_bytes());
    std::os::unix::fs::symlink(&target, links.join("linked_prod_app-1.log")).unwrap();
    let containers = links.join("*.log").display().to_string();
    rig.start_collector(&["--containers", &containers, "--rescan-interval", "1h"]);
    rig.client.wait_for_total(LINKED, 10, WAIT);

    append(&target, cri_lines("linked", 10..30).as_bytes());
    rig.client.wait_for_total(LINKED, 30, WAIT);
    // Rotated behind the link: found through the target directory's events.
    std::fs::rename(&target, target.with_extension("log.20240501-100000")).unwrap();
    append(&target, cri_lines("linked", 30..45).as_bytes());
    rig.client.wait_for_total(LINKED, 45, WAIT);
    assert_eq!(
        rig.metric("ward_collector_discovery_scans_total{cause=\"rescan\"}"),
        0.0
    );
}
