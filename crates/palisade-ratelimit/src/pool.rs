//! [`Pool`]: quota shared beyond this process, which a limiter draws from
//! instead of its own cells while the pool can answer.

use std::fmt;
use std::time::Duration;

/// Quota shared with other processes (the replicas of a fleet), of which
/// this process holds a part it can spend without asking anyone: a limiter
/// given a pool ([`RateLimitHandle::share`](crate::RateLimitHandle::share))
/// admits a call only if the pool has it, and while the pool cannot reach
/// the others it falls back to its own quotas cut to its
/// [share](Draw::Alone). palisade-redis implements it on Redis.
///
/// Every method is on the call path and must answer at once from local
/// state: no I/O, no lock held across anything slow. A pool refills what it
/// holds in the background.
///
/// ```
/// use palisade_ratelimit::{Draw, Pool, Quota, RateLimitLayer};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// /// A pool holding a fixed number of requests, never refilled.
/// #[derive(Debug)]
/// struct Fixed(AtomicU64);
///
/// impl Pool for Fixed {
///     fn take(&self, _tokens: u64) -> Draw {
///         match self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
///             Ok(_) => Draw::Taken,
///             Err(_) => Draw::Empty(Duration::from_secs(60)),
///         }
///     }
///     fn peek(&self, _tokens: u64) -> Draw {
///         if self.0.load(Ordering::Acquire) > 0 { Draw::Taken } else { Draw::Empty(Duration::from_secs(60)) }
///     }
///     fn give_back(&self, _tokens: u64) {
///         self.0.fetch_add(1, Ordering::AcqRel);
///     }
/// }
///
/// let layer = RateLimitLayer::builder().quota(Quota::per_minute(1_000)).build().unwrap();
/// layer.handle().share(Arc::new(Fixed(AtomicU64::new(2)))).unwrap();
/// assert!(layer.handle().wait().is_zero());
/// ```
pub trait Pool: Send + Sync + fmt::Debug + 'static {
    /// Takes a call of `tokens` (and one request) from what this process
    /// holds: [`Draw::Taken`] with it taken, or why not, with nothing
    /// taken.
    fn take(&self, tokens: u64) -> Draw;

    /// What [`take`](Self::take) would answer now, taking nothing.
    fn peek(&self, tokens: u64) -> Draw;

    /// Gives back a call of `tokens` that [`take`](Self::take) took and
    /// that was never sent.
    fn give_back(&self, tokens: u64);

    /// A call taken with an estimate of `estimated` tokens used `used`:
    /// charge or refund the difference. By default nothing is corrected.
    fn correct(&self, estimated: u64, used: u64) {
        let _ = (estimated, used);
    }

    /// The provider said it has nothing left for `wait` (its rate headers
    /// or a `Retry-After`): tell the others. By default nobody is told.
    fn exhausted(&self, wait: Duration) {
        let _ = wait;
    }
}

/// A [`Pool`]'s answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Draw {
    /// Taken from the pool.
    Taken,
    /// The pool has no room for it; there may be some after this long.
    Empty(Duration),
    /// The pool cannot reach the others: decide alone, on this process's
    /// own quotas cut to 1/`share` of their rate and burst (`share` is the
    /// number of processes sharing them, 1 for all of it).
    Alone {
        /// How many processes share the quotas.
        share: u32,
    },
}
