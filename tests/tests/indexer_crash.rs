//! Durable acknowledgements and exactly-once storage under SIGKILL: a client
//! streams numbered events and resends whatever was not acknowledged while
//! the indexer is killed at random moments; at the end every event is
//! searchable exactly once.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ward_e2e::{Client, free_port, start_indexer, ward_bin};

const KILLS: usize = 20;
const BATCH: usize = 40;

fn batch(first: usize) -> String {
    (first..first + BATCH)
        .map(|n| {
            format!(
                "{{\"id\":\"crash-test:{n}\",\"source\":\"container\",\"timestamp\":\"2024-05-01T00:00:00.{n:09}Z\",\"node\":\"n1\",\"event\":{{\"message\":\"event {n}\",\"kubernetes\":{{\"pod\":\"crash\"}}}}}}\n"
            )
        })
        .collect()
}

#[test]
fn every_acknowledged_event_is_searchable_exactly_once_after_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Chains signed with a key: the SIGKILLs must leave them verifiable.
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, "a key of at least sixteen bytes\n").unwrap();
    let extra = ["--hmac-key".to_string(), key.display().to_string()];
    let mut indexer = start_indexer(&format!("indexer-{}", 0), dir.path(), port, &extra);
    Client::new(&url).wait_healthy(Duration::from_secs(60));

    let stop = Arc::new(AtomicBool::new(false));
    let acked_batches = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, acked_batches, url) = (stop.clone(), acked_batches.clone(), url.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut next = 0usize;
            let mut resends = 0usize;
            // Keep sending until told to stop, and then until the last batch is acknowledged.
            loop {
                let body = batch(next);
                let ok = http
                    .post(format!("{url}/api/v1/ingest"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    next += BATCH;
                    acked_batches.fetch_add(1, Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst) {
                        return (next, resends);
                    }
                } else {
                    resends += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };

    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut rand_ms = |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    for run in 1..=KILLS {
        // Let some batches through, then kill at a random moment.
        let before = acked_batches.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked_batches.load(Ordering::SeqCst) < before + 2 {
            assert!(Instant::now() < deadline, "no progress before kill {run}");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rand_ms(0, 400)));
        indexer.kill();
        indexer = start_indexer(&format!("indexer-{}", run), dir.path(), port, &extra);
        Client::new(&url).wait_healthy(Duration::from_secs(60));
    }
    stop.store(true, Ordering::SeqCst);
    let (sent, resends) = sender.join().unwrap();
    assert!(resends > 0, "the kills must have interrupted some batches");

    let client = Client::new(&url);
    let body = client.wait_for_total("kubernetes.pod:crash", sent as u64, Duration::from_secs(30));
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for hit in body["hits"].as_array().unwrap() {
        let n: usize = hit["message"]
            .as_str()
            .unwrap()
            .trim_start_matches("event ")
            .parse()
            .unwrap();
        *seen.entry(n).or_default() += 1;
    }
    assert_eq!(seen.len(), sent);
    assert!(seen.iter().all(|(n, c)| *n < sent && *c == 1));
    indexer.stop();

    // Every commit the kills interrupted left either a whole chain entry
    // or none: the hash chains verify, signed, against the stored events.
    let out = std::process::Command::new(ward_bin())
        .args(["verify", "--data"])
        .arg(dir.path().join("data"))
        .arg("--hmac-key")
        .arg(&key)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("2024-05-01  intact      "), "{report}");
    assert!(report.contains(&format!(", {sent} records")), "{report}");
}
