//! [`Epoch`]: a limiter's clock, in nanoseconds since it was built.
//!
//! On the real clock it counts the CPU's time-stamp counter (through
//! `quanta`, which falls back to the OS clock where the counter is not
//! reliable): a read costs a third of tokio's (a `clock_gettime`). Under
//! tokio's paused clock (tests) it reads tokio's clock, so that the paused
//! clock drives it. Which one is decided when the limiter is built. Either
//! way, an enclosing deadline layer's shared reading is used while there
//! is one (no read at all).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The instant a limiter counts from, and how it reads the time. Readings
/// are nanoseconds since then, plus one, so that 0 ("never") is earlier
/// than any reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch {
    base: Instant,
    /// The time-stamp counter and its reading at `base`; `None` under
    /// tokio's paused clock.
    counter: Option<(&'static quanta::Clock, u64)>,
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

impl Epoch {
    pub(crate) fn new() -> Self {
        let counter = (!tokio_paused()).then(|| {
            let c = counter();
            (c, c.raw())
        });
        Epoch {
            base: Instant::now(),
            counter,
        }
    }

    /// Now (an enclosing layer's shared reading if there is one).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if let Some(t) = palisade_core::clock::shared() {
            return self.at(t);
        }
        match self.counter {
            Some((clock, raw)) => clock.delta_as_nanos(raw, clock.raw()).saturating_add(1),
            None => self.at(Instant::now()),
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
        assert!(e.counter.is_none());
        let t0 = e.now();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(e.now(), t0, "real time is not tokio's");
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(e.now(), t0 + 5_000_000);
    }

    #[tokio::test]
    async fn on_the_real_clock_the_epoch_counts_real_time() {
        let e = Epoch::new();
        assert!(e.counter.is_some());
        let t0 = e.now();
        let real = std::time::Instant::now();
        while real.elapsed() < Duration::from_millis(3) {
            std::hint::spin_loop();
        }
        let passed = e.now() - t0;
        let real = real.elapsed().as_nanos() as u64;
        assert!(
            passed >= 2_500_000 && passed <= real + 1_000_000,
            "{passed} ns counted over {real} ns"
        );
        // Its instants and tokio's agree (timers fire when readings say).
        let at = e.instant(e.now());
        let gap = at.saturating_duration_since(Instant::now())
            + Instant::now().saturating_duration_since(at);
        assert!(gap < Duration::from_millis(1), "{gap:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_reading_is_used_whatever_the_clock() {
        let e = Epoch::new();
        let (read, _g) = palisade_core::clock::SharedReading::enter();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(e.now(), e.at(read));
    }
}
