//! The hash of persisted values: FNV-1a, 64 bits.
//!
//! Its values are stored (file fingerprints and hashes in the collector's
//! checkpoints, the indexer's `_tie` of every record, ids of raw webhook
//! items), so it must never change: unlike `DefaultHasher`, it is the same
//! across Rust versions and platforms. The tests pin its values.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over bytes written in parts (the same as over their concatenation).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(OFFSET_BASIS)
    }
}

impl Fnv64 {
    pub fn new() -> Fnv64 {
        Fnv64::default()
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes`.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(bytes);
    h.finish()
}

/// A hash as it is stored in text: 16 lower-case hex digits.
pub fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are in checkpoints and indexes on disk: if this test
    /// fails, the change breaks resuming and replay detection.
    #[test]
    fn persisted_values_are_pinned() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv64(b"0123456789abcdef:42"), 3_479_565_357_258_346_659);
        assert_eq!(hex(fnv64(b"foobar")), "85944171f73967e8");
        assert_eq!(hex(fnv64(b"")), "cbf29ce484222325");
        assert_eq!(hex(1), "0000000000000001");
    }

    #[test]
    fn parts_hash_like_their_concatenation() {
        let mut h = Fnv64::new();
        h.write(b"foo");
        h.write(b"");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv64(b"foobar"));
    }
}
