//! Retry behaviour on tokio's paused clock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use palisade_core::{
    classify_error, BoxError, Classified, Deadline, FailureKind, HttpClassifier, WithDeadline,
};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer, RetryStopped, StopReason};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// One scripted answer.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16, Option<&'static str>),
    Refused,
    RateLimitedErr(Duration),
}

use Reply::*;

type Req = WithDeadline<u32>;

/// A provider that answers from a script (the last entry repeats), logs
/// when each call arrived, and checks that every call was preceded by a
/// `poll_ready` that said ready.
#[derive(Clone)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
    ready: bool,
    unreadied_calls: Arc<AtomicUsize>,
}

impl Script {
    fn new(replies: impl IntoIterator<Item = Reply>) -> Self {
        Script {
            replies: Arc::new(Mutex::new(replies.into_iter().collect())),
            calls: Arc::default(),
            ready: false,
            unreadied_calls: Arc::default(),
        }
    }

    /// Offsets of each call from `start`, in ms.
    fn call_times(&self, start: Instant) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_millis() as u64)
            .collect()
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Service<Req> for Script {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            self.unreadied_calls.fetch_add(1, Ordering::SeqCst);
        }
        self.calls.lock().unwrap().push(Instant::now());
        let reply = {
            let mut q = self.replies.lock().unwrap();
            if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                q.front().cloned().expect("script not empty")
            }
        };
        Box::pin(async move {
            match reply {
                Status(code, retry_after) => {
                    let mut b = Response::builder().status(code);
                    if let Some(ra) = retry_after {
                        b = b.header("retry-after", ra);
                    }
                    Ok(b.body(()).unwrap())
                }
                Refused => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
                RateLimitedErr(after) => Err(Classified::new(
                    FailureKind::RateLimited {
                        retry_after: Some(after),
                    },
                    "429 from the SDK",
                )
                .into()),
            }
        })
    }
}

fn builder() -> palisade_retry::Builder<HttpClassifier> {
    RetryLayer::builder()
        .provider("p")
        .classifier(HttpClassifier::new())
        .jitter(Jitter::None)
        .budget(RetryBudget::unlimited())
}

fn req(deadline: Option<Duration>) -> Req {
    match deadline {
        Some(d) => WithDeadline::with(1, Deadline::after(d)),
        None => WithDeadline::new(1),
    }
}

async fn delays_of(backoff: Backoff, attempts: u32) -> Vec<u64> {
    let script = Script::new([Refused]);
    let svc = builder()
        .max_attempts(attempts)
        .backoff(backoff)
        .build()
        .unwrap()
        .layer(script.clone());
    let start = Instant::now();
    let err = svc.oneshot(req(None)).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
    assert_eq!(script.calls(), attempts as usize);
    let times = script.call_times(start);
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn exact_delay_sequences_per_strategy_without_jitter() {
    assert_eq!(
        delays_of(Backoff::exponential(100 * MS, 2.0, 1000 * MS), 6).await,
        [100, 200, 400, 800, 1000]
    );
    assert_eq!(
        delays_of(Backoff::linear(100 * MS, 50 * MS, 220 * MS), 5).await,
        [100, 150, 200, 220]
    );
    assert_eq!(
        delays_of(Backoff::fibonacci(10 * MS, 1000 * MS), 7).await,
        [10, 10, 20, 30, 50, 80]
    );
    assert_eq!(delays_of(Backoff::constant(70 * MS), 4).await, [70, 70, 70]);
    assert_eq!(
        delays_of(Backoff::custom(|n| n * n * MS), 4).await,
        [1, 4, 9]
    );
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_is_returned_and_counted() {
    let script = Script::new([Status(503, None), Status(502, None), Status(200, None)]);
    let layer = builder()
        .max_attempts(5)
        .backoff(Backoff::constant(10 * MS))
        .build()
        .unwrap();
    let handle = layer.handle();
    let res = layer
        .layer(script.clone())
        .oneshot(req(None))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stats = handle.snapshot();
    assert_eq!((stats.requests, stats.retries, stats.attempts), (1, 2, 3));
    assert_eq!(script.unreadied_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_reacquired_before_every_resend() {
    let script = Script::new([Refused, Refused, Refused, Status(200, None)]);
    let svc = builder()
        .max_attempts(4)
        .backoff(Backoff::constant(MS))
        .build()
        .unwrap()
        .layer(script.clone());
    svc.oneshot(req(None)).await.unwrap();
    assert_eq!(script.calls(), 4);
    assert_eq!(
        script.unreadied_calls.load(Ordering::SeqCst),
        0,
        "every call, the first and each retry, followed a ready poll_ready"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_exactly_and_capped() {
    let script = Script::new([Status(429, Some("3")), Status(200, None)]);
    let svc = builder()
        .backoff(Backoff::constant(10 * MS))
        .build()
        .unwrap()
        .layer(script.clone());
    let start = Instant::now();
    svc.oneshot(req(None)).await.unwrap();
    assert_eq!(
        script.call_times(start),
        [0, 3000],
        "the provider's 3 s, not the backoff"
    );

    let script = Script::new([Status(503, Some("1000")), Status(200, None)]);
    let svc = builder()
        .retry_after(true, Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(script.clone());
    let start = Instant::now();
    svc.oneshot(req(None)).await.unwrap();
    assert_eq!(
        script.call_times(start),
        [0, 5000],
        "capped at max_retry_after"
    );

    let script = Script::new([Status(429, Some("3")), Status(200, None)]);
    let svc = builder()
        .retry_after(false, Duration::from_secs(5))
        .backoff(Backoff::constant(10 * MS))
        .build()
        .unwrap()
        .layer(script.clone());
    let start = Instant::now();
    svc.oneshot(req(None)).await.unwrap();
    assert_eq!(
        script.call_times(start),
        [0, 10],
        "switched off: the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_returns_at_once() {
    // A response: returned as it is, at once.
    let script = Script::new([Status(429, Some("10")), Status(200, None)]);
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let start = Instant::now();
    let res = layer
        .layer(script.clone())
        .oneshot(req(Some(Duration::from_secs(2))))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(script.calls(), 1);
    assert_eq!(handle.snapshot().deadline_stops, 1);

    // An error: wrapped, saying why, still classified as the provider's 429.
    let script = Script::new([RateLimitedErr(Duration::from_secs(10))]);
    let svc = builder().build().unwrap().layer(script.clone());
    let err = svc
        .oneshot(req(Some(Duration::from_secs(2))))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let stopped = err.downcast_ref::<RetryStopped>().expect("wrapped");
    assert_eq!(stopped.attempts(), 1);
    assert_eq!(
        stopped.reason(),
        StopReason::DeadlineTooClose {
            wait: Duration::from_secs(10),
            remaining: Duration::from_secs(2)
        }
    );
    assert!(matches!(
        classify_error(&*err).kind,
        FailureKind::RateLimited { .. }
    ));
    assert!(
        err.to_string()
            .starts_with("provider p: no retry: waiting 10s"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline_nor_starts_an_attempt_without_time_left() {
    let script = Script::new([Refused]);
    let svc = builder()
        .max_attempts(10)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .min_attempt_time(200 * MS)
        .build()
        .unwrap()
        .layer(script.clone());
    let start = Instant::now();
    let err = svc
        .oneshot(req(Some(Duration::from_millis(2500))))
        .await
        .unwrap_err();
    // Attempts at 0 and 1 s; at 2 s, 1 s + 200 ms no longer fits in 500 ms.
    assert_eq!(script.call_times(start), [0, 1000, 2000]);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "stopped at once, no sleep"
    );
    let stopped = err.downcast_ref::<RetryStopped>().unwrap();
    assert_eq!(stopped.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_kinds_are_not_retried() {
    for code in [400, 401, 403, 404, 422] {
        let script = Script::new([Status(code, None), Status(200, None)]);
        let svc = builder().build().unwrap().layer(script.clone());
        let res = svc.oneshot(req(None)).await.unwrap();
        assert_eq!(res.status(), code);
        assert_eq!(script.calls(), 1, "{code} is the caller's fault");
    }
    // The provider's own "do not retry" wins over a retryable status.
    let script = Script::new([Status(503, None), Status(200, None)]);
    let svc = builder().build().unwrap().layer(tower::service_fn({
        let script = script.clone();
        move |r: Req| {
            let mut s = script.clone();
            async move {
                let mut res = s.call(r).await?;
                res.headers_mut()
                    .insert("x-should-retry", http::HeaderValue::from_static("false"));
                Ok::<_, BoxError>(res)
            }
        }
    }));
    assert_eq!(svc.oneshot(req(None)).await.unwrap().status(), 503);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_overrides_the_policy_both_ways() {
    let script = Script::new([Status(200, None), Status(201, None)]);
    let svc = builder()
        .retry_if(
            |res: Result<&Response<()>, &BoxError>, _: &palisade_core::Outcome| {
                match res {
                    Ok(r) if r.status() == 200 => Some(true), // "empty completion"
                    Ok(r) if r.status() == 503 => Some(false),
                    _ => None,
                }
            },
        )
        .backoff(Backoff::constant(MS))
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(svc.clone().oneshot(req(None)).await.unwrap().status(), 201);
    let script = Script::new([Status(503, None), Status(200, None)]);
    let svc = builder()
        .retry_if(
            |res: Result<&Response<()>, &BoxError>, _: &palisade_core::Outcome| {
                matches!(res, Ok(r) if r.status() == 503).then_some(false)
            },
        )
        .build()
        .unwrap()
        .layer(script.clone());
    assert_eq!(svc.oneshot(req(None)).await.unwrap().status(), 503);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_replayed_is_sent_once() {
    let script = Script::new([Refused, Status(200, None)]);
    let svc = builder()
        .replay(|_: &Req| None)
        .build()
        .unwrap()
        .layer(script.clone());
    assert!(svc.oneshot(req(None)).await.is_err());
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn ratio_budget_caps_retries_at_its_share_of_requests() {
    let budget = RetryBudget::ratio(0.2, Duration::from_secs(10), 0).unwrap();
    let script = Script::new([Refused]);
    let layer = builder()
        .max_attempts(2)
        .backoff(Backoff::constant(MS))
        .budget(budget)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(script.clone());
    let mut stopped_by_budget = 0;
    for _ in 0..100 {
        let err = svc.clone().oneshot(req(None)).await.unwrap_err();
        if let Some(s) = err.downcast_ref::<RetryStopped>() {
            assert_eq!(s.reason(), StopReason::BudgetExhausted);
            assert_eq!(s.attempts(), 1);
            assert!(s.last_error().downcast_ref::<std::io::Error>().is_some());
            stopped_by_budget += 1;
        }
    }
    let stats = handle.snapshot();
    assert_eq!(stats.requests, 100);
    assert_eq!(stats.retries, 20, "0.2 × 100 requests, no floor");
    assert_eq!(stats.budget_refusals, 80);
    assert_eq!(stopped_by_budget, 80);
    assert_eq!(script.calls(), 120);
    let err = svc.oneshot(req(None)).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("provider p: retry budget exhausted after 1 attempt(s): "),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_budget_shared_by_two_providers() {
    let budget = RetryBudget::ratio(0.5, Duration::from_secs(10), 0).unwrap();
    let a = builder()
        .max_attempts(2)
        .backoff(Backoff::constant(MS))
        .budget(budget.clone())
        .build()
        .unwrap();
    let b = builder()
        .max_attempts(2)
        .backoff(Backoff::constant(MS))
        .budget(budget.clone())
        .build()
        .unwrap();
    let ok = Script::new([Status(200, None)]);
    for _ in 0..10 {
        a.layer(ok.clone()).oneshot(req(None)).await.unwrap();
    }
    // B's failures retry on A's deposits (plus its own): 0.5 × 14 = 7.
    let failing = Script::new([Refused]);
    for _ in 0..4 {
        let _ = b.layer(failing.clone()).oneshot(req(None)).await;
    }
    assert_eq!(b.handle().snapshot().retries, 4);
    for _ in 0..10 {
        let _ = b.layer(failing.clone()).oneshot(req(None)).await;
    }
    // 24 requests in all earn 12 retries; B has taken them all.
    assert_eq!(b.handle().snapshot().retries, 12);
}

#[tokio::test(start_paused = true)]
async fn token_bucket_throttles_after_failures_and_recovers_after_successes() {
    // gRPC: max 10 tokens, +1 per success; retries only above 5 tokens.
    let budget = RetryBudget::token_bucket(10, 1.0).unwrap();
    let script = Script::new([Refused]);
    let layer = builder()
        .max_attempts(2)
        .backoff(Backoff::constant(MS))
        .budget(budget.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(script.clone());
    // Each request fails twice when retried: 10 → 8 → 6 → (4: retry refused)
    for _ in 0..3 {
        let _ = svc.clone().oneshot(req(None)).await;
    }
    let stats = handle.snapshot();
    assert_eq!(stats.retries, 2, "two retries while tokens > 5");
    assert_eq!(stats.budget_refusals, 1);
    // Now throttled: every request is sent once.
    let before = script.calls();
    let _ = svc.clone().oneshot(req(None)).await;
    assert_eq!(script.calls(), before + 1);
    // Successes refill the bucket; retries come back.
    let ok = builder()
        .budget(budget.clone())
        .build()
        .unwrap()
        .layer(Script::new([Status(200, None)]));
    for _ in 0..10 {
        ok.clone().oneshot(req(None)).await.unwrap();
    }
    let before = script.calls();
    let _ = svc.oneshot(req(None)).await;
    assert_eq!(script.calls(), before + 2, "retried again");
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_mid_backoff_leaves_nothing_behind() {
    let budget = RetryBudget::ratio(1.0, Duration::from_secs(10), 0).unwrap();
    let script = Script::new([Refused]);
    let layer = builder()
        .max_attempts(5)
        .backoff(Backoff::constant(Duration::from_secs(1)))
        .budget(budget.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(script.clone());
    let fut = svc.oneshot(req(None));
    // Poll it until it is in its backoff, then drop it.
    let _ = tokio::time::timeout(500 * MS, fut).await;
    assert_eq!(script.calls(), 1);
    assert_eq!(
        handle.snapshot().retries,
        1,
        "one retry was decided and paid"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(script.calls(), 1, "no attempt after the drop");
    assert_eq!(handle.snapshot().retries, 1);
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_field_named() {
    let e = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(e.problems()[0].path, "retry.max_attempts");
    let e = RetryLayer::builder()
        .backoff(Backoff::exponential(MS, 0.5, 10 * MS))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "retry.backoff.multiplier");
    let e = RetryLayer::builder()
        .backoff(Backoff::exponential(MS, f64::NAN, 10 * MS))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "retry.backoff.multiplier");
    let e = RetryLayer::builder()
        .backoff(Backoff::linear(10 * MS, MS, MS))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "retry.backoff");
    assert!(e.to_string().contains("above max"), "{e}");
}
