//! Draws in [0, 1) for fault decisions: core's splitmix64 over an atomic
//! counter, so a seeded layer draws the same sequence on every run (in
//! call order) with no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::{splitmix64, SPLITMIX_GAMMA};

#[derive(Debug)]
pub(crate) struct Draws {
    state: AtomicU64,
}

impl Draws {
    pub(crate) fn new(seed: u64) -> Self {
        Draws {
            state: AtomicU64::new(seed),
        }
    }

    /// The next draw, uniform in [0, 1).
    #[inline]
    pub(crate) fn next(&self) -> f64 {
        let state = self
            .state
            .fetch_add(SPLITMIX_GAMMA, Ordering::Relaxed)
            .wrapping_add(SPLITMIX_GAMMA);
        (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_spread() {
        let (a, b) = (Draws::new(7), Draws::new(7));
        let xs: Vec<f64> = (0..1000).map(|_| a.next()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let below = xs.iter().filter(|x| **x < 0.25).count();
        assert!((200..300).contains(&below), "{below} of 1000 below 0.25");
    }
}
