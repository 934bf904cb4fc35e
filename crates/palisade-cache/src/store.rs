//! [`Store`]: the bounded, concurrent home of cached answers
//! (quick_cache), with each answer's age on tokio's clock.
//!
//! quick_cache over moka: measured on this machine with 100 000 entries,
//! one thread, a hit costs 27 ns against moka's 364 ns and an insert
//! 174 ns against 2 µs. A hit takes its shard's read lock (shared, never a
//! `Mutex`); eviction is CLOCK-Pro by weight (bytes).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A stored answer and when it was stored.
#[derive(Debug)]
pub(crate) struct Stored<E> {
    pub(crate) entry: E,
    pub(crate) at: Instant,
    weight: u64,
}

impl<E> Stored<E> {
    pub(crate) fn age(&self) -> Duration {
        self.at.elapsed()
    }
}

/// An entry weighs what its answer weighed when stored.
#[derive(Debug, Clone, Copy)]
struct ByWeight;

impl<E> quick_cache::Weighter<u128, Arc<Stored<E>>> for ByWeight {
    fn weight(&self, _: &u128, v: &Arc<Stored<E>>) -> u64 {
        v.weight
    }
}

/// Answers by key, bounded by their total weight (bytes); an entry older
/// than `keep_for` (by tokio's clock) is never served, and is dropped when
/// met.
pub(crate) struct Store<E> {
    map: quick_cache::sync::Cache<u128, Arc<Stored<E>>, ByWeight>,
    keep_for: Duration,
}

impl<E: Send + Sync + 'static> Store<E> {
    pub(crate) fn new(max_bytes: u64, keep_for: Duration) -> Self {
        // Sized for answers of half a kilobyte; it grows if they are
        // smaller.
        let items = (max_bytes / 512).clamp(16, 1 << 22) as usize;
        Store {
            map: quick_cache::sync::Cache::with_weighter(items, max_bytes, ByWeight),
            keep_for,
        }
    }

    /// The entry for `key`, if one is stored and still of use.
    pub(crate) fn get(&self, key: u128) -> Option<Arc<Stored<E>>> {
        let stored = self.map.get(&key)?;
        if stored.age() > self.keep_for {
            self.map.remove(&key);
            return None;
        }
        Some(stored)
    }

    /// Stores `entry` under `key`, weighing `weight` bytes (at least 1).
    pub(crate) fn put(&self, key: u128, entry: E, weight: u64) {
        self.map.insert(
            key,
            Arc::new(Stored {
                entry,
                at: Instant::now(),
                weight: weight.max(1),
            }),
        );
    }

    /// Entries stored.
    pub(crate) fn entries(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes stored.
    pub(crate) fn bytes(&self) -> u64 {
        self.map.weight()
    }

    pub(crate) fn clear(&self) {
        self.map.clear();
    }
}
