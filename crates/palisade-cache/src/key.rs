//! [`Keyer`]: which cache entry a request reads and writes, and what it
//! allows ([`Lookup`]).

/// A request's place in the cache, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The entry: requests that must get the same answer share it.
    pub key: u128,
    /// Whether a fresh hit may answer it without a call (for LLM calls:
    /// only when the answer is deterministic, temperature 0).
    pub fresh: bool,
    /// Whether it asks for a stream: streams are not coalesced (a waiter
    /// would see nothing until the whole answer was in), and a cached
    /// answer is replayed in the form asked for.
    pub stream: bool,
}

impl Lookup {
    /// A lookup of `key`: fresh hits allowed, not a stream.
    pub fn new(key: u128) -> Self {
        Lookup {
            key,
            fresh: true,
            stream: false,
        }
    }
}

/// Finds a request's cache entry, or says it is not to be cached (`None`:
/// the caller asked for `no-store`, or the request cannot be keyed).
///
/// Closures `Fn(&Req) -> Option<Lookup>` are keyers.
///
/// ```
/// use palisade_cache::{Keyer, Lookup};
///
/// let by_prompt = |prompt: &String| Some(Lookup::new(palisade_cache::hash_bytes(prompt.as_bytes())));
/// assert_eq!(by_prompt.lookup(&"hi".to_string()), by_prompt.lookup(&"hi".to_string()));
/// assert_ne!(by_prompt.lookup(&"hi".to_string()), by_prompt.lookup(&"ho".to_string()));
/// ```
pub trait Keyer<Req>: Clone {
    /// The request's entry, or `None` to pass it by the cache.
    fn lookup(&self, req: &Req) -> Option<Lookup>;
}

impl<Req, F: Fn(&Req) -> Option<Lookup> + Clone> Keyer<Req> for F {
    fn lookup(&self, req: &Req) -> Option<Lookup> {
        self(req)
    }
}

/// A 128-bit hash of `bytes` (two independent 64-bit FNV-1a-style lanes,
/// each finished with a SplitMix64 mix): stable across runs and
/// processes, so keys can be compared between replicas and in tests.
/// Not a cryptographic hash; with 128 bits, distinct prompts do not
/// collide in practice.
pub fn hash_bytes(bytes: &[u8]) -> u128 {
    let mut h = Hasher128::new();
    h.write(bytes);
    h.finish()
}

/// The incremental form of [`hash_bytes`].
#[derive(Debug, Clone)]
pub(crate) struct Hasher128 {
    a: u64,
    b: u64,
}

impl Hasher128 {
    pub(crate) fn new() -> Self {
        Hasher128 {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x6c62_272e_07bb_0142,
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &x in bytes {
            self.a = (self.a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
            self.b = (self.b ^ u64::from(x)).wrapping_mul(0x0000_0001_0000_01b3 | 1 << 40);
        }
    }

    /// A separator between fields, so `["ab", "c"]` and `["a", "bc"]`
    /// differ.
    pub(crate) fn sep(&mut self, tag: u8) {
        self.write(&[0xff, tag]);
    }

    pub(crate) fn finish(&self) -> u128 {
        let a = palisade_core::splitmix64(self.a);
        let b = palisade_core::splitmix64(self.b ^ palisade_core::SPLITMIX_GAMMA);
        (u128::from(a) << 64) | u128::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_and_separates_fields() {
        assert_eq!(hash_bytes(b"hello"), hash_bytes(b"hello"));
        assert_ne!(hash_bytes(b"hello"), hash_bytes(b"hellp"));
        let mut x = Hasher128::new();
        x.write(b"ab");
        x.sep(1);
        x.write(b"c");
        let mut y = Hasher128::new();
        y.write(b"a");
        y.sep(1);
        y.write(b"bc");
        assert_ne!(x.finish(), y.finish());
    }
}

/// Hashes a cache key (already a 128-bit hash, or any number a keyer
/// chose) into a map's 64 bits with one SplitMix64 mix: the maps of keys
/// need no SipHash.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = palisade_core::splitmix64(self.0 ^ u64::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, key: u128) {
        let (low, high) = (key as u64, (key >> 64) as u64);
        self.0 = palisade_core::splitmix64(self.0 ^ low ^ high.rotate_left(29));
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;
