//! [`DeadlineLayer`]: the whole request's deadline, stamped once and
//! enforced over everything inside it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{
    BoxError, Deadline, Elapsed, HasDeadline, ProviderId, RejectReason, Rejected, TimeoutScope,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::armed;
use crate::error::config_error;
use crate::error::ConfigError;
use crate::header::{Adopt, NoAdopt, TimeoutHeader};
use palisade_core::clock::SharedReading;

/// The longest timeout a layer accepts (one year); longer is a typo.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) fn check_timeout(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(config_error(
            field,
            format!("{d:?} is not within (0s, 365 days]"),
        ));
    }
    Ok(())
}

/// Gives each request a deadline of `total` from now (or keeps the one it
/// carries, if earlier) and fails the request when it passes, whatever is
/// happening inside: attempts, backoff, queueing.
///
/// Put it outermost. Inner layers read the deadline from the request
/// ([`HasDeadline`]): retry never sleeps past it, fallback never starts a
/// provider after it, and [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer)
/// gives each attempt `min(per_attempt, remaining)`.
///
/// The timer is armed only if the inner future is not ready on its first
/// poll, so a call answered at once costs one clock read and no timer. In
/// [`stamp_only`](Self::stamp_only) mode no timer is ever armed: the
/// deadline is stamped for the inner layers to honour (one timer per
/// attempt in all, the attempt timeout's).
///
/// It can also adopt the caller's own timeout from a header
/// ([`adopt`](Self::adopt)), so a gateway does not work on requests its
/// caller has given up on.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, Elapsed, TimeoutScope, WithDeadline};
/// use palisade_deadline::DeadlineLayer;
/// use std::time::Duration;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(30)).unwrap())
///     .service(service_fn(|_: WithDeadline<()>| async {
///         tokio::time::sleep(Duration::from_secs(60)).await;
///         Ok::<_, BoxError>(())
///     }));
/// let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
/// let elapsed = err.downcast_ref::<Elapsed>().unwrap();
/// assert_eq!(elapsed.scope(), TimeoutScope::Request);
/// assert_eq!(elapsed.after(), Duration::from_secs(30));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineLayer<A = NoAdopt> {
    total: Duration,
    enforce: bool,
    adopt: A,
    provider: Option<&'static ProviderId>,
}

impl DeadlineLayer<NoAdopt> {
    /// A deadline of `total` per request; refused if zero or over a year.
    pub fn new(total: Duration) -> Result<Self, ConfigError> {
        check_timeout("total", total)?;
        Ok(DeadlineLayer {
            total,
            enforce: true,
            adopt: NoAdopt,
            provider: None,
        })
    }

    /// Also adopts the caller's timeout from the first of `headers` present
    /// on an incoming `http::Request` (garbage values are ignored): the
    /// deadline is then the earliest of the caller's and `total`.
    pub fn adopt(self, headers: Vec<TimeoutHeader>) -> DeadlineLayer<Vec<TimeoutHeader>> {
        DeadlineLayer {
            total: self.total,
            enforce: self.enforce,
            adopt: headers,
            provider: self.provider,
        }
    }
}

impl<A> DeadlineLayer<A> {
    /// Only stamps the deadline; arms no timer. The layers inside must
    /// honour it (palisade's attempt timeout, retry and fallback do).
    pub fn stamp_only(mut self) -> Self {
        self.enforce = false;
        self
    }

    /// Names the provider in the timeout errors. The name is
    /// [interned](ProviderId::interned), so calls name it without cloning.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into().interned());
        self
    }
}

impl<S, A: Clone> Layer<S> for DeadlineLayer<A> {
    type Service = DeadlineService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service whose requests carry, and are held to, a deadline. Made by
/// [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S, A = NoAdopt> {
    inner: S,
    layer: DeadlineLayer<A>,
}

impl<S, A> DeadlineService<S, A> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, A, Req> Service<Req> for DeadlineService<S, A>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Adopt<Req>,
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
        // Shared with the timeout layers this call reaches synchronously
        // (see `palisade_core::clock`), until the inner call below returns.
        let (now, _reading) = SharedReading::enter();
        let total = match self.layer.adopt.timeout_of(&req) {
            Some(asked) => asked.min(self.layer.total),
            None => self.layer.total,
        };
        let deadline = req.tighten_deadline(Deadline::after_from(now, total));
        if deadline.instant() <= now {
            return ResponseFuture::expired(self.layer.provider);
        }
        let enforce = self.layer.enforce.then(|| Enforce {
            at: deadline.instant(),
            started: now,
            provider: self.layer.provider,
        });
        ResponseFuture::new(self.inner.call(req), enforce, TimeoutScope::Request)
    }
}

/// What a timed future needs to know to arm its timer and report it.
#[derive(Debug)]
pub(crate) struct Enforce {
    pub(crate) at: Instant,
    pub(crate) started: Instant,
    pub(crate) provider: Option<&'static ProviderId>,
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running { #[pin] fut: F },
        Refused { error: Option<BoxError> },
    }
}

pin_project! {
    /// The response future of [`DeadlineService`] and
    /// [`AttemptTimeout`](crate::AttemptTimeout): the inner future, held to
    /// an instant. The timer is armed on the first poll that finds the
    /// inner future pending (and boxed then, so that a call answered at
    /// once moves a small future and allocates nothing), and not at all
    /// while a timer under it (an attempt's timeout inside a request's
    /// deadline) wakes the task by its instant.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        sleep: Option<Pin<Box<Sleep>>>,
        enforce: Option<Enforce>,
        scope: TimeoutScope,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Its timer may be the one an outer deadline is leaning on in
            // the poll in progress (see `armed`).
            if let Some(sleep) = this.project().sleep.as_ref() {
                armed::retract(&**sleep);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(fut: F, enforce: Option<Enforce>, scope: TimeoutScope) -> Self {
        ResponseFuture {
            kind: Kind::Running { fut },
            sleep: None,
            enforce,
            scope,
        }
    }

    /// The deadline had passed before the call could start: refuse it
    /// without calling the inner service.
    #[cold]
    pub(crate) fn expired(provider: Option<&'static ProviderId>) -> Self {
        let rejected = Rejected::new(RejectReason::DeadlineExceeded)
            .with_provider_opt(provider.cloned())
            .with_detail("no time left to start the call");
        ResponseFuture {
            kind: Kind::Refused {
                error: Some(rejected.into()),
            },
            sleep: None,
            enforce: None,
            scope: TimeoutScope::Request,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("scope", &self.scope)
            .field("armed", &self.sleep.is_some())
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let fut = match this.kind.as_mut().project() {
            KindProj::Running { fut } => fut,
            KindProj::Refused { error } => {
                return Poll::Ready(Err(error
                    .take()
                    .expect("ResponseFuture polled after completion")))
            }
        };
        let outer = armed::enter();
        let polled = fut.poll(cx);
        if let Poll::Ready(res) = polled {
            armed::restore(outer);
            return Poll::Ready(res.map_err(|e| {
                let e: BoxError = e.into();
                match (this.enforce.as_ref(), *this.scope) {
                    // An inner layer found this deadline already passed:
                    // report the deadline itself, as if our timer had won.
                    (Some(enforce), TimeoutScope::Request) if refused_for_deadline(&e) => {
                        elapsed(enforce, TimeoutScope::Request).into()
                    }
                    _ => e,
                }
            }));
        }
        let under = armed::below();
        let Some(enforce) = this.enforce.as_ref() else {
            armed::leave(outer, under);
            return Poll::Pending;
        };
        // A timer under this one that wakes this task by our instant
        // covers it (see `armed`): ours is armed only when none does.
        let covered = under.filter(|a| a.wakes(cx.waker()).is_some_and(|t| t <= enforce.at));
        if covered.is_some() && this.sleep.is_none() {
            armed::leave(outer, covered);
            return Poll::Pending;
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(enforce.at)));
        if sleep.as_mut().poll(cx).is_pending() {
            let own = armed::Armed::new(enforce.at, cx.waker(), &**sleep);
            armed::leave(outer, Some(covered.unwrap_or(own)));
            return Poll::Pending;
        }
        armed::restore(outer);
        let err = elapsed(enforce, *this.scope);
        // Drop the inner future now: its work is abandoned.
        this.kind.set(Kind::Refused { error: None });
        Poll::Ready(Err(err.into()))
    }
}

fn refused_for_deadline(e: &BoxError) -> bool {
    e.downcast_ref::<Rejected>()
        .is_some_and(|r| r.reason() == RejectReason::DeadlineExceeded)
}

#[cold]
fn elapsed(enforce: &Enforce, scope: TimeoutScope) -> Elapsed {
    let after = enforce.at.saturating_duration_since(enforce.started);
    tracing::debug!(
        provider = enforce.provider.as_ref().map(|p| p.as_str()),
        scope = %scope,
        after_ms = after.as_millis() as u64,
        "timeout fired"
    );
    let e = Elapsed::new(scope, after);
    match enforce.provider {
        Some(p) => e.with_provider(p.clone()),
        None => e,
    }
}
