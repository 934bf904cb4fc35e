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
async fn a_pinned_request_goes_to_its_provider_alone() {
    use palisade_core::{Pinned, ProviderId};
    let (slow, fast, local) = (Counter::default(), Counter::default(), Counter::default());
    let policy = HedgePolicy::fixed(ms(200)).build().unwrap();
    let chain = Fallback::builder()
        .tier(
            Strategy::RoundRobin,
            [
                Target::new("slow", provider("slow", 5000, false, &slow)),
                Target::new("fast", provider("fast", 300, false, &fast)),
            ],
        )
        .target(Target::new("local", provider("local", 10, true, &local)))
        .hedge(policy.clone())
        .seed(1)
        .build()
        .unwrap();
    let pinned = |to: &str| {
        let mut req = Req::new(());
        req.extensions_mut().insert(Pinned(ProviderId::new(to)));
        req
    };
    // Pinned to the slow one of its tier: whatever the balancer's turn,
    // and never hedged to the fast one.
    for _ in 0..3 {
        let t0 = Instant::now();
        assert_eq!(chain.clone().oneshot(pinned("slow")).await.unwrap(), "slow");
        assert_eq!(t0.elapsed(), ms(5000));
    }
    assert_eq!(fast.calls.load(Ordering::SeqCst), 0);
    assert_eq!(policy.handle().snapshot().sent, 0);
    // Pinned to one that fails: no other is tried, and the error lists it
    // alone.
    let err = chain.clone().oneshot(pinned("local")).await.unwrap_err();
    let all = err.downcast_ref::<AllFailed>().unwrap();
    let names: Vec<_> = all.attempts().iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(names, ["local"]);
    assert_eq!(
        (
            slow.calls.load(Ordering::SeqCst),
            fast.calls.load(Ordering::SeqCst)
        ),
        (3, 0)
    );
    // Pinned to a provider the chain does not have: routed as usual.
    assert_eq!(chain.clone().oneshot(pinned("gone")).await.unwrap(), "fast");
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

/// A provider whose streams' first token comes after `ttft` ms and whose
/// whole (non-stream) answers after `whole` ms.
fn two_speed(name: &'static str, ttft: u64, whole: u64, c: &Counter) -> Svc {
    let c = c.clone();
    BoxCloneSyncService::new(service_fn(move |req: Req| {
        c.calls.fetch_add(1, Ordering::SeqCst);
        let wait = if palisade_core::RequestMarks::streaming(&req) {
            ttft
        } else {
            whole
        };
        async move {
            tokio::time::sleep(ms(wait)).await;
            Ok::<_, BoxError>(name)
        }
    }))
}

fn stream_req(streaming: bool) -> Req {
    let mut r = http::Request::new(());
    r.extensions_mut()
        .insert(palisade_core::Streaming(streaming));
    r
}

#[tokio::test(start_paused = true)]
async fn streams_are_balanced_on_first_token_and_whole_calls_on_latency() {
    // "quick-start" sends its first token at 100 ms but takes 4 s to
    // finish; "steady" starts at 1 s and finishes at 1.2 s. Streams should
    // go to the first, whole answers to the second, from one shared view.
    let (a, b) = (Counter::default(), Counter::default());
    let chain = Fallback::builder()
        .tier(
            Strategy::PeakEwma,
            vec![
                Target::new("quick-start", two_speed("quick-start", 100, 4000, &a)),
                Target::new("steady", two_speed("steady", 1000, 1200, &b)),
            ],
        )
        .seed(5)
        .build()
        .unwrap();
    let mut streams = [0u32; 2];
    let mut wholes = [0u32; 2];
    for i in 0..400 {
        let streaming = i % 2 == 0;
        let got = chain.clone().oneshot(stream_req(streaming)).await.unwrap();
        let k = usize::from(got == "steady");
        if streaming {
            streams[k] += 1;
        } else {
            wholes[k] += 1;
        }
    }
    assert!(streams[0] >= 180, "streams to quick-start: {streams:?}");
    assert!(wholes[1] >= 180, "whole answers to steady: {wholes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_streams_hedge_delay_is_a_percentile_of_first_tokens() {
    // The providers' windows: first tokens at 200 ms, whole answers at 3 s.
    let ttft = Arc::new(palisade_hedge::LatencyWindow::new(Duration::from_secs(30)));
    let whole = Arc::new(palisade_hedge::LatencyWindow::new(Duration::from_secs(30)));
    for _ in 0..20 {
        ttft.record(ms(200));
        whole.record(ms(3000));
    }
    let chain = |a: &Counter, b: &Counter| {
        let target = |name, svc| {
            Target::new(name, svc)
                .latency_window(whole.clone())
                .first_token_window(ttft.clone())
        };
        Fallback::builder()
            .tier(
                Strategy::RoundRobin,
                vec![
                    // Round robin calls "a" first: slow to start and to end.
                    target("a", two_speed("a", 2000, 5000, a)),
                    target("b", two_speed("b", 200, 3000, b)),
                ],
            )
            .hedge(
                HedgePolicy::percentile(0.9)
                    .min_samples(10)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    // A stream hedges at the first tokens' p90 (200 ms, within the
    // window's 1/8) and "b" answers 200 ms later.
    let (a, b) = (Counter::default(), Counter::default());
    let t0 = Instant::now();
    let got = chain(&a, &b).oneshot(stream_req(true)).await.unwrap();
    assert_eq!(got, "b");
    let took = t0.elapsed();
    assert!(took >= ms(400) && took <= ms(425), "{took:?}");
    // A whole answer hedges at the whole answers' p90 (3 s): "b" would take
    // until 6 s, so "a" wins at 5 s.
    let (a, b) = (Counter::default(), Counter::default());
    let t0 = Instant::now();
    let got = chain(&a, &b).oneshot(stream_req(false)).await.unwrap();
    assert_eq!(got, "a");
    assert_eq!(t0.elapsed(), ms(5000));
    assert_eq!(b.calls.load(Ordering::SeqCst), 1, "hedged at 3 s");
}
