//! Replays in bounded memory (issue 23): records resent after they left the
//! replay window, days later or after a restart, are still stored once; a
//! full window still catches repeats; a live stream costs no lookups; and a
//! restart reads no keys.

// Test helpers outside #[test] functions may unwrap too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, Utc};
use ward_event::wire::{self, BatchWriter};
use ward_event::{Record, SourceKind};
use ward_indexer::{Store, StoreConfig};

/// Container records `from..to` of one file, 10 ms apart from `start`
/// (so a second holds a hundred of them).
fn records(
    start: DateTime<Utc>,
    from: usize,
    to: usize,
) -> Vec<Record<serde_json::Map<String, serde_json::Value>>> {
    let mut w = BatchWriter::new();
    for i in from..to {
        w.push(&Record {
            id: format!("fp-1:{}", i * 100),
            source: SourceKind::Container,
            timestamp: start + Duration::milliseconds(i as i64 * 10),
            cluster: Some("test".into()),
            node: Some("node-1".into()),
            flags: Vec::new(),
            parse_error: None,
            file: Some("/var/log/pods/ns_p_uid/app/0.log".into()),
            offset: Some(i as u64 * 100),
            event: serde_json::json!({"message": format!("line {i}")})
                .as_object()
                .unwrap()
                .clone(),
        })
        .unwrap();
    }
    wire::decode(&w.take()).unwrap()
}

fn config(dir: &std::path::Path, window: usize) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.replay_window = window;
    config
}

fn lookups(store: &Store) -> u64 {
    store.stats().replay_lookups.load(Ordering::Relaxed)
}

fn start() -> DateTime<Utc> {
    // Mid-morning of today, so that retention and day ends stay out of it.
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    today + Duration::hours(1)
}

async fn ingest_in_batches(store: &Store, start: DateTime<Utc>, from: usize, to: usize) {
    for a in (from..to).step_by(100) {
        let r = store
            .ingest(records(start, a, (a + 100).min(to)))
            .await
            .unwrap();
        assert_eq!(r.duplicates, 0, "records {a}.. are new");
    }
}

#[tokio::test]
async fn a_replay_after_the_window_is_recognised_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 100)).unwrap();
    let t = start();
    ingest_in_batches(&store, t, 0, 1_000).await;
    assert_eq!(lookups(&store), 0, "a live stream looks nothing up");
    assert_eq!(
        store.stats().replay_window_keys.load(Ordering::Relaxed),
        100,
        "the window holds its capacity, not the partition"
    );

    // Long out of the window: found in the index, all of them.
    let again = store.ingest(records(t, 0, 300)).await.unwrap();
    assert_eq!((again.records, again.duplicates), (300, 300));
    assert!(lookups(&store) >= 300, "{} lookups", lookups(&store));
    // Half replayed, half new, in one batch.
    let mixed = store.ingest(records(t, 950, 1_050)).await.unwrap();
    assert_eq!(mixed.duplicates, 50);
    assert_eq!(store.num_docs(), 1_050);
    store.shutdown().await;
}

#[tokio::test]
async fn a_replay_days_later_after_a_restart_is_recognised_without_reading_keys() {
    let dir = tempfile::tempdir().unwrap();
    let days_ago = start() - Duration::days(3);
    let store = Store::open(config(dir.path(), 1_000)).unwrap();
    ingest_in_batches(&store, days_ago, 0, 2_000).await;
    store.shutdown().await;
    drop(store);

    let store = Store::open(config(dir.path(), 1_000)).unwrap();
    // A new record for that day: the partition opens for writing, and its
    // window holds that record alone (no key was read at opening).
    let new = store.ingest(records(days_ago, 5_000, 5_001)).await.unwrap();
    assert_eq!(new.duplicates, 0);
    assert_eq!(store.stats().replay_window_keys.load(Ordering::Relaxed), 1);
    // The whole day again, as a spool draining days later would send it.
    for a in (0..2_000).step_by(500) {
        let r = store.ingest(records(days_ago, a, a + 500)).await.unwrap();
        assert_eq!(r.duplicates, 500, "records {a}..");
    }
    assert_eq!(store.num_docs(), 2_001);
    store.shutdown().await;
}

#[tokio::test]
async fn a_full_window_still_catches_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 10)).unwrap();
    let t = start();
    // Every record twice in one batch, ten times the window: uncommitted
    // keys are never evicted.
    let mut twice = records(t, 0, 100);
    twice.extend(records(t, 0, 100));
    let r = store.ingest(twice).await.unwrap();
    assert_eq!((r.records, r.duplicates), (200, 100));
    let r = store.ingest(records(t, 0, 100)).await.unwrap();
    assert_eq!(r.duplicates, 100);
    // Two batches in the same commit window, the second a resend of the
    // first before it committed.
    let (a, b) = tokio::join!(
        store.ingest(records(t, 100, 200)),
        store.ingest(records(t, 100, 200))
    );
    assert_eq!(a.unwrap().duplicates + b.unwrap().duplicates, 100);
    assert_eq!(store.num_docs(), 200);
    store.shutdown().await;
}
