//! [`PeakEwma`]: a latency estimate that jumps to a slow answer at once and
//! decays back with time, on two atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The longest latency an estimate holds, so a hung call's penalty cannot
/// keep a provider out for good.
const CAP_NS: f64 = 60e9;

/// Samples closer than this share of the decay time to the last write are
/// not written (see `observe`).
const SKIP: f64 = 1.0 / 256.0;

/// A peak-sensitive, time-decayed latency estimate (tower's `PeakEwma`,
/// lock-free).
///
/// - The first sample replaces the initial guess (unlike tower's, where a
///   guess far from the truth takes a decay period to fade).
/// - A sample above the estimate replaces it at once (the peak).
/// - A sample below it pulls it down by how much time has passed since
///   the last sample: `est·d + rtt·(1−d)` with `d = e^(−elapsed/decay)`.
/// - Read, the estimate decays toward zero with the time since the last
///   sample, so a provider that has not been called for a while is tried
///   again rather than judged on old news.
///
/// Racing writers may lose a sample; the estimate stays one of theirs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_balance::PeakEwma;
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let ewma = PeakEwma::new(Duration::from_millis(100), Duration::from_secs(10));
/// ewma.observe(Duration::from_secs(5), Instant::now());   // a slow answer: taken at once
/// assert_eq!(ewma.estimate(Instant::now()), Duration::from_secs(5));
/// tokio::time::advance(Duration::from_secs(10)).await;    // one decay period later: e⁻¹ of it
/// let est = ewma.estimate(Instant::now()).as_secs_f64();
/// assert!((est - 5.0 / std::f64::consts::E).abs() < 0.01);
/// # }
/// ```
#[derive(Debug)]
pub struct PeakEwma {
    epoch: Instant,
    decay_ns: f64,
    est_ns: AtomicU64,
    at_ns: AtomicU64,
    observed: AtomicBool,
}

impl PeakEwma {
    /// An estimate starting at `initial` (what an unmeasured provider is
    /// assumed to take) that decays with time constant `decay`.
    pub fn new(initial: Duration, decay: Duration) -> Self {
        PeakEwma {
            epoch: Instant::now(),
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            est_ns: AtomicU64::new((initial.as_nanos() as f64).min(CAP_NS).to_bits()),
            at_ns: AtomicU64::new(0),
            observed: AtomicBool::new(false),
        }
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn decay_factor(&self, from_ns: u64, to_ns: u64) -> f64 {
        (-(to_ns.saturating_sub(from_ns) as f64) / self.decay_ns).exp()
    }

    /// Adds a call's latency, measured at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = (rtt.as_nanos() as f64).min(CAP_NS);
        let now_ns = self.since_epoch(now);
        if !self.observed.load(Ordering::Relaxed) && !self.observed.swap(true, Ordering::AcqRel) {
            // The first sample: the initial guess goes.
            self.est_ns.store(rtt.to_bits(), Ordering::Release);
            self.at_ns.fetch_max(now_ns, Ordering::Relaxed);
            return;
        }
        let mut cur = self.est_ns.load(Ordering::Acquire);
        loop {
            let est = f64::from_bits(cur);
            let d = self.decay_factor(self.at_ns.load(Ordering::Relaxed), now_ns);
            let decayed = est * d;
            let next = if rtt > decayed {
                rtt
            } else {
                decayed + rtt * (1.0 - d)
            };
            // A sample that is no peak, arriving within 1/256 of the decay
            // time of the last write, moves the estimate by less than 1/256
            // of it (|est - next| = |est - rtt| (1 - d) <= est (1 - d)) and
            // is not written: the next one written weighs in all the time
            // since the last write, so nothing drifts, and reads in between
            // are off by less than 1/256. A provider answering thousands of
            // calls a second is written to about every 40 ms (at a 10 s
            // decay) instead of on every call, which keeps threads from
            // fighting over its cache line.
            if rtt <= decayed && 1.0 - d < SKIP {
                return;
            }
            match self.est_ns.compare_exchange_weak(
                cur,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.at_ns.fetch_max(now_ns, Ordering::Relaxed);
                    return;
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Counts a failed call: at least its own latency and twice the
    /// current estimate, so a provider that fails fast does not look fast.
    pub fn observe_failure(&self, elapsed: Duration, now: Instant) {
        let doubled = self.estimate(now).saturating_mul(2);
        self.observe(elapsed.max(doubled), now);
    }

    /// The estimate as of `now` (decayed since the last sample).
    pub fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.estimate_ns(now) as u64)
    }

    /// The estimate in nanoseconds, as a float (for cost comparisons).
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        let est = f64::from_bits(self.est_ns.load(Ordering::Acquire));
        est * self.decay_factor(self.at_ns.load(Ordering::Relaxed), self.since_epoch(now))
    }

    /// Whether any sample has been seen (else the estimate is the initial
    /// guess, decayed).
    pub fn observed(&self) -> bool {
        self.observed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_is_taken_at_once_and_fast_answers_pull_it_down_with_time() {
        let e = PeakEwma::new(ms(100), Duration::from_secs(1));
        e.observe(ms(2000), Instant::now());
        assert_eq!(e.estimate(Instant::now()), ms(2000));
        // Fast answers arriving with no time passing barely move it ...
        e.observe(ms(10), Instant::now());
        assert_eq!(e.estimate(Instant::now()), ms(2000));
        // ... spread over time, they bring it toward their own latency.
        for _ in 0..100 {
            tokio::time::advance(ms(100)).await;
            e.observe(ms(10), Instant::now());
        }
        let est = e.estimate(Instant::now());
        assert!(est < ms(20), "{est:?}");
        assert!(est >= ms(10), "{est:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn samples_too_close_to_move_it_are_not_written_and_nothing_drifts() {
        // 1 ms apart with a 10 s decay, each sample moves the estimate by
        // 1/10 000 of the gap: not worth a write on its own.
        let e = PeakEwma::new(ms(500), Duration::from_secs(10));
        assert!(!e.observed());
        e.observe(ms(100), Instant::now());
        assert!(e.observed());
        assert_eq!(
            e.estimate(Instant::now()),
            ms(100),
            "the first sample replaces the guess"
        );
        let before = e.est_ns.load(Ordering::Relaxed);
        tokio::time::advance(ms(1)).await;
        e.observe(ms(10), Instant::now());
        assert_eq!(e.est_ns.load(Ordering::Relaxed), before, "not written");
        // Over two seconds of such samples the estimate follows the exact
        // time-weighted average (every sample applied) to within 1%.
        let tau = 10e9_f64;
        let mut exact = 100e6_f64;
        for _ in 0..2000 {
            tokio::time::advance(ms(1)).await;
            e.observe(ms(10), Instant::now());
            let d = (-1e6 / tau).exp();
            exact = exact * d + 10e6 * (1.0 - d);
        }
        let got = e.estimate_ns(Instant::now());
        assert!((got - exact).abs() < exact * 0.01, "{got} vs {exact}");
        assert!(got < 90e6, "it moved: {got}");
        // A peak is always written.
        e.observe(ms(500), Instant::now());
        assert_eq!(e.estimate(Instant::now()), ms(500));
        // Steady samples equal to the estimate hold it (skipped writes do
        // not let it decay toward zero).
        let e = PeakEwma::new(ms(500), Duration::from_secs(10));
        for _ in 0..20_000 {
            tokio::time::advance(ms(1)).await;
            e.observe(ms(100), Instant::now());
        }
        let got = e.estimate(Instant::now());
        assert!(got > ms(99) && got <= ms(100), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_estimates_decay_toward_zero() {
        let e = PeakEwma::new(ms(500), Duration::from_secs(2));
        assert_eq!(e.estimate(Instant::now()), ms(500));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(e.estimate(Instant::now()) < ms(1));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_count_double_and_are_capped() {
        let e = PeakEwma::new(ms(100), Duration::from_secs(10));
        e.observe_failure(ms(1), Instant::now());
        assert_eq!(e.estimate(Instant::now()), ms(200));
        for _ in 0..100 {
            e.observe_failure(ms(1), Instant::now());
        }
        assert_eq!(e.estimate(Instant::now()), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_dropped_unfinished_counts_what_it_ran() {
        let load = std::sync::Arc::new(crate::Load::new(ms(100), Duration::from_secs(10)));
        let call = load.start(true);
        tokio::time::advance(ms(3000)).await;
        drop(call);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.latency().estimate(Instant::now()), ms(3000));
        // An untimed call records nothing.
        tokio::time::advance(ms(10_000)).await;
        let before = load.latency().estimate(Instant::now());
        let call = load.start(false);
        tokio::time::advance(ms(60_000)).await;
        drop(call);
        assert!(load.latency().estimate(Instant::now()) < before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_streams_call_is_its_first_tokens_sample_only() {
        let load = std::sync::Arc::new(crate::Load::new(ms(100), Duration::from_secs(10)));
        let call = load.start_for(true, true);
        assert!(call.streaming());
        tokio::time::advance(ms(700)).await;
        call.finish(true);
        let now = Instant::now();
        assert_eq!(load.first_token().estimate(now), ms(700));
        assert_eq!(load.estimate_for(true).estimate(now), ms(700));
        assert!(
            load.latency().estimate(now) <= ms(100),
            "whole calls untouched"
        );
        let call = load.start(true);
        tokio::time::advance(ms(900)).await;
        call.finish(true);
        assert_eq!(load.latency().estimate(Instant::now()), ms(900));
        assert!(load.first_token().estimate(Instant::now()) <= ms(700));
    }

    #[test]
    fn many_threads_leave_one_of_their_samples() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _g = rt.enter();
        let e = std::sync::Arc::new(PeakEwma::new(ms(0), Duration::from_secs(10)));
        let now = Instant::now();
        std::thread::scope(|s| {
            for t in 1..=8u64 {
                let e = e.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        e.observe(ms(t), now);
                    }
                });
            }
        });
        // Samples at one instant: the peak wins.
        assert_eq!(e.estimate(now), ms(8));
    }
}
