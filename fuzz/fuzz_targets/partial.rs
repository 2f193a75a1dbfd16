//! Arbitrary CRI-ish lines through `ward_event::partial::PartialMerger`.
//!
//! Invariants: every message byte that goes in comes out (per stream, in
//! order), and no emitted piece is longer than the merger's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_event::Stream;
use ward_event::cri;
use ward_event::partial::PartialMerger;

fuzz_target!(|data: &[u8]| {
    let Some((&bound, lines)) = data.split_first() else {
        return;
    };
    // Small bounds exercise splitting; the merger raises bounds below 4 to 4.
    let bound = usize::from(bound % 64);
    let effective = bound.max(4);
    let mut merger = PartialMerger::new(bound);
    let mut input: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in lines.split(|&b| b == b'\n') {
        if let Ok(chunk) = cri::parse(line) {
            input[chunk.stream as usize].extend_from_slice(&chunk.message);
            merger.push(offset, chunk, &mut out);
        }
        offset += line.len() as u64 + 1;
    }
    merger.flush(&mut out);
    assert_eq!(
        merger.oldest_open_offset(),
        None,
        "flush leaves nothing open"
    );
    let mut output: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for line in &out {
        assert!(
            line.message.len() <= effective,
            "piece of {} bytes over the bound {effective}",
            line.message.len()
        );
        output[line.stream as usize].extend_from_slice(&line.message);
    }
    let total_in: usize = input.iter().map(Vec::len).sum();
    let total_out: usize = out.iter().map(|l| l.message.len()).sum();
    assert_eq!(total_in, total_out, "bytes in == bytes out");
    for stream in [Stream::Stdout, Stream::Stderr] {
        assert_eq!(
            input[stream as usize], output[stream as usize],
            "{stream:?} bytes come out in order"
        );
    }
});
