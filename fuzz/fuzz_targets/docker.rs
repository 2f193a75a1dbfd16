//! `ward_event::docker::parse` on arbitrary bytes: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(chunk) = ward_event::docker::parse(data) {
        // The message is at most the decoded `log` value, which is shorter
        // than its JSON line.
        assert!(chunk.message.len() < data.len());
    }
});
