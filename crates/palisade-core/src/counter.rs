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
/// cache line, and, on the common path, without a locked instruction: a
/// thread that holds a stripe of its own adds to it with a plain load and
/// store (no other thread writes there); the threads beyond [`STRIPES`]
/// at once share one more stripe, with an atomic `fetch_add`. Reading sums
/// the stripes. Use it for per-call metrics on a hot path; reads are meant
/// for snapshots, not for decisions.
///
/// A thread's own stripe is handed back when it ends, for the next thread
/// to take.
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
    /// `0..STRIPES`: one owner each; `STRIPES`: shared by the rest.
    stripes: [Padded; STRIPES + 1],
}

/// In [`MINE`]: this thread owns its stripe.
const OWNED: usize = 1 << 8;
/// [`MINE`] before the thread's first add.
const UNSET: usize = usize::MAX;

thread_local! {
    /// This thread's stripe (`0..STRIPES`), with [`OWNED`] while it is
    /// the stripe's only writer; [`UNSET`] until first used.
    static MINE: Cell<usize> = const { Cell::new(UNSET) };
    /// Hands the owned stripe back when the thread ends.
    static OWNER: Owner = const { Owner(Cell::new(None)) };
}

/// Stripes no live thread owns, one bit each.
static FREE: AtomicUsize = AtomicUsize::new((1 << STRIPES) - 1);

/// The owner of a stripe, for as long as its thread lives.
struct Owner(Cell<Option<usize>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            // Adds made later (from other thread-locals' destructors) go
            // to the shared stripe: the next owner may already be adding.
            MINE.with(|m| m.set(i));
            // Release: this thread's last adds are seen by the next owner.
            FREE.fetch_or(1 << i, Ordering::Release);
        }
    }
}

/// This thread's [`MINE`], dealt on first use.
#[inline]
fn mine() -> usize {
    let m = MINE.with(Cell::get);
    if m == UNSET {
        first_stripe()
    } else {
        m
    }
}

/// This thread's stripe, `0..STRIPES`: a stripe of its own while fewer
/// than [`STRIPES`] threads hold one, otherwise one dealt in turn. For
/// structures of per-thread parts of one's own (a striped histogram);
/// such a part may be shared, so it is written with atomic operations.
///
/// ```
/// let i = palisade_core::stripe();
/// assert!(i < palisade_core::STRIPES);
/// assert_eq!(palisade_core::stripe(), i, "a thread keeps its stripe");
/// ```
#[inline]
pub fn stripe() -> usize {
    mine() & !OWNED
}

/// Takes a free stripe for this thread if there is one (handed back when
/// the thread ends), else deals one in turn, shared.
#[cold]
#[inline(never)]
fn first_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Acquire: the previous owner's adds are seen before this thread's.
    let taken = FREE.fetch_update(Ordering::Acquire, Ordering::Relaxed, |free| {
        (free != 0).then(|| free & (free - 1))
    });
    let m = match taken {
        Ok(free) => {
            let i = free.trailing_zeros() as usize;
            // A thread being torn down has no destructors left to run:
            // then the stripe is handed straight back, shared instead.
            match OWNER.try_with(|o| o.0.set(Some(i))) {
                Ok(()) => i | OWNED,
                Err(_) => {
                    FREE.fetch_or(1 << i, Ordering::Release);
                    i
                }
            }
        }
        Err(_) => NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES,
    };
    MINE.with(|c| c.set(m));
    m
}

impl StripedCounter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        let m = mine();
        if m & OWNED != 0 {
            // Only this thread writes here: no locked instruction.
            let s = &self.stripes[m & !OWNED].0;
            s.store(s.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            self.stripes[STRIPES].0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The sum of every add so far (exact once adders are quiet).
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
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

    /// Waves of threads, more at once than there are stripes (so some own
    /// one and the rest share), each wave taking the stripes the last one
    /// handed back, adding while another thread reads: nothing is lost.
    #[test]
    fn owned_and_shared_stripes_lose_no_add_across_waves_of_threads() {
        let c = Arc::new(StripedCounter::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let now = c.get();
                    assert!(now >= last, "a sum went back: {last} then {now}");
                    last = now;
                }
            })
        };
        const N: u64 = 100_000;
        let mut want = 0u64;
        for wave in 0..4u64 {
            let start = Arc::new(std::sync::Barrier::new(3 * STRIPES));
            let ts: Vec<_> = (0..3 * STRIPES as u64)
                .map(|t| {
                    let (c, start) = (c.clone(), start.clone());
                    std::thread::spawn(move || {
                        // Every thread takes its stripe, then all add at once.
                        c.add(0);
                        start.wait();
                        for i in 0..N {
                            c.add((wave + t + i) % 7);
                        }
                    })
                })
                .collect();
            want += (0..3 * STRIPES as u64)
                .map(|t| (0..N).map(|i| (wave + t + i) % 7).sum::<u64>())
                .sum::<u64>();
            ts.into_iter().for_each(|t| t.join().unwrap());
            assert_eq!(c.get(), want, "after wave {wave}");
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }

    /// A thread keeps its stripe, which is in range, owned or not.
    #[test]
    fn a_thread_keeps_its_stripe() {
        let stripes: Vec<(usize, usize)> = (0..3 * STRIPES)
            .map(|_| std::thread::spawn(|| (stripe(), stripe())))
            .map(|t| t.join().unwrap())
            .collect();
        for (a, b) in stripes {
            assert_eq!(a, b);
            assert!(a < STRIPES);
        }
    }
}
