//! The peers' stacks, built the way their documentation shows, over the
//! same bare service palisade is measured on.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceBuilder};

use crate::{Bare, BenchError, Req, LONG};

/// A generous limit that never binds during a benchmark.
pub const LIMIT: usize = 1024;

/// tower's retry policy with a `TpsBudget`, as tower's docs build it: a
/// success deposits, a failure withdraws and retries if the budget allows.
#[derive(Clone, Debug)]
pub struct TowerBudgetPolicy {
    budget: Arc<TpsBudget>,
}

impl TowerBudgetPolicy {
    pub fn new() -> Self {
        TowerBudgetPolicy {
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
        }
    }
}

impl Default for TowerBudgetPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<Res, E> tower::retry::Policy<Req, Res, E> for TowerBudgetPolicy {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// failsafe is not a tower layer; this is the thinnest adapter that puts its
/// futures-aware breaker around a tower service.
#[derive(Clone)]
pub struct FailsafeService<S, B> {
    inner: S,
    breaker: B,
}

impl<S: std::fmt::Debug, B> std::fmt::Debug for FailsafeService<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailsafeService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B> Service<Req> for FailsafeService<S, B>
where
    S: Service<Req>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

pub fn tower_concurrency_limit(
) -> impl Service<Req, Response = u64, Error = BenchError, Future: Send> + Clone + Send {
    ServiceBuilder::new().concurrency_limit(LIMIT).service(Bare)
}

pub fn tower_timeout(
) -> impl Service<Req, Response = u64, Error = tower::BoxError, Future: Send> + Clone + Send {
    ServiceBuilder::new().timeout(LONG).service(Bare)
}

/// tower's Timeout over a service that is pending once (the timer is armed).
pub fn tower_timeout_pending(
) -> impl Service<Req, Response = u64, Error = tower::BoxError, Future: Send> + Clone + Send {
    ServiceBuilder::new()
        .timeout(LONG)
        .service(crate::YieldOnce)
}

pub fn tower_retry_budget(
) -> impl Service<Req, Response = u64, Error = BenchError, Future: Send> + Clone + Send {
    ServiceBuilder::new()
        .retry(TowerBudgetPolicy::new())
        .service(Bare)
}

pub fn tower_stack(
) -> impl Service<Req, Response = u64, Error = tower::BoxError, Future: Send> + Clone + Send {
    ServiceBuilder::new()
        .concurrency_limit(LIMIT)
        .retry(TowerBudgetPolicy::new())
        .timeout(LONG)
        .service(Bare)
}

fn resilience_breaker_layer() -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap()
}

fn resilience_bulkhead_layer() -> tower_resilience::bulkhead::BulkheadLayer {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(LIMIT)
        .build()
        .unwrap()
}

fn resilience_retry_layer<E>() -> tower_resilience::retry::RetryLayer<Req, u64, E> {
    let budget = tower_resilience::retry::RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(100)
        .build()
        .unwrap();
    tower_resilience::retry::RetryLayer::<Req, u64, E>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(10))
        .budget(budget)
        .build()
}

fn resilience_time_limiter_layer() -> tower_resilience::timelimiter::TimeLimiterLayer {
    tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(LONG)
        .cancel_running_future(true)
        .build()
}

pub fn resilience_breaker<S>(
    inner: S,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send
where
    S: Service<Req, Response = u64, Error = BenchError> + Clone + Send + 'static,
    S::Future: Send,
{
    resilience_breaker_layer().layer(inner)
}

pub fn resilience_bulkhead(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    resilience_bulkhead_layer().layer(Bare)
}

pub fn resilience_retry(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    resilience_retry_layer::<BenchError>().layer(Bare)
}

pub fn resilience_time_limiter(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    resilience_time_limiter_layer().layer(Bare)
}

/// tower-resilience's time limiter over a service that is pending once.
pub fn resilience_time_limiter_pending(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    resilience_time_limiter_layer().layer(crate::YieldOnce)
}

/// The four single-layer rows above, stacked: bulkhead > retry > breaker >
/// time limiter, each configured exactly as in its own row.
pub fn resilience_stack(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    use tower_resilience::circuitbreaker::CircuitBreakerError;
    use tower_resilience::timelimiter::TimeLimiterError;
    type E = CircuitBreakerError<TimeLimiterError<BenchError>>;
    resilience_bulkhead_layer().layer(
        resilience_retry_layer::<E>()
            .layer(resilience_breaker_layer().layer(resilience_time_limiter_layer().layer(Bare))),
    )
}

pub fn failsafe_breaker<S>(
    inner: S,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send
where
    S: Service<Req, Response = u64, Error = BenchError> + Clone + Send + 'static,
    S::Future: Send,
{
    FailsafeService {
        inner,
        breaker: failsafe::Config::new().build(),
    }
}

/// failsafe's breaker tripped open (one failure, an hour's back-off).
pub fn failsafe_breaker_open(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    use failsafe::{backoff, failure_policy};
    let breaker = failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            1,
            backoff::constant(LONG),
        ))
        .build();
    crate::ours::trip(FailsafeService {
        inner: crate::Failing,
        breaker: breaker.clone(),
    });
    FailsafeService {
        inner: Bare,
        breaker,
    }
}

/// governor's direct (unkeyed) GCRA limiter, checked before each call: the
/// Rust reference for GCRA admission, as a service.
pub fn governor_direct(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX);
    let limiter = std::sync::Arc::new(governor::RateLimiter::direct(quota));
    tower::service_fn(move |req: Req| {
        let admitted = limiter.check().is_ok();
        let mut bare = Bare;
        async move {
            if !admitted {
                return Err(BenchError);
            }
            bare.call(req).await
        }
    })
}

/// governor's keyed limiter (its dashmap state store), calls spread over
/// the same 10 000 keys, every key already held.
pub fn governor_keyed(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX);
    let limiter = std::sync::Arc::new(governor::RateLimiter::dashmap(quota));
    for k in 0..crate::ours::KEYS {
        let _ = limiter.check_key(&k);
    }
    tower::service_fn(move |req: Req| {
        let admitted = limiter
            .check_key(&(*req.get_ref() % crate::ours::KEYS))
            .is_ok();
        let mut bare = Bare;
        async move {
            if !admitted {
                return Err(BenchError);
            }
            bare.call(req).await
        }
    })
}

/// One tower `RateLimit` shared by every task, as tower shares a service
/// that is not `Clone`: behind a `Buffer` (a channel to a task that owns
/// it). The quota is then one for all, as palisade's is.
pub fn tower_rate_limit_shared(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower::buffer::Buffer::new(
        ServiceBuilder::new()
            .rate_limit(u64::MAX / 2, std::time::Duration::from_secs(3600))
            .service(Bare),
        1024,
    )
}

/// tower's fixed-window `RateLimit`, with a window the run never fills.
/// It is not `Clone` (its state is its own; sharing it takes a `Buffer`),
/// so each task gets its own ([`PerTask`]): no sharing, no contention, in
/// its favour.
pub fn tower_rate_limit(
) -> impl Service<Req, Response = u64, Error = BenchError, Future: Send> + Clone + Send {
    PerTask::new(|| {
        ServiceBuilder::new()
            .rate_limit(u64::MAX / 2, std::time::Duration::from_secs(3600))
            .service(Bare)
    })
}

/// tower-resilience's rate limiter, with a period the run never fills.
pub fn resilience_rate_limiter(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(usize::MAX / 2)
        .refresh_period(std::time::Duration::from_secs(3600))
        .build()
        .unwrap()
        .layer(Bare)
}

/// A service that is not `Clone` (tower's `Balance` and `Hedge`), or one
/// measured unshared like them, given to each task of the 64-task mode as
/// a fresh one from `make`: every task has its own balancer, histogram,
/// estimates or limit, shared with no other task.
/// This is the cheapest way to run them on many tasks (no channel); sharing
/// one needs a [`Buffer`](tower::buffer::Buffer).
pub struct PerTask<S, F> {
    svc: S,
    make: Arc<F>,
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for PerTask<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerTask").field("svc", &self.svc).finish()
    }
}

impl<S, F: Fn() -> S> PerTask<S, F> {
    pub fn new(make: F) -> Self {
        PerTask {
            svc: make(),
            make: Arc::new(make),
        }
    }
}

impl<S, F: Fn() -> S> Clone for PerTask<S, F> {
    fn clone(&self) -> Self {
        PerTask {
            svc: (self.make)(),
            make: self.make.clone(),
        }
    }
}

impl<S: Service<Req>, F> Service<Req> for PerTask<S, F> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.svc.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.svc.call(req)
    }
}

/// tower's p2c `Balance` over `n` bare services, each wrapped in
/// `PeakEwma` (default RTT 30 ms, 10 s decay), as its docs build it.
fn tower_p2c(
    n: usize,
) -> tower::balance::p2c::Balance<tower::discover::ServiceList<Vec<tower::load::PeakEwma<Bare>>>, Req>
{
    let services: Vec<_> = (0..n)
        .map(|_| {
            tower::load::PeakEwma::new(
                Bare,
                Duration::from_millis(30),
                Duration::from_secs(10).as_nanos() as f64,
                tower::load::CompleteOnResponse::default(),
            )
        })
        .collect();
    tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(services))
}

/// tower's p2c balance, one per task (see [`PerTask`]).
pub fn tower_balance(
    n: usize,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    PerTask::new(move || tower_p2c(n))
}

/// tower's p2c balance shared by every task through a `Buffer`, the way
/// tower shares a service that is not `Clone`.
pub fn tower_balance_buffered(
    n: usize,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower::buffer::Buffer::new(tower_p2c(n), LIMIT)
}

/// tower's hedge policy: every request may be hedged (a clone of it).
#[derive(Clone, Debug)]
pub struct TowerHedgePolicy;

impl tower::hedge::Policy<Req> for TowerHedgePolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn can_retry(&self, _: &Req) -> bool {
        true
    }
}

/// tower's `Hedge` at the 95th percentile, armed (its histogram holds 100
/// samples of 100 ms, more than its 10-sample minimum), one per task.
pub fn tower_hedge(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower_hedge_over(Bare)
}

/// [`tower_hedge`] over a service whose answer is pending once.
pub fn tower_hedge_pending(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower_hedge_over(crate::YieldOnce)
}

fn tower_hedge_over<S>(
    svc: S,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send
where
    S: Service<Req, Response = u64, Error = BenchError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static,
{
    PerTask::new(move || {
        tower::hedge::Hedge::new_with_mock_latencies(
            svc.clone(),
            TowerHedgePolicy,
            10,
            0.95,
            Duration::from_secs(10),
            &[100; 100],
        )
    })
}

/// tower-resilience's chaos layer with every rate at 0 (it has no off
/// switch): nothing injected.
pub fn resilience_chaos(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower_resilience::chaos::ChaosLayer::builder()
        .latency_rate(0.0)
        .build()
        .layer(Bare)
}

/// tower-resilience's cache (LRU, the default) over `Bare`, keyed by
/// `key`, holding [`CACHE_ENTRIES`](crate::ours::CACHE_ENTRIES) answers.
fn resilience_cache<F>(
    key: F,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send
where
    F: Fn(&Req) -> u64 + Clone + Send + Sync + 'static,
{
    use futures_util::FutureExt;
    let layer = tower_resilience::cache::CacheLayer::builder()
        .max_size(2 * crate::ours::CACHE_ENTRIES as usize)
        .ttl(Duration::from_secs(3_600))
        .key_extractor(key)
        .build()
        .unwrap();
    let mut svc = layer.layer(Bare);
    for i in 0..crate::ours::CACHE_ENTRIES {
        let _ = svc.call(palisade_core::WithDeadline::new(i)).now_or_never();
    }
    svc
}

/// tower-resilience's cache, every call a hit among 100 000 entries.
pub fn resilience_cache_hit(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    resilience_cache(|r: &Req| *r.get_ref() % crate::ours::CACHE_ENTRIES)
}

/// tower-resilience's cache, every call a miss.
pub fn resilience_cache_miss(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    resilience_cache(move |_: &Req| next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// tower-resilience's coalescing, no request ever a duplicate.
pub fn resilience_coalesce_unique(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tower_resilience::coalesce::CoalesceLayer::new(move |_: &Req| {
        next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    })
    .layer(Bare)
}
