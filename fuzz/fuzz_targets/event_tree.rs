//! Event trees (`ward_event::tree`, what the indexer and the rules use) against serde_json's
//! `Value`, on arbitrary bytes: the same texts parse, and a tree writes
//! exactly the JSON its `Value` writes. Replay keys hash those bytes, so a
//! difference would let a replayed event be stored twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ward_event::tree::{Node, Object};

/// A key serde_json's `Value` takes as a marker of its `RawValue` (with
/// the `raw_value` feature, which Ward's build enables) and not as a key:
/// the only text where the two may differ, by design. A tree keeps it as
/// the key it is.
const RAW_VALUE_TOKEN: &[u8] = b"$serde_json::private::RawValue";

fuzz_target!(|data: &[u8]| {
    if data.windows(RAW_VALUE_TOKEN.len()).any(|w| w == RAW_VALUE_TOKEN) {
        return;
    }
    let value = serde_json::from_slice::<Value>(data);
    let node = serde_json::from_slice::<Node>(data);
    assert_eq!(value.is_ok(), node.is_ok(), "{value:?} / {node:?}");
    if let (Ok(value), Ok(node)) = (value, node) {
        let mut written = Vec::new();
        node.write_json(&mut written);
        assert_eq!(written, serde_json::to_vec(&value).unwrap());
        assert_eq!(node.to_value(), value);
        assert_eq!(Node::of_value(&value), node);
        // An event (a record's body) is an object and nothing else.
        let object = serde_json::from_slice::<Object>(data);
        assert_eq!(object.is_ok(), value.is_object());
    }
});
