//! [`Epoch`]: a limiter's clock, in nanoseconds since it was built.
//!
//! A limiter reads the time once a call, so the read is a good share of
//! its cost. On Linux it reads the coarse monotonic clock (the kernel's
//! last tick, through the vDSO: about half the cost of the CPU's
//! time-stamp counter here) when its tick is at most [`COARSE_TICK`];
//! elsewhere, or with a longer tick, the time-stamp counter (through
//! `quanta`, which falls back to the OS clock where the counter is not
//! reliable). A coarse reading is never ahead of the monotonic clock and
//! behind it by the time since the last tick (more when a busy machine
//! delays the tick), so the limiter sees time pass a little late: it errs
//! on the side of admitting less, never more, and a
//! reservation's timer still fires at its exact instant (see
//! [`Epoch::instant`]). Under tokio's paused clock (tests) it reads
//! tokio's clock, so that the paused clock drives it. Which one is decided
//! when the limiter is built. Either way, an enclosing deadline layer's
//! shared reading is used while there is one (no read at all).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The longest tick of the coarse clock a limiter reads instead of the
/// time-stamp counter.
pub(crate) const COARSE_TICK: Duration = Duration::from_millis(4);

/// The instant a limiter counts from, and how it reads the time. Readings
/// are nanoseconds since then, plus one, so that 0 ("never") is earlier
/// than any reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch {
    base: Instant,
    source: Source,
}

/// Where an [`Epoch`] reads the time.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// tokio's clock (paused in tests).
    Tokio,
    /// The time-stamp counter and its reading at `base`.
    Counter(&'static quanta::Clock, u64),
    /// The coarse monotonic clock, and the monotonic clock's reading (in
    /// nanoseconds) at or before `base`.
    #[cfg(target_os = "linux")]
    Coarse(u64),
}

/// The process's calibrated counter (calibrated once).
fn counter() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Whether tokio's clock is paused here: it stands still while real time
/// passes (a paused clock only moves when the runtime is idle or told to,
/// never during a spin).
fn tokio_paused() -> bool {
    let t0 = Instant::now();
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    Instant::now() == t0
}

#[cfg(target_os = "linux")]
mod coarse {
    use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};

    fn nanos(t: Timespec) -> u64 {
        (t.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec.max(0) as u64)
    }

    /// Whether the coarse clock ticks at least every `tick`.
    pub(super) fn usable(tick: std::time::Duration) -> bool {
        let res = nanos(clock_getres(ClockId::MonotonicCoarse));
        res > 0 && u128::from(res) <= tick.as_nanos()
    }

    /// The monotonic clock, in nanoseconds (the clock tokio's and std's
    /// instants read on Linux).
    pub(super) fn monotonic() -> u64 {
        nanos(clock_gettime(ClockId::Monotonic))
    }

    /// The monotonic clock at its last tick: never ahead of [`monotonic`].
    /// (Seconds since boot times a billion fit a `u64` for 584 years: no
    /// checks on the hot path.)
    #[inline(always)]
    pub(super) fn now() -> u64 {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        (t.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec as u64)
    }
}

impl Epoch {
    pub(crate) fn new() -> Self {
        if tokio_paused() {
            return Epoch {
                base: Instant::now(),
                source: Source::Tokio,
            };
        }
        #[cfg(target_os = "linux")]
        if coarse::usable(COARSE_TICK) {
            // The monotonic reading first: `base` is then at or after it,
            // so a reading's instant is never earlier than its time.
            let at = coarse::monotonic();
            return Epoch {
                base: Instant::now(),
                source: Source::Coarse(at),
            };
        }
        let c = counter();
        Epoch {
            source: Source::Counter(c, c.raw()),
            base: Instant::now(),
        }
    }

    /// Now (an enclosing layer's shared reading if there is one).
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        if let Some(t) = palisade_core::clock::shared() {
            return self.at(t);
        }
        match self.source {
            #[cfg(target_os = "linux")]
            Source::Coarse(at) => coarse::now().saturating_sub(at).saturating_add(1),
            Source::Counter(clock, raw) => clock.delta_as_nanos(raw, clock.raw()).saturating_add(1),
            Source::Tokio => self.at(Instant::now()),
        }
    }

    #[inline]
    pub(crate) fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    /// The instant of a reading, on tokio's clock (for its timers).
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn under_a_paused_clock_the_epoch_follows_tokio() {
        let e = Epoch::new();
        assert!(matches!(e.source, Source::Tokio));
        let t0 = e.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(e.now(), t0, "real time is not tokio's");
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(e.now(), t0 + 5_000_000);
    }

    /// Each real-clock source an epoch may read, built as `new` builds it.
    fn real_sources() -> Vec<Epoch> {
        let c = counter();
        let mut epochs = vec![Epoch {
            source: Source::Counter(c, c.raw()),
            base: Instant::now(),
        }];
        #[cfg(target_os = "linux")]
        if coarse::usable(COARSE_TICK) {
            let at = coarse::monotonic();
            epochs.push(Epoch {
                base: Instant::now(),
                source: Source::Coarse(at),
            });
        }
        epochs
    }

    #[tokio::test]
    async fn on_the_real_clock_the_epoch_counts_real_time_never_ahead_of_it() {
        let e = Epoch::new();
        assert!(!matches!(e.source, Source::Tokio));
        #[cfg(target_os = "linux")]
        assert!(
            matches!(e.source, Source::Coarse(_)) == coarse::usable(COARSE_TICK),
            "the coarse clock is read where it ticks often enough"
        );
        for e in real_sources() {
            // The counter is calibrated against the OS clock: it may stray
            // a little either way. The coarse clock is never ahead, and
            // behind by its last tick (more when the kernel's tick is late:
            // the bound here only catches a clock gone wrong).
            let (ahead, behind) = match e.source {
                Source::Counter(..) => (Duration::from_micros(200), Duration::from_millis(1)),
                _ => (Duration::ZERO, COARSE_TICK + Duration::from_millis(50)),
            };
            let t0 = e.now();
            let real = std::time::Instant::now();
            while real.elapsed() < Duration::from_millis(20) {
                // Each reading's instant is within its bounds of tokio's
                // clock read before and after it.
                let before = Instant::now();
                let at = e.instant(e.now());
                let after = Instant::now();
                assert!(
                    at <= after + ahead,
                    "{:?} ahead ({:?})",
                    at - after,
                    e.source
                );
                assert!(
                    at + behind >= before,
                    "{:?} behind ({:?})",
                    before - at,
                    e.source
                );
            }
            let passed = Duration::from_nanos(e.now() - t0);
            let real = real.elapsed();
            assert!(
                passed + behind >= real && passed <= real + ahead + behind,
                "{passed:?} counted over {real:?} ({:?})",
                e.source
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_reading_is_used_whatever_the_clock() {
        let e = Epoch::new();
        let (read, _g) = palisade_core::clock::SharedReading::enter();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(e.now(), e.at(read));
    }
}
