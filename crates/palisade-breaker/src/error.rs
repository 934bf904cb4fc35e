//! [`BreakerError`] and [`Refusal`]: what a call through the breaker can
//! fail with.

use std::fmt;
use std::time::Duration;

use palisade_core::{BoxError, CircuitState, ProviderId, RejectReason, Rejected};
use tokio::time::Instant;

use crate::kind::RefusalKind;

/// What a refusal adds to its reason, as a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    None = 0,
    ProbeSlotsTaken = 1,
    OpenAtReadiness = 2,
}

/// The breaker refused a call without sending it: open, forced open, or
/// every half-open probe slot taken.
///
/// It names the provider (when the breaker was given one), the state and,
/// when open, the instant the open period ends, from which
/// [`retry_after`](Self::retry_after) tells how long is left *when you ask*.
/// It is three words, built without an allocation, without a
/// reference-count bump (the provider, state and detail are interned when
/// the breaker is built) and without turning instants into durations, so
/// failing fast costs little more than the clock read it needs; [`to_rejected`](Self::to_rejected) (or `Rejected::from`) gives the
/// [`Rejected`] every palisade layer uses, which is what the refusal
/// becomes inside a [`BoxError`].
///
/// ```
/// use palisade_breaker::CircuitBreakerLayer;
/// use palisade_core::{BoxError, CircuitState, RejectReason};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = CircuitBreakerLayer::builder().provider("local").build().unwrap();
/// layer.handle().force_open();
/// let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// let refusal = svc.oneshot(()).await.unwrap_err().refusal().cloned().unwrap();
/// assert_eq!(refusal.state(), CircuitState::ForcedOpen);
/// assert_eq!(refusal.provider().unwrap().as_str(), "local");
/// assert_eq!(refusal.retry_after(), None);
/// assert_eq!(
///     refusal.to_rejected().reason(),
///     RejectReason::CircuitOpen(CircuitState::ForcedOpen)
/// );
/// assert_eq!(refusal.to_string(), "provider local: circuit breaker is forced_open");
/// # }
/// ```
// `kind` first and `until` last: the niche of `Option<Instant>` then sits
// at the end, where `BreakerError` can keep its tag without growing past
// 24 bytes.
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub struct Refusal {
    /// Provider, state and detail, interned (see `kind.rs`).
    kind: &'static RefusalKind,
    /// When the open period ends, when open.
    until: Option<Instant>,
}

impl Refusal {
    #[inline(always)]
    pub(crate) fn new(kind: &'static RefusalKind, until: Option<Instant>) -> Self {
        Refusal { kind, until }
    }

    /// The breaker's state when it refused the call.
    pub fn state(&self) -> CircuitState {
        self.kind.state
    }

    /// The provider the breaker protects, when it was given one.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.kind.provider
    }

    /// When the open period ends, when the breaker was open.
    pub fn open_until(&self) -> Option<Instant> {
        self.until
    }

    /// How long from now until the open period ends (zero once it has),
    /// when the breaker was open. Reads the clock.
    pub fn retry_after(&self) -> Option<Duration> {
        self.until
            .map(|until| until.saturating_duration_since(Instant::now()))
    }

    /// Why, beyond the state, when there is more to say.
    pub fn detail(&self) -> Option<&'static str> {
        match self.kind.detail {
            Detail::None => None,
            Detail::ProbeSlotsTaken => Some("every half-open probe slot is taken"),
            Detail::OpenAtReadiness => Some("the breaker was open when readiness was checked"),
        }
    }

    /// The refusal as the [`Rejected`] every palisade layer shares, its
    /// retry-after measured now.
    pub fn to_rejected(&self) -> Rejected {
        Rejected::from(self.clone())
    }
}

impl From<Refusal> for Rejected {
    fn from(r: Refusal) -> Rejected {
        let mut out = Rejected::new(RejectReason::CircuitOpen(r.state()));
        if let Some(after) = r.retry_after() {
            out = out.with_retry_after(after);
        }
        if let Some(d) = r.detail() {
            out = out.with_detail(d);
        }
        out.with_provider_opt(r.kind.provider.cloned())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_rejected(), f)
    }
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal")
            .field("provider", &self.kind.provider)
            .field("state", &self.state())
            .field("open_until", &self.until)
            .field("detail", &self.detail())
            .finish()
    }
}

impl std::error::Error for Refusal {}

/// The error of a [`CircuitBreaker`](crate::CircuitBreaker): the breaker's
/// own [`Refusal`], or the wrapped service's error, unchanged.
///
/// The refusal is held inline, not boxed, so failing fast while the breaker
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
/// inner error behind one more layer (tower's own `BoxError` does not
/// implement it either).
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
///     Err(BreakerError::Refused(r)) => assert_eq!(r.provider().unwrap().as_str(), "openai"),
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
    /// The breaker refused the call without sending it.
    Refused(Refusal),
    /// The wrapped service failed; its error, unchanged.
    Inner(BoxError),
}

impl BreakerError {
    /// The refusal, when the breaker refused the call.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            BreakerError::Refused(r) => Some(r),
            BreakerError::Inner(_) => None,
        }
    }

    /// Whether the breaker refused the call (rather than the service
    /// failing it).
    pub fn is_refused(&self) -> bool {
        matches!(self, BreakerError::Refused(_))
    }

    /// The error as a [`BoxError`]: a refusal boxed as [`Rejected`], the
    /// inner error as itself.
    pub fn into_box(self) -> BoxError {
        match self {
            BreakerError::Refused(r) => Box::new(Rejected::from(r)),
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

impl From<Refusal> for BreakerError {
    fn from(r: Refusal) -> Self {
        BreakerError::Refused(r)
    }
}

impl fmt::Display for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Refused(r) => fmt::Display::fmt(r, f),
            BreakerError::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for BreakerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Refused(r) => f.debug_tuple("Refused").field(r).finish(),
            BreakerError::Inner(e) => f.debug_tuple("Inner").field(e).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kinds;
    use palisade_core::{classify_error, FailureKind};

    fn refusal(
        provider: Option<&str>,
        state: CircuitState,
        until: Option<Instant>,
        detail: Detail,
    ) -> Refusal {
        let provider = provider.map(ProviderId::new);
        Refusal::new(Kinds::of(provider.as_ref()).get(state, detail), until)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_keeps_every_field_and_measures_the_wait_when_asked() {
        for state in [
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
        ] {
            for detail in [
                Detail::None,
                Detail::ProbeSlotsTaken,
                Detail::OpenAtReadiness,
            ] {
                let until = Instant::now() + Duration::from_secs(30);
                let r = refusal(Some("p"), state, Some(until), detail);
                assert_eq!(r.state(), state);
                assert_eq!(r.provider().map(ProviderId::as_str), Some("p"));
                assert_eq!(r.open_until(), Some(until));
                assert_eq!(r.retry_after(), Some(Duration::from_secs(30)));
                assert_eq!(r.detail().is_some(), detail != Detail::None);
                let none = refusal(None, state, None, detail);
                assert_eq!(none.retry_after(), None);
                assert_eq!(none.state(), state);
            }
        }
        // the wait is measured when asked, and never goes negative
        let r = refusal(
            None,
            CircuitState::Open,
            Some(Instant::now() + Duration::from_secs(10)),
            Detail::None,
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(r.retry_after(), Some(Duration::from_secs(6)));
        assert_eq!(r.to_rejected().retry_after(), Some(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(r.retry_after(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn converts_to_box_without_hiding_anything() {
        let r = refusal(
            Some("p"),
            CircuitState::Open,
            Some(Instant::now() + Duration::from_nanos(1_000)),
            Detail::None,
        );
        let e: BoxError = BreakerError::from(r.clone()).into();
        let rejected = e.downcast_ref::<Rejected>().expect("a Rejected");
        assert_eq!(rejected, &r.to_rejected());
        assert_eq!(
            rejected.reason(),
            RejectReason::CircuitOpen(CircuitState::Open)
        );
        assert_eq!(rejected.retry_after(), Some(Duration::from_nanos(1_000)));
        assert_eq!(rejected.provider().unwrap().as_str(), "p");

        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e: BoxError = BreakerError::Inner(io.into()).into();
        assert!(e.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(classify_error(&*e).kind, FailureKind::Connect);
    }

    #[test]
    fn displays_what_it_holds() {
        let r = refusal(None, CircuitState::HalfOpen, None, Detail::ProbeSlotsTaken);
        assert_eq!(
            BreakerError::from(r.clone()).to_string(),
            "circuit breaker is half_open (every half-open probe slot is taken)"
        );
        assert!(format!("{r:?}").contains("HalfOpen"));
        let e = BreakerError::Inner("boom".into());
        assert_eq!(e.to_string(), "boom");
        assert!(!e.is_refused() && e.refusal().is_none());
        assert!(format!("{e:?}").starts_with("Inner("));
    }

    /// A refusal travels through every `poll_ready` result and response
    /// future of the fast-fail path; keeping it to three words keeps those
    /// moves cheap (a 40-byte error cost a tenth of the closed-state call in
    /// store-forwarding stalls alone).
    #[test]
    fn the_error_stays_three_words() {
        use std::mem::size_of;
        assert_eq!(size_of::<Refusal>(), 24);
        assert_eq!(size_of::<BreakerError>(), 24);
        assert_eq!(size_of::<Result<(), BreakerError>>(), 24);
        assert_eq!(size_of::<Result<u64, BreakerError>>(), 24);
    }
}
