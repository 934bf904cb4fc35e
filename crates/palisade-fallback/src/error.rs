//! What a fallback chain reports when no provider answered.

use palisade_core::{BoxError, FailureKind, ProviderId, Refusing};
use std::fmt;

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

    /// Whether any provider was actually called.
    pub fn any_called(&self) -> bool {
        self.attempts.iter().any(|a| {
            matches!(
                a.outcome,
                AttemptOutcome::Error(_) | AttemptOutcome::Failed(_)
            )
        })
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
