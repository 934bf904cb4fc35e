//! Deadlines carried by requests, and the nesting rule.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must be answered.
///
/// A request carries at most one deadline (see [`HasDeadline`]). Layers
/// further in may only *shorten* it ([`HasDeadline::tighten_deadline`]), never
/// extend it: a retry never sleeps past it, a fallback never starts a
/// provider after it, an attempt timeout is `min(per_attempt, remaining)`.
///
/// Built on `tokio::time::Instant`, so tests can run with
/// `tokio::time::pause()` and be exact.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::Deadline;
/// use std::time::Duration;
///
/// let d = Deadline::after(Duration::from_secs(30));
/// tokio::time::sleep(Duration::from_secs(10)).await;
/// assert_eq!(d.remaining(), Duration::from_secs(20));
/// assert!(!d.is_expired());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `timeout` from now. A timeout too large to represent is
    /// clamped to about 30 years from now rather than overflowing.
    pub fn after(timeout: Duration) -> Self {
        Self::after_from(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `start`, clamped like [`Deadline::after`].
    pub fn after_from(start: Instant, timeout: Duration) -> Self {
        const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
        Deadline(start.checked_add(timeout).unwrap_or_else(|| start + FAR))
    }

    /// The instant itself.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left until the deadline, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Time left as seen at `now`, zero once passed.
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether the deadline has passed (a deadline exactly now has passed).
    pub fn is_expired(self) -> bool {
        self.0 <= Instant::now()
    }

    /// The earlier of `self` and `other`: the nesting rule in one call.
    pub fn min(self, other: Deadline) -> Deadline {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    /// `min(timeout, remaining)`: how long something started now may run
    /// under this deadline. Use it for an attempt's timeout.
    pub fn clamp(self, timeout: Duration) -> Duration {
        timeout.min(self.remaining())
    }
}

/// A request that can carry a [`Deadline`].
///
/// Implemented for `http::Request<B>` (the deadline rides in its
/// extensions, so it works for hyper, axum and tonic requests alike) and for
/// [`WithDeadline<T>`], a wrapper for any other request type. Implement it
/// for your own request type with two small methods.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{Deadline, HasDeadline};
/// use std::time::Duration;
///
/// let mut req = http::Request::new(());
/// let outer = req.tighten_deadline(Deadline::after(Duration::from_secs(60)));
/// // an inner layer can shorten it...
/// let inner = req.tighten_deadline(Deadline::after(Duration::from_secs(10)));
/// assert!(inner < outer);
/// // ...but never extend it
/// let kept = req.tighten_deadline(Deadline::after(Duration::from_secs(120)));
/// assert_eq!(kept, inner);
/// assert_eq!(req.deadline(), Some(inner));
/// # }
/// ```
pub trait HasDeadline {
    /// The deadline the request carries, if any.
    fn deadline(&self) -> Option<Deadline>;

    /// Stores `deadline` unconditionally, replacing any other. This is the
    /// implementor's hook; layers call
    /// [`tighten_deadline`](HasDeadline::tighten_deadline), which keeps the
    /// nesting rule.
    fn replace_deadline(&mut self, deadline: Deadline);

    /// Applies `deadline` only if it is earlier than the one carried, and
    /// returns the deadline now in force.
    fn tighten_deadline(&mut self, deadline: Deadline) -> Deadline {
        let effective = match self.deadline() {
            Some(existing) => existing.min(deadline),
            None => deadline,
        };
        if Some(effective) != self.deadline() {
            self.replace_deadline(effective);
        }
        effective
    }
}

impl<B> HasDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn replace_deadline(&mut self, deadline: Deadline) {
        // In place when one is there already: inserting allocates.
        match self.extensions_mut().get_mut::<Deadline>() {
            Some(d) => *d = deadline,
            None => {
                self.extensions_mut().insert(deadline);
            }
        }
    }
}

/// Any request type with an optional [`Deadline`] beside it, for services
/// whose requests are not `http::Request`s.
///
/// ```
/// use palisade_core::{HasDeadline, WithDeadline};
///
/// let req = WithDeadline::new("prompt");
/// assert_eq!(req.deadline(), None);
/// assert_eq!(*req.get_ref(), "prompt");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithDeadline<T> {
    request: T,
    deadline: Option<Deadline>,
}

impl<T> WithDeadline<T> {
    /// Wraps `request` with no deadline yet.
    pub const fn new(request: T) -> Self {
        WithDeadline {
            request,
            deadline: None,
        }
    }

    /// Wraps `request` with `deadline`.
    pub const fn with(request: T, deadline: Deadline) -> Self {
        WithDeadline {
            request,
            deadline: Some(deadline),
        }
    }

    /// The wrapped request.
    pub fn get_ref(&self) -> &T {
        &self.request
    }

    /// The wrapped request, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.request
    }

    /// Unwraps the request, dropping the deadline.
    pub fn into_inner(self) -> T {
        self.request
    }
}

impl<T> HasDeadline for WithDeadline<T> {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn replace_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_saturates() {
        let d = Deadline::after(Duration::from_millis(100));
        assert_eq!(d.remaining(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(d.remaining(), Duration::from_millis(1));
        assert!(!d.is_expired());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(d.is_expired());
        assert_eq!(d.remaining(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn clamp_is_min_of_timeout_and_remaining() {
        let d = Deadline::after(Duration::from_secs(10));
        assert_eq!(d.clamp(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(d.clamp(Duration::from_secs(30)), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(d.clamp(Duration::from_secs(3)), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn huge_timeout_does_not_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.remaining() > Duration::from_secs(86_400 * 365 * 29));
    }

    #[tokio::test(start_paused = true)]
    async fn nesting_on_wrapper_and_http() {
        let mut w = WithDeadline::new(5u32);
        let a = w.tighten_deadline(Deadline::after(Duration::from_secs(2)));
        let b = w.tighten_deadline(Deadline::after(Duration::from_secs(3)));
        assert_eq!(a, b);
        let c = w.tighten_deadline(Deadline::after(Duration::from_secs(1)));
        assert!(c < a);
        assert_eq!(w.deadline(), Some(c));
        *w.get_mut() += 1;
        assert_eq!(w.clone().into_inner(), 6);

        let mut r = http::Request::new(());
        assert_eq!(r.deadline(), None);
        let d = Deadline::after(Duration::from_secs(1));
        r.replace_deadline(d);
        assert_eq!(r.deadline(), Some(d));
    }

    proptest! {
        /// Whatever order deadlines are applied in, the one in force is the
        /// earliest of them: inner layers only ever shorten it.
        #[test]
        fn tighten_is_min_in_any_order(offsets in proptest::collection::vec(0u64..10_000, 1..20)) {
            let base = Instant::now();
            let mut req = WithDeadline::new(());
            let mut last: Option<Deadline> = None;
            for ms in &offsets {
                let now = req.tighten_deadline(Deadline::at(base + Duration::from_millis(*ms)));
                if let Some(prev) = last {
                    prop_assert!(now <= prev, "deadline was extended");
                }
                last = Some(now);
            }
            let min = offsets.iter().min().unwrap();
            prop_assert_eq!(req.deadline(), Some(Deadline::at(base + Duration::from_millis(*min))));
        }
    }
}
