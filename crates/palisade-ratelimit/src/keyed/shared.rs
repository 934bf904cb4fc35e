//! The state of a keyed limiter: one GCRA cell per quota per key, in a
//! concurrent map, and the sweep that forgets keys with full buckets.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use palisade_core::{ProviderId, StripedCounter};

use crate::epoch::Epoch;
use crate::gcra::{Quotas, Rate};
use crate::keyed::layer::MAX_KEYED_QUOTAS;
use crate::quota::Quota;

/// New keys between sweeps at the least: a sweep visits every key, so it
/// runs once per as many new keys as it kept last time (amortised O(1)
/// per new key), and never more often than this.
pub(crate) const SWEEP_EVERY: usize = 4096;

/// One key's cells, one per quota.
#[derive(Debug, Default)]
pub(crate) struct Cells([AtomicU64; MAX_KEYED_QUOTAS]);

pub(crate) struct KeyedShared<K> {
    pub(crate) provider: Option<ProviderId>,
    pub(crate) quotas: Quotas,
    pub(crate) keys: DashMap<K, Cells>,
    pub(crate) epoch: Epoch,
    pub(crate) admitted: StripedCounter,
    pub(crate) refused: StripedCounter,
    pub(crate) evicted: AtomicU64,
    /// Keys added since the last sweep.
    fresh: AtomicUsize,
    /// Keys the last sweep kept.
    kept: AtomicUsize,
    sweeping: AtomicBool,
}

impl<K> std::fmt::Debug for KeyedShared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedShared")
            .field("provider", &self.provider)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedShared<K> {
    pub(crate) fn new(provider: Option<ProviderId>, quotas: Vec<Quota>) -> Self {
        KeyedShared {
            provider,
            quotas: Quotas::new(quotas),
            keys: DashMap::new(),
            epoch: Epoch::new(),
            admitted: StripedCounter::default(),
            refused: StripedCounter::default(),
            evicted: AtomicU64::new(0),
            fresh: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Takes room for a call of `tokens` under `key` at `now` if every
    /// quota has it: `Ok(())`, or `Err(wait)` with nothing taken.
    fn take(&self, cells: &Cells, tokens: u64, now: u64) -> Result<(), u64> {
        self.quotas
            .take(&cells.0, None, tokens, 1, now, 0)
            .map(drop)
    }

    /// Admits a call of `tokens` under `key` now, or refuses it with the
    /// time until it would have room, counting either.
    pub(crate) fn admit(&self, key: &K, tokens: u64) -> Result<(), u64> {
        let now = self.epoch.now();
        let taken = match self.keys.get(key) {
            Some(cells) => self.take(&cells, tokens, now),
            None => {
                let taken = {
                    let cells = self.keys.entry(key.clone()).or_default();
                    self.take(&cells, tokens, now)
                };
                self.added(now);
                taken
            }
        };
        match taken {
            Ok(()) => self.admitted.add(1),
            Err(_) => self.refused.add(1),
        }
        taken
    }

    /// Whether a call's tokens are corrected by its answer's usage: some
    /// quota counts tokens.
    pub(crate) fn counts_tokens(&self) -> bool {
        self.quotas.counts_tokens()
    }

    /// Corrects a call under `key` that took `taken` tokens by the `used`
    /// its answer reported. A key forgotten meanwhile (its buckets were
    /// full) is charged afresh.
    pub(crate) fn correct(&self, key: &K, taken: u64, used: u64) {
        if taken == used {
            return;
        }
        let now = self.epoch.now();
        match self.keys.get(key) {
            Some(cells) => self.quotas.correct(&cells.0, taken, used, 1, now),
            None if used > taken => {
                {
                    let cells = self.keys.entry(key.clone()).or_default();
                    self.quotas.correct(&cells.0, taken, used, 1, now);
                }
                self.added(now);
            }
            // Forgotten with full buckets: nothing to give back.
            None => {}
        }
    }

    /// How long a one-request call under `key` would wait now (zero for
    /// a key not seen, or forgotten: its buckets are full).
    pub(crate) fn wait(&self, key: &K) -> u64 {
        let now = self.epoch.now();
        self.keys
            .get(key)
            .map_or(0, |cells| self.quotas.wait(&cells.0, 0, 1, now))
    }

    /// Units each quota has for `key` now.
    pub(crate) fn available(&self, key: &K) -> Vec<u64> {
        let now = self.epoch.now();
        let cells = self.keys.get(key);
        self.quotas
            .iter()
            .enumerate()
            .map(|(i, (_, rate))| match &cells {
                Some(c) => rate.available(&c.0[i], now),
                None => rate.burst(),
            })
            .collect()
    }

    /// A key was added: sweep when enough have been.
    fn added(&self, now: u64) {
        let fresh = self.fresh.fetch_add(1, Ordering::Relaxed) + 1;
        if fresh < SWEEP_EVERY.max(self.kept.load(Ordering::Relaxed)) {
            return;
        }
        if self.sweeping.swap(true, Ordering::Acquire) {
            return; // another caller is sweeping
        }
        self.sweep(now);
        self.sweeping.store(false, Ordering::Release);
    }

    /// Forgets every key whose buckets are all full at `now`: its cells
    /// say nothing a fresh key's would not, so forgetting changes no
    /// decision. What stays is the keys seen within about one refill of
    /// their buckets.
    pub(crate) fn sweep(&self, now: u64) {
        let n = self.quotas.len();
        let before = self.keys.len();
        self.fresh.store(0, Ordering::Relaxed);
        self.keys
            .retain(|_, cells| !cells.0[..n].iter().all(|tat| Rate::is_full(tat, now)));
        let after = self.keys.len();
        self.kept.store(after, Ordering::Relaxed);
        self.evicted
            .fetch_add(before.saturating_sub(after) as u64, Ordering::Relaxed);
        tracing::debug!(
            provider = self.provider.as_ref().map(|p| p.as_str()),
            before,
            after,
            "keyed rate limit: forgot the keys whose buckets are full"
        );
    }
}
