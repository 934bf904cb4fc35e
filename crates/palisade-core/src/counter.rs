//! A counter striped over cache lines, for the metrics every layer counts
//! on its hot path.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How many stripes a [`StripedCounter`] has, and the range of
/// [`stripe`].
pub const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// A monotonic counter that many threads add to without fighting over one
/// cache line: each thread adds to its own stripe (one uncontended
/// `fetch_add`), and reading sums the stripes. Use it for per-call metrics
/// on a hot path; reads are meant for snapshots, not for decisions.
///
/// ```
/// use palisade_core::StripedCounter;
///
/// let calls = StripedCounter::default();
/// calls.add(2);
/// calls.add(3);
/// assert_eq!(calls.get(), 5);
/// ```
#[derive(Debug, Default)]
pub struct StripedCounter {
    stripes: [Padded; STRIPES],
}

thread_local! {
    /// This thread's stripe, `usize::MAX` until first used.
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe: one thread-local read, inlined into every add.
/// This thread's stripe, `0..STRIPES`: threads are dealt stripes in turn
/// as they first ask, so up to [`STRIPES`] threads each have their own.
/// For structures of per-thread parts of one's own (a striped histogram).
///
/// ```
/// let i = palisade_core::stripe();
/// assert!(i < palisade_core::STRIPES);
/// assert_eq!(palisade_core::stripe(), i, "a thread keeps its stripe");
/// ```
#[inline]
pub fn stripe() -> usize {
    let i = MINE.with(Cell::get);
    if i == usize::MAX {
        first_stripe()
    } else {
        i
    }
}

/// Hands this thread its stripe, round robin, the first time it adds.
#[cold]
#[inline(never)]
fn first_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    MINE.with(|m| m.set(i));
    i
}

impl StripedCounter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every add so far (exact once adders are quiet).
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_across_threads() {
        let c = Arc::new(StripedCounter::default());
        let ts: Vec<_> = (0..16)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 16_000);
    }
}
