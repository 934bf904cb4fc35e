//! GCRA: a quota's shape ([`Rate`]) and one quota as one atomic cell
//! ([`Gcra`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// A quota's shape as GCRA sees it: one unit per `interval` nanoseconds,
/// `tolerance` nanoseconds of them at once (the burst). Its operations act
/// on a cell holding the quota's "theoretical arrival time" (TAT: when the
/// bucket will be full again), so one shape serves one cell ([`Gcra`]) or
/// a cell per key (the keyed limiter). Lock-free: one CAS per take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    interval: u64,
    tolerance: u64,
}

impl Rate {
    pub(crate) fn new(interval: u64, burst: u64) -> Self {
        let interval = interval.max(1);
        Rate {
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
        }
    }

    /// The debit for `cost` units: a cost above the burst is charged as a
    /// full bucket (it could never fit otherwise).
    #[inline]
    pub(crate) fn debit(&self, cost: u64) -> u64 {
        cost.saturating_mul(self.interval).min(self.tolerance)
    }

    /// Takes `debit` from `tat` at `now` if it fits after waiting at most
    /// `max_wait`; `Ok(wait)` (0 = at once), or `Err(wait)` when it would
    /// need longer.
    #[inline]
    pub(crate) fn take(
        &self,
        tat: &AtomicU64,
        debit: u64,
        now: u64,
        max_wait: u64,
    ) -> Result<u64, u64> {
        let mut t = tat.load(Ordering::Acquire);
        loop {
            let new = t.max(now).saturating_add(debit);
            let wait = new.saturating_sub(self.tolerance).saturating_sub(now);
            if wait > max_wait {
                return Err(wait);
            }
            match tat.compare_exchange_weak(t, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(wait),
                Err(current) => t = current,
            }
        }
    }

    /// How long `debit` would wait at `now`, taking nothing.
    pub(crate) fn wait(&self, tat: &AtomicU64, debit: u64, now: u64) -> u64 {
        tat.load(Ordering::Acquire)
            .max(now)
            .saturating_add(debit)
            .saturating_sub(self.tolerance)
            .saturating_sub(now)
    }

    /// Gives `debit` back (a refused or abandoned admission, or an
    /// estimate that was too high). A bucket already full stays full.
    pub(crate) fn give_back(&self, tat: &AtomicU64, debit: u64) {
        let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            Some(t.saturating_sub(debit))
        });
    }

    /// Charges `debit` more after the fact (an estimate that was too low),
    /// at most a full bucket, starting from `now` if the bucket was full.
    pub(crate) fn charge(&self, tat: &AtomicU64, debit: u64, now: u64) {
        let debit = debit.min(self.tolerance);
        let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            Some(t.max(now).saturating_add(debit))
        });
    }

    /// Units that could be taken at `now` without waiting.
    pub(crate) fn available(&self, tat: &AtomicU64, now: u64) -> u64 {
        let t = tat.load(Ordering::Acquire).max(now);
        (now.saturating_add(self.tolerance).saturating_sub(t)) / self.interval
    }

    /// Whether the bucket is full at `now`: its cell then says nothing a
    /// fresh cell would not (the keyed limiter forgets such keys).
    pub(crate) fn is_full(tat: &AtomicU64, now: u64) -> bool {
        tat.load(Ordering::Acquire) <= now
    }

    /// The bucket's size in units.
    pub(crate) fn burst(&self) -> u64 {
        self.tolerance / self.interval
    }
}

/// One quota as a single GCRA cell.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat: AtomicU64,
    rate: Rate,
}

impl Gcra {
    pub(crate) fn new(interval: u64, burst: u64) -> Self {
        Gcra {
            tat: AtomicU64::new(0),
            rate: Rate::new(interval, burst),
        }
    }

    #[inline]
    pub(crate) fn debit(&self, cost: u64) -> u64 {
        self.rate.debit(cost)
    }

    #[inline]
    pub(crate) fn take(&self, debit: u64, now: u64, max_wait: u64) -> Result<u64, u64> {
        self.rate.take(&self.tat, debit, now, max_wait)
    }

    pub(crate) fn wait(&self, debit: u64, now: u64) -> u64 {
        self.rate.wait(&self.tat, debit, now)
    }

    pub(crate) fn give_back(&self, debit: u64) {
        self.rate.give_back(&self.tat, debit)
    }

    pub(crate) fn charge(&self, debit: u64, now: u64) {
        self.rate.charge(&self.tat, debit, now)
    }

    pub(crate) fn available(&self, now: u64) -> u64 {
        self.rate.available(&self.tat, now)
    }

    pub(crate) fn burst(&self) -> u64 {
        self.rate.burst()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_one_per_interval() {
        // 10 per second (100 ms each), burst 3.
        let g = Gcra::new(100 * MS, 3);
        let d = g.debit(1);
        for _ in 0..3 {
            assert_eq!(g.take(d, 0, 0), Ok(0));
        }
        assert_eq!(
            g.take(d, 0, 0),
            Err(100 * MS),
            "the fourth waits one interval"
        );
        assert_eq!(g.take(d, 100 * MS, 0), Ok(0));
        assert_eq!(g.available(100 * MS), 0);
        assert_eq!(g.available(400 * MS), 3, "refilled, never above the burst");
    }

    #[test]
    fn a_refusal_takes_nothing_and_give_back_restores() {
        let g = Gcra::new(100 * MS, 2);
        let d = g.debit(2);
        assert_eq!(g.take(d, 0, 0), Ok(0));
        assert!(g.take(g.debit(1), 0, 0).is_err());
        assert!(
            g.take(g.debit(1), 0, 0).is_err(),
            "the refusal spent nothing"
        );
        g.give_back(d);
        assert_eq!(g.available(0), 2);
        // Giving back on a full bucket keeps it full, no more.
        g.give_back(d);
        assert_eq!(g.available(0), 2);
    }

    #[test]
    fn waiting_reserves_in_order() {
        let g = Gcra::new(100 * MS, 1);
        let d = g.debit(1);
        assert_eq!(g.take(d, 0, u64::MAX), Ok(0));
        assert_eq!(g.take(d, 0, u64::MAX), Ok(100 * MS));
        assert_eq!(g.take(d, 0, u64::MAX), Ok(200 * MS));
        assert_eq!(g.take(d, 0, 250 * MS), Err(300 * MS), "too long: refused");
        assert_eq!(g.wait(d, 0), 300 * MS, "and nothing was taken");
    }

    #[test]
    fn a_cost_above_the_burst_is_a_full_bucket() {
        let g = Gcra::new(MS, 10);
        assert_eq!(g.debit(1_000), 10 * MS);
        assert_eq!(g.take(g.debit(1_000), 0, 0), Ok(0));
        assert_eq!(g.burst(), 10);
    }
}
