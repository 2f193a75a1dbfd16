//! `ward_indexer::query::parse` on arbitrary strings, and
//! `ward_indexer::compile::compile` against Ward's schema when it parses.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_indexer::schema::WardSchema;

static SCHEMA: OnceLock<WardSchema> = OnceLock::new();

fuzz_target!(|text: &str| {
    let schema = SCHEMA.get_or_init(WardSchema::new);
    match ward_indexer::query::parse(text) {
        Ok(query) => {
            let _ = ward_indexer::compile::compile(schema, &query);
        }
        Err(e) => {
            // Errors are for humans: they must render.
            let _ = e.to_string();
        }
    }
});
