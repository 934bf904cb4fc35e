//! One quota as a GCRA cell: a single atomic "theoretical arrival time".

use std::sync::atomic::{AtomicU64, Ordering};

/// A quota of `burst` units refilled at one unit per `interval`
/// nanoseconds, kept as the time at which the bucket will be full again
/// (the theoretical arrival time, TAT). Lock-free: one CAS per take.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat: AtomicU64,
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    pub(crate) fn new(interval: u64, burst: u64) -> Self {
        let interval = interval.max(1);
        Gcra {
            tat: AtomicU64::new(0),
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

    /// Takes `debit` at `now` if it fits after waiting at most `max_wait`;
    /// `Ok(wait)` (0 = at once), or `Err(wait)` when it would need longer.
    #[inline]
    pub(crate) fn take(&self, debit: u64, now: u64, max_wait: u64) -> Result<u64, u64> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new = tat.max(now).saturating_add(debit);
            let wait = new.saturating_sub(self.tolerance).saturating_sub(now);
            if wait > max_wait {
                return Err(wait);
            }
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(wait),
                Err(current) => tat = current,
            }
        }
    }

    /// How long `debit` would wait at `now`, taking nothing.
    pub(crate) fn wait(&self, debit: u64, now: u64) -> u64 {
        let tat = self.tat.load(Ordering::Acquire);
        tat.max(now)
            .saturating_add(debit)
            .saturating_sub(self.tolerance)
            .saturating_sub(now)
    }

    /// Gives `debit` back (a refused or abandoned admission, or an
    /// estimate that was too high). A bucket already full stays full.
    pub(crate) fn give_back(&self, debit: u64) {
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(debit))
            });
    }

    /// Charges `debit` more after the fact (an estimate that was too low),
    /// at most a full bucket, starting from `now` if the bucket was full.
    pub(crate) fn charge(&self, debit: u64, now: u64) {
        let debit = debit.min(self.tolerance);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.max(now).saturating_add(debit))
            });
    }

    /// Units that could be taken at `now` without waiting.
    pub(crate) fn available(&self, now: u64) -> u64 {
        let tat = self.tat.load(Ordering::Acquire).max(now);
        (now.saturating_add(self.tolerance).saturating_sub(tat)) / self.interval
    }

    /// The bucket's size in units.
    pub(crate) fn burst(&self) -> u64 {
        self.tolerance / self.interval
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
