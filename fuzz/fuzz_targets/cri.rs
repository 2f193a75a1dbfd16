//! `ward_event::cri::parse` on arbitrary bytes: never panics, and what it
//! accepts is consistent with the line it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(chunk) = ward_event::cri::parse(data) {
        // The message is a suffix of the line (borrowed, never rewritten).
        assert!(data.ends_with(&chunk.message));
        assert!(chunk.message.len() < data.len());
    }
});
