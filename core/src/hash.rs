//! A fast seeded hasher for sharded maps on the hot path.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use crate::time::mix64;

/// A fast keyed hash (SplitMix64's finaliser over 8-byte words) with a random seed per
/// instance: one cheap hash picks a shard and a bucket, where SipHash costs as much as the
/// rest of a lookup. The seed keeps collisions unpredictable to a caller who chooses keys;
/// distinct `u64` keys never collide in full (the mixer is a bijection). Used by the keyed
/// rate limiter's store and the stale cache's shards.
///
/// ```
/// use std::hash::BuildHasher;
/// use palisade_core::hash::SeededHasher;
///
/// let h = SeededHasher::new();
/// assert_ne!(h.hash_one("a"), h.hash_one("a\0"));
/// assert_eq!(h.hash_one(7u64), h.clone().hash_one(7u64));
/// ```
#[derive(Debug, Clone)]
pub struct SeededHasher {
    seed: u64,
}

impl SeededHasher {
    /// A hasher with a fresh random seed.
    pub fn new() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x5EED_u64),
        }
    }
}

impl Default for SeededHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for SeededHasher {
    type Hasher = WordHasher;

    #[inline]
    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.seed)
    }
}

/// The hasher of [`SeededHasher`]: mixes each 8-byte word into its state.
#[derive(Debug)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length in the top byte: "a" and "a\0" differ.
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = mix64(self.0 ^ n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}
