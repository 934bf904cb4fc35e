//! [`Store`]: the bounded, concurrent home of cached answers (moka), with
//! each answer's age on tokio's clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A stored answer and when it was stored.
#[derive(Debug)]
pub(crate) struct Stored<E> {
    pub(crate) entry: E,
    pub(crate) at: Instant,
    weight: u32,
}

impl<E> Stored<E> {
    pub(crate) fn age(&self) -> Duration {
        self.at.elapsed()
    }
}

/// Answers by key, bounded by their total weight (bytes), evicted by
/// moka's TinyLFU policy; an entry older than `keep_for` (by tokio's
/// clock) is never served and is dropped when met.
pub(crate) struct Store<E> {
    map: moka::sync::Cache<u128, Arc<Stored<E>>>,
    keep_for: Duration,
}

impl<E: Send + Sync + 'static> Store<E> {
    pub(crate) fn new(max_bytes: u64, keep_for: Duration) -> Self {
        let map = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, v: &Arc<Stored<E>>| v.weight)
            // moka's own clock (real time) drops what tokio's would have
            // refused long ago: a janitor, not the rule.
            .time_to_live(keep_for.saturating_mul(2).max(Duration::from_secs(1)))
            .build();
        Store { map, keep_for }
    }

    /// The entry for `key`, if one is stored and still of use.
    pub(crate) fn get(&self, key: u128) -> Option<Arc<Stored<E>>> {
        let stored = self.map.get(&key)?;
        if stored.age() > self.keep_for {
            self.map.invalidate(&key);
            return None;
        }
        Some(stored)
    }

    /// Stores `entry` under `key`, weighing `weight` bytes (at least 1).
    pub(crate) fn put(&self, key: u128, entry: E, weight: u64) {
        let weight = weight.clamp(1, u64::from(u32::MAX)) as u32;
        self.map.insert(
            key,
            Arc::new(Stored {
                entry,
                at: Instant::now(),
                weight,
            }),
        );
    }

    /// Entries stored (an estimate while moka catches up).
    pub(crate) fn entries(&self) -> u64 {
        self.map.entry_count()
    }

    /// Bytes stored (an estimate while moka catches up).
    pub(crate) fn bytes(&self) -> u64 {
        self.map.weighted_size()
    }

    /// Lets moka apply its pending evictions now (tests, snapshots).
    pub(crate) fn settle(&self) {
        self.map.run_pending_tasks();
    }

    pub(crate) fn clear(&self) {
        self.map.invalidate_all();
    }
}
