//! Ingest regression benchmark (criterion): Ward's end-to-end ingest and raw
//! tantivy indexing of the same documents, on the replicated audit fixtures.
//!
//! ```text
//! cargo bench -p ward-indexer --bench ingest
//! WARD_BENCH_EVENTS=20000 cargo bench -p ward-indexer --bench ingest   # quicker
//! ```
//!
//! The one-shot 1M-event comparison is `examples/ingest_bench.rs`.

mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use support::Settings;
use ward_indexer::schema::WardSchema;

fn events() -> usize {
    std::env::var("WARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn ingest(c: &mut Criterion) {
    let events = events();
    let corpus = support::corpus(events);
    let settings = Settings::default();
    let schema = WardSchema::new();
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("ward_end_to_end", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("temporary directory");
                total += support::run_ward(&corpus, &settings, dir.path())
                    .ingest
                    .wall;
            }
            total
        })
    });
    group.bench_function("raw_tantivy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (docs, _) = support::build_documents(&corpus, &schema);
                let dir = tempfile::tempdir().expect("temporary directory");
                total += support::run_raw(docs, &settings, dir.path(), true)
                    .index
                    .wall;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
