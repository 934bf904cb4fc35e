//! What a fallback chain reports when no provider answered.

use palisade_core::{
    classify_error, BoxError, FailureKind, ProviderId, Refusing, RejectReason, Rejected,
};
use std::fmt;
use std::time::Duration;

pub use palisade_core::ConfigError;

/// A refusal of one of this crate's settings.
pub(crate) fn config_error(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("fallback.{field}"), problem)
}

/// What happened at one provider of the chain.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The provider's service returned this error.
    Error(BoxError),
    /// The provider answered, with a response classified as this failure
    /// (an HTTP 503, say).
    Failed(FailureKind),
    /// Not called: a layer of its stack was refusing calls (an open
    /// circuit breaker, a full bulkhead...), for this long if known.
    Skipped(Refusing),
    /// Not called: the failure before it needed a provider marked for it
    /// (large context, content filter) and this one is not.
    SkippedUnsuited,
    /// Not called: the request's deadline had passed.
    DeadlineExceeded,
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Error(e) => write!(f, "{e}"),
            AttemptOutcome::Failed(kind) => write!(f, "{kind}"),
            AttemptOutcome::Skipped(refusing) => write!(f, "skipped, {refusing}"),
            AttemptOutcome::SkippedUnsuited => {
                f.write_str("skipped, not marked for this kind of failure")
            }
            AttemptOutcome::DeadlineExceeded => {
                f.write_str("not started, the request deadline had passed")
            }
        }
    }
}

/// One provider's line in an [`AllFailed`].
#[derive(Debug)]
pub struct ProviderAttempt {
    /// The provider.
    pub provider: ProviderId,
    /// What happened there.
    pub outcome: AttemptOutcome,
}

/// Every provider of the chain failed, was skipped, or could not be started
/// in time. Lists each one with its own outcome, in order: nothing is
/// hidden behind the last.
///
/// Its [`source`](std::error::Error::source) is the last provider error, if
/// any, so a classifier walking the chain sees a real failure.
#[derive(Debug)]
pub struct AllFailed {
    pub(crate) attempts: Vec<ProviderAttempt>,
}

impl AllFailed {
    /// Each provider and what happened there, in chain order.
    pub fn attempts(&self) -> &[ProviderAttempt] {
        &self.attempts
    }

    /// Whether any provider was actually called: it answered, or its
    /// service failed with anything but a refusal made before any call
    /// (a [`Rejected`] without a [`source`](std::error::Error::source):
    /// one with a source is a retry refused after calls that failed).
    pub fn any_called(&self) -> bool {
        self.attempts.iter().any(|a| match &a.outcome {
            AttemptOutcome::Failed(_) => true,
            AttemptOutcome::Error(e) => uncalled(e).is_none(),
            _ => false,
        })
    }
}

/// The refusal `e` is when the provider's own stack refused the call
/// before making any (an open breaker, a full bulkhead, this process out
/// of files), as a skip would have.
fn uncalled(e: &BoxError) -> Option<&Rejected> {
    e.downcast_ref::<Rejected>()
        .filter(|r| std::error::Error::source(*r).is_none())
}

impl AllFailed {
    /// Whether the request's deadline ended the chain: a provider not
    /// started for lack of time, or one that timed out.
    pub fn timed_out(&self) -> bool {
        self.attempts.iter().any(|a| match &a.outcome {
            AttemptOutcome::DeadlineExceeded => true,
            AttemptOutcome::Failed(kind) => matches!(kind, FailureKind::Timeout),
            AttemptOutcome::Error(e) => {
                matches!(classify_error(&**e).kind, FailureKind::Timeout)
                    || e.downcast_ref::<Rejected>()
                        .is_some_and(Rejected::is_deadline)
            }
            _ => false,
        })
    }

    /// The soonest time any provider said it might take calls again, when
    /// one said: a skipped provider's refusal (or a refusal its stack
    /// returned), or a provider's own 429 with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                AttemptOutcome::Skipped(r) => r.retry_in,
                AttemptOutcome::Failed(FailureKind::RateLimited { retry_after }) => *retry_after,
                AttemptOutcome::Error(e) => uncalled(e).and_then(Rejected::retry_after),
                _ => None,
            })
            .min()
    }

    /// Whether every provider was out of quota: skipped for its rate limit,
    /// or answered 429 itself.
    pub fn all_rate_limited(&self) -> bool {
        !self.attempts.is_empty()
            && self.attempts.iter().all(|a| match &a.outcome {
                AttemptOutcome::Skipped(Refusing {
                    reason: RejectReason::RateLimited,
                    ..
                })
                | AttemptOutcome::Failed(FailureKind::RateLimited { .. }) => true,
                AttemptOutcome::Error(e) => {
                    uncalled(e).is_some_and(|r| r.reason() == RejectReason::RateLimited)
                }
                _ => false,
            })
    }

    /// The HTTP status a server should answer with: 504 when the deadline
    /// ended the chain; 429 when every provider was out of quota (skipped
    /// for its rate limit or answered 429 itself; with
    /// [`retry_after`](Self::retry_after) the wait); 502 when providers were
    /// called and failed otherwise; 503 when every provider was skipped
    /// or refused by its own stack otherwise (open breakers, full
    /// bulkheads, this process out of files).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade_core::{BoxError, WithDeadline};
    /// use palisade_fallback::{AllFailed, Fallback, Target};
    /// use tower::{service_fn, ServiceExt};
    ///
    /// let refused = || service_fn(|_: WithDeadline<()>| async {
    ///     Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    /// });
    /// let chain = Fallback::builder()
    ///     .target(Target::new("a", refused()))
    ///     .target(Target::new("b", refused()))
    ///     .build()
    ///     .unwrap();
    /// let err = chain.oneshot(WithDeadline::new(())).await.unwrap_err();
    /// let all = err.downcast_ref::<AllFailed>().unwrap();
    /// assert_eq!(all.http_status(), 502, "both were called and failed");
    /// # }
    /// ```
    pub fn http_status(&self) -> http::StatusCode {
        if self.timed_out() {
            http::StatusCode::GATEWAY_TIMEOUT
        } else if self.all_rate_limited() {
            http::StatusCode::TOO_MANY_REQUESTS
        } else if self.any_called() {
            http::StatusCode::BAD_GATEWAY
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl fmt::Display for AllFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every provider failed")?;
        for (i, a) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{}: {}", a.provider, a.outcome)?;
        }
        Ok(())
    }
}

impl std::error::Error for AllFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.attempts.iter().rev().find_map(|a| match &a.outcome {
            AttemptOutcome::Error(e) => Some(&**e as &(dyn std::error::Error + 'static)),
            _ => None,
        })
    }
}
