//! Tiers of balanced providers, and hedges within a tier, on tokio's
//! paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_balance::{Load, Strategy};
use palisade_core::{Admission, BoxError, Hedgeable, Refusing, RejectReason, WithDeadline};
use palisade_fallback::{AllFailed, AttemptOutcome, Fallback, Target};
use palisade_hedge::HedgePolicy;
use tokio::time::Instant;
use tower::{service_fn, util::BoxCloneSyncService, ServiceExt};

type Req = http::Request<()>;
type Svc = BoxCloneSyncService<Req, &'static str, BoxError>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Live(Arc<AtomicU32>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A provider answering `name` after `wait` ms (or failing when `fail`),
/// counting calls and calls alive.
#[derive(Clone, Default)]
struct Counter {
    calls: Arc<AtomicU32>,
    live: Arc<AtomicU32>,
}

fn provider(name: &'static str, wait: u64, fail: bool, c: &Counter) -> Svc {
    let c = c.clone();
    BoxCloneSyncService::new(service_fn(move |_: Req| {
        c.calls.fetch_add(1, Ordering::SeqCst);
        c.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(c.live.clone());
        async move {
            let _live = live;
            tokio::time::sleep(ms(wait)).await;
            if fail {
                Err::<&'static str, BoxError>(format!("{name} is down").into())
            } else {
                Ok(name)
            }
        }
    }))
}

#[derive(Debug)]
struct Closed;
impl Admission for Closed {
    fn refusing(&self) -> Option<Refusing> {
        Some(Refusing {
            reason: RejectReason::BulkheadFull,
            retry_in: Some(ms(50)),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_tier_is_balanced_then_exhausted_before_the_next() {
    let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
    let chain = Fallback::builder()
        .tier(
            Strategy::RoundRobin,
            [
                Target::new("east", provider("east", 10, false, &a)).weight(3),
                Target::new("west", provider("west", 10, false, &b)),
            ],
        )
        .target(Target::new("local", provider("local", 10, false, &c)))
        .build()
        .unwrap();
    for _ in 0..400 {
        chain.clone().oneshot(Req::new(())).await.unwrap();
    }
    assert_eq!(
        (
            a.calls.load(Ordering::SeqCst),
            b.calls.load(Ordering::SeqCst),
            c.calls.load(Ordering::SeqCst)
        ),
        (300, 100, 0)
    );

    // East failing: every call is answered by west, in the same tier.
    let (a, b, c) = (Counter::default(), Counter::default(), Counter::default());
    let chain = Fallback::builder()
        .tier(
            Strategy::RoundRobin,
            [
                Target::new("east", provider("east", 10, true, &a)),
                Target::new("west", provider("west", 10, false, &b)),
            ],
        )
        .target(Target::new("local", provider("local", 10, false, &c)))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(chain.clone().oneshot(Req::new(())).await.unwrap(), "west");
    }
    assert_eq!(c.calls.load(Ordering::SeqCst), 0);

    // The whole tier failing: the next tier answers; AllFailed would list each.
    let (a, b) = (Counter::default(), Counter::default());
    let chain = Fallback::builder()
        .tier(
            Strategy::PeakEwma,
            [
                Target::new("east", provider("east", 10, true, &a)),
                Target::new("west", provider("west", 10, true, &b)),
            ],
        )
        .build()
        .unwrap();
    let err = chain.oneshot(Req::new(())).await.unwrap_err();
    let all = err.downcast_ref::<AllFailed>().unwrap();
    let mut names: Vec<&str> = all.attempts().iter().map(|p| p.provider.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["east", "west"]);
}

#[tokio::test(start_paused = true)]
async fn a_refusing_provider_is_stepped_around_and_listed_only_when_all_refuse() {
    let (a, b) = (Counter::default(), Counter::default());
    let chain = Fallback::builder()
        .tier(
            Strategy::LeastInFlight,
            [
                Target::new("east", provider("east", 10, false, &a)).admission(Closed),
                Target::new("west", provider("west", 10, false, &b)),
            ],
        )
        .build()
        .unwrap();
    for _ in 0..20 {
        assert_eq!(chain.clone().oneshot(Req::new(())).await.unwrap(), "west");
    }
    assert_eq!(a.calls.load(Ordering::SeqCst), 0);

    let chain = Fallback::builder()
        .tier(
            Strategy::Random,
            [
                Target::new("east", provider("east", 10, false, &a)).admission(Closed),
                Target::new("west", provider("west", 10, false, &b)).admission(Closed),
            ],
        )
        .build()
        .unwrap();
    let err = chain.oneshot(Req::new(())).await.unwrap_err();
    let all = err.downcast_ref::<AllFailed>().unwrap();
    assert_eq!(all.attempts().len(), 2);
    assert!(all
        .attempts()
        .iter()
        .all(|p| matches!(p.outcome, AttemptOutcome::Skipped(_))));
}

fn hedged(slow: &Counter, fast: &Counter, policy: HedgePolicy) -> Fallback<Svc, Req> {
    Fallback::builder()
        .tier(
            Strategy::RoundRobin,
            [
                Target::new("slow", provider("slow", 5000, false, slow)),
                Target::new("fast", provider("fast", 300, false, fast)),
            ],
        )
        .hedge(policy)
        .seed(1)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_late_call_is_hedged_to_another_provider_of_the_tier() {
    let (slow, fast) = (Counter::default(), Counter::default());
    let policy = HedgePolicy::fixed(ms(200)).build().unwrap();
    let chain = hedged(&slow, &fast, policy.clone());
    // Round robin starts with "slow".
    let t0 = Instant::now();
    assert_eq!(chain.clone().oneshot(Req::new(())).await.unwrap(), "fast");
    assert_eq!(
        t0.elapsed(),
        ms(500),
        "hedge delay + the fast provider's latency"
    );
    assert_eq!(
        slow.live.load(Ordering::SeqCst),
        0,
        "the slow call was dropped"
    );
    let s = policy.handle().snapshot();
    assert_eq!((s.sent, s.won, s.wasted), (1, 1, 1));
    // The hedge took fast's turn of the round, so the next call starts
    // on "slow" again, and is hedged again.
    let t0 = Instant::now();
    assert_eq!(chain.clone().oneshot(Req::new(())).await.unwrap(), "fast");
    assert_eq!(t0.elapsed(), ms(500));
    assert_eq!(slow.calls.load(Ordering::SeqCst), 2);
    assert_eq!(policy.handle().snapshot().won, 2);
    assert_eq!(slow.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn unhedgeable_requests_and_tiers_of_one_are_not_hedged() {
    let (slow, fast) = (Counter::default(), Counter::default());
    let policy = HedgePolicy::fixed(ms(200)).build().unwrap();
    let chain = hedged(&slow, &fast, policy.clone());
    let mut req = Req::new(());
    req.extensions_mut().insert(Hedgeable(false));
    let t0 = Instant::now();
    assert_eq!(chain.oneshot(req).await.unwrap(), "slow");
    assert_eq!(t0.elapsed(), ms(5000));
    assert_eq!(fast.calls.load(Ordering::SeqCst), 0);

    let alone = Fallback::builder()
        .target(Target::new("slow", provider("slow", 5000, false, &slow)))
        .hedge(policy.clone())
        .build()
        .unwrap();
    assert_eq!(alone.oneshot(Req::new(())).await.unwrap(), "slow");
    assert_eq!(policy.handle().snapshot().sent, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_leaks_no_count_in_flight() {
    let (slow, fast) = (Counter::default(), Counter::default());
    let (ls, lf) = (Arc::new(Load::default()), Arc::new(Load::default()));
    let chain: Fallback<Svc, Req> = Fallback::builder()
        .tier(
            Strategy::LeastInFlight,
            [
                Target::new("slow", provider("slow", 5000, false, &slow)).load(ls.clone()),
                Target::new("fast", provider("fast", 5000, false, &fast)).load(lf.clone()),
            ],
        )
        .hedge(HedgePolicy::fixed(ms(100)).build().unwrap())
        .build()
        .unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| chain.clone().oneshot(Req::new(())))
        .collect();
    let all = futures_like_join(calls, ms(1000)).await;
    assert_eq!(all, 0, "none answered in time");
    assert_eq!(ls.in_flight() + lf.in_flight(), 0);
    assert_eq!(
        slow.live.load(Ordering::SeqCst) + fast.live.load(Ordering::SeqCst),
        0
    );
}

/// Polls all the calls for `limit`, then drops them; how many answered.
async fn futures_like_join<
    F: std::future::Future<Output = Result<&'static str, BoxError>> + Send + 'static,
>(
    calls: Vec<F>,
    limit: Duration,
) -> usize {
    let handles: Vec<_> = calls
        .into_iter()
        .map(|f| tokio::spawn(tokio::time::timeout(limit, f)))
        .collect();
    let mut answered = 0;
    for h in handles {
        if h.await.unwrap().is_ok() {
            answered += 1;
        }
    }
    answered
}

#[test]
fn tiers_are_checked_when_built() {
    let c = Counter::default();
    let err = Fallback::<Svc, Req>::builder()
        .tier(
            Strategy::RoundRobin,
            [
                Target::new("a", provider("a", 1, false, &c)).weight(0),
                Target::new("b", provider("b", 1, false, &c)),
            ],
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("tiers[0]"), "{err}");
    let _ = WithDeadline::new(());
}
