//! The race, on tokio's paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Hedgeable};
use palisade_hedge::{HedgeLayer, HedgePolicy};
use palisade_retry::RetryBudget;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts calls in flight (a guard dropped with the call's future).
struct Live(Arc<AtomicU32>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Call `n` waits `plan[n]` ms then answers `Ok(n)` (or `Err` when the
/// wait is odd); records call starts.
#[derive(Clone)]
struct Provider {
    plan: Arc<Vec<u64>>,
    calls: Arc<AtomicU32>,
    live: Arc<AtomicU32>,
    starts: Arc<Mutex<Vec<Duration>>>,
    t0: Instant,
}

impl Provider {
    fn new(plan: &[u64]) -> Self {
        Provider {
            plan: Arc::new(plan.to_vec()),
            calls: Arc::default(),
            live: Arc::default(),
            starts: Arc::default(),
            t0: Instant::now(),
        }
    }

    fn svc(
        &self,
    ) -> impl Service<http::Request<()>, Response = u32, Error = BoxError, Future = impl Send> + Clone
    {
        let p = self.clone();
        service_fn(move |_: http::Request<()>| {
            let n = p.calls.fetch_add(1, Ordering::SeqCst);
            p.live.fetch_add(1, Ordering::SeqCst);
            p.starts.lock().unwrap().push(p.t0.elapsed());
            let live = Live(p.live.clone());
            let wait = p.plan.get(n as usize).copied().unwrap_or(10);
            async move {
                let _live = live;
                tokio::time::sleep(ms(wait)).await;
                if wait % 2 == 1 {
                    Err::<u32, BoxError>(format!("call {n} failed").into())
                } else {
                    Ok(n)
                }
            }
        })
    }
}

fn policy(delay: u64) -> HedgePolicy {
    HedgePolicy::fixed(ms(delay)).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_is_hedged_and_the_loser_dropped() {
    let p = Provider::new(&[10_000, 100]);
    let layer = HedgeLayer::new(policy(200));
    let t0 = Instant::now();
    let got = layer.layer(p.svc()).oneshot(http::Request::new(())).await;
    assert_eq!(got.unwrap(), 1);
    assert_eq!(t0.elapsed(), ms(300));
    assert_eq!(*p.starts.lock().unwrap(), [ms(0), ms(200)]);
    assert_eq!(
        p.live.load(Ordering::SeqCst),
        0,
        "the slow call was cancelled"
    );
    let s = layer.policy().handle().snapshot();
    assert_eq!((s.hedgeable, s.sent, s.won, s.wasted), (1, 1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_answer_before_the_delay_sends_nothing_more() {
    let p = Provider::new(&[150]);
    let layer = HedgeLayer::new(policy(200));
    assert_eq!(
        layer
            .layer(p.svc())
            .oneshot(http::Request::new(()))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(ms(1000)).await;
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.policy().handle().snapshot().sent, 0);
}

#[tokio::test(start_paused = true)]
async fn requests_marked_unhedgeable_or_unmarked_under_a_no_default_are_not_hedged() {
    let p = Provider::new(&[1000, 10, 1000, 10]);
    let layer = HedgeLayer::new(policy(100));
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Hedgeable(false));
    assert_eq!(layer.layer(p.svc()).oneshot(req).await.unwrap(), 0);
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);

    let off = HedgeLayer::new(
        HedgePolicy::fixed(ms(100))
            .by_default(false)
            .build()
            .unwrap(),
    );
    let svc = off.layer(p.svc());
    assert_eq!(
        svc.clone().oneshot(http::Request::new(())).await.unwrap(),
        1
    );
    let mut marked = http::Request::new(());
    marked.extensions_mut().insert(Hedgeable(true));
    // Call 2 is slow; the hedge (call 3) wins.
    assert_eq!(svc.oneshot(marked).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dry_budget_sends_no_hedge() {
    let p = Provider::new(&[1000, 10]);
    // gRPC-style throttling: failures drain it below half, and retries
    // (hedges) stop.
    let budget = RetryBudget::token_bucket(4, 0.1).unwrap();
    for _ in 0..4 {
        budget.record_failure();
    }
    assert!(!budget.try_withdraw());
    let layer = HedgeLayer::new(HedgePolicy::fixed(ms(100)).budget(budget).build().unwrap());
    assert_eq!(
        layer
            .layer(p.svc())
            .oneshot(http::Request::new(()))
            .await
            .unwrap(),
        0
    );
    let s = layer.policy().handle().snapshot();
    assert_eq!((s.sent, s.no_budget), (0, 1));
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fast_failure_is_returned_without_hedging() {
    let p = Provider::new(&[51]);
    let layer = HedgeLayer::new(policy(100));
    let err = layer
        .layer(p.svc())
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "call 0 failed");
    tokio::time::sleep(ms(500)).await;
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_the_hedge_waits_for_the_hedge() {
    // Call 0 fails at 301 ms, after the hedge (call 1, sent at 100) which
    // answers at 500.
    let p = Provider::new(&[301, 400]);
    let layer = HedgeLayer::new(policy(100));
    let t0 = Instant::now();
    assert_eq!(
        layer
            .layer(p.svc())
            .oneshot(http::Request::new(()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(t0.elapsed(), ms(500));
    // Both fail: the first failure is returned once none is in flight.
    let p = Provider::new(&[301, 401]);
    let err = layer
        .layer(p.svc())
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "call 0 failed");
    assert_eq!(p.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn up_to_max_hedges_one_delay_apart() {
    let p = Provider::new(&[5000, 5000, 5000, 100]);
    let layer = HedgeLayer::new(HedgePolicy::fixed(ms(200)).max_hedges(2).build().unwrap());
    let err_or = layer.layer(p.svc()).oneshot(http::Request::new(())).await;
    // Two hedges (at 200 and 400); the third call never goes.
    assert_eq!(err_or.unwrap(), 0);
    assert_eq!(*p.starts.lock().unwrap(), [ms(0), ms(200), ms(400)]);
    let s = layer.policy().handle().snapshot();
    assert_eq!((s.sent, s.won, s.wasted), (2, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn percentile_hedging_waits_for_samples_then_uses_them() {
    let mut plan = vec![100; 20];
    plan.extend([5000, 100]);
    let p = Provider::new(&plan);
    let layer = HedgeLayer::new(
        HedgePolicy::percentile(0.9)
            .min_samples(20)
            .build()
            .unwrap(),
    );
    let svc = layer.layer(p.svc());
    for _ in 0..20 {
        svc.clone().oneshot(http::Request::new(())).await.unwrap();
    }
    assert_eq!(
        layer.policy().handle().snapshot().sent,
        0,
        "no hedge while learning"
    );
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(http::Request::new(())).await.unwrap(), 21);
    // p90 of 100 ms samples (bucket bound ≤ 1/8 above), then 100 ms.
    let took = t0.elapsed();
    assert!(took >= ms(200) && took <= ms(213), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_race_leaks_no_call() {
    let p = Provider::new(&[5000, 5000]);
    let layer = HedgeLayer::new(policy(100));
    let fut = layer.layer(p.svc()).oneshot(http::Request::new(()));
    let _ = tokio::time::timeout(ms(300), fut).await;
    assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    assert_eq!(p.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_delay_runs_from_the_call_even_when_first_polled_late() {
    // The timer is set on the first poll, but for the call's start + delay:
    // a future first polled 300 ms after its call (queued behind others)
    // sends its hedge at once, not 200 ms later.
    let p = Provider::new(&[10_000, 100]);
    let layer = HedgeLayer::new(policy(200));
    let mut svc = layer.layer(p.svc());
    let t0 = Instant::now();
    let fut = svc.ready().await.unwrap().call(http::Request::new(()));
    tokio::time::advance(ms(300)).await;
    assert_eq!(fut.await.unwrap(), 1);
    assert_eq!(
        t0.elapsed(),
        ms(400),
        "hedged at 300 ms, answered 100 ms later"
    );
    assert_eq!(*p.starts.lock().unwrap(), [ms(0), ms(300)]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_won_by_a_hedge_says_so() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = {
        let calls = calls.clone();
        service_fn(move |_: http::Request<()>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(ms(if n == 0 { 5000 } else { 10 })).await;
                Ok::<_, BoxError>(http::Response::new(n))
            }
        })
    };
    let layer = HedgeLayer::http(policy(100));
    let res = layer
        .layer(svc.clone())
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(*res.body(), 1);
    let served = res.extensions().get::<palisade_core::Served>().unwrap();
    assert!(served.hedged);
    // A first call that answers in time is not marked.
    calls.store(5, Ordering::SeqCst);
    let res = layer
        .layer(svc)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert!(res
        .extensions()
        .get::<palisade_core::Served>()
        .is_none_or(|s| !s.hedged));
}
