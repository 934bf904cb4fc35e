//! One clock read per call chain, or per poll of a task.
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
//! A task that drives many requests' futures (a server's connection, say)
//! can go further and open a [`PollReading`] around each poll: the first
//! [`now`] inside reads the clock and every later one in the same poll
//! gets that reading, as an event loop's cached time (nginx's, Envoy's
//! dispatcher's). A poll does a few microseconds of work between its
//! wake-up and its next wait, and a reading is a few tens of nanoseconds;
//! what reads the time there (a request's start, its deadline, a pooled
//! connection's return, the request's end) reads it at the poll's start.
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
    /// The enclosing poll's reading, while a [`PollReading`] is open.
    static POLL_NOW: Cell<Poll> = const { Cell::new(Poll::Off) };
}

/// Where the current poll's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// No [`PollReading`] open.
    Off,
    /// Open, nothing read yet.
    Open,
    /// Open, and read.
    Read(Instant),
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
        // Read first: inside a poll's reading that keeps it, and it is what
        // the guard puts back.
        let now = now();
        let before = CALL_NOW.with(|c| c.replace(Some(now)));
        (now, SharedReading { before })
    }
}

/// Keeps the first clock reading taken while it lives for every later
/// [`now`] (and [`SharedReading`]) on this thread; puts back what was there
/// before when dropped. Opened around one poll of a task; never across an
/// await.
///
/// ```
/// use palisade_core::clock::{self, PollReading};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pause = || std::thread::sleep(std::time::Duration::from_millis(1));
/// let first = {
///     let _poll = PollReading::enter();
///     let first = clock::now();
///     pause();
///     assert_eq!(clock::now(), first, "one reading for the poll");
///     first
/// };
/// pause();
/// assert!(clock::now() > first, "read afresh after");
/// # }
/// ```
///
/// Unlike a [`SharedReading`], a poll's reading is not [`shared`]: a layer
/// with a clock of its own (a rate limiter's) keeps reading that one,
/// except inside a call chain.
#[must_use = "the first reading is only kept while the guard lives"]
#[derive(Debug)]
pub struct PollReading {
    /// Whether this guard opened the poll's reading (one opened inside
    /// another keeps the outer's, and leaves it open).
    opened: bool,
}

impl PollReading {
    /// Opens the poll's reading (taken at the first [`now`]).
    #[inline]
    pub fn enter() -> PollReading {
        let opened = POLL_NOW.with(|p| {
            let off = p.get() == Poll::Off;
            if off {
                p.set(Poll::Open);
            }
            off
        });
        PollReading { opened }
    }
}

impl Drop for PollReading {
    #[inline]
    fn drop(&mut self) {
        if self.opened {
            POLL_NOW.with(|p| p.set(Poll::Off));
        }
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
/// runs (or the poll's, inside a [`PollReading`]), otherwise a clock read.
#[inline]
pub fn now() -> Instant {
    if let Some(now) = shared() {
        return now;
    }
    POLL_NOW.with(|p| match p.get() {
        Poll::Read(now) => now,
        Poll::Open => {
            let now = Instant::now();
            p.set(Poll::Read(now));
            now
        }
        Poll::Off => Instant::now(),
    })
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

    #[tokio::test(start_paused = true)]
    async fn a_polls_first_reading_is_kept_for_the_poll_and_no_longer() {
        let t0 = Instant::now();
        {
            let _poll = PollReading::enter();
            tokio::time::advance(Duration::from_secs(1)).await;
            let first = now();
            assert_eq!(first, t0 + Duration::from_secs(1), "read when asked");
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(now(), first);
            assert_eq!(shared(), None, "not a call chain's reading");
            {
                // A call chain's reading inside the poll is the poll's,
                // and leaves it there.
                let (call, _g) = SharedReading::enter();
                assert_eq!(call, first);
            }
            assert_eq!(now(), first);
            {
                // A poll inside (a task polled from another's poll) keeps
                // the outer reading, and gives it back.
                let _inner = PollReading::enter();
                assert_eq!(now(), first);
            }
            assert_eq!(now(), first);
        }
        assert_eq!(now(), t0 + Duration::from_secs(2), "read afresh after");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(now(), t0 + Duration::from_secs(3), "and not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_chains_reading_opened_first_is_the_polls() {
        let t0 = Instant::now();
        let _poll = PollReading::enter();
        {
            let (call, _g) = SharedReading::enter();
            assert_eq!(call, t0);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(now(), t0, "the poll kept the call's reading");
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
