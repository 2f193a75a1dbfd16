//! Tailing correctness of `ward collector` against real files: rotation the
//! way kubelet and the API server do it, truncation, in-place rewrites,
//! inode reuse, files deleted while being read, and long or unfinished
//! container lines. Checked through the indexer's search API.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ward_e2e::{Rig, append, audit_lines, cri_lines, wait_until};

const WAIT: Duration = Duration::from_secs(60);

fn pod_file(rig: &Rig, pod: &str) -> PathBuf {
    rig.root
        .join(format!("pods/prod_{pod}_uid-{pod}/app/0.log"))
}

/// Asserts that `prefix i` for every i in `range` was indexed exactly once.
fn assert_each_once(rig: &Rig, q: &str, prefix: &str, range: std::ops::Range<usize>) {
    let got = rig.messages(q);
    for i in range {
        assert_eq!(got.get(&format!("{prefix} {i}")), Some(&1), "{prefix} {i}");
    }
}

#[test]
fn new_content_in_a_reused_inode_is_read_from_its_start() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "reuse");
    append(&f, cri_lines("old", 0..50).as_bytes());
    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:reuse", 50, WAIT);
    rig.collector.as_mut().unwrap().kill();

    // Same path, same inode, other content: File::create truncates in place.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&f);
    std::fs::File::create(&f)
        .unwrap()
        .write_all(cri_lines("new", 0..200).as_bytes())
        .unwrap();
    assert_eq!(ino(&f), before, "the test needs the inode reused");
    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:reuse", 250, WAIT);
    assert_each_once(&rig, "kubernetes.pod:reuse", "new", 0..200);
    assert_each_once(&rig, "kubernetes.pod:reuse", "old", 0..50);
}

#[test]
fn a_rewrite_keeping_the_first_line_is_caught_by_the_checkpoint_hash() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "rewrite");
    append(&f, cri_lines("old", 0..50).as_bytes());
    rig.start_collector(&[]);
    rig.client
        .wait_for_total("kubernetes.pod:rewrite", 50, WAIT);
    rig.collector.as_mut().unwrap().stop();

    // Same first line (so the same fingerprint), then other, longer content:
    // only the hash of the bytes before the saved offset tells.
    let mut text = cri_lines("old", 0..1);
    text.push_str(&cri_lines("again", 0..200));
    std::fs::File::create(&f)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    rig.start_collector(&[]);
    rig.client
        .wait_for_total("kubernetes.pod:rewrite", 50 + 201, WAIT);
    assert_each_once(&rig, "kubernetes.pod:rewrite", "again", 0..200);
    let got = rig.messages("kubernetes.pod:rewrite");
    assert_eq!(got.get("old 0"), Some(&2), "written twice, indexed twice");
    assert!(rig.metric("ward_collector_files_reset_total") >= 1.0);
}

#[test]
fn copytruncate_while_tailing_reads_the_new_content() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "copytrunc");
    append(&f, cri_lines("before", 0..100).as_bytes());
    rig.start_collector(&[]);
    rig.client
        .wait_for_total("kubernetes.pod:copytrunc", 100, WAIT);

    // logrotate's copytruncate: copy, then cut the live file to zero.
    std::fs::copy(&f, f.with_extension("log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&f, cri_lines("after", 0..30).as_bytes());
    rig.client
        .wait_for_total("kubernetes.pod:copytrunc", 130, WAIT);
    assert_each_once(&rig, "kubernetes.pod:copytrunc", "after", 0..30);
    assert_each_once(&rig, "kubernetes.pod:copytrunc", "before", 0..100);
    assert!(rig.metric("ward_collector_files_reset_total") >= 1.0);
}

#[test]
fn kubelet_and_api_server_rotation_lose_nothing_live_or_across_restarts() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "rot");
    let audit = rig.root.join("audit/audit.log");
    let events = |r: std::ops::Range<usize>| audit_lines("rot", r);
    append(&f, cri_lines("rot", 0..100).as_bytes());
    append(&audit, events(0..100).as_bytes());
    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:rot", 100, WAIT);

    // Live: the runtime still finishes writes to the renamed file, then
    // writes to a new one.
    let mut old = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::fs::rename(&f, f.with_extension("log.20240501-101010")).unwrap();
    old.write_all(cri_lines("rot", 100..110).as_bytes())
        .unwrap();
    drop(old);
    append(&f, cri_lines("rot", 110..150).as_bytes());
    std::fs::rename(
        &audit,
        rig.root.join("audit/audit-2024-05-01T10-10-10.000.log"),
    )
    .unwrap();
    append(&audit, events(100..150).as_bytes());
    rig.client.wait_for_total("kubernetes.pod:rot", 150, WAIT);
    rig.client.wait_for_total("requestURI:*rot*", 150, WAIT);

    // Down: lines land in the file, which is rotated before the collector
    // is back; at start it finds the rotated file through its checkpoint.
    rig.collector.as_mut().unwrap().kill();
    append(&f, cri_lines("rot", 150..200).as_bytes());
    append(&audit, events(150..200).as_bytes());
    std::fs::rename(&f, f.with_extension("log.20240501-111111")).unwrap();
    std::fs::rename(
        &audit,
        rig.root.join("audit/audit-2024-05-01T11-11-11.000.log"),
    )
    .unwrap();
    append(&f, cri_lines("rot", 200..220).as_bytes());
    append(&audit, events(200..220).as_bytes());
    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:rot", 220, WAIT);
    rig.client.wait_for_total("requestURI:*rot*", 220, WAIT);
    assert_each_once(&rig, "kubernetes.pod:rot", "rot", 0..220);
    let uris = rig.client.search("requestURI:*rot*", 10_000);
    let mut seen: Vec<String> = uris["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requestURI"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 220, "every audit event once");
}

fn gzip(path: &Path) {
    let status = std::process::Command::new("gzip")
        .arg("-f")
        .arg(path)
        .status()
        .expect("run gzip");
    assert!(status.success(), "gzip {}", path.display());
}

#[test]
fn a_rotated_file_gzipped_before_it_was_read_to_its_end_is_read_from_the_gzip() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "gz");
    let audit = rig.root.join("audit/audit.log");
    let events = |r: std::ops::Range<usize>| audit_lines("gz", r);
    append(&f, cri_lines("gz", 0..100).as_bytes());
    append(&audit, events(0..100).as_bytes());
    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:gz", 100, WAIT);
    rig.client.wait_for_total("requestURI:*gz*", 100, WAIT);
    // SIGKILL at once: the checkpoint of these lines may not be saved yet
    // (every second), but the file's identity was saved before they were
    // sent, so the .gz is still matched to them (same ids, no duplicates).
    rig.collector.as_mut().unwrap().kill();

    // While the collector is down: more lines, then rotation and gzip, so
    // that they are only in the .gz; then lines in the new file.
    append(&f, cri_lines("gz", 100..300).as_bytes());
    append(&audit, events(100..300).as_bytes());
    let rotated = f.with_extension("log.20240501-120000");
    std::fs::rename(&f, &rotated).unwrap();
    gzip(&rotated);
    let audit_rotated = rig.root.join("audit/audit-2024-05-01T12-00-00.000.log");
    std::fs::rename(&audit, &audit_rotated).unwrap();
    gzip(&audit_rotated);
    append(&f, cri_lines("gz", 300..350).as_bytes());
    append(&audit, events(300..350).as_bytes());
    // A file written, rotated and compressed while the collector was down:
    // no checkpoint knows it, and it is recent, so it is read whole.
    let new = pod_file(&rig, "gznew");
    append(&new, cri_lines("gznew", 0..40).as_bytes());
    let new_rotated = new.with_extension("log.20240501-120000");
    std::fs::rename(&new, &new_rotated).unwrap();
    gzip(&new_rotated);
    append(&new, cri_lines("gznew", 40..50).as_bytes());
    // An old compressed file no checkpoint knows: read and forgotten long
    // ago (or older than the collector), not read again.
    let old = pod_file(&rig, "gzold");
    append(&old, cri_lines("gzold", 0..30).as_bytes());
    let old_rotated = old.with_extension("log.20240101-000000");
    std::fs::rename(&old, &old_rotated).unwrap();
    gzip(&old_rotated);
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(7 * 3600);
    std::fs::File::options()
        .write(true)
        .open(old.with_extension("log.20240101-000000.gz"))
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    append(&old, cri_lines("gzold", 30..35).as_bytes());
    assert!(!rotated.exists() && !audit_rotated.exists() && !new_rotated.exists());

    rig.start_collector(&[]);
    rig.client.wait_for_total("kubernetes.pod:gz", 350, WAIT);
    rig.client.wait_for_total("requestURI:*gz*", 350, WAIT);
    rig.client.wait_for_total("kubernetes.pod:gznew", 50, WAIT);
    assert_each_once(&rig, "kubernetes.pod:gz", "gz", 0..350);
    assert_each_once(&rig, "kubernetes.pod:gznew", "gznew", 0..50);
    let uris = rig.client.search("requestURI:*gz*", 10_000);
    let mut seen: Vec<String> = uris["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requestURI"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 350);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 350, "every audit event once");
    rig.client.wait_for_total("kubernetes.pod:gzold", 5, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_each_once(&rig, "kubernetes.pod:gzold", "gzold", 30..35);
    assert_eq!(rig.messages("kubernetes.pod:gzold").len(), 5);
}

/// The fault test lost the last lines of a file renamed and gzipped while
/// the collector was down: kubelet creates the new file only on the
/// container's next write, so at start nothing was at the live path, the
/// once-only scan for rotated siblings passed that directory by, and the
/// .gz, whose end was never acknowledged, was never read.
#[test]
fn a_file_gzipped_while_down_is_read_when_nothing_is_at_its_path_at_start() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "gzgone");
    append(&f, cri_lines("gzgone", 0..100).as_bytes());
    rig.start_collector(&[]);
    rig.client
        .wait_for_total("kubernetes.pod:gzgone", 100, WAIT);
    // Past a checkpoint save (every second), so the .gz is resumed from it.
    std::thread::sleep(Duration::from_millis(1500));
    rig.collector.as_mut().unwrap().kill();

    append(&f, cri_lines("gzgone", 100..200).as_bytes());
    let rotated = f.with_extension("log.20240501-130000");
    std::fs::rename(&f, &rotated).unwrap();
    gzip(&rotated);
    assert!(!f.exists());

    rig.start_collector(&[]);
    rig.client
        .wait_for_total("kubernetes.pod:gzgone", 200, WAIT);
    append(&f, cri_lines("gzgone", 200..210).as_bytes());
    rig.client
        .wait_for_total("kubernetes.pod:gzgone", 210, WAIT);
    assert_each_once(&rig, "kubernetes.pod:gzgone", "gzgone", 0..210);
}

const PADDED: &str = "deleted line with some padding to make it longer";

/// The collector reads with the indexer away and a tiny spool, so it holds
/// the file open with reading paused; the test deletes the file meanwhile.
fn paused_on_a_deleted_file(extra: &[&str]) -> (Rig, usize, u64) {
    let mut rig = Rig::new();
    let f = pod_file(&rig, "deleted");
    let lines = 8_000;
    let text = cri_lines(PADDED, 0..lines);
    append(&f, text.as_bytes());
    let mut args = vec!["--spool-max-bytes", "20000", "--batch-max-bytes", "16384"];
    args.extend_from_slice(extra);
    rig.start_collector(&args);
    wait_until("reading paused on a full spool", WAIT, || {
        (rig.metric("ward_collector_spool_bytes") > 0.0
            && rig.metric("ward_collector_files_tracked") == 1.0)
            .then_some(())
    });
    let read = rig.metric("ward_collector_bytes_read_total{source=\"container\"}");
    assert!(
        read < text.len() as f64,
        "reading must have paused before the end ({read} of {} bytes read)",
        text.len()
    );
    std::fs::remove_file(&f).expect("delete the file");
    (rig, lines, text.len() as u64)
}

#[test]
fn a_file_deleted_while_being_read_is_read_to_its_end() {
    let (mut rig, lines, _) = paused_on_a_deleted_file(&[]);
    rig.start_indexer();
    rig.client
        .wait_for_total("kubernetes.pod:deleted", lines as u64, WAIT);
    assert_each_once(&rig, "kubernetes.pod:deleted", PADDED, 0..lines);
    wait_until("the deleted file let go", WAIT, || {
        (rig.metric("ward_collector_files_tracked") == 0.0).then_some(())
    });
    assert_eq!(rig.metric("ward_collector_bytes_abandoned_total"), 0.0);
}

#[test]
fn a_deleted_file_not_read_within_the_bound_is_counted_as_abandoned() {
    let (mut rig, lines, total_bytes) = paused_on_a_deleted_file(&["--orphan-max-age", "1s"]);
    let abandoned = wait_until("bytes counted as abandoned", WAIT, || {
        let b = rig.metric("ward_collector_bytes_abandoned_total");
        (b > 0.0 && rig.metric("ward_collector_files_tracked") == 0.0).then_some(b as u64)
    });
    // What was read before the bound arrives; with what was given up on, it
    // makes up the whole file, byte for byte.
    let read = (0..=lines)
        .find(|k| cri_lines(PADDED, 0..*k).len() as u64 + abandoned == total_bytes)
        .expect("abandoned bytes end at a line boundary");
    assert!(read < lines);
    rig.start_indexer();
    rig.client
        .wait_for_total("kubernetes.pod:deleted", read as u64, WAIT);
    assert_each_once(&rig, "kubernetes.pod:deleted", PADDED, 0..read);
}

#[test]
fn a_one_mebibyte_line_and_a_partial_line_open_at_rotation() {
    let mut rig = Rig::new();
    rig.start_indexer();
    let f = pod_file(&rig, "long");
    let part = "x".repeat(16 * 1024);
    let mut text = String::new();
    for i in 0..64 {
        let tag = if i == 63 { "F" } else { "P" };
        text.push_str(&format!(
            "2024-05-01T10:00:00.{i:09}Z stdout {tag} {part}\n"
        ));
    }
    text.push_str("2024-05-01T10:00:01Z stderr P left open at rotation\n");
    append(&f, text.as_bytes());
    rig.start_collector(&[]);
    std::fs::rename(&f, f.with_extension("log.20240501-101010")).unwrap();
    append(&f, cri_lines("next", 0..3).as_bytes());
    rig.client.wait_for_total("kubernetes.pod:long", 5, WAIT);
    let long = rig.messages("kubernetes.pod:long AND stream:stdout");
    assert_eq!(long.len(), 4, "one long line and three short ones");
    assert!(
        long.keys()
            .any(|m| m.len() == 1024 * 1024 && m.bytes().all(|b| b == b'x')),
        "the 1 MiB line merged whole"
    );
    let open = rig
        .client
        .search("kubernetes.pod:long AND ward.flags:unterminated", 10);
    assert_eq!(open["total"], 1);
    assert_eq!(open["hits"][0]["message"], "left open at rotation");
}
