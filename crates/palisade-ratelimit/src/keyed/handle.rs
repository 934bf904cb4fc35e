//! [`KeyedRateLimitHandle`]: the operator's view of a keyed limiter.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::keyed::shared::KeyedShared;

/// A point-in-time view of a keyed limiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyedSnapshot {
    /// Keys held now (seen, and not yet back to full buckets at the last
    /// sweep).
    pub keys: usize,
    /// Calls admitted.
    pub admitted: u64,
    /// Calls refused.
    pub refused: u64,
    /// Keys forgotten by sweeps so far.
    pub evicted: u64,
}

/// A cloneable handle on one keyed limiter. Get it from
/// [`KeyedRateLimitLayer::handle`](crate::KeyedRateLimitLayer::handle).
pub struct KeyedRateLimitHandle<K> {
    shared: Arc<KeyedShared<K>>,
}

impl<K> Clone for KeyedRateLimitHandle<K> {
    fn clone(&self) -> Self {
        KeyedRateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedRateLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitHandle")
            .field("provider", &self.shared.provider)
            .finish()
    }
}

impl<K> KeyedRateLimitHandle<K> {
    pub(crate) fn new(shared: Arc<KeyedShared<K>>) -> Self {
        KeyedRateLimitHandle { shared }
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimitHandle<K> {
    /// The numbers now.
    pub fn snapshot(&self) -> KeyedSnapshot {
        let s = &self.shared;
        KeyedSnapshot {
            keys: s.keys.len(),
            admitted: s.admitted.get(),
            refused: s.refused.get(),
            evicted: s.evicted.load(Ordering::Relaxed),
        }
    }

    /// How long until `key` would have room for a one-request call (zero:
    /// now).
    pub fn wait(&self, key: &K) -> Duration {
        Duration::from_nanos(self.shared.wait(key))
    }

    /// The units each quota has for `key` now, in the order the quotas
    /// were added (a key not held has full buckets).
    pub fn available(&self, key: &K) -> Vec<u64> {
        self.shared.available(key)
    }

    /// Forgets every key whose buckets are full now, at once (sweeps also
    /// run by themselves as keys are added).
    pub fn sweep(&self) {
        let s = &self.shared;
        s.sweep(s.epoch.now());
    }
}
