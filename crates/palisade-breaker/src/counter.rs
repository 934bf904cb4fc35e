//! A counter striped over cache lines, so that threads adding to it do not
//! fight over one line. Reads sum the stripes (admin path only).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// Adds are one uncontended `fetch_add` on the calling thread's stripe.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Padded; STRIPES],
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        let mut i = m.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            m.set(i);
        }
        i
    })
}

impl StripedCounter {
    pub(crate) fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
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
