//! [`Epoch`]: a limiter's clock, in nanoseconds since it was built, on
//! tokio's clock (so a paused clock drives it in tests).

use std::time::Duration;

use tokio::time::Instant;

/// The instant a limiter counts from. Readings are nanoseconds since then,
/// plus one, so that 0 ("never") is earlier than any reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn new() -> Self {
        Epoch(Instant::now())
    }

    /// Now (an enclosing layer's shared reading if there is one).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.at(palisade_core::clock::now())
    }

    #[inline]
    pub(crate) fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.0).as_nanos() as u64 + 1
    }

    /// The instant of a reading.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.0 + Duration::from_nanos(nanos.saturating_sub(1))
    }
}
