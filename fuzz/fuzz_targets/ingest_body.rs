//! An ingest request body: bounded zstd decompression, then NDJSON decoding.
//! Never panics; never returns more than the limit.
//!
//! Run with `-malloc_limit_mb=…` (see README.md) to also catch allocations
//! far past the limit (the zstd window a crafted frame header asks for).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_event::wire;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the path: most inputs are not valid zstd, so
    // also decode the raw bytes as NDJSON (what an uncompressed body gets).
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        match wire::decompress(body, LIMIT) {
            Ok(ndjson) => {
                assert!(
                    ndjson.len() <= LIMIT,
                    "{} bytes past the limit",
                    ndjson.len()
                );
                let _ = wire::decode(&ndjson);
            }
            Err(ward_event::Error::TooLarge { limit }) => assert_eq!(limit, LIMIT),
            Err(_) => {}
        }
    } else if let Ok(records) = wire::decode(body) {
        // What decodes must encode again (the indexer stores it).
        for record in records {
            assert!(serde_json::to_vec(&record).is_ok());
        }
    }
});
