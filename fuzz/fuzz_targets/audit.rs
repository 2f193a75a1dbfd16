//! `ward_event::audit::parse_line` and `parse_body` on arbitrary UTF-8:
//! never panic, never lose an item, and every event they accept is JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_event::audit::{self, Parsed};

fn check(items: &[Parsed<'_>]) {
    for item in items {
        match item {
            Parsed::Event { raw, .. } => {
                assert!(
                    serde_json::from_str::<serde_json::Value>(raw).is_ok(),
                    "an accepted event is not JSON: {raw:?}"
                );
            }
            Parsed::Invalid { .. } => {}
        }
    }
}

fuzz_target!(|text: &str| {
    let items = audit::parse_line(text);
    // parse_line never fails: at worst one Invalid item carrying the line.
    // (An empty EventList yields no items.)
    check(&items);
    if let Ok(items) = audit::parse_body(text) {
        check(&items);
    }
});
