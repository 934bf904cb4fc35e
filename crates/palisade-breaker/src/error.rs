//! [`BreakerError`]: what a call through the breaker can fail with.

use std::fmt;

use palisade_core::{BoxError, Rejected};

/// The error of a [`CircuitBreaker`](crate::CircuitBreaker): the breaker's
/// own refusal, or the wrapped service's error, unchanged.
///
/// A refusal is held inline, not boxed, so failing fast while the breaker
/// is open costs no allocation: that is the path a burst of traffic takes
/// against a dead provider. Match on it when you call the breaker directly;
/// convert it into a [`BoxError`] (with `?` or `.into()`) to compose it with
/// other tower layers. The conversion unwraps: a refusal becomes a boxed
/// [`Rejected`] and the inner error becomes itself again, so
/// `downcast_ref::<Rejected>()` and classifiers such as
/// [`classify_error`](palisade_core::classify_error) see exactly what the
/// breaker saw.
///
/// It deliberately does not implement [`std::error::Error`]: if it did, the
/// standard library's blanket conversion would box it whole and hide the
/// inner error behind one more layer (as tower's own `BoxError` does not
/// implement it either, for the same reason).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_breaker::{BreakerError, CircuitBreakerLayer};
/// use palisade_core::{BoxError, RejectReason, Rejected};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let layer = CircuitBreakerLayer::builder().provider("openai").build().unwrap();
/// layer.handle().force_open();
/// let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>("hi") }));
///
/// match svc.clone().oneshot(()).await {
///     Err(BreakerError::Rejected(r)) => assert_eq!(r.provider().unwrap().as_str(), "openai"),
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// // As a BoxError, the refusal is a plain `Rejected`.
/// let boxed: BoxError = svc.oneshot(()).await.unwrap_err().into();
/// assert!(matches!(
///     boxed.downcast_ref::<Rejected>().map(Rejected::reason),
///     Some(RejectReason::CircuitOpen(_))
/// ));
/// # }
/// ```
pub enum BreakerError {
    /// The breaker refused the call without sending it: open, forced open,
    /// or every half-open probe slot taken. Names the provider (when
    /// known), the state and, when open, how long until it probes again.
    Rejected(Rejected),
    /// The wrapped service failed; its error, unchanged.
    Inner(BoxError),
}

impl BreakerError {
    /// The refusal, when the breaker refused the call.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            BreakerError::Rejected(r) => Some(r),
            BreakerError::Inner(_) => None,
        }
    }

    /// Whether the breaker refused the call (rather than the service
    /// failing it).
    pub fn is_rejected(&self) -> bool {
        matches!(self, BreakerError::Rejected(_))
    }

    /// The error as a [`BoxError`]: a refusal boxed as [`Rejected`], the
    /// inner error as itself.
    pub fn into_box(self) -> BoxError {
        match self {
            BreakerError::Rejected(r) => Box::new(r),
            BreakerError::Inner(e) => e,
        }
    }
}

impl From<BreakerError> for BoxError {
    fn from(e: BreakerError) -> BoxError {
        e.into_box()
    }
}

impl From<BreakerError> for Box<dyn std::error::Error> {
    fn from(e: BreakerError) -> Self {
        e.into_box()
    }
}

impl From<Rejected> for BreakerError {
    fn from(r: Rejected) -> Self {
        BreakerError::Rejected(r)
    }
}

impl fmt::Display for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Rejected(r) => fmt::Display::fmt(r, f),
            BreakerError::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Rejected(r) => f.debug_tuple("Rejected").field(r).finish(),
            BreakerError::Inner(e) => f.debug_tuple("Inner").field(e).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{classify_error, CircuitState, FailureKind, RejectReason};

    #[test]
    fn converts_to_box_without_hiding_anything() {
        let r = Rejected::new(RejectReason::CircuitOpen(CircuitState::Open)).with_provider("p");
        let e: BoxError = BreakerError::from(r.clone()).into();
        assert_eq!(e.downcast_ref::<Rejected>(), Some(&r));

        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e: BoxError = BreakerError::Inner(io.into()).into();
        assert!(e.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(classify_error(&*e).kind, FailureKind::Connect);
    }

    #[test]
    fn displays_what_it_holds() {
        let r = Rejected::new(RejectReason::CircuitOpen(CircuitState::ForcedOpen));
        assert_eq!(
            BreakerError::from(r.clone()).to_string(),
            r.to_string(),
            "a refusal reads as the refusal"
        );
        let e = BreakerError::Inner("boom".into());
        assert_eq!(e.to_string(), "boom");
        assert!(!e.is_rejected() && e.rejected().is_none());
        assert!(format!("{e:?}").starts_with("Inner("));
    }
}
