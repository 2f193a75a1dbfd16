//! Fault injection with real processes: while a writer appends numbered
//! lines to container logs and the audit log, the test rotates them the way
//! kubelet and the API server do (rename, new file, older files gzipped),
//! once by copytruncate, kills the collector with SIGKILL at random moments
//! and stops the indexer twice. At the end every line must be in the index
//! exactly once. Plus the spool-full behaviour: reading pauses and nothing
//! is lost, or, with `--spool-full drop`, what is dropped is counted.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ward_e2e::{Rig, append, wait_until};

const WAIT: Duration = Duration::from_secs(90);
const FILES: usize = 3;

/// A small deterministic generator, seeded from the clock (and printed), so
/// that a failing run can be replayed with `WARD_FAULT_SEED`.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn line(k: usize, i: usize) -> String {
    format!(
        "2024-05-01T10:{:02}:{:02}.{:09}Z stdout F fault {k} n{i}\n",
        (i / 60) % 60,
        i % 60,
        i
    )
}

fn audit_event(i: usize) -> String {
    format!(
        "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"fault-{i}\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"requestURI\":\"/api/v1/namespaces/fault/pods/p{i}\",\"requestReceivedTimestamp\":\"2024-05-01T10:00:00.{i:06}Z\"}}\n"
    )
}

fn gzip(path: &Path) {
    let status = Command::new("gzip")
        .arg("-f")
        .arg(path)
        .status()
        .expect("run gzip");
    assert!(status.success(), "gzip {}", path.display());
}

/// A log the test writes: where it is, how many lines it got, and the
/// rotated files waiting to be gzipped once the collector is past them.
struct Log {
    path: PathBuf,
    written: usize,
    rotations: usize,
    /// Rotated files, oldest first, with the number of lines written up to their end.
    rotated: Vec<(PathBuf, usize)>,
}

impl Log {
    fn new(path: PathBuf) -> Log {
        Log {
            path,
            written: 0,
            rotations: 0,
            rotated: Vec::new(),
        }
    }
}

/// Whether line (or event) number `last` of this log is indexed, so the
/// collector has read the file holding it.
fn indexed(rig: &Rig, q: &str) -> bool {
    rig.client.search_raw(q, 1).1["total"].as_u64().unwrap_or(0) > 0
}

#[test]
fn every_line_once_through_rotations_collector_kills_and_indexer_outages() {
    let seed = std::env::var("WARD_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("WARD_FAULT_SEED={seed}");
    let mut rng = Lcg(seed);
    let mut rig = Rig::new();
    rig.start_indexer();
    rig.start_collector(&[]);

    let mut logs: Vec<Log> = (0..FILES)
        .map(|k| {
            Log::new(
                rig.root
                    .join(format!("pods/prod_fault-{k}_uid-{k}/app/0.log")),
            )
        })
        .collect();
    let mut audit = Log::new(rig.root.join("audit/audit.log"));
    // Lines in each rotated file are known indexed since this moment; the
    // file is gzipped once the collector surely saved a checkpoint past it
    // (it saves every second), as kubelet compresses only older files.
    let mut indexed_since: Vec<Option<Instant>> = vec![None; FILES + 1];

    let steps = 360;
    let mut kills = 0;
    let mut next_kill = 5 + rng.below(10) as usize;
    let mut copytruncated = false;
    let mut gzipped_unread = 0;
    for step in 0..steps {
        // Write.
        for (k, log) in logs.iter_mut().enumerate() {
            let text: String = (log.written..log.written + 2).map(|i| line(k, i)).collect();
            append(&log.path, text.as_bytes());
            log.written += 2;
        }
        append(&audit.path, audit_event(audit.written).as_bytes());
        audit.written += 1;

        // Rotate like kubelet: rename to <n>.log.<timestamp>, a new file on the next write.
        if step % 45 == 20 {
            let k = (step / 45) % FILES;
            let log = &mut logs[k];
            log.rotations += 1;
            let to = log
                .path
                .with_extension(format!("log.20240501-1000{:02}", log.rotations));
            std::fs::rename(&log.path, &to).unwrap();
            log.rotated.push((to, log.written));
        }
        // Rotate like the API server: audit.log → audit-<timestamp>.log.
        if step % 70 == 35 {
            audit.rotations += 1;
            let to = rig.root.join(format!(
                "audit/audit-2024-05-01T10-00-{:02}.000.log",
                audit.rotations
            ));
            std::fs::rename(&audit.path, &to).unwrap();
            audit.rotated.push((to, audit.written));
        }

        // Gzip every rotated file but the newest, once the collector is past it.
        let indexer_up = rig.indexer.is_some();
        for (k, log) in logs
            .iter_mut()
            .chain(std::iter::once(&mut audit))
            .enumerate()
        {
            if log.rotated.len() < 2 || !indexer_up || step % 5 != 0 {
                continue;
            }
            let (oldest, end) = log.rotated[0].clone();
            let q = if k < FILES {
                format!(
                    "kubernetes.pod:fault\\-{k} AND message:\"fault {k} n{}\"",
                    end - 1
                )
            } else {
                format!("auditID:fault\\-{}", end - 1)
            };
            match indexed_since[k] {
                None if indexed(&rig, &q) => indexed_since[k] = Some(Instant::now()),
                Some(t) if t.elapsed() > Duration::from_millis(2500) => {
                    gzip(&oldest);
                    log.rotated.remove(0);
                    indexed_since[k] = None;
                }
                _ => {}
            }
        }

        // Once, copytruncate (logrotate's way) on the last file: after the
        // collector is past its end, copy it and cut it to zero.
        if step == 150 && !copytruncated && rig.indexer.is_some() {
            copytruncated = true;
            let k = FILES - 1;
            let log = &logs[k];
            let q = format!(
                "kubernetes.pod:fault\\-{k} AND message:\"fault {k} n{}\"",
                log.written - 1
            );
            wait_until("the file to copytruncate read", WAIT, || {
                indexed(&rig, &q).then_some(())
            });
            std::thread::sleep(Duration::from_millis(2500));
            std::fs::copy(&log.path, log.path.with_extension("log.1")).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log.path)
                .unwrap()
                .set_len(0)
                .unwrap();
        }

        // Indexer outages: a clean stop, and later a SIGKILL.
        match step {
            90 => rig.indexer.as_mut().unwrap().stop(),
            230 => rig.indexer.as_mut().unwrap().kill(),
            _ => {}
        }
        if step == 90 || step == 230 {
            rig.indexer = None;
        }
        if step == 130 || step == 270 {
            rig.start_indexer();
        }

        // SIGKILL the collector at random moments and start it again.
        if step == next_kill {
            rig.collector.as_mut().unwrap().kill();
            kills += 1;
            if rng.below(2) == 0 {
                // Sometimes stay down across writes.
                std::thread::sleep(Duration::from_millis(rng.below(400)));
            }
            if kills % 4 == 2 {
                // Down across a rotation and the gzip of the rotated file
                // (kubelet compresses older files; down across two
                // rotations, a file is compressed before it was read to its
                // end): its unacknowledged lines are only in the .gz now.
                let k = rng.below(FILES as u64) as usize;
                let log = &mut logs[k];
                log.rotations += 1;
                let to = log
                    .path
                    .with_extension(format!("log.20240501-1000{:02}", log.rotations));
                if log.path.exists() {
                    std::fs::rename(&log.path, &to).unwrap();
                    gzip(&to);
                    gzipped_unread += 1;
                }
            }
            rig.start_collector(&[]);
            next_kill = step + 3 + rng.below(12) as usize;
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(40)));
    }
    assert!(kills >= 20, "only {kills} kills");
    assert!(
        gzipped_unread >= 3,
        "only {gzipped_unread} files gzipped while the collector was down"
    );
    assert!(copytruncated);
    eprintln!("{kills} collector kills");

    // Every line exactly once: by count (wait_for_total fails on any excess)
    // and by the set of line numbers.
    for (k, log) in logs.iter().enumerate() {
        let q = format!("kubernetes.pod:fault\\-{k}");
        let body = rig.client.wait_for_total(&q, log.written as u64, WAIT);
        let numbers: BTreeSet<usize> = body["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let m = h["message"].as_str().unwrap();
                m.rsplit_once(" n").unwrap().1.parse().unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..log.written).collect(), "file {k}");
    }
    let body = rig
        .client
        .wait_for_total("source:audit", audit.written as u64, WAIT);
    let ids: BTreeSet<String> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["auditID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        (0..audit.written).map(|i| format!("fault-{i}")).collect()
    );
    // Kubelet's compression really happened while the test ran.
    assert!(
        std::fs::read_dir(logs[0].path.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".gz"))
    );
    rig.collector.as_mut().unwrap().stop();
}

/// Lines that do not compress to nothing, so the spool fills.
fn varied_lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| {
            let noise = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!(
                "2024-05-01T10:00:00.{i:09}Z stdout F {prefix} {i} {noise:016x} {:x}\n",
                noise.rotate_left(17)
            )
        })
        .collect()
}

#[test]
fn a_full_spool_pauses_reading_and_loses_nothing() {
    let mut rig = Rig::new();
    let lines = 8_000;
    let text = varied_lines("spooled", 0..lines);
    append(
        &rig.root.join("pods/prod_spool-0_uid/app/0.log"),
        text.as_bytes(),
    );
    // No indexer: batches go to a 30 kB spool, which fills.
    rig.start_collector(&["--spool-max-bytes", "30000", "--batch-max-bytes", "16384"]);
    let read_bytes = "ward_collector_bytes_read_total{source=\"container\"}";
    let paused = wait_until("reading to pause on the full spool", WAIT, || {
        let before = rig.metric(read_bytes);
        let spool = rig.metric("ward_collector_spool_bytes");
        std::thread::sleep(Duration::from_millis(700));
        (spool > 0.0 && rig.metric(read_bytes) == before && before > 0.0).then_some(before)
    });
    assert!(
        paused < text.len() as f64,
        "reading paused before the end: {paused} of {} bytes",
        text.len()
    );
    assert!(rig.metric("ward_collector_spool_bytes") <= 30000.0);
    assert!(rig.metric("ward_collector_checkpoint_lag_bytes") > 0.0);
    assert_eq!(rig.metric("ward_collector_records_dropped_total"), 0.0);

    rig.start_indexer();
    let body = rig
        .client
        .wait_for_total("kubernetes.pod:spool\\-0", lines as u64, WAIT);
    let numbers: BTreeSet<usize> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            h["message"]
                .as_str()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(numbers, (0..lines).collect());
    wait_until("spool drained", WAIT, || {
        (rig.metric("ward_collector_spool_bytes") == 0.0).then_some(())
    });
}

#[test]
fn with_spool_full_drop_what_is_dropped_is_counted() {
    let mut rig = Rig::new();
    let lines = 5_000;
    append(
        &rig.root.join("pods/prod_drop-0_uid/app/0.log"),
        varied_lines("dropped", 0..lines).as_bytes(),
    );
    rig.start_collector(&[
        "--spool-max-bytes",
        "30000",
        "--batch-max-bytes",
        "16384",
        "--spool-full",
        "drop",
    ]);
    // Reading does not pause: the whole file goes, spooled or dropped.
    let dropped = wait_until("everything read", WAIT, || {
        let dropped = rig.metric("ward_collector_records_dropped_total");
        let files_done = rig.metric("ward_collector_checkpoint_lag_bytes") == 0.0;
        (dropped > 0.0 && files_done).then_some(dropped as u64)
    });
    rig.start_indexer();
    wait_until("spool drained", WAIT, || {
        (rig.metric("ward_collector_spool_bytes") == 0.0).then_some(())
    });
    let kept = lines as u64 - dropped;
    rig.client
        .wait_for_total("kubernetes.pod:drop\\-0", kept, WAIT);
}
