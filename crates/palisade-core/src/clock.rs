//! One clock read per call chain.
//!
//! A tower stack calls each layer's `call` from the one outside it,
//! synchronously: between a request deadline layer's `call` (palisade-
//! deadline's `DeadlineService`) and the `call`s made inside it (the first
//! attempt's timeout, a retry budget's deposit, a bulkhead slot free at
//! once, a closed breaker), nothing can await, so no time passes that a
//! timer could notice: under tokio's paused clock none at all, and on the
//! real clock the few hundred nanoseconds the layers in between take
//! (tokio's timers count in milliseconds). Reading the clock once for all
//! of them saves a clock read per layer that needs the time.
//!
//! So the deadline layer reads the clock and leaves the reading in a
//! thread-local for the length of its `call` ([`SharedReading::enter`]);
//! layers called from inside it ask [`now`] and get that reading instead
//! of reading the clock again. Calls made later (a queued call, a retry
//! after its backoff, anything polled from a future) find no reading and
//! read the clock themselves.
//!
//! Tower services must not block in `call`; one that did (between a
//! deadline and an attempt timeout) would make the attempt's timer start
//! early by as long as it blocked.
//!
//! ```
//! use palisade_core::clock::{self, SharedReading};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (read, _guard) = SharedReading::enter();
//! // Everything called while `_guard` lives sees the same reading.
//! assert_eq!(clock::now(), read);
//! # }
//! ```

use std::cell::Cell;

use tokio::time::Instant;

thread_local! {
    /// The clock as read by the enclosing deadline layer's `call`, while it
    /// runs.
    static CALL_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Keeps a reading available to the layers called from the current
/// `call`; puts back what was there before when dropped (on unwind too).
#[must_use = "the reading is only shared while the guard lives"]
#[derive(Debug)]
pub struct SharedReading {
    before: Option<Instant>,
}

impl SharedReading {
    /// The time now (an enclosing layer's reading if there is one, else a
    /// clock read), shared with every layer called before the guard drops.
    #[inline]
    pub fn enter() -> (Instant, SharedReading) {
        let before = CALL_NOW.with(Cell::get);
        let now = before.unwrap_or_else(Instant::now);
        CALL_NOW.with(|c| c.set(Some(now)));
        (now, SharedReading { before })
    }
}

impl Drop for SharedReading {
    #[inline]
    fn drop(&mut self) {
        let before = self.before;
        CALL_NOW.with(|c| c.set(before));
    }
}

/// The time now: an enclosing deadline layer's reading while its `call`
/// runs, otherwise a clock read.
#[inline]
pub fn now() -> Instant {
    shared().unwrap_or_else(Instant::now)
}

/// An enclosing deadline layer's reading while its `call` runs, without
/// reading the clock otherwise (for a layer with a clock of its own).
///
/// ```
/// use palisade_core::clock::{self, SharedReading};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(clock::shared(), None);
/// let (read, _guard) = SharedReading::enter();
/// assert_eq!(clock::shared(), Some(read));
/// # }
/// ```
#[inline]
pub fn shared() -> Option<Instant> {
    CALL_NOW.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reading_is_shared_only_while_its_guard_lives() {
        let t0 = Instant::now();
        {
            let (outer, _g) = SharedReading::enter();
            assert_eq!(outer, t0);
            tokio::time::advance(Duration::from_secs(1)).await;
            // Inside the guard (no await happens there in real use; here
            // the clock is moved on purpose to tell the two apart).
            assert_eq!(now(), t0);
            {
                let (inner, _g2) = SharedReading::enter();
                assert_eq!(inner, t0, "a nested call reuses the reading");
            }
            assert_eq!(now(), t0, "the outer reading is back");
        }
        assert_eq!(now(), t0 + Duration::from_secs(1), "read afresh after");
    }

    #[test]
    fn a_panic_inside_puts_the_reading_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let caught = std::panic::catch_unwind(|| {
                let (_, _g) = SharedReading::enter();
                panic!("inside a call");
            });
            assert!(caught.is_err());
            assert_eq!(CALL_NOW.with(Cell::get), None);
        });
    }
}
