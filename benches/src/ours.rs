//! palisade's stacks, built over the same bare service as the peers.

use futures_util::FutureExt;
use palisade_breaker::CircuitBreakerLayer;
use palisade_bulkhead::BulkheadLayer;
use palisade_deadline::{AttemptTimeoutLayer, DeadlineLayer};
use palisade_ratelimit::{Quota, RateLimitLayer, Unit};
use palisade_retry::{RetryBudget, RetryLayer};
use tower::{Layer, Service, ServiceExt};

use crate::{Bare, Failing, Req, LONG};

/// A breaker with the default rules, closed.
pub fn breaker_closed(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    CircuitBreakerLayer::builder().build().unwrap().layer(Bare)
}

/// A breaker tripped open for an hour: every call is a rejection.
pub fn breaker_open(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(Some(1))
        .open_duration(LONG)
        .open_backoff(1.0, LONG)
        .build()
        .unwrap();
    trip(layer.layer(Failing));
    layer.layer(Bare)
}

/// Sends one failing call through `svc` without a runtime (the failing
/// service answers at once).
pub(crate) fn trip<S: Service<Req>>(mut svc: S) {
    let ready = svc.ready().now_or_never().expect("ready at once");
    assert!(ready.is_ok());
    let res = svc
        .call(palisade_core::WithDeadline::new(0))
        .now_or_never()
        .expect("answers at once");
    assert!(res.is_err(), "the tripping call must fail");
}

/// A bulkhead with room to spare (as many slots as tower's row), never full.
pub fn bulkhead(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    BulkheadLayer::builder()
        .max_concurrent(crate::peers::LIMIT)
        .build()
        .unwrap()
        .layer(Bare)
}

/// Retry with a ratio budget (20%, 10/s floor over 10 s, as tower's
/// `TpsBudget` row), over a service that always succeeds.
pub fn retry(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    RetryLayer::builder()
        .budget(RetryBudget::ratio(0.2, std::time::Duration::from_secs(10), 10).unwrap())
        .build()
        .unwrap()
        .layer(Bare)
}

/// The per-attempt timeout (as tower's Timeout row).
pub fn attempt_timeout(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    AttemptTimeoutLayer::new(LONG).unwrap().layer(Bare)
}

/// The per-attempt timeout over a service that is pending once.
pub fn attempt_timeout_pending(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    AttemptTimeoutLayer::new(LONG)
        .unwrap()
        .layer(crate::YieldOnce)
}

/// The whole-request deadline, enforcing.
pub fn deadline(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    DeadlineLayer::new(LONG).unwrap().layer(Bare)
}

/// The default per-provider stack (ARCHITECTURE.md): deadline > bulkhead > retry
/// (ratio budget) > rate limit (one quota) > breaker > attempt timeout, each
/// layer as in its own row.
pub fn stack(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    tower::ServiceBuilder::new()
        .layer(DeadlineLayer::new(LONG).unwrap())
        .layer(
            BulkheadLayer::builder()
                .max_concurrent(1024)
                .build()
                .unwrap(),
        )
        .layer(
            RetryLayer::builder()
                .budget(RetryBudget::ratio(0.2, std::time::Duration::from_secs(10), 10).unwrap())
                .build()
                .unwrap(),
        )
        .layer(
            RateLimitLayer::builder()
                .follow_headers(false)
                .quota(roomy(Unit::Requests))
                .build()
                .unwrap(),
        )
        .layer(CircuitBreakerLayer::builder().build().unwrap())
        .layer(AttemptTimeoutLayer::new(LONG).unwrap())
        .service(Bare)
}

/// A quota so large that the run never meets it: every call is admitted,
/// so the row times admission itself.
fn roomy(unit: Unit) -> Quota {
    Quota::new(unit, 1 << 40, std::time::Duration::from_secs(1)).burst(1 << 40)
}

/// A rate limit with one quota (requests, weight 1), not following
/// headers: the GCRA admission alone.
pub fn rate_limit_one_quota(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    RateLimitLayer::builder()
        .follow_headers(false)
        .quota(roomy(Unit::Requests))
        .build()
        .unwrap()
        .layer(Bare)
}

/// The one-quota limiter, one per task, as tower's `RateLimit` row is
/// (which is not `Clone`): 64 separate limits, none shared.
pub fn rate_limit_one_quota_per_task(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    crate::peers::PerTask::new(rate_limit_one_quota)
}

/// One quota following the provider's headers (the default): every call
/// is followed to its answer (counted in flight, settled when answered).
pub fn rate_limit_following(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    RateLimitLayer::builder()
        .quota(roomy(Unit::Requests))
        .build()
        .unwrap()
        .layer(Bare)
}

/// palisade's direct check ([`RateLimitHandle::try_acquire`]) in front of
/// the bare service, as governor's direct check is in its row: the
/// admission alone, one quota, not following headers.
///
/// [`RateLimitHandle::try_acquire`]: palisade_ratelimit::RateLimitHandle::try_acquire
pub fn rate_limit_direct(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let limit = RateLimitLayer::builder()
        .follow_headers(false)
        .quota(roomy(Unit::Requests))
        .build()
        .unwrap()
        .handle();
    tower::service_fn(move |req: Req| {
        let admitted = limit.try_acquire(0).is_ok();
        let mut bare = Bare;
        async move {
            if !admitted {
                return Err(crate::BenchError);
            }
            bare.call(req).await
        }
    })
}

/// Two quotas checked together (requests, and tokens weighing 1 each).
pub fn rate_limit_two_quotas(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    RateLimitLayer::builder()
        .follow_headers(false)
        .quota(roomy(Unit::Requests))
        .quota(roomy(Unit::Tokens))
        .weigh(|_: &Req| 1u64)
        .build()
        .unwrap()
        .layer(Bare)
}

/// The keys the keyed rows spread calls over.
pub const KEYS: u64 = 10_000;

/// A keyed limit: one quota per key, calls spread over [`KEYS`] keys
/// (the request's number modulo it), every key already held.
pub fn keyed_rate_limit(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let layer =
        palisade_ratelimit::KeyedRateLimitLayer::builder(|req: &Req| Some(*req.get_ref() % KEYS))
            .quota(roomy(Unit::Requests))
            .build()
            .unwrap();
    let mut warm = layer.layer(Bare);
    for i in 0..KEYS {
        let _ =
            futures_util::FutureExt::now_or_never(warm.call(palisade_core::WithDeadline::new(i)));
    }
    layer.layer(Bare)
}

/// A p2c balance over peak-EWMA latency across `n` bare services, the
/// default strategy of a tier: every clone shares one view of the load.
pub fn balance_p2c(
    n: usize,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let mut builder = palisade_balance::Balance::builder()
        .strategy(palisade_balance::Strategy::PeakEwma)
        .seed(7);
    for i in 0..n {
        builder = builder.member(palisade_balance::Member::new(format!("p{i}"), Bare));
    }
    builder.build().unwrap()
}

/// Hedging at the 95th percentile of recent latency (armed after 10
/// samples), with a 10% budget, over a service that answers at once: the
/// success path when no hedge fires.
pub fn hedge(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    hedge_over(Bare)
}

/// [`hedge`] over a service whose answer is pending once (a network
/// call's shape): the hedge timer is set, then dropped unfired.
pub fn hedge_pending(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    hedge_over(crate::YieldOnce)
}

fn hedge_over<S>(
    svc: S,
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send
where
    S: Service<Req, Response = u64, Error = crate::BenchError, Future: Send> + Clone + Send,
{
    let policy = palisade_hedge::HedgePolicy::percentile(0.95)
        .min_samples(10)
        .budget(RetryBudget::ratio(0.1, std::time::Duration::from_secs(10), 10).unwrap())
        .build()
        .unwrap();
    palisade_hedge::HedgeLayer::new(policy).layer(svc)
}

/// The chaos layer switched off (its state on a service that never fails):
/// what it costs to leave it in a stack.
pub fn chaos_off(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    palisade_chaos::ChaosLayer::builder()
        .plan(palisade_chaos::Plan::default().error(0.1, 503))
        .build()
        .unwrap()
        .layer(Bare)
}

/// The chaos layer on, with every rate at 0: the draw path, nothing
/// injected.
pub fn chaos_on_quiet(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    palisade_chaos::ChaosLayer::builder()
        .enabled(true)
        .seed(1)
        .build()
        .unwrap()
        .layer(Bare)
}

/// Entries every cache row holds before it is measured.
pub const CACHE_ENTRIES: u64 = 100_000;

/// A unique number per call, across tasks: keys that never repeat.
fn unique() -> impl Fn(&Req) -> u64 + Clone + Send + Sync + 'static {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(CACHE_ENTRIES));
    move |_| next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

type OurCache<K> = palisade_cache::Cache<Bare, K, palisade_cache::CloneRecord<u64>, u64>;

/// palisade's cache over `Bare`, keyed by `key`, holding
/// [`CACHE_ENTRIES`] answers.
fn our_cache<K>(settings: palisade_cache::CacheSettings, key: K) -> OurCache<K>
where
    K: palisade_cache::Keyer<Req> + Clone,
{
    let layer = palisade_cache::CacheLayer::builder(palisade_cache::CloneRecord::<u64>::new())
        .settings(settings)
        .build(key)
        .unwrap();
    let mut svc = layer.layer(Bare);
    // Filled through the service itself: the first CACHE_ENTRIES calls'
    // keys.
    for i in 0..CACHE_ENTRIES {
        let _ = svc.call(palisade_core::WithDeadline::new(i)).now_or_never();
    }
    svc
}

fn cache_settings(fresh: bool, coalesce: bool, stale: bool) -> palisade_cache::CacheSettings {
    palisade_cache::CacheSettings {
        fresh,
        coalesce,
        stale_if_error: stale,
        // Room for the entries and as many again.
        max_bytes: CACHE_ENTRIES * 16,
        max_entry_bytes: 64,
        ..palisade_cache::CacheSettings::default()
    }
}

/// palisade's cache, every call a fresh hit among 100 000 entries.
pub fn cache_hit(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    our_cache(cache_settings(true, false, true), |r: &Req| {
        Some(palisade_cache::Lookup::new(u128::from(
            *r.get_ref() % CACHE_ENTRIES,
        )))
    })
}

/// palisade's cache, every call a miss (a key never seen): the call, and
/// its answer stored.
pub fn cache_miss(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let next = unique();
    our_cache(cache_settings(true, false, true), move |r: &Req| {
        Some(palisade_cache::Lookup::new(u128::from(next(r))))
    })
}

/// palisade's coalescing alone (nothing stored), no request ever a
/// duplicate: what sharing costs when there is nothing to share.
pub fn coalesce_unique(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    let next = unique();
    palisade_cache::CacheLayer::builder(palisade_cache::CloneRecord::<u64>::new())
        .settings(cache_settings(false, true, false))
        .build(move |r: &Req| Some(palisade_cache::Lookup::new(u128::from(next(r)))))
        .unwrap()
        .layer(Bare)
}

/// A batcher for the bench's requests: every request joins one batch, the
/// merged request is the first, and its answer is every caller's.
#[derive(Debug, Clone, Copy)]
pub struct SameAnswer;

impl palisade_batch::Batcher<Req, u64> for SameAnswer {
    type Key = ();

    fn key(&self, _: &Req) -> Option<()> {
        Some(())
    }

    fn size(&self, _: &Req) -> palisade_batch::Size {
        palisade_batch::Size {
            items: 1,
            tokens: 1,
        }
    }

    fn merge(&self, mut reqs: Vec<Req>) -> Req {
        reqs.swap_remove(0)
    }

    fn split(
        &self,
        res: u64,
        sizes: Vec<usize>,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<u64>, palisade_core::BoxError>> {
        Box::pin(std::future::ready(Ok(vec![res; sizes.len()])))
    }
}

/// palisade's batcher with no delay, up to 64 requests a call: what
/// gathering and splitting cost per request.
pub fn batch(
) -> impl Service<Req, Response = u64, Future: Send, Error: std::fmt::Debug + Send> + Clone + Send {
    palisade_batch::BatchLayer::new(
        SameAnswer,
        palisade_batch::BatchSettings {
            max_delay_ms: 0,
            max_items: 64,
            ..palisade_batch::BatchSettings::default()
        },
    )
    .unwrap()
    .layer(Bare)
}
