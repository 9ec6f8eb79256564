//! The one stable (not randomised) hash of the workspace: FNV-1a, 64 bit
//! (and its 32-bit sibling for short name suffixes).
//!
//! Stable means the same bytes give the same value in every process and
//! release, which is what persisted names need: alert ids and anomaly
//! shape buckets survive restarts, profile file names are collision-safe.
//! It is not collision-resistant against an attacker: anything that decides
//! what to drop or trust on attacker-chosen input (the edge filter's digest)
//! uses the keyed digest hash of `kestrel-profile` instead. Small lookup
//! tables keyed by rule authors' strings use it through [`FnvMap`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(OFFSET)
    }
}

impl Fnv64 {
    /// A hasher at the FNV offset basis.
    pub fn new() -> Self {
        Fnv64::default()
    }

    /// Adds one field followed by a separator, so that `("ab", "c")` and
    /// `("a", "bc")` differ.
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(PRIME);
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
    }
}

/// A hash map with [`Fnv64`]: cheaper than SipHash on short keys; only for
/// keys an attacker does not choose.
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv64>>;

/// The stable hash of one byte string.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(bytes);
    h.finish()
}

/// FNV-1a, 32 bit: 8 hex digits that keep object names distinct
/// (`kestrel_api::object_name`); changing it renames stored objects.
pub fn stable_hash32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_published_fnv1a_ones() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(stable_hash32(b""), 0x811c_9dc5);
        assert_eq!(stable_hash32(b"a"), 0xe40c_292c);
        assert_eq!(stable_hash32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn fields_are_framed() {
        let mut a = Fnv64::new();
        a.write_field(b"ab");
        a.write_field(b"c");
        let mut b = Fnv64::new();
        b.write_field(b"a");
        b.write_field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
