//! The default per-provider stack of ARCHITECTURE.md, assembled from the layer
//! crates with `ServiceBuilder`, on the paused clock:
//!
//! Deadline > Bulkhead > Retry(+budget) > CircuitBreaker > AttemptTimeout > provider

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_bulkhead::BulkheadLayer;
use palisade_core::{
    BoxError, CircuitState, Elapsed, RejectReason, Rejected, TimeoutScope, WithDeadline,
};
use palisade_deadline::{AttemptTimeoutLayer, DeadlineLayer};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A provider that never answers within any timeout, counting calls.
fn hanging(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<WithDeadline<u32>, Response = u32, Error = BoxError, Future: Send> + Clone
{
    service_fn(move |req: WithDeadline<u32>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(secs(3600)).await;
            Ok::<_, BoxError>(req.into_inner())
        }
    })
}

/// `deadline` > retry (up to `max_attempts`, a constant 2 s backoff, no
/// jitter, no budget limit, `min_attempt_time`) > a 3 s attempt timeout >
/// a provider that never answers.
fn timed_retries(
    deadline: DeadlineLayer,
    max_attempts: u32,
    min_attempt_time: Duration,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<WithDeadline<u32>, Response = u32, Error = BoxError> {
    ServiceBuilder::new()
        .layer(deadline)
        .layer(
            RetryLayer::builder()
                .max_attempts(max_attempts)
                .backoff(Backoff::constant(secs(2)))
                .jitter(Jitter::None)
                .min_attempt_time(min_attempt_time)
                .budget(RetryBudget::unlimited())
                .build()
                .unwrap(),
        )
        .layer(AttemptTimeoutLayer::new(secs(3)).unwrap())
        .service(hanging(calls))
}

#[tokio::test(start_paused = true)]
async fn the_whole_request_deadline_bounds_retries_and_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = timed_retries(
        DeadlineLayer::new(secs(5)).unwrap(),
        10,
        Duration::ZERO,
        calls.clone(),
    );
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(1)).await.unwrap_err();
    // Attempt 1 times out at 3 s, the backoff of 2 s ends at 5 s: the
    // request deadline fires there, never later.
    assert_eq!(start.elapsed(), secs(5));
    let e = err.downcast_ref::<Elapsed>().expect("a timeout");
    assert_eq!(e.scope(), TimeoutScope::Request);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The first attempt shares the deadline layer's clock reading (it is
/// called synchronously from the deadline's `call`); a retry is sent from
/// the retry's future after its backoff and must time itself from then: each
/// attempt gets its full 3 s.
#[tokio::test(start_paused = true)]
async fn every_attempt_gets_its_full_timeout_after_a_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    // (the retry's default minimum attempt time, 100 ms)
    let svc = timed_retries(
        DeadlineLayer::new(secs(60)).unwrap(),
        3,
        Duration::from_millis(100),
        calls.clone(),
    );
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(1)).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(3 + 2 + 3 + 2 + 3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let e = err
        .downcast_ref::<Elapsed>()
        .expect("the last attempt's timeout");
    assert_eq!((e.scope(), e.after()), (TimeoutScope::Attempt, secs(3)));
}

#[tokio::test(start_paused = true)]
async fn retry_stops_itself_when_the_backoff_would_cross_the_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = timed_retries(
        DeadlineLayer::new(secs(10)).unwrap().stamp_only(),
        10,
        secs(1),
        calls.clone(),
    );
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(1)).await.unwrap_err();
    // Attempts at 0 (→3), 5 (→8); at 8 s, 2 s of backoff + 1 s minimum no
    // longer fit in the 2 s left: stop at once, with time to spare for a
    // fallback.
    assert_eq!(start.elapsed(), secs(8));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stopped = err
        .downcast_ref::<palisade_retry::RetryStopped>()
        .expect("stopped early");
    assert_eq!(stopped.attempts(), 2);
    let last = stopped.last_error().downcast_ref::<Elapsed>().unwrap();
    assert_eq!(last.scope(), TimeoutScope::Attempt);
}

#[tokio::test(start_paused = true)]
async fn the_default_stack_trips_the_breaker_and_then_fails_fast() {
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = CircuitBreakerLayer::builder()
        .provider("openai")
        .consecutive_failures(Some(3))
        .failure_rate(None)
        .open_duration(secs(30))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(4)
        .max_waiting(16)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(60)).unwrap())
        .layer(bulkhead.clone())
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .backoff(Backoff::constant(Duration::from_millis(100)))
                .jitter(Jitter::None)
                .budget(RetryBudget::unlimited())
                .build()
                .unwrap(),
        )
        .layer(breaker)
        .layer(AttemptTimeoutLayer::new(secs(1)).unwrap())
        .service(hanging(calls.clone()));
    // One request: three attempts time out; the third trips the breaker.
    let err = svc.clone().oneshot(WithDeadline::new(1)).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().scope(),
        TimeoutScope::Attempt
    );
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The next request fails fast without reaching the provider, and the
    // retry layer does not retry our own rejection.
    let start = Instant::now();
    let err = svc.clone().oneshot(WithDeadline::new(2)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let r = err.downcast_ref::<Rejected>().expect("fails fast");
    assert_eq!(r.reason(), RejectReason::CircuitOpen(CircuitState::Open));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Nothing is left held in the bulkhead.
    assert_eq!(bulkhead.handle().snapshot().in_flight, 0);
}

/// The rate limit sits inside retry: every attempt spends quota, so a
/// storm of retries against a failing provider cannot send it more than
/// the quota; what the quota refuses is our own refusal, not re-sent.
#[tokio::test(start_paused = true)]
async fn a_retry_storm_cannot_exceed_the_quota() {
    use palisade_ratelimit::{Quota, RateLimitLayer};
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let failing = service_fn(move |_: WithDeadline<u32>| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<u32, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
        }
    });
    let limit = RateLimitLayer::builder()
        .quota(Quota::per_minute(5))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(60)).unwrap())
        .layer(
            RetryLayer::builder()
                .max_attempts(5)
                .backoff(Backoff::constant(Duration::from_millis(10)))
                .jitter(Jitter::None)
                .budget(RetryBudget::unlimited())
                .build()
                .unwrap(),
        )
        .layer(limit.clone())
        .service(failing);
    let mut rate_limited = 0;
    for i in 0..10 {
        let err = svc.clone().oneshot(WithDeadline::new(i)).await.unwrap_err();
        if err
            .downcast_ref::<Rejected>()
            .is_some_and(|r| r.reason() == RejectReason::RateLimited)
        {
            rate_limited += 1;
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the quota, not 10 x 5 attempts"
    );
    // The first request spent the quota on its five attempts and ended on
    // the provider's error; the nine after it ended on the refusal.
    assert_eq!(rate_limited, 9);
    assert_eq!(limit.handle().snapshot().admitted, 5);
}

/// In wait mode the provider stack waits for quota outside the bulkhead:
/// requests queued for room hold no slot, so a bulkhead of one with no
/// queue still takes every one of them, one a second; and the limiter
/// inside still counts each retry.
#[tokio::test(start_paused = true)]
async fn in_wait_mode_requests_wait_for_quota_outside_the_bulkhead() {
    use palisade::{Config, ProviderStack};
    let cfg = Config::from_toml(
        r#"
[providers.p.rate_limit]
requests_per_minute = 60
burst = 1
mode = "wait"
max_wait_ms = 60000
follow_headers = false
[providers.p.bulkhead]
max_concurrent = 1
max_waiting = 0
[providers.p.breaker]
enabled = false
[providers.p.retry]
max_attempts = 3
backoff_base_ms = 10
jitter = "none"
min_attempt_time_ms = 0
"#,
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (c, f) = (calls.clone(), failed.clone());
    // Answers at once; request 99's first attempt fails.
    let provider = service_fn(move |req: WithDeadline<u32>| {
        c.fetch_add(1, Ordering::SeqCst);
        let v = *req.get_ref();
        let fail = v == 99 && f.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if fail {
                Err::<u32, BoxError>(
                    std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                )
            } else {
                Ok(v)
            }
        }
    });
    let stack = ProviderStack::build(
        &cfg.provider("p").unwrap(),
        provider,
        palisade_core::ErrorClassifier,
        None,
    )
    .unwrap();
    let bulkhead = stack.handles.bulkhead.clone().unwrap();
    let limit = stack.handles.rate_limit.clone().unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..4u32)
        .map(|i| {
            // Boxed: the spawned future's type is then plainly 'static.
            let svc = stack.service.clone().boxed();
            tokio::spawn(async move {
                let v = svc.oneshot(WithDeadline::new(i)).await.unwrap();
                (v, Instant::now() - start)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = bulkhead.snapshot();
    assert_eq!(
        (b.in_flight, b.waiting),
        (0, 0),
        "nobody holds a slot while waiting for quota"
    );
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let want: Vec<_> = (0..4u32).map(|i| (i, secs(u64::from(i)))).collect();
    assert_eq!(got, want, "in arrival order, one a second");
    assert_eq!(bulkhead.snapshot().rejected, 0);
    // A request whose first attempt fails: its retry waits for its own
    // room (inside, counted), a second after the first attempt's.
    let v = stack
        .service
        .clone()
        .oneshot(WithDeadline::new(99))
        .await
        .unwrap();
    assert_eq!((v, Instant::now() - start), (99, secs(5)));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(limit.snapshot().admitted, 6);
}
