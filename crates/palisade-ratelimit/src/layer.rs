//! [`RateLimitLayer`] and its builder.

use std::sync::Arc;

use palisade_core::{
    ConfigError, ErrorClassifier, GrpcClassifier, HttpClassifier, Problems, ProviderId,
};
use tower_layer::Layer;

use crate::handle::RateLimitHandle;
use crate::limiter::{Mode, Shared};
use crate::quota::Quota;
use crate::service::{RateLimit, Role};
use crate::weigh::Unweighted;

/// The most quotas one limiter checks together.
pub const MAX_QUOTAS: usize = 8;

/// Limits the calls sent to a provider: every configured [`Quota`] (on
/// requests and on tokens) must have room, all or nothing, and, when
/// following headers, what the provider's own `x-ratelimit-*` /
/// `anthropic-ratelimit-*` headers and `Retry-After` said is left.
///
/// A refused call is not sent and spends nothing; it fails with a
/// [`Rejected`](palisade_core::Rejected) (`RateLimited`, naming the
/// provider, with `retry_after` = when there will be room), which a
/// fallback chain moves on from and retry does not re-send. In
/// [`Mode::Wait`] a call waits for room instead, in arrival order, never
/// past its deadline. Admission is GCRA on atomics: no lock, no
/// allocation, no background task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, RejectReason, Rejected};
/// use palisade_ratelimit::{Quota, RateLimitLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let layer = RateLimitLayer::builder()
///     .provider("openai")
///     .quota(Quota::per_minute(60).burst(2))
///     .build()
///     .unwrap();
/// let svc = layer.layer(service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>("sent") }));
/// let req = || http::Request::new(());
/// assert_eq!(svc.clone().oneshot(req()).await.unwrap(), "sent");
/// assert_eq!(svc.clone().oneshot(req()).await.unwrap(), "sent");
/// let err = svc.clone().oneshot(req()).await.unwrap_err();
/// let refused = err.downcast_ref::<Rejected>().unwrap();
/// assert_eq!(refused.reason(), RejectReason::RateLimited);
/// assert_eq!(refused.retry_after(), Some(std::time::Duration::from_secs(1)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer<C = ErrorClassifier, W = Unweighted> {
    shared: Arc<Shared>,
    classifier: C,
    weigh: W,
    role: Role,
}

impl RateLimitLayer {
    /// A builder: no quota, following the provider's headers, rejecting
    /// when there is no room.
    ///
    /// **Its classifier reads no responses**: with it the limiter follows
    /// no rate headers and no 429. For HTTP services start from
    /// [`http`](Self::http), for gRPC channels from [`grpc`](Self::grpc),
    /// or give a classifier.
    pub fn builder() -> Builder {
        Builder {
            provider: None,
            quotas: Vec::new(),
            follow_headers: true,
            mode: Mode::Reject,
            classifier: ErrorClassifier,
            weigh: Unweighted,
        }
    }

    /// [`builder`](Self::builder) for HTTP services: responses are read by
    /// [`HttpClassifier`], so the provider's `x-ratelimit-*` /
    /// `anthropic-ratelimit-*` headers and a 429's `Retry-After` pace the
    /// limiter.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use palisade_core::{BoxError, RejectReason, Rejected};
    /// use palisade_ratelimit::RateLimitLayer;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let limit = RateLimitLayer::http().build().unwrap();
    /// let svc = limit.layer(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, BoxError>(http::Response::builder().status(429).header("retry-after", "2").body(()).unwrap())
    /// }));
    /// let _ = svc.clone().oneshot(http::Request::new(())).await;
    /// // The provider asked for 2 s: nothing is sent before then.
    /// let err = svc.clone().oneshot(http::Request::new(())).await.unwrap_err();
    /// assert_eq!(err.downcast_ref::<Rejected>().unwrap().reason(), RejectReason::RateLimited);
    /// # }
    /// ```
    pub fn http() -> Builder<HttpClassifier> {
        Self::builder().classifier(HttpClassifier::new())
    }

    /// [`builder`](Self::builder) for gRPC channels (tonic): responses are
    /// read by [`GrpcClassifier`] (`RESOURCE_EXHAUSTED` with its pushback).
    pub fn grpc() -> Builder<GrpcClassifier> {
        Self::builder().classifier(GrpcClassifier::new())
    }
}

impl<C, W> RateLimitLayer<C, W> {
    /// The handle: limits, what is left, counters; the admission and
    /// inspection views.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.shared.clone())
    }

    /// How a call with no room is treated.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The waiting half of this limiter, to put outside a bulkhead (and a
    /// retry layer) whose inside this limiter guards: it waits for a
    /// request's room there, where waiting holds no slot, and hands the
    /// room it took to this limiter, which sends the first attempt at once
    /// and still counts every retry. For [`Mode::Wait`]; in the other
    /// modes there is nothing to wait for, and it passes calls through
    /// after the same check. Room the limiter inside does not claim at once
    /// (the bulkhead queued the call) is given back, and the limiter
    /// decides that call itself when it comes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use palisade_bulkhead::BulkheadLayer;
    /// use palisade_core::BoxError;
    /// use palisade_ratelimit::{Mode, Quota, RateLimitLayer};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    ///
    /// let limit = RateLimitLayer::builder()
    ///     .quota(Quota::per_second(1).burst(1))
    ///     .mode(Mode::Wait(Duration::from_secs(5)))
    ///     .build()
    ///     .unwrap();
    /// let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    /// let slots = bulkhead.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(limit.pacer())
    ///     .layer(bulkhead)
    ///     .layer(limit.clone())
    ///     .service(service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>("sent") }));
    /// svc.clone().oneshot(http::Request::new(())).await.unwrap();
    /// // The next request waits a second for room, holding no slot meanwhile.
    /// let next = tokio::spawn(svc.clone().oneshot(http::Request::new(())));
    /// tokio::time::sleep(Duration::from_millis(500)).await;
    /// assert_eq!(slots.snapshot().in_flight, 0);
    /// assert_eq!(next.await.unwrap().unwrap(), "sent");
    /// assert_eq!(limit.handle().snapshot().admitted, 2);
    /// # }
    /// ```
    pub fn pacer(&self) -> RateLimitLayer<ErrorClassifier, W>
    where
        W: Clone,
    {
        RateLimitLayer {
            shared: self.shared.clone(),
            classifier: ErrorClassifier,
            weigh: self.weigh.clone(),
            role: Role::Pace,
        }
    }
}

impl<S, C: Clone, W: Clone> Layer<S> for RateLimitLayer<C, W> {
    type Service = RateLimit<S, C, W>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.shared.clone(),
            self.classifier.clone(),
            self.weigh.clone(),
            self.role,
        )
    }
}

/// Configures a [`RateLimitLayer`]; [`build`](Self::build) checks every
/// value and names each bad one.
#[derive(Debug, Clone)]
pub struct Builder<C = ErrorClassifier, W = Unweighted> {
    provider: Option<ProviderId>,
    quotas: Vec<Quota>,
    follow_headers: bool,
    mode: Mode,
    classifier: C,
    weigh: W,
}

impl<C, W> Builder<C, W> {
    /// Names the provider, for refusals, events and metrics.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Adds a quota; every quota must have room for a call to go.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quotas.push(quota);
        self
    }

    /// Whether to pace by the provider's rate headers and `Retry-After`
    /// (default true). Works with no quota configured.
    pub fn follow_headers(mut self, on: bool) -> Self {
        self.follow_headers = on;
        self
    }

    /// Reject (default) or wait for room.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Reads responses: their rate headers and token usage
    /// ([`Classify::rate_info`](palisade_core::Classify::rate_info)) and
    /// whether they are a 429 with `Retry-After`.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2, W> {
        Builder {
            provider: self.provider,
            quotas: self.quotas,
            follow_headers: self.follow_headers,
            mode: self.mode,
            classifier,
            weigh: self.weigh,
        }
    }

    /// Weighs requests in tokens for token quotas (default: nothing up
    /// front, the usage reported afterwards is charged).
    pub fn weigh<W2>(self, weigh: W2) -> Builder<C, W2> {
        Builder {
            provider: self.provider,
            quotas: self.quotas,
            follow_headers: self.follow_headers,
            mode: self.mode,
            classifier: self.classifier,
            weigh,
        }
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<RateLimitLayer<C, W>, ConfigError> {
        let mut p = Problems::new("rate_limit");
        if self.quotas.len() > MAX_QUOTAS {
            p.add(
                "quotas",
                format!("{} quotas; at most {MAX_QUOTAS}", self.quotas.len()),
            );
        }
        for q in &self.quotas {
            q.check(&mut p);
        }
        if let Mode::Wait(d) = self.mode {
            if d.is_zero() {
                p.add("max_wait", "0 never waits; use Mode::Reject");
            }
        }
        p.finish()?;
        Ok(RateLimitLayer {
            shared: Shared::new(self.provider, self.quotas, self.follow_headers, self.mode),
            classifier: self.classifier,
            weigh: self.weigh,
            role: Role::Limit,
        })
    }
}
