//! One timer for nested deadlines: a timed future whose inner future
//! already holds a timer that wakes the task at or before its own instant
//! need not arm one of its own.
//!
//! In the default stack a request's deadline (60 s) wraps each attempt's
//! timeout (30 s, never past the deadline): while an attempt is pending,
//! its timer wakes the task first, so the request's timer would only be a
//! second entry in tokio's timer wheel, inserted and removed on every
//! request for nothing. Each timed future reports, for the poll in
//! progress, the earliest timer armed under it and the waker that timer
//! wakes; an outer one arms its own only when nothing under it, armed with
//! its own waker, covers its instant.
//!
//! Why it is safe: a future is only touched while it is polled or dropped,
//! so a timer reported during a poll that returned `Pending` stays
//! registered, with that poll's waker, until the task's next poll, when the
//! question is asked again, unless the future holding it is dropped first
//! (a combinator dropping one child and going on waiting for another): a
//! timed future dropped takes its report back ([`retract`]). A report made
//! with another waker (a combinator's own per-child waker, another task's
//! future polled inside this poll) is not taken, and a child left unpolled
//! reports nothing: the outer future then arms its own timer. A report can
//! be missing, never wrong.

use std::cell::Cell;
use std::ptr;
use std::task::{RawWakerVTable, Waker};

use tokio::time::Instant;

/// A timer armed during the poll in progress: when it fires, which waker
/// it wakes (compared as `Waker::will_wake` does, by data and vtable
/// pointers), and which timer it is (its address, to take the report back
/// when the timer is dropped).
#[derive(Clone, Copy)]
pub(crate) struct Armed {
    at: Instant,
    data: *const (),
    vtable: *const RawWakerVTable,
    timer: *const (),
}

impl Armed {
    /// The timer at `timer`, firing at `at`, registered with `waker`.
    #[inline]
    pub(crate) fn new<T>(at: Instant, waker: &Waker, timer: &T) -> Armed {
        Armed {
            at,
            data: waker.data(),
            vtable: waker.vtable(),
            timer: ptr::from_ref(timer).cast(),
        }
    }

    /// When it fires, if it wakes `waker`'s task as `waker` would.
    #[inline]
    pub(crate) fn wakes(&self, waker: &Waker) -> Option<Instant> {
        (ptr::eq(self.data, waker.data()) && ptr::eq(self.vtable, waker.vtable()))
            .then_some(self.at)
    }
}

thread_local! {
    /// The earliest timer armed by a timed future polled inside the
    /// current poll.
    static EARLIEST: Cell<Option<Armed>> = const { Cell::new(None) };
}

/// What the enclosing poll had been told before a timed future's inner
/// future was polled, kept meanwhile.
#[must_use]
pub(crate) struct Outer(Option<Armed>);

/// Starts the poll of a timed future's inner future: what is reported from
/// here on is what lies under that future.
#[inline]
pub(crate) fn enter() -> Outer {
    Outer(EARLIEST.with(Cell::take))
}

/// The earliest timer armed under the future since [`enter`].
#[inline]
pub(crate) fn below() -> Option<Armed> {
    EARLIEST.with(Cell::get)
}

/// Ends it for a future that is done: what the enclosing poll had been
/// told before, as it was (the timers under a finished future are no one's
/// to lean on).
#[inline]
pub(crate) fn restore(outer: Outer) {
    EARLIEST.with(|e| e.set(outer.0));
}

/// Ends it: reports `armed` (the earliest timer under or of this future
/// when it returned `Pending`; `None` when it is done) to the enclosing
/// poll, beside what that poll had been told before.
#[inline]
pub(crate) fn leave(outer: Outer, armed: Option<Armed>) {
    let earliest = match (outer.0, armed) {
        (Some(a), Some(b)) if b.at < a.at => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    EARLIEST.with(|e| e.set(earliest));
}

/// Takes back the report of the timer at `timer`, being dropped, if it is
/// the one reported so far in the poll in progress (a report it has lost to
/// an earlier timer is no longer there to take back).
#[inline]
pub(crate) fn retract<T>(timer: &T) {
    let timer: *const () = ptr::from_ref(timer).cast();
    EARLIEST.with(|e| {
        if e.get().is_some_and(|a| ptr::eq(a.timer, timer)) {
            e.set(None);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct Nothing;
    impl Wake for Nothing {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_report_reaches_the_enclosing_poll_and_not_a_sibling() {
        let waker = Waker::from(Arc::new(Nothing));
        let t = Instant::now();
        let at = |s| Armed::new(t + Duration::from_secs(s), &waker, &waker);
        let outer = enter();
        let first = enter();
        assert!(below().is_none());
        leave(first, Some(at(5)));
        let second = enter();
        assert!(below().is_none(), "a sibling's report is not under it");
        leave(second, None);
        assert_eq!(
            below().and_then(|a| a.wakes(&waker)),
            Some(t + Duration::from_secs(5))
        );
        // The earlier of two wins, whichever came first.
        let third = enter();
        leave(third, Some(at(2)));
        let fourth = enter();
        leave(fourth, Some(at(9)));
        assert_eq!(
            below().and_then(|a| a.wakes(&waker)),
            Some(t + Duration::from_secs(2))
        );
        leave(outer, None);
        EARLIEST.with(|e| e.set(None));
    }

    #[test]
    fn a_timer_that_wakes_another_waker_covers_nothing() {
        let mine = Waker::from(Arc::new(Nothing));
        let other = Waker::from(Arc::new(Nothing));
        let armed = Armed::new(Instant::now(), &other, &other);
        assert_eq!(armed.wakes(&mine), None);
        assert!(armed.wakes(&other.clone()).is_some());
    }
}
