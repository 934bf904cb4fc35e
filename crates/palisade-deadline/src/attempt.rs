//! [`AttemptTimeoutLayer`]: one attempt's timeout, never beyond the
//! request's deadline.

use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, HasDeadline, ProviderId, TimeoutScope};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;
use crate::request::{check_timeout, Enforce, ResponseFuture};

/// Gives each attempt `min(per_attempt, remaining deadline)`.
///
/// Put it innermost, right above the provider, below retry and the
/// breaker: each retry is a new attempt with its own timeout, and the
/// breaker sees the timeout as the attempt's failure. The request passed
/// on carries the attempt's deadline (inner layers may shorten a deadline,
/// never extend it), so a propagation layer below tells the upstream how
/// long this attempt has.
///
/// The error is an [`Elapsed`](palisade_core::Elapsed) whose scope says
/// which level fired: `Attempt` when the per-attempt timeout did, `Request`
/// when the request's deadline came first. Both are classified as
/// `Timeout`. A request whose deadline has already passed is refused with a
/// [`Rejected`](palisade_core::Rejected) (`DeadlineExceeded`) without
/// calling the provider.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, Deadline, Elapsed, TimeoutScope, WithDeadline};
/// use palisade_deadline::AttemptTimeoutLayer;
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let slow = service_fn(|_: WithDeadline<()>| async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
///     Ok::<_, BoxError>(())
/// });
/// let svc = AttemptTimeoutLayer::new(Duration::from_secs(10)).unwrap().layer(slow);
///
/// // The attempt's own timeout fires...
/// let err = svc.clone().oneshot(WithDeadline::new(())).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Elapsed>().unwrap().scope(), TimeoutScope::Attempt);
///
/// // ...unless the request's deadline is nearer.
/// let req = WithDeadline::with((), Deadline::after(Duration::from_secs(3)));
/// let err = svc.oneshot(req).await.unwrap_err();
/// let e = err.downcast_ref::<Elapsed>().unwrap();
/// assert_eq!((e.scope(), e.after()), (TimeoutScope::Request, Duration::from_secs(3)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayer {
    per_attempt: Duration,
    provider: Option<&'static ProviderId>,
}

impl AttemptTimeoutLayer {
    /// A timeout of `per_attempt` per attempt; refused if zero or over a
    /// year.
    pub fn new(per_attempt: Duration) -> Result<Self, ConfigError> {
        check_timeout("per_attempt", per_attempt)?;
        Ok(AttemptTimeoutLayer {
            per_attempt,
            provider: None,
        })
    }

    /// Names the provider in the timeout errors. The name is
    /// [interned](ProviderId::interned), so calls name it without cloning.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into().interned());
        self
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose every call is one attempt with its own timeout. Made by
/// [`AttemptTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    layer: AttemptTimeoutLayer,
}

impl<S> AttemptTimeout<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for AttemptTimeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        // The enclosing deadline layer's reading when it called us
        // synchronously; a clock read otherwise (see `palisade_core::clock`).
        let now = palisade_core::clock::now();
        let own = Deadline::after_from(now, self.layer.per_attempt);
        let (at, scope) = match req.deadline() {
            Some(d) if d.instant() <= now => return ResponseFuture::expired(self.layer.provider),
            Some(d) if d < own => (d.instant(), TimeoutScope::Request),
            _ => {
                req.replace_deadline(own);
                (own.instant(), TimeoutScope::Attempt)
            }
        };
        let enforce = Enforce {
            at,
            started: now,
            provider: self.layer.provider,
        };
        ResponseFuture::new(self.inner.call(req), Some(enforce), scope)
    }
}
