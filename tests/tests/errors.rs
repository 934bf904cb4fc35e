//! The README's table "What errors you get, and when": each row produced by
//! a real stack (the default one, HTTP presets) on the paused clock, with
//! what the caller can read from it and the status `palisade::http_status`
//! gives it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::prelude::*;
use palisade::{http_status, Config};
use palisade_retry::{FailedAnswer, RetryStopped, StopReason};
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Req = http::Request<String>;
type Res = http::Response<String>;

fn req() -> Req {
    http::Request::new(String::new())
}

fn answer(status: u16) -> Res {
    http::Response::builder()
        .status(status)
        .body(String::new())
        .unwrap()
}

/// A provider that answers each call with the next of `script` (the last
/// one repeated); `Err(kind)` entries fail with that I/O error instead.
fn scripted(
    script: Vec<Result<u16, std::io::ErrorKind>>,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<Req, Response = Res, Error = BoxError, Future: Send> + Clone {
    let script = Arc::new(script);
    service_fn(move |_: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let step = script[n.min(script.len() - 1)];
        async move {
            match step {
                Ok(status) => Ok(answer(status)),
                Err(kind) => Err(BoxError::from(std::io::Error::from(kind))),
            }
        }
    })
}

/// Retry (3 attempts, 1 ms backoff) > breaker (`trip` consecutive
/// failures) > provider, both reading HTTP.
fn stack(
    trip: u32,
    provider: impl tower::Service<Req, Response = Res, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static,
) -> (
    impl tower::Service<Req, Response = Res, Error = BoxError> + Clone,
    palisade_retry::RetryHandle,
    palisade_breaker::BreakerHandle,
) {
    let retry = RetryLayer::http()
        .provider("p")
        .backoff(Backoff::constant(Duration::from_millis(1)))
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::http()
        .provider("p")
        .consecutive_failures(Some(trip))
        .build()
        .unwrap();
    let (r, b) = (retry.handle(), breaker.handle());
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(60)).unwrap())
        .layer(retry)
        .layer(breaker)
        .service(provider);
    (svc, r, b)
}

#[tokio::test(start_paused = true)]
async fn a_failed_answer_that_outlasts_the_retries_is_returned_as_the_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (svc, retries, _) = stack(100, scripted(vec![Ok(503)], calls.clone()));
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 503, "the provider's own last answer");
    assert_eq!(res.extensions().get::<Served>().unwrap().attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let s = retries.snapshot();
    assert_eq!((s.attempts, s.provider_calls, s.refused), (3, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn an_answer_on_the_first_call_records_one_attempt() {
    let (svc, _, _) = stack(100, scripted(vec![Ok(200)], Arc::default()));
    let res = svc.oneshot(req()).await.unwrap();
    // No record is written for a first-time answer: one call is the default.
    assert_eq!(res.extensions().get::<Served>(), None);
    let (svc, _, _) = stack(100, scripted(vec![Ok(502), Ok(200)], Arc::default()));
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.extensions().get::<Served>().unwrap().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_opens_mid_retry_keeps_the_last_failed_answer_as_source() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (svc, retries, breaker) = stack(2, scripted(vec![Ok(503)], calls.clone()));
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Open);
    let refused = err.downcast_ref::<Rejected>().expect("a refusal");
    assert!(matches!(refused.reason(), RejectReason::CircuitOpen(_)));
    let source = std::error::Error::source(refused).expect("the provider's failure");
    let answer = source
        .downcast_ref::<FailedAnswer>()
        .expect("a failed answer");
    assert_eq!(answer.attempt(), 2);
    assert_eq!(
        answer.failure().kind,
        FailureKind::Overloaded { retry_after: None }
    );
    assert_eq!(
        source.to_string(),
        "attempt 2 was answered with a failure: overloaded"
    );
    // Two calls reached the provider; the third attempt was refused.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let s = retries.snapshot();
    assert_eq!((s.attempts, s.provider_calls, s.refused), (3, 2, 1));
    assert_eq!(http_status(&*err), 503);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_opens_mid_retry_keeps_the_last_error_itself_as_source() {
    use std::io::ErrorKind::ConnectionRefused;
    let (svc, _, _) = stack(2, scripted(vec![Err(ConnectionRefused)], Arc::default()));
    let err = svc.oneshot(req()).await.unwrap_err();
    let refused = err.downcast_ref::<Rejected>().expect("a refusal");
    let source = std::error::Error::source(refused).expect("the provider's error");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the I/O error");
    assert_eq!(io.kind(), ConnectionRefused);
    // A refusal still classifies as our own, not as the provider's failure.
    assert!(matches!(
        palisade_core::classify_error(&*err).kind,
        FailureKind::Rejected(RejectReason::CircuitOpen(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_with_no_source_and_its_wait() {
    let (svc, _, breaker) = stack(1, scripted(vec![Ok(503)], Arc::default()));
    breaker.force_open();
    let err = svc.oneshot(req()).await.unwrap_err();
    let refused = err.downcast_ref::<Rejected>().unwrap();
    assert!(std::error::Error::source(refused).is_none());
    assert_eq!(http_status(&*err), 503);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_from_below_the_stack_is_not_retried_nor_held_against_the_provider() {
    // The gateway's connection pool refuses a call when the process has no
    // file left for the socket: nothing reached the provider.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let out_of_files = service_fn(move |_: Req| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Res, BoxError>(
                Rejected::new(RejectReason::OutOfResources)
                    .with_detail("too many open files")
                    .with_retry_after(Duration::from_secs(1))
                    .into(),
            )
        }
    });
    let (svc, retries, breaker) = stack(1, out_of_files);
    for _ in 0..3 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let refused = err.downcast_ref::<Rejected>().expect("the refusal itself");
        assert_eq!(refused.reason(), RejectReason::OutOfResources);
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(http_status(&*err), 503);
    }
    // Once each (not retried at once), and the breaker, which one failure
    // would open, stayed closed.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker.state(), CircuitState::Closed);
    let s = retries.snapshot();
    assert_eq!((s.attempts, s.refused), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn the_providers_own_error_passes_through_unchanged() {
    use std::io::ErrorKind::PermissionDenied; // not retried: not a known kind
    let (svc, retries, _) = stack(100, scripted(vec![Err(PermissionDenied)], Arc::default()));
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().kind(),
        PermissionDenied
    );
    assert_eq!(retries.snapshot().provider_calls, 1);
    assert_eq!(http_status(&*err), 502);
}

#[tokio::test(start_paused = true)]
async fn a_retry_stopped_by_the_deadline_is_a_timeout() {
    // Connection resets are retried after a 2 s backoff; the request has
    // 1 s: the retry layer stops at once with the last error inside.
    let retry = RetryLayer::http()
        .backoff(Backoff::constant(Duration::from_secs(2)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)).unwrap())
        .layer(retry)
        .service(scripted(
            vec![Err(std::io::ErrorKind::ConnectionReset)],
            Arc::default(),
        ));
    let err = svc.oneshot(req()).await.unwrap_err();
    let stopped = err.downcast_ref::<RetryStopped>().expect("stopped early");
    assert!(matches!(
        stopped.reason(),
        StopReason::DeadlineTooClose { .. }
    ));
    assert_eq!(stopped.attempts(), 1);
    assert_eq!(http_status(&*err), 504);
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_deadline_refusals_map_to_504() {
    let hang = service_fn(|_: Req| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, BoxError>(answer(200))
    });
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)).unwrap())
        .service(hang);
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().scope(),
        palisade_core::TimeoutScope::Request
    );
    assert_eq!(http_status(&*err), 504);

    let refused: BoxError = Rejected::new(RejectReason::DeadlineExceeded).into();
    assert!(refused.downcast_ref::<Rejected>().unwrap().is_deadline());
    assert_eq!(http_status(&*refused), 504);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_refusal_is_429_with_its_wait() {
    let limit = RateLimitLayer::http()
        .quota(
            palisade::ratelimit::Quota::new(
                palisade::ratelimit::Unit::Requests,
                1,
                Duration::from_secs(60),
            )
            .burst(1),
        )
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(limit)
        .service(scripted(vec![Ok(200)], Arc::default()));
    svc.clone().oneshot(req()).await.unwrap();
    let err = svc.oneshot(req()).await.unwrap_err();
    let refused = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(refused.reason(), RejectReason::RateLimited);
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(http_status(&*err), 429);
}

const TWO: &str = r#"
[router]
order = ["primary", "backup"]
[defaults.retry]
max_attempts = 2
backoff_base_ms = 1
[providers.primary]
[providers.backup]
"#;

#[tokio::test(start_paused = true)]
async fn the_router_records_who_answered_after_how_many() {
    let cfg = Config::from_toml(TWO).unwrap();
    // The primary fails once then answers: served by it, on its 2nd call.
    let primary_calls = Arc::new(AtomicUsize::new(0));
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        if p.id == "primary" {
            tower::util::BoxCloneSyncService::new(scripted(
                vec![Ok(503), Ok(200)],
                primary_calls.clone(),
            ))
        } else {
            tower::util::BoxCloneSyncService::new(scripted(vec![Ok(200)], Arc::default()))
        }
    })
    .unwrap();
    let res = router.clone().oneshot(req()).await.unwrap();
    let served = res.extensions().get::<Served>().unwrap();
    assert_eq!(served.provider.as_ref().unwrap(), "primary");
    assert_eq!((served.attempts, served.fallbacks), (2, 0));

    // A primary that only answers 503: its two calls fail, the backup
    // answers first time.
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        let status = if p.id == "primary" { 503 } else { 200 };
        scripted(vec![Ok(status)], Arc::default())
    })
    .unwrap();
    let res = router.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    let served = res.extensions().get::<Served>().unwrap();
    assert_eq!(served.provider.as_ref().unwrap(), "backup");
    assert_eq!((served.attempts, served.fallbacks), (1, 1));
    assert!(!served.degraded);
}

#[tokio::test(start_paused = true)]
async fn every_provider_failing_is_all_failed_with_each_one_listed() {
    let cfg = Config::from_toml(TWO).unwrap();
    let router = Router::from_config(&cfg, HttpClassifier::new(), |_| {
        scripted(vec![Ok(500)], Arc::default())
    })
    .unwrap();
    let err = router.oneshot(req()).await.unwrap_err();
    let all = err.downcast_ref::<AllFailed>().unwrap();
    assert_eq!(all.attempts().len(), 2);
    assert_eq!(http_status(&*err), 502, "both were called and failed");

    // Every provider out of quota: skipped without a call, 429 with the
    // soonest wait.
    let cfg = Config::from_toml(
        r#"
        [router]
        order = ["a", "b"]
        [defaults.rate_limit]
        requests_per_minute = 1
        [providers.a]
        [providers.b]
        "#,
    )
    .unwrap();
    let router = Router::from_config(&cfg, HttpClassifier::new(), |_| {
        scripted(vec![Ok(200)], Arc::default())
    })
    .unwrap();
    router.clone().oneshot(req()).await.unwrap();
    router.clone().oneshot(req()).await.unwrap();
    let err = router.oneshot(req()).await.unwrap_err();
    let all = err.downcast_ref::<AllFailed>().unwrap();
    assert!(!all.any_called());
    assert_eq!(http_status(&*err), 429, "{all}");
    let wait = all.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}
