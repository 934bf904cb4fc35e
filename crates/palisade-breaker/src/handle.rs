//! The operator's view of a breaker: state, metrics, admin actions and a
//! subscription to state changes.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Admission, CircuitState, FailureKind, ProviderId, Refusing, RejectReason};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::Core;

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The breaker was just built (the initial value of a subscription).
    Created,
    /// `count` failures in a row reached the `threshold`.
    ConsecutiveFailures {
        /// Failures in a row.
        count: u32,
        /// The configured threshold.
        threshold: u32,
    },
    /// The failure rate over the window reached the threshold.
    FailureRate {
        /// The rate observed.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
        /// Calls in the window.
        calls: u64,
    },
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate {
        /// The rate observed.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
        /// Calls in the window.
        calls: u64,
    },
    /// The provider asked us to stay away (429/503/529 with a wait).
    Cooldown {
        /// How long, after capping.
        retry_after: Duration,
    },
    /// Another breaker guarding the same provider opened (a replica of a
    /// fleet, see [`BreakerHandle::follow_open`]): open for exactly this
    /// long, not counted as a trip of this breaker.
    Peer {
        /// How long the other breaker stays open.
        retry_after: Duration,
    },
    /// Another breaker guarding the same provider closed after its probes
    /// succeeded (see [`BreakerHandle::follow_close`]).
    PeerClosed,
    /// Active health checks passed this many times in a row while open:
    /// probing at once instead of waiting out the open period (see
    /// [`BreakerHandle::checks_passed`]).
    ChecksPassed {
        /// Checks passed in a row.
        successes: u32,
    },
    /// Active health checks failed this many times in a row while closed:
    /// opened before a user's call failed (see
    /// [`BreakerHandle::checks_failed`]).
    ChecksFailed {
        /// Checks failed in a row.
        failures: u32,
    },
    /// The open period ended; probing.
    OpenElapsed,
    /// A half-open probe failed.
    ProbeFailed {
        /// How it failed.
        kind: FailureKind,
    },
    /// Enough half-open probes succeeded.
    ProbesSucceeded {
        /// Successes counted.
        successes: u32,
    },
    /// Half-open lasted longer than its maximum wait.
    HalfOpenTimeout {
        /// The configured maximum.
        waited: Duration,
    },
    /// An operator forced the breaker open.
    ForcedOpen,
    /// An operator disabled the breaker.
    Disabled,
    /// An operator reset the breaker.
    Reset,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::Created => f.write_str("created"),
            TransitionReason::ConsecutiveFailures { count, threshold } => {
                write!(f, "{count} consecutive failures (threshold {threshold})")
            }
            TransitionReason::FailureRate {
                rate,
                threshold,
                calls,
            } => write!(
                f,
                "failure rate {:.1}% over {calls} calls (threshold {:.1}%)",
                rate * 100.0,
                threshold * 100.0
            ),
            TransitionReason::SlowCallRate {
                rate,
                threshold,
                calls,
            } => write!(
                f,
                "slow-call rate {:.1}% over {calls} calls (threshold {:.1}%)",
                rate * 100.0,
                threshold * 100.0
            ),
            TransitionReason::Cooldown { retry_after } => {
                write!(f, "provider asked to retry after {retry_after:?}")
            }
            TransitionReason::Peer { retry_after } => {
                write!(f, "another replica's breaker opened for {retry_after:?}")
            }
            TransitionReason::PeerClosed => f.write_str("another replica's probes succeeded"),
            TransitionReason::ChecksPassed { successes } => {
                write!(f, "{successes} health checks passed in a row")
            }
            TransitionReason::ChecksFailed { failures } => {
                write!(f, "{failures} health checks failed in a row")
            }
            TransitionReason::OpenElapsed => f.write_str("open period ended"),
            TransitionReason::ProbeFailed { kind } => write!(f, "half-open probe failed: {kind}"),
            TransitionReason::ProbesSucceeded { successes } => {
                write!(f, "{successes} half-open probes succeeded")
            }
            TransitionReason::HalfOpenTimeout { waited } => {
                write!(f, "half-open for longer than {waited:?}")
            }
            TransitionReason::ForcedOpen => f.write_str("forced open by operator"),
            TransitionReason::Disabled => f.write_str("disabled by operator"),
            TransitionReason::Reset => f.write_str("reset by operator"),
        }
    }
}

/// One state change, as published to subscribers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateChange {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// Why.
    pub reason: TransitionReason,
    /// When.
    pub at: Instant,
}

/// A point-in-time view of a breaker's numbers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The provider the breaker protects, if named.
    pub provider: Option<ProviderId>,
    /// The current state.
    pub state: CircuitState,
    /// Calls that finished (success + failure + ignored).
    pub calls: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed in a way the breaker counts (cooldowns included).
    pub failures: u64,
    /// Calls that finished in a way the breaker ignores (4xx, rejections).
    pub ignored: u64,
    /// Calls slower than the slow-call threshold (when that rule is on).
    pub slow_calls: u64,
    /// Calls refused without being sent.
    pub rejected: u64,
    /// Calls whose futures were dropped before finishing.
    pub abandoned: u64,
    /// Times the breaker opened.
    pub times_opened: u64,
    /// Failures in a row right now.
    pub consecutive_failures: u32,
    /// Calls in the sliding window (when a rate rule is on).
    pub window_calls: u64,
    /// Failure rate in the window, 0..=1.
    pub failure_rate: f64,
    /// Slow-call rate in the window, 0..=1.
    pub slow_call_rate: f64,
    /// Time left in the open period, when open.
    pub open_remaining: Option<Duration>,
    /// Half-open probes in flight.
    pub probes_in_flight: u32,
    /// The last transition and its reason.
    pub last_transition: StateChange,
}

/// A cloneable handle on one breaker, for operators and health reports.
///
/// Get it from [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle)
/// (or a service's [`handle`](crate::CircuitBreaker::handle)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_breaker::CircuitBreakerLayer;
/// use palisade_core::CircuitState;
///
/// let layer = CircuitBreakerLayer::builder().provider("openai").build().unwrap();
/// let handle = layer.handle();
/// let mut changes = handle.subscribe();
///
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// changes.changed().await.unwrap();
/// assert_eq!(changes.borrow().to, CircuitState::ForcedOpen);
///
/// handle.reset();
/// assert_eq!(handle.snapshot().state, CircuitState::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct BreakerHandle {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("provider", &self.core.cfg.provider)
            .field("state", &self.state())
            .finish()
    }
}

impl BreakerHandle {
    /// The current state. A half-open breaker past its
    /// `half_open_max_wait` re-opens here rather than waiting for a call.
    pub fn state(&self) -> CircuitState {
        self.core.settle();
        self.core.state()
    }

    /// The provider this breaker protects, if named.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.core.cfg.provider.as_ref()
    }

    /// Whether a call made now would be refused without being sent.
    pub fn is_refusing(&self) -> bool {
        self.core.refusing()
    }

    /// Time left in the open period, when open.
    pub fn open_remaining(&self) -> Option<Duration> {
        self.core.open_remaining()
    }

    /// A snapshot of the breaker's numbers.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.core.settle();
        let t = &self.core.totals;
        let successes = self.core.successes();
        let failures = t.failures.get();
        let ignored = t.ignored.get();
        let window = self.core.window_counts().unwrap_or_default();
        let (probes, _) = self.core.half_open_probes();
        BreakerSnapshot {
            provider: self.core.cfg.provider.clone(),
            state: self.state(),
            calls: successes + failures + ignored,
            successes,
            failures,
            ignored,
            slow_calls: t.slow.get(),
            rejected: t.rejected.get(),
            abandoned: t.abandoned.get(),
            times_opened: t.opened.load(Ordering::Relaxed),
            consecutive_failures: self.core.consecutive_failures(),
            window_calls: window.calls,
            failure_rate: window.failure_rate(),
            slow_call_rate: window.slow_rate(),
            open_remaining: self.core.open_remaining(),
            probes_in_flight: probes,
            last_transition: *self.core.changes.borrow(),
        }
    }

    /// Holds the breaker open: every call fails fast until
    /// [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.core
            .force(CircuitState::ForcedOpen, TransitionReason::ForcedOpen);
    }

    /// Switches the breaker off: every call passes, outcomes are still
    /// recorded in the metrics, nothing trips it until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.core
            .force(CircuitState::Disabled, TransitionReason::Disabled);
    }

    /// Back to Closed with clean counts and the base open duration.
    pub fn reset(&self) {
        self.core
            .force(CircuitState::Closed, TransitionReason::Reset);
    }

    /// Opens the breaker until `d` from now because another breaker
    /// guarding the same provider opened (another replica of a fleet; see
    /// palisade-redis). It refuses until then and probes as usual after;
    /// the trip is not this breaker's, so its open period does not grow.
    /// An open breaker whose period ends later stays as it is; a forced-open
    /// or disabled one is not moved. Returns whether the breaker is now
    /// open until at least then.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::CircuitState;
    /// use std::time::Duration;
    ///
    /// let handle = CircuitBreakerLayer::builder().build().unwrap().handle();
    /// assert!(handle.follow_open(Duration::from_secs(2)));
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// assert_eq!(handle.open_remaining(), Some(Duration::from_secs(2)));
    /// # }
    /// ```
    pub fn follow_open(&self, d: Duration) -> bool {
        self.core.follow_open(d)
    }

    /// Closes an open or half-open breaker because another breaker guarding
    /// the same provider closed after its probes succeeded (another replica
    /// of a fleet). Counts start clean, as after any close. Returns whether
    /// it moved.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::CircuitState;
    /// use std::time::Duration;
    ///
    /// let handle = CircuitBreakerLayer::builder().build().unwrap().handle();
    /// handle.follow_open(Duration::from_secs(30));
    /// assert!(handle.follow_close());
    /// assert_eq!(handle.state(), CircuitState::Closed);
    /// # }
    /// ```
    pub fn follow_close(&self) -> bool {
        self.core.follow_close()
    }

    /// Active health checks of the provider passed `successes` times in a
    /// row: an open breaker moves to half-open at once (its probes, real
    /// calls, then decide as usual) instead of waiting out its open period.
    /// Any other state is left as it is. Returns whether it moved.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::CircuitState;
    ///
    /// let handle = CircuitBreakerLayer::builder().build().unwrap().handle();
    /// assert!(!handle.checks_passed(1), "closed: nothing to recover");
    /// handle.checks_failed(3);
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// assert!(handle.checks_passed(1));
    /// assert_eq!(handle.state(), CircuitState::HalfOpen);
    /// # }
    /// ```
    pub fn checks_passed(&self, successes: u32) -> bool {
        self.core.checks_passed(successes)
    }

    /// Active health checks of the provider failed `failures` times in a
    /// row: a closed breaker opens now, as a trip of its own (its open
    /// period grows as after any trip), before a user's call fails. Any
    /// other state is left as it is. Returns whether it moved.
    pub fn checks_failed(&self, failures: u32) -> bool {
        self.core.checks_failed(failures)
    }

    /// A handle that does not keep the breaker alive: for background tasks
    /// that should end with it.
    pub fn downgrade(&self) -> WeakBreakerHandle {
        WeakBreakerHandle {
            core: Arc::downgrade(&self.core),
        }
    }

    /// The breaker's answer to the admission view (see
    /// [`Admission`](palisade_core::Admission)): refusing while open with
    /// time left or forced open, with the time left.
    pub fn admission(&self) -> Option<Refusing> {
        self.is_refusing().then(|| Refusing {
            reason: RejectReason::CircuitOpen(self.core.state()),
            retry_in: self.open_remaining(),
        })
    }

    /// A receiver that sees every state change (the latest one at least:
    /// `watch` keeps only the newest value).
    pub fn subscribe(&self) -> watch::Receiver<StateChange> {
        self.core.changes.subscribe()
    }
}

/// A [`BreakerHandle`] that does not keep its breaker alive (see
/// [`BreakerHandle::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakBreakerHandle {
    core: std::sync::Weak<Core>,
}

impl WeakBreakerHandle {
    /// The handle, while the breaker is still there.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder().build().unwrap();
    /// let weak = layer.handle().downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(layer);
    /// assert!(weak.upgrade().is_none());
    /// ```
    pub fn upgrade(&self) -> Option<BreakerHandle> {
        self.core.upgrade().map(|core| BreakerHandle { core })
    }
}

impl Admission for BreakerHandle {
    fn refusing(&self) -> Option<Refusing> {
        self.admission()
    }
}
