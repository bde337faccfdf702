//! Fixed, seedless hashing: xxh3 for bytes, a cheap mixer for combining hashes, and an identity
//! `BuildHasher` for keys that already are hashes. Nothing here depends on a random seed, so
//! output never depends on the run.

use std::hash::{BuildHasherDefault, Hasher};

/// xxh3-64 of bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Combines a running hash with the next element's (order-sensitive).
#[inline]
pub fn mix(acc: u64, next: u64) -> u64 {
    // A multiply by an odd 64-bit constant and a rotate spread every input bit; xxh3's own
    // finalizer would cost more per word for no measurable gain in collisions at these sizes.
    (acc.rotate_left(23) ^ next).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Hasher that passes a `u64` through, for maps keyed by hashes.
#[derive(Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only used with u64/u32 keys; fold anything else so it still works.
        for &b in bytes {
            self.0 = mix(self.0, u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `BuildHasher` for [`IdentityHasher`].
pub type IdentityBuild = BuildHasherDefault<IdentityHasher>;
