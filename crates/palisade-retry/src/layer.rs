//! [`RetryLayer`] and its builder.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{
    ErrorClassifier, GrpcClassifier, HttpClassifier, Policy, Problems, ProviderId,
    DEFAULT_MAX_RETRY_AFTER,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tower_layer::Layer;

use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::handle::RetryHandle;
use crate::hooks::{CloneRequest, UsePolicy};
use crate::service::Retry;
use crate::shared::{Config, Shared, Stats};

/// Re-sends failed requests, with backoff and jitter, honouring
/// `Retry-After` and the request's deadline, within a retry budget.
///
/// All services the layer wraps share its budget, random source and
/// counters. Which failures are retried comes from the classifier `C`
/// (default [`ErrorClassifier`]; use
/// [`HttpClassifier`](palisade_core::HttpClassifier) for HTTP responses) and
/// the [`Policy`]; a [`RetryPredicate`](crate::RetryPredicate) `P` may
/// override it; a [`Replay`](crate::Replay) `R` makes the copies to re-send.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_core::{BoxError, WithDeadline};
/// use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let layer = RetryLayer::builder()
///     .provider("openai")
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_millis(10), 2.0, Duration::from_secs(1)))
///     .jitter(Jitter::Full)
///     .budget(RetryBudget::ratio(0.2, Duration::from_secs(10), 5).unwrap())
///     .build()
///     .unwrap();
/// let calls = Arc::new(AtomicU32::new(0));
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn({
///     let calls = calls.clone();
///     move |req: WithDeadline<&'static str>| {
///         let n = calls.fetch_add(1, Ordering::SeqCst);
///         async move {
///             if n == 0 {
///                 // A connection reset: retryable.
///                 Err::<_, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
///             } else {
///                 Ok(req.into_inner().len())
///             }
///         }
///     }
/// }));
/// assert_eq!(svc.oneshot(WithDeadline::new("hello")).await.unwrap(), 5);
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # }
/// ```
pub struct RetryLayer<C = ErrorClassifier, P = UsePolicy, R = CloneRequest> {
    shared: Arc<Shared>,
    classifier: C,
    predicate: P,
    replay: R,
}

impl<C: Clone, P: Clone, R: Clone> Clone for RetryLayer<C, P, R> {
    fn clone(&self) -> Self {
        RetryLayer {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            predicate: self.predicate.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, P, R> fmt::Debug for RetryLayer<C, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.cfg)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

impl RetryLayer {
    /// Starts a builder with the defaults: 3 attempts, exponential backoff
    /// from 200 ms (×2, capped at 10 s) with full jitter, `Retry-After`
    /// honoured up to 10 minutes, at least 100 ms of deadline left to start
    /// an attempt, and a ratio budget of 20% with a floor of 10 retries
    /// per second over 10 s.
    ///
    /// **Only errors are failures with this builder**: its classifier is
    /// [`ErrorClassifier`], so a service that answers `Ok(503)` is never
    /// retried. For HTTP services start from [`http`](Self::http), for
    /// gRPC channels from [`grpc`](Self::grpc), or give a classifier.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// [`builder`](Self::builder) for HTTP services: responses are read by
    /// [`HttpClassifier`], so a 5xx, 429 or 408 is retried (a 429's
    /// `Retry-After` waited exactly) and the caller's own 4xx is not.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade_core::BoxError;
    /// use palisade_retry::{Backoff, RetryLayer};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let provider = service_fn({
    ///     let calls = calls.clone();
    ///     move |_: http::Request<()>| {
    ///         let status = if calls.fetch_add(1, Ordering::SeqCst) == 0 { 503 } else { 200 };
    ///         async move { Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap()) }
    ///     }
    /// });
    /// let retry = RetryLayer::http().backoff(Backoff::constant(Duration::from_millis(1))).build().unwrap();
    /// let res = retry.layer(provider).oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503 was retried");
    /// # }
    /// ```
    pub fn http() -> Builder<HttpClassifier> {
        Self::builder().classifier(HttpClassifier::new())
    }

    /// [`builder`](Self::builder) for gRPC channels (tonic): responses are
    /// read by [`GrpcClassifier`] (`grpc-status`, pushback), since a gRPC
    /// failure usually arrives as HTTP 200.
    pub fn grpc() -> Builder<GrpcClassifier> {
        Self::builder().classifier(GrpcClassifier::new())
    }
}

impl<C, P, R> RetryLayer<C, P, R> {
    /// The operator's view: counters and the budget.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C: Clone, P: Clone, R: Clone> Layer<S> for RetryLayer<C, P, R> {
    type Service = Retry<S, C, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            self.shared.clone(),
            self.classifier.clone(),
            self.predicate.clone(),
            self.replay.clone(),
        )
    }
}

/// Builds a [`RetryLayer`]; [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
pub struct Builder<C = ErrorClassifier, P = UsePolicy, R = CloneRequest> {
    cfg: Config,
    budget: Option<RetryBudget>,
    seed: Option<u64>,
    classifier: C,
    predicate: P,
    replay: R,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cfg: Config {
                provider: None,
                max_attempts: 3,
                backoff: Backoff::default(),
                jitter: Jitter::Full,
                honor_retry_after: true,
                max_retry_after: DEFAULT_MAX_RETRY_AFTER,
                min_attempt_time: Duration::from_millis(100),
                policy: Policy::default(),
            },
            budget: None,
            seed: None,
            classifier: ErrorClassifier,
            predicate: UsePolicy,
            replay: CloneRequest,
        }
    }
}

/// The most attempts a request may be given.
pub const MAX_ATTEMPTS: u32 = 100;

impl<C, P, R> Builder<C, P, R> {
    /// Names the provider, for errors, events and metrics.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.cfg.provider = Some(provider.into());
        self
    }

    /// Attempts per request, the first send included (default 3; 1 turns
    /// retrying off).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.cfg.max_attempts = n;
        self
    }

    /// The delay schedule between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.cfg.backoff = backoff;
        self
    }

    /// The jitter applied to each delay (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.cfg.jitter = jitter;
        self
    }

    /// Seeds the jitter's random source, for reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a `RateLimited` / `Overloaded` failure's `retry_after` is
    /// waited exactly (capped at `max`) instead of the backoff (default on,
    /// 10 minutes).
    pub fn retry_after(mut self, honor: bool, max: Duration) -> Self {
        self.cfg.honor_retry_after = honor;
        self.cfg.max_retry_after = max;
        self
    }

    /// The least of the deadline that must remain, after the wait, to start
    /// another attempt (default 100 ms). Below it, retrying stops at once
    /// so that a fallback outside can use the time.
    pub fn min_attempt_time(mut self, d: Duration) -> Self {
        self.cfg.min_attempt_time = d;
        self
    }

    /// Which failure kinds and statuses are retried (default
    /// [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.cfg.policy = policy;
        self
    }

    /// The retry budget; pass clones of one budget to several layers to
    /// share it.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How results are classified.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2, P, R> {
        Builder {
            cfg: self.cfg,
            budget: self.budget,
            seed: self.seed,
            classifier,
            predicate: self.predicate,
            replay: self.replay,
        }
    }

    /// Overrides the policy's decision for some results.
    pub fn retry_if<P2>(self, predicate: P2) -> Builder<C, P2, R> {
        Builder {
            cfg: self.cfg,
            budget: self.budget,
            seed: self.seed,
            classifier: self.classifier,
            predicate,
            replay: self.replay,
        }
    }

    /// How the copy of a request to re-send is made (default `Clone`).
    pub fn replay<R2>(self, replay: R2) -> Builder<C, P, R2> {
        Builder {
            cfg: self.cfg,
            budget: self.budget,
            seed: self.seed,
            classifier: self.classifier,
            predicate: self.predicate,
            replay,
        }
    }

    /// Whether a budget was given.
    #[cfg(feature = "serde")]
    pub(crate) fn has_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<RetryLayer<C, P, R>, ConfigError> {
        let cfg = self.cfg;
        let mut p = Problems::new("retry");
        if cfg.max_attempts == 0 || cfg.max_attempts > MAX_ATTEMPTS {
            p.add(
                "max_attempts",
                format!("{} is not within 1..={MAX_ATTEMPTS}", cfg.max_attempts),
            );
        }
        match &cfg.backoff {
            Backoff::Exponential {
                base,
                multiplier,
                max,
            } => {
                if !(multiplier.is_finite() && *multiplier >= 1.0) {
                    p.add(
                        "backoff.multiplier",
                        format!("{multiplier} must be finite and at least 1"),
                    );
                }
                if base > max {
                    p.add("backoff", format!("base {base:?} is above max {max:?}"));
                }
            }
            Backoff::Linear { base, max, .. } | Backoff::Fibonacci { base, max } => {
                if base > max {
                    p.add("backoff", format!("base {base:?} is above max {max:?}"));
                }
            }
            Backoff::Constant(_) | Backoff::Custom(_) => {}
        }
        p.finish()?;
        let budget = match self.budget {
            Some(b) => b,
            None => RetryBudget::ratio(0.2, Duration::from_secs(10), 10)?,
        };
        let rng = match self.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                cfg,
                budget,
                rng: Mutex::new(rng),
                stats: Stats::default(),
            }),
            classifier: self.classifier,
            predicate: self.predicate,
            replay: self.replay,
        })
    }
}
