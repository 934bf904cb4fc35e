//! The retry layer's errors: a refused configuration, and the wrapper that
//! says why retrying stopped early.

use std::fmt;
use std::time::Duration;

use palisade_core::{BoxError, Failure, ProviderId};

pub use palisade_core::ConfigError;

/// Why the layer stopped retrying before its attempts ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The retry budget had nothing left: retries across all requests are
    /// already at the budget's share of traffic.
    BudgetExhausted,
    /// The next attempt could not start (after its wait) with enough of
    /// the request's deadline left; `wait` is what the retry would have
    /// slept (the provider's `Retry-After`, or the backoff).
    DeadlineTooClose {
        /// The wait the retry needed.
        wait: Duration,
        /// What was left of the deadline.
        remaining: Duration,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::BudgetExhausted => f.write_str("retry budget exhausted"),
            StopReason::DeadlineTooClose { wait, remaining } => write!(
                f,
                "no retry: waiting {wait:?} would leave too little of the {remaining:?} before the deadline"
            ),
        }
    }
}

/// The last real error of a request whose retries were stopped early, with
/// why and after how many attempts.
///
/// The inner error is its [`source`](std::error::Error::source), so
/// palisade's classifiers (which walk the chain) still see the provider's
/// own failure: a fallback layer outside moves on exactly as it would for
/// the bare error.
///
/// Only errors are wrapped: when the last attempt returned a response
/// (say an HTTP 503), that response is returned as is, since it is the
/// provider's own answer; the stop is then visible in the layer's stats and
/// its `tracing` event.
#[derive(Debug, thiserror::Error)]
#[error("{prefix}{reason} after {attempts} attempt(s): {source}", prefix = ProviderPrefix(.provider.as_ref()))]
pub struct RetryStopped {
    reason: StopReason,
    attempts: u32,
    provider: Option<ProviderId>,
    #[source]
    source: BoxError,
}

struct ProviderPrefix<'a>(Option<&'a ProviderId>);

impl fmt::Display for ProviderPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "provider {p}: "),
            None => Ok(()),
        }
    }
}

impl RetryStopped {
    pub(crate) fn new(
        reason: StopReason,
        attempts: u32,
        provider: Option<ProviderId>,
        source: BoxError,
    ) -> Self {
        RetryStopped {
            reason,
            attempts,
            provider,
            source,
        }
    }

    /// Why retrying stopped.
    pub fn reason(&self) -> StopReason {
        self.reason
    }

    /// How many attempts were made (the first send included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The provider, when the layer was told its name.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// The last attempt's own error.
    pub fn last_error(&self) -> &BoxError {
        &self.source
    }

    /// Unwraps the last attempt's own error.
    pub fn into_last_error(self) -> BoxError {
        self.source
    }
}

/// A failed answer (a response, not an error: an HTTP 503, a gRPC
/// `UNAVAILABLE`) that the layer retried, kept as the
/// [`source`](std::error::Error::source) of a refusal that ended the
/// retries: when a later attempt is refused without a call (the breaker
/// those failures opened, a rate limit, the deadline), the refusal still
/// says what the provider last did.
///
/// ```
/// use palisade_core::{FailureKind, Failure};
/// use palisade_retry::FailedAnswer;
///
/// let e = FailedAnswer::new(Failure::new(FailureKind::Server(http::StatusCode::BAD_GATEWAY)), 2);
/// assert_eq!(e.to_string(), "attempt 2 was answered with a failure: server error 502");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAnswer {
    failure: Failure,
    attempt: u32,
}

impl FailedAnswer {
    /// Attempt number `attempt` (from 1) was answered with `failure`.
    pub fn new(failure: Failure, attempt: u32) -> Self {
        FailedAnswer { failure, attempt }
    }

    /// How the answer was classified.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }

    /// Which attempt it answered (from 1).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for FailedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt {} was answered with a failure: {}",
            self.attempt, self.failure.kind
        )
    }
}

impl std::error::Error for FailedAnswer {}
