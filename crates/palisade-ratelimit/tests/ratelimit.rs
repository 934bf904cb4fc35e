//! The rate limiter on tokio's paused clock: exact admission counts,
//! all-or-nothing quotas, reconciliation, pacing by provider headers,
//! waiting, and no leaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{
    Admission, BoxError, Deadline, HasDeadline, HttpClassifier, RejectReason, Rejected, TokenUsage,
};
use palisade_ratelimit::{Mode, Quota, RateLimitLayer};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = http::Request<u64>;
type Res = http::Response<()>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn refused(e: &BoxError) -> &Rejected {
    let r = e.downcast_ref::<Rejected>().expect("a Rejected");
    assert_eq!(r.reason(), RejectReason::RateLimited);
    r
}

/// A provider that answers 200 and counts calls.
fn counting() -> (
    impl Service<Req, Response = Res, Error = BoxError, Future = impl Send> + Clone,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_: Req| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(http::Response::new(())) }
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn a_minute_of_attempts_admits_exactly_the_burst_and_the_rate() {
    for (per_minute, burst) in [(60u64, 10u64), (600, 1), (120, 120)] {
        let layer = RateLimitLayer::builder()
            .quota(Quota::per_minute(per_minute).burst(burst))
            .build()
            .unwrap();
        let (provider, calls) = counting();
        let svc = layer.layer(provider);
        // An attempt every 10 ms for 60 s: 6000 attempts.
        let start = Instant::now();
        for i in 0..6000u64 {
            tokio::time::sleep_until(start + ms(10 * i)).await;
            let _ = svc.clone().oneshot(Req::new(0)).await;
        }
        // The burst at once, then one per interval; the last attempt is at
        // 59.99 s.
        let interval_ms = 60_000 / per_minute;
        let expected = burst + 59_990 / interval_ms;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            expected,
            "{per_minute}/min burst {burst}"
        );
        let snap = layer.handle().snapshot();
        assert_eq!(snap.admitted, expected);
        assert_eq!(snap.refused, 6000 - expected);
    }
}

#[tokio::test(start_paused = true)]
async fn quotas_are_all_or_nothing_and_a_refusal_spends_nothing() {
    // 100 requests/min and 1000 tokens/min; each request weighs 100 tokens.
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_minute(100))
        .quota(Quota::tokens_per_minute(1000))
        .weigh(|r: &Req| *r.body())
        .build()
        .unwrap();
    let (provider, calls) = counting();
    let svc = layer.layer(provider);
    for _ in 0..10 {
        svc.clone().oneshot(Req::new(100)).await.unwrap();
    }
    let err = svc.clone().oneshot(Req::new(100)).await.unwrap_err();
    // The tokens quota refused; 100 tokens come back in 6 s.
    assert_eq!(refused(&err).retry_after(), Some(ms(6000)));
    let snap = layer.handle().snapshot();
    assert_eq!(snap.quotas[0].available, 90, "the refusal took no request");
    assert_eq!(snap.quotas[1].available, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    // A weightless request still fits the requests quota.
    svc.clone().oneshot(Req::new(0)).await.unwrap();
    assert_eq!(layer.handle().snapshot().quotas[0].available, 89);
}

/// 1 000 tokens a minute, each request weighing what its body says, the
/// answers read for their usage.
fn tokens_layer() -> RateLimitLayer<HttpClassifier, fn(&Req) -> u64> {
    RateLimitLayer::builder()
        .classifier(HttpClassifier::new())
        .quota(Quota::tokens_per_minute(1000))
        .weigh((|r: &Req| *r.body()) as fn(&Req) -> u64)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn reported_usage_corrects_the_estimate_up_and_down() {
    let layer = tokens_layer();
    // The provider reports the usage the request's body names * 3.
    let provider = service_fn(|r: Req| async move {
        let mut res = http::Response::new(());
        res.extensions_mut().insert(TokenUsage(*r.body() * 3));
        Ok::<_, BoxError>(res)
    });
    let svc = layer.layer(provider);
    let available = || layer.handle().snapshot().quotas[0].available;
    svc.clone().oneshot(Req::new(100)).await.unwrap();
    assert_eq!(available(), 700, "estimated 100, used 300: charged 300");
    let provider = service_fn(|_: Req| async move {
        let mut res = http::Response::new(());
        res.extensions_mut().insert(TokenUsage(50));
        Ok::<_, BoxError>(res)
    });
    layer.layer(provider).oneshot(Req::new(200)).await.unwrap();
    assert_eq!(available(), 650, "estimated 200, used 50: 150 back");
}

#[tokio::test(start_paused = true)]
async fn a_streams_usage_corrects_the_estimate_when_the_stream_ends() {
    use palisade_core::UsageLater;
    let layer = tokens_layer();
    // A streamed answer: its usage known only when its body ends.
    let provider = service_fn(|_: Req| async move {
        let mut res = http::Response::new(());
        res.extensions_mut().insert(UsageLater::new());
        Ok::<_, BoxError>(res)
    });
    let svc = layer.layer(provider);
    let available = || layer.handle().snapshot().quotas[0].available;
    let res = svc.clone().oneshot(Req::new(100)).await.unwrap();
    assert_eq!(available(), 900, "the estimate, until the stream ends");
    let later = res.extensions().get::<UsageLater>().unwrap().clone();
    assert_eq!(later.owed(), 1);
    later.report(Some(400));
    assert_eq!(available(), 600, "estimated 100, used 400: 300 more");
    // Ended without saying (dropped): the estimate stands.
    let res = svc.clone().oneshot(Req::new(50)).await.unwrap();
    drop(res);
    assert_eq!(available(), 550);
    // A stream whose answer already carries its usage is settled at once.
    let provider = service_fn(|_: Req| async move {
        let mut res = http::Response::new(());
        res.extensions_mut().insert(UsageLater::new());
        res.extensions_mut().insert(TokenUsage(10));
        Ok::<_, BoxError>(res)
    });
    let res = layer.layer(provider).oneshot(Req::new(60)).await.unwrap();
    assert_eq!(available(), 540, "estimated 60, used 10: 50 back");
    assert_eq!(res.extensions().get::<UsageLater>().unwrap().owed(), 0);
}

/// A provider that allows `limit` requests per fixed window of `window`,
/// says so in OpenAI's headers, and answers 429 beyond it.
#[derive(Clone)]
struct Strict {
    limit: u64,
    window: Duration,
    state: Arc<Mutex<(Instant, u64)>>,
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl Strict {
    fn new(limit: u64, window: Duration) -> Self {
        Strict {
            limit,
            window,
            state: Arc::new(Mutex::new((Instant::now(), 0))),
            refused: Arc::default(),
            served: Arc::default(),
        }
    }

    fn answer(&self) -> Res {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        while now >= s.0 + self.window {
            s.0 += self.window;
            s.1 = 0;
        }
        let reset = s.0 + self.window - now;
        let reset = format!("{}ms", reset.as_millis());
        if s.1 >= self.limit {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return http::Response::builder()
                .status(429)
                .header("retry-after", "1")
                .body(())
                .unwrap();
        }
        s.1 += 1;
        self.served.fetch_add(1, Ordering::SeqCst);
        http::Response::builder()
            .header("x-ratelimit-limit-requests", self.limit.to_string())
            .header(
                "x-ratelimit-remaining-requests",
                (self.limit - s.1).to_string(),
            )
            .header("x-ratelimit-reset-requests", reset)
            .body(())
            .unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn with_no_quota_the_providers_headers_pace_every_call() {
    let provider = Strict::new(60, Duration::from_secs(60));
    let p = provider.clone();
    let layer = RateLimitLayer::builder()
        .provider("strict")
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    // Boxed: spawned tasks await it (see palisade::Router::boxed for the
    // rustc limitation that asks for it).
    let svc = BoxCloneService::new(layer.layer(service_fn(move |_: Req| {
        let res = p.answer();
        async move { Ok::<_, BoxError>(res) }
    })));
    // Ten callers, one attempt every 50 ms each, for three minutes.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..10u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut local_refusals = 0u64;
            for i in 0..3600u64 {
                tokio::time::sleep_until(start + ms(50 * i + k)).await;
                if let Err(e) = svc.clone().oneshot(Req::new(0)).await {
                    refused(&e);
                    local_refusals += 1;
                }
            }
            local_refusals
        }));
    }
    let mut local = 0;
    for t in tasks {
        local += t.await.unwrap();
    }
    assert_eq!(
        provider.refused.load(Ordering::SeqCst),
        0,
        "the provider never had to refuse"
    );
    assert_eq!(
        provider.served.load(Ordering::SeqCst),
        180,
        "60 per window, all used"
    );
    assert_eq!(
        local,
        36_000 - 180,
        "the rest was refused here, without a call"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_stops_every_call_until_then() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let layer = RateLimitLayer::builder()
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(move |_: Req| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = if n == 0 { 429 } else { 200 };
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(status)
                    .header("retry-after", "7")
                    .body(())
                    .unwrap(),
            )
        }
    }));
    assert_eq!(
        svc.clone().oneshot(Req::new(0)).await.unwrap().status(),
        429
    );
    let err = svc.clone().oneshot(Req::new(0)).await.unwrap_err();
    assert_eq!(refused(&err).retry_after(), Some(Duration::from_secs(7)));
    let admission = layer.handle().refusing().unwrap();
    assert_eq!(admission.retry_in, Some(Duration::from_secs(7)));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(layer.handle().refusing().is_none());
    assert_eq!(
        svc.clone().oneshot(Req::new(0)).await.unwrap().status(),
        200
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_go_in_arrival_order_and_never_past_their_deadline() {
    // One per second, burst 1.
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    let svc = BoxCloneService::new(layer.layer(service_fn(move |r: Req| {
        o.lock().unwrap().push((*r.body(), Instant::now()));
        async { Ok::<_, BoxError>(http::Response::new(())) }
    })));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { svc.oneshot(Req::new(i)).await }));
        tokio::task::yield_now().await;
    }
    // A fifth caller whose deadline comes before its turn (at 4 s) is
    // refused at once, without sleeping.
    let mut late = Req::new(99);
    late.replace_deadline(Deadline::after(Duration::from_secs(3)));
    let err = svc.clone().oneshot(late).await.unwrap_err();
    assert_eq!(refused(&err).retry_after(), Some(Duration::from_secs(4)));
    assert_eq!(Instant::now(), start, "refused at once");
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got: Vec<(u64, Duration)> = order
        .lock()
        .unwrap()
        .iter()
        .map(|(i, at)| (*i, *at - start))
        .collect();
    let secs = Duration::from_secs;
    assert_eq!(
        got,
        [(0, secs(0)), (1, secs(1)), (2, secs(2)), (3, secs(3))]
    );
    assert_eq!(layer.handle().snapshot().waited, 3);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_dropped_gives_its_reservation_back() {
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let (provider, calls) = counting();
    let svc = layer.layer(provider);
    svc.clone().oneshot(Req::new(0)).await.unwrap();
    // Three callers reserve the next three seconds, then give up.
    for _ in 0..3 {
        let fut = svc.clone().oneshot(Req::new(0));
        let _ = tokio::time::timeout(ms(1), fut).await;
    }
    // Their reservations came back: the next caller waits only for the
    // rest of the first second (3 ms of it passed while they waited).
    let start = Instant::now();
    svc.clone().oneshot(Req::new(0)).await.unwrap();
    assert_eq!(Instant::now() - start, ms(997));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().snapshot().in_flight, Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_sent_call_dropped_before_its_answer_is_no_longer_in_flight() {
    // Following headers (the default), a sent call stays in flight until
    // its answer settles it; a caller that gives up first settles it with
    // nothing learnt.
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_minute(60))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Req| {
        std::future::pending::<Result<Res, BoxError>>()
    }));
    let mut calls = Vec::new();
    for _ in 0..3 {
        let mut call = Box::pin(svc.clone().oneshot(Req::new(0)));
        assert!(futures_poll_once(call.as_mut()).await.is_none());
        calls.push(call);
    }
    assert_eq!(layer.handle().snapshot().in_flight, Some(3));
    calls.pop();
    assert_eq!(layer.handle().snapshot().in_flight, Some(2));
    calls.clear();
    let snap = layer.handle().snapshot();
    assert_eq!(snap.in_flight, Some(0));
    assert_eq!(snap.admitted, 3, "the room stays spent: they were sent");
}

/// Polls `fut` once: its output if ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(fut: F) -> Option<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// 500 requests an hour, all of them at once if asked: a run of a few real
/// milliseconds may admit exactly 500.
fn five_hundred_an_hour() -> RateLimitLayer {
    RateLimitLayer::builder()
        .quota(Quota::new(
            palisade_ratelimit::Unit::Requests,
            500,
            Duration::from_secs(3600),
        ))
        .build()
        .unwrap()
}

#[test]
fn many_threads_never_exceed_a_quota() {
    // 500 per hour with a burst of 500: in the few real milliseconds this
    // takes, exactly 500 of 64 x 50 attempts may pass.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = five_hundred_an_hour();
        let (provider, calls) = counting();
        let svc = layer.layer(provider);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..50 {
                    if svc.clone().oneshot(Req::new(0)).await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        assert_eq!(ok, 500);
        assert_eq!(calls.load(Ordering::SeqCst), 500);
        assert_eq!(layer.handle().snapshot().refused, 64 * 50 - 500);
    });
}

#[test]
fn bad_settings_are_refused_together() {
    let err = RateLimitLayer::builder()
        .quota(Quota::per_minute(0))
        .quota(Quota::per_minute(10).burst(0))
        .mode(Mode::Wait(Duration::ZERO))
        .build()
        .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rate_limit.quota",
            "rate_limit.burst",
            "rate_limit.max_wait"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_direct_check_is_all_or_nothing_counts_and_never_waits() {
    // 100 requests/min and 1000 tokens/min, in wait mode: the direct check
    // still answers at once.
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_minute(100))
        .quota(Quota::tokens_per_minute(1000))
        .mode(Mode::Wait(Duration::from_secs(60)))
        .build()
        .unwrap();
    let limit = layer.handle();
    for _ in 0..10 {
        assert_eq!(limit.try_acquire(100), Ok(()));
    }
    // The tokens quota refuses: 100 tokens come back in 6 s.
    assert_eq!(limit.try_acquire(100), Err(ms(6000)));
    let snap = limit.snapshot();
    assert_eq!(snap.quotas[0].available, 90, "the refusal took no request");
    assert_eq!((snap.admitted, snap.refused, snap.waited), (10, 1, 0));
    assert_eq!(
        snap.in_flight,
        Some(0),
        "a direct check is answered at once"
    );
    // A weightless call still fits the requests quota; time brings room.
    assert_eq!(limit.try_acquire(0), Ok(()));
    tokio::time::advance(ms(6000)).await;
    assert_eq!(limit.try_acquire(100), Ok(()));
    assert_eq!(limit.snapshot().quotas[0].available, 88 + 10);
}

#[test]
fn many_threads_never_exceed_a_quota_through_the_direct_check() {
    // 500 per hour with a burst of 500, on the real clock: exactly 500 of
    // 16 threads x 200 checks pass.
    let layer = five_hundred_an_hour();
    let limit = layer.handle();
    let start = Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (limit, start) = (limit.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..200).filter(|_| limit.try_acquire(0).is_ok()).count() as u64
            })
        })
        .collect();
    let ok: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 500);
    let snap = limit.snapshot();
    assert_eq!((snap.admitted, snap.refused), (500, 16 * 200 - 500));
}
