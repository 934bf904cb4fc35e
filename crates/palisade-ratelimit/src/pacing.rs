//! What the provider said is left: a window of `remaining` units until a
//! reset, learned from its rate headers, checked before every send.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::RateWindow;

/// The provider's own count for one unit, as last reported: until `until`
/// (nanoseconds on the limiter's clock), at most `remaining` more. Past
/// `until` it constrains nothing. Lock-free.
#[derive(Debug, Default)]
pub(crate) struct Window {
    until: AtomicU64,
    remaining: AtomicU64,
    limit: AtomicU64,
}

impl Window {
    /// Takes `cost` if the window allows it; `Err(wait)` until it resets.
    pub(crate) fn take(&self, cost: u64, now: u64) -> Result<(), u64> {
        let until = self.until.load(Ordering::Acquire);
        if now >= until {
            return Ok(());
        }
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(cost))
            .map(drop)
            .map_err(|_| until - now)
    }

    /// How long `cost` would wait, taking nothing.
    pub(crate) fn wait(&self, cost: u64, now: u64) -> u64 {
        let until = self.until.load(Ordering::Acquire);
        if now >= until || self.remaining.load(Ordering::Acquire) >= cost {
            0
        } else {
            until - now
        }
    }

    /// Gives back what a refused or abandoned admission took.
    pub(crate) fn give_back(&self, cost: u64, now: u64) {
        if now < self.until.load(Ordering::Acquire) {
            self.remaining.fetch_add(cost, Ordering::AcqRel);
        }
    }

    /// Learns what the provider reported, less what is in flight (sent,
    /// maybe not yet counted by the provider): conservative, so the
    /// provider is never sent more than it said it would take.
    pub(crate) fn learn(&self, w: &RateWindow, now: u64, in_flight: u64) {
        if let Some(limit) = w.limit {
            self.limit.store(limit, Ordering::Relaxed);
        }
        self.remaining
            .store(w.remaining.saturating_sub(in_flight), Ordering::Release);
        self.until.store(
            now.saturating_add(w.reset.as_nanos().min(u64::MAX as u128) as u64),
            Ordering::Release,
        );
    }

    /// Nothing may be sent for `nanos` (a 429 with `Retry-After`).
    pub(crate) fn block(&self, nanos: u64, now: u64) {
        self.remaining.store(0, Ordering::Release);
        self.until
            .fetch_max(now.saturating_add(nanos), Ordering::AcqRel);
    }

    /// The share of the provider's last reported limit still left, while
    /// the window holds and a limit was reported.
    pub(crate) fn headroom(&self, now: u64) -> Option<f64> {
        let (remaining, _) = self.state(now)?;
        let limit = self.limit.load(Ordering::Relaxed);
        (limit > 0).then(|| (remaining as f64 / limit as f64).min(1.0))
    }

    /// `(remaining, nanos until reset)` while the window holds.
    pub(crate) fn state(&self, now: u64) -> Option<(u64, u64)> {
        let until = self.until.load(Ordering::Acquire);
        (now < until).then(|| (self.remaining.load(Ordering::Acquire), until - now))
    }
}
