//! [`CircuitBreakerLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ErrorClassifier, GrpcClassifier, HttpClassifier, Policy, ProviderId};
use tower_layer::Layer;

use crate::config::{Config, ConfigError, HalfOpenRule, ReadinessMode, WindowKind};
use crate::handle::BreakerHandle;
use crate::service::CircuitBreaker;
use crate::state::Core;

/// Wraps services in one shared circuit breaker.
///
/// The layer owns the breaker: every service it wraps (and every clone of
/// those) shares the same state, so build one layer per provider. Get the
/// operator's view with [`handle`](Self::handle).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use palisade_breaker::{BreakerError, CircuitBreakerLayer};
/// use palisade_core::CircuitState;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let layer = CircuitBreakerLayer::builder()
///     .provider("openai")
///     .consecutive_failures(Some(2))
///     .build()
///     .unwrap();
/// let handle = layer.handle();
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) }));
///
/// for _ in 0..2 {
///     assert!(svc.clone().oneshot(()).await.is_err());
/// }
/// assert_eq!(handle.state(), CircuitState::Open);
/// let Err(BreakerError::Refused(rejected)) = svc.oneshot(()).await else {
///     panic!("fails fast");
/// };
/// assert_eq!(rejected.provider().unwrap().as_str(), "openai");
/// assert!(rejected.retry_after().is_some());
/// # }
/// ```
pub struct CircuitBreakerLayer<C = ErrorClassifier> {
    core: Arc<Core>,
    classifier: C,
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            core: self.core.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("provider", &self.core.cfg.provider)
            .field("state", &self.core.state())
            .finish()
    }
}

impl CircuitBreakerLayer<ErrorClassifier> {
    /// A builder with the defaults: trips on 5 consecutive failures or a
    /// 50% failure rate over the last 50 calls (once 20 were seen); open for
    /// 30 s, doubling on each re-trip up to 5 min, shortened by up to 10%
    /// jitter; 2 half-open probes, both must succeed; Retry-After cooldowns
    /// on, capped at 5 min; fail-fast readiness; errors classified with
    /// [`ErrorClassifier`], counted by [`Policy::default`].
    ///
    /// **Only errors are failures with this builder**: a service that
    /// answers `Ok(503)` never trips it. For HTTP services start from
    /// [`http`](Self::http), for gRPC channels from [`grpc`](Self::grpc),
    /// or give a classifier.
    pub fn builder() -> Builder<ErrorClassifier> {
        Builder {
            cfg: Config::default(),
            classifier: ErrorClassifier,
            seed: None,
        }
    }

    /// [`builder`](Self::builder) for HTTP services: responses are read by
    /// [`HttpClassifier`], so 5xx answers count as failures and a 429 or
    /// 503 with `Retry-After` opens the breaker for exactly that long.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::{BoxError, CircuitState};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let breaker = CircuitBreakerLayer::http().consecutive_failures(Some(3)).build().unwrap();
    /// let svc = breaker.layer(service_fn(|_: http::Request<()>| async {
    ///     Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
    /// }));
    /// for _ in 0..3 {
    ///     let _ = svc.clone().oneshot(http::Request::new(())).await;
    /// }
    /// assert_eq!(breaker.handle().state(), CircuitState::Open);
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

impl<C> CircuitBreakerLayer<C> {
    /// The operator's handle on this layer's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            core: self.core.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.core.clone(), self.classifier.clone())
    }
}

/// Configures a [`CircuitBreakerLayer`]; [`build`](Self::build) checks
/// every value and names each bad one.
#[derive(Debug, Clone)]
pub struct Builder<C> {
    cfg: Config,
    classifier: C,
    seed: Option<u64>,
}

impl<C> Builder<C> {
    /// Names the provider, for errors, events and metrics.
    ///
    /// Refusals name the provider without cloning it: each distinct name
    /// given to a breaker is interned for the life of the process (a few
    /// hundred bytes, shared by every breaker with that name), so name
    /// breakers after your providers, not after per-request data.
    pub fn provider(mut self, provider: impl Into<ProviderId>) -> Self {
        self.cfg.provider = Some(provider.into());
        self
    }

    /// Trip after this many counted failures in a row (`None`: rule off).
    pub fn consecutive_failures(mut self, n: Option<u32>) -> Self {
        self.cfg.consecutive_failures = n;
        self
    }

    /// Trip when the failure rate over the window reaches `rate` (0..=1),
    /// once `minimum_calls` are in the window (`None`: rule off).
    pub fn failure_rate(mut self, rate: Option<f64>) -> Self {
        self.cfg.failure_rate = rate;
        self
    }

    /// Trip when the share of calls taking `threshold` or longer reaches
    /// `rate` over the window. LLM providers slow down before they fail.
    /// A slow half-open probe counts as a failed one (under
    /// [`HalfOpenRule::Rate`], as a slow one). Outcomes the policy ignores
    /// (the caller's own 4xx) are never slow.
    pub fn slow_calls(mut self, rate: f64, threshold: Duration) -> Self {
        self.cfg.slow_call_rate = Some(rate);
        self.cfg.slow_call_threshold = threshold;
        self
    }

    /// Rates over the last `n` calls.
    pub fn count_window(mut self, n: usize) -> Self {
        self.cfg.window = WindowKind::Count(n);
        self
    }

    /// Rates over the calls of the last `span`, kept in `buckets` buckets.
    pub fn time_window(mut self, span: Duration, buckets: usize) -> Self {
        self.cfg.window = WindowKind::Time { span, buckets };
        self
    }

    /// The fewest calls in the window before a rate rule may trip.
    pub fn minimum_calls(mut self, n: u64) -> Self {
        self.cfg.minimum_calls = n;
        self
    }

    /// How long the breaker stays open after its first trip.
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.cfg.open_duration = d;
        self
    }

    /// Each re-trip without a close in between multiplies the open duration
    /// by `multiplier`, up to `max`. A close brings it back to the base.
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.cfg.open_multiplier = multiplier;
        self.cfg.max_open_duration = max;
        self
    }

    /// Shortens each open period by a random fraction of up to `fraction`
    /// (0 ≤ fraction < 1), so replicas do not probe in lockstep.
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.cfg.open_jitter = fraction;
        self
    }

    /// Seeds the jitter's random numbers, for reproducible tests.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// At most `n` probe calls at once in half-open; others fail fast.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.cfg.half_open_permitted = n;
        self
    }

    /// Close after `n` probe successes; any probe failure re-opens (under
    /// the default [`HalfOpenRule::AnyFailure`]).
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.cfg.half_open_successes = n;
        self
    }

    /// How half-open probes are judged: any failure re-opens (the
    /// default), or, as Resilience4j does, the rates over exactly
    /// `half_open_probes` probes are held against the thresholds.
    ///
    /// ```
    /// use palisade_breaker::{CircuitBreakerLayer, HalfOpenRule};
    ///
    /// // Like Resilience4j: 10 probes, re-open if half of them fail.
    /// let layer = CircuitBreakerLayer::builder()
    ///     .failure_rate(Some(0.5))
    ///     .half_open_probes(10)
    ///     .half_open_rule(HalfOpenRule::Rate)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn half_open_rule(mut self, rule: HalfOpenRule) -> Self {
        self.cfg.half_open_rule = rule;
        self
    }

    /// Re-open if half-open lasts longer than `d` without closing (for
    /// example because probes never finish). Off by default. Checked
    /// without a timer: by the next call, and by the handle's `state()`
    /// and `snapshot()`, so a breaker with no traffic reports Open once the
    /// wait is over, as Resilience4j does.
    pub fn half_open_max_wait(mut self, d: Option<Duration>) -> Self {
        self.cfg.half_open_max_wait = d;
        self
    }

    /// Whether a rate-limited or overloaded answer carrying a wait opens the
    /// breaker for exactly that wait (capped at `max`). On by default.
    pub fn retry_after_cooldown(mut self, on: bool, max: Duration) -> Self {
        self.cfg.cooldown = on;
        self.cfg.max_cooldown = max;
        self
    }

    /// Which failures count against the provider.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.cfg.policy = policy;
        self
    }

    /// How `poll_ready` behaves while open.
    pub fn readiness(mut self, mode: ReadinessMode) -> Self {
        self.cfg.mode = mode;
        self
    }

    /// How results are read: any [`Classify`](palisade_core::Classify),
    /// for example [`HttpClassifier`](palisade_core::HttpClassifier) or a
    /// closure.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2> {
        Builder {
            cfg: self.cfg,
            classifier,
            seed: self.seed,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    ///
    /// let err = CircuitBreakerLayer::builder().failure_rate(Some(1.5)).build().unwrap_err();
    /// assert_eq!(err.problems()[0].path, "breaker.failure_rate");
    /// assert_eq!(err.to_string(), "invalid config: breaker.failure_rate: 1.5 is not within (0, 1]");
    /// ```
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        self.cfg.validate()?;
        Ok(CircuitBreakerLayer {
            core: Arc::new(Core::new(self.cfg, self.seed)),
            classifier: self.classifier,
        })
    }
}
