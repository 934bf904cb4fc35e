//! GCRA: a quota's shape ([`Rate`]) acting on an atomic cell, and quotas
//! checked together on a slice of cells ([`Quotas`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::quota::{Quota, Unit};

/// A quota's shape as GCRA sees it: one unit per `interval` nanoseconds,
/// `tolerance` nanoseconds of them at once (the burst). Its operations act
/// on a cell holding the quota's "theoretical arrival time" (TAT: when the
/// bucket will be full again), so one shape serves a limiter's cell or a
/// cell per key (the keyed limiter). Lock-free: one CAS per take.
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
    ///
    /// `contended`, when given, says whether threads have been seen racing
    /// for this cell (it is set on a lost race, and stays set): then the
    /// cell is read after a full fence. Without it the read runs ahead of
    /// the instructions before it, and another core's write to the cell
    /// in that time throws the speculative work away and loses the
    /// compare-and-swap. Measured on 64 tasks over two cores, the fenced
    /// read is the fastest of those tried: a plain read is slower, and
    /// taking the line for writing first (an atomic read-modify-write, or
    /// a prefetch for writing) slower still, the other core taking it
    /// back before the compare-and-swap. Uncontended, the fence would cost
    /// about a nanosecond, so it stays behind the flag.
    #[inline]
    pub(crate) fn take(
        &self,
        tat: &AtomicU64,
        contended: Option<&AtomicBool>,
        debit: u64,
        now: u64,
        max_wait: u64,
    ) -> Result<u64, u64> {
        let racing = contended.is_some_and(|c| c.load(Ordering::Relaxed));
        if racing {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        let mut t = tat.load(Ordering::Acquire);
        loop {
            let new = t.max(now).saturating_add(debit);
            let wait = new.saturating_sub(self.tolerance).saturating_sub(now);
            if wait > max_wait {
                return Err(wait);
            }
            match tat.compare_exchange_weak(t, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(wait),
                Err(current) => {
                    if let (false, Some(c)) = (racing, contended) {
                        c.store(true, Ordering::Relaxed);
                    }
                    t = current;
                }
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

/// A GCRA cell: the atomic holding a quota's TAT. A key's cells sit
/// together (`AtomicU64`); a limiter's, written by every thread, each on a
/// cache line of its own ([`PaddedCell`]), so that a write to one bounces
/// nothing else between cores.
pub(crate) trait Cell {
    fn tat(&self) -> &AtomicU64;
}

impl Cell for AtomicU64 {
    #[inline(always)]
    fn tat(&self) -> &AtomicU64 {
        self
    }
}

/// A cell alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct PaddedCell(AtomicU64);

impl Cell for PaddedCell {
    #[inline(always)]
    fn tat(&self) -> &AtomicU64 {
        &self.0
    }
}

/// Quotas checked together, all or nothing, each on its own cell of a
/// slice of cells (one limiter's, or one key's).
#[derive(Debug)]
pub(crate) struct Quotas(Vec<(Quota, Rate)>);

impl Quotas {
    pub(crate) fn new(quotas: Vec<Quota>) -> Self {
        Quotas(
            quotas
                .into_iter()
                .map(|q| (q, Rate::new(q.interval(), q.burst_size())))
                .collect(),
        )
    }

    /// Each quota and its shape, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Quota, Rate)> {
        self.0.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes a call of `tokens` at `now` from every quota if each has room
    /// within `max_wait`: `Ok(wait)` with everything taken, or `Err(wait)`
    /// (how long until there would be room) with nothing taken. With a
    /// `share` above 1 the call costs `share` times as much: the cells then
    /// admit 1/`share` of the quota (a fleet member deciding alone).
    #[inline]
    pub(crate) fn take(
        &self,
        cells: &[impl Cell],
        contended: Option<&AtomicBool>,
        tokens: u64,
        share: u64,
        now: u64,
        max_wait: u64,
    ) -> Result<u64, u64> {
        let mut wait = 0;
        for (i, ((q, rate), cell)) in self.0.iter().zip(cells).enumerate() {
            match rate.take(
                cell.tat(),
                contended,
                Quotas::debit(q, rate, tokens, share),
                now,
                max_wait,
            ) {
                Ok(w) => wait = wait.max(w),
                Err(w) => {
                    Quotas::give_back_some(&self.0[..i], cells, tokens, share);
                    return Err(w);
                }
            }
        }
        Ok(wait)
    }

    #[inline]
    fn debit(q: &Quota, rate: &Rate, tokens: u64, share: u64) -> u64 {
        // `Unit::cost` times the share, spelt out: a request's cost is the
        // share itself, with no multiply (measured: the call through
        // `cost` cost the direct check a nanosecond).
        let cost = match q.unit {
            Unit::Requests => share,
            Unit::Tokens => tokens.saturating_mul(share),
        };
        // One unit (a request, not shared out) is one interval, never more
        // than the burst: no multiply on the common path.
        if cost == 1 {
            rate.interval
        } else {
            rate.debit(cost)
        }
    }

    /// Gives back a call of `tokens` that every quota had taken at `share`.
    pub(crate) fn give_back(&self, cells: &[impl Cell], tokens: u64, share: u64) {
        Quotas::give_back_some(&self.0, cells, tokens, share);
    }

    fn give_back_some(quotas: &[(Quota, Rate)], cells: &[impl Cell], tokens: u64, share: u64) {
        for ((q, rate), cell) in quotas.iter().zip(cells) {
            rate.give_back(cell.tat(), Quotas::debit(q, rate, tokens, share));
        }
    }

    /// Whether any quota counts tokens (only those are corrected).
    pub(crate) fn counts_tokens(&self) -> bool {
        self.0.iter().any(|(q, _)| q.unit == Unit::Tokens)
    }

    /// Corrects a call that took `taken` tokens at `share` by the `used`
    /// its answer reported: each token quota charged the difference, or
    /// given it back.
    pub(crate) fn correct(&self, cells: &[impl Cell], taken: u64, used: u64, share: u64, now: u64) {
        for ((q, rate), cell) in self.0.iter().zip(cells) {
            if q.unit == Unit::Tokens {
                if used > taken {
                    let extra = (used - taken).saturating_mul(share);
                    rate.charge(cell.tat(), rate.debit(extra), now);
                } else {
                    let spare = (taken - used).saturating_mul(share);
                    rate.give_back(cell.tat(), rate.debit(spare));
                }
            }
        }
    }

    /// How long a call of `tokens` would wait at `now` at `share`, taking
    /// nothing.
    pub(crate) fn wait(&self, cells: &[impl Cell], tokens: u64, share: u64, now: u64) -> u64 {
        self.0
            .iter()
            .zip(cells)
            .map(|((q, rate), cell)| {
                rate.wait(cell.tat(), Quotas::debit(q, rate, tokens, share), now)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shape and its cell, as one quota.
    struct Gcra(Rate, AtomicU64);

    impl Gcra {
        fn new(interval: u64, burst: u64) -> Self {
            Gcra(Rate::new(interval, burst), AtomicU64::new(0))
        }
        fn debit(&self, cost: u64) -> u64 {
            self.0.debit(cost)
        }
        fn take(&self, debit: u64, now: u64, max_wait: u64) -> Result<u64, u64> {
            self.0.take(&self.1, None, debit, now, max_wait)
        }
        fn wait(&self, debit: u64, now: u64) -> u64 {
            self.0.wait(&self.1, debit, now)
        }
        fn give_back(&self, debit: u64) {
            self.0.give_back(&self.1, debit)
        }
        fn available(&self, now: u64) -> u64 {
            self.0.available(&self.1, now)
        }
        fn burst(&self) -> u64 {
            self.0.burst()
        }
    }

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
