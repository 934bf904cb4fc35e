//! The chaos layer on tokio's paused clock: rates, kinds, latency, hangs,
//! resets, selected requests, repeatable seeds, switching at run time, and
//! a breaker tripped by injected failures as by real ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_chaos::{ChaosLayer, Delay, Plan};
use palisade_core::{classify_error, BoxError, FailureKind};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A service answering its request, counting calls.
fn echo(
    calls: Arc<AtomicU64>,
) -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = impl Future<Output = Result<u32, BoxError>>,
> + Clone {
    service_fn(move |n: u32| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, BoxError>(n) }
    })
}

use std::future::Future;

#[tokio::test(start_paused = true)]
async fn faults_come_at_their_rates_and_the_same_seed_repeats_them() {
    let plan = Plan::default().error(0.2, 500).reset(0.1);
    let run = |seed| {
        let plan = plan.clone();
        async move {
            let layer = ChaosLayer::builder()
                .plan(plan)
                .enabled(true)
                .seed(seed)
                .build()
                .unwrap();
            let calls = Arc::new(AtomicU64::new(0));
            let svc = layer.layer(echo(calls.clone()));
            let mut outcomes = Vec::new();
            for i in 0..10_000 {
                outcomes.push(match svc.clone().oneshot(i).await {
                    Ok(_) => 'o',
                    Err(e) => match classify_error(&*e).kind {
                        FailureKind::Connect => 'r',
                        FailureKind::Server(s) if s == 500 => 'e',
                        k => panic!("unexpected {k:?}"),
                    },
                });
            }
            (
                outcomes,
                calls.load(Ordering::Relaxed),
                layer.handle().snapshot(),
            )
        }
    };
    let (a, calls, snap) = run(42).await;
    let (b, ..) = run(42).await;
    let (c, ..) = run(43).await;
    assert_eq!(a, b, "the same seed, the same faults");
    assert_ne!(a, c, "another seed, other faults");
    let count = |x| a.iter().filter(|o| **o == x).count() as f64;
    // Resets first (10%), then errors on 20% of the rest (18% in all).
    assert!((count('r') - 1_000.0).abs() < 100.0, "{}", count('r'));
    assert!((count('e') - 1_800.0).abs() < 150.0, "{}", count('e'));
    assert_eq!(
        calls as f64,
        count('o'),
        "a failed call never reaches the service"
    );
    assert_eq!(snap.calls, 10_000);
    assert_eq!(
        snap.errors as f64 + snap.resets as f64,
        count('e') + count('r')
    );
}

#[tokio::test(start_paused = true)]
async fn an_injected_status_is_classified_as_the_real_one() {
    for (status, expect) in [
        (
            429,
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
        ),
        (
            503,
            FailureKind::Overloaded {
                retry_after: Some(Duration::from_secs(2)),
            },
        ),
        (502, FailureKind::Server(http::StatusCode::BAD_GATEWAY)),
        (400, FailureKind::Client(http::StatusCode::BAD_REQUEST)),
    ] {
        let layer = ChaosLayer::builder()
            .plan(
                Plan::default()
                    .error(1.0, status)
                    .retry_after(Duration::from_secs(2)),
            )
            .enabled(true)
            .build()
            .unwrap();
        let err = layer
            .layer(echo(Arc::default()))
            .oneshot(1)
            .await
            .unwrap_err();
        assert_eq!(classify_error(&*err).kind, expect, "{status}");
        assert!(err.to_string().contains("injected"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_to_the_answer_and_a_hang_never_answers() {
    let layer = ChaosLayer::builder()
        .plan(Plan::default().latency(
            1.0,
            Delay::Uniform(Duration::from_millis(100), Duration::from_millis(300)),
        ))
        .enabled(true)
        .seed(1)
        .build()
        .unwrap();
    let svc = layer.layer(echo(Arc::default()));
    let mut seen = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        assert_eq!(svc.clone().oneshot(i).await.unwrap(), i);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took <= Duration::from_millis(300),
            "{took:?}"
        );
        seen.push(took);
    }
    seen.sort();
    assert!(
        seen[49] - seen[0] > Duration::from_millis(100),
        "spread over the range"
    );

    let calls = Arc::new(AtomicU64::new(0));
    let hang = ChaosLayer::builder()
        .plan(Plan::default().hang(1.0))
        .enabled(true)
        .build()
        .unwrap();
    let svc = hang.layer(echo(calls.clone()));
    let waited = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(1)).await;
    assert!(waited.is_err(), "never answered");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "the service was not called"
    );
    assert_eq!(hang.handle().snapshot().hangs, 1);
}

#[tokio::test(start_paused = true)]
async fn only_selected_requests_get_faults_and_the_handle_switches_at_run_time() {
    let layer = ChaosLayer::builder()
        .plan(Plan::default().error(1.0, 503))
        .only(|n: &u32| n % 2 == 0)
        .build()
        .unwrap();
    let chaos = layer.handle();
    let svc = layer.layer(echo(Arc::default()));
    // Off: nothing injected, nothing counted.
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(chaos.snapshot().calls, 0);
    chaos.enable();
    assert!(svc.clone().oneshot(2).await.is_err(), "even: selected");
    assert_eq!(svc.clone().oneshot(3).await.unwrap(), 3, "odd: untouched");
    // Re-rated while serving.
    chaos.set(Plan::default()).unwrap();
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 4);
    chaos.set(Plan::default().reset(1.0)).unwrap();
    let err = svc.clone().oneshot(6).await.unwrap_err();
    assert_eq!(classify_error(&*err).kind, FailureKind::Connect);
    chaos.disable();
    assert_eq!(svc.oneshot(8).await.unwrap(), 8);
    let s = chaos.snapshot();
    assert_eq!((s.calls, s.errors, s.resets), (3, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn injected_failures_trip_a_breaker_as_real_ones_do() {
    let breaker = palisade_breaker::CircuitBreakerLayer::builder()
        .consecutive_failures(Some(3))
        .failure_rate(None)
        .build()
        .unwrap();
    let chaos = ChaosLayer::builder()
        .plan(Plan::default().error(1.0, 502))
        .enabled(true)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let svc = tower::ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(chaos)
        .service(echo(calls.clone()));
    for i in 0..5 {
        let _ = svc.clone().oneshot(i).await;
    }
    assert_eq!(breaker.handle().state(), palisade_core::CircuitState::Open);
    assert_eq!(
        breaker.handle().snapshot().failures,
        3,
        "the last two were refused"
    );
}

#[test]
fn a_bad_plan_is_refused_naming_each_problem() {
    let err = ChaosLayer::builder()
        .plan(Plan {
            error_rate: -1.0,
            error_status: Some(200),
            latency_rate: 0.5,
            ..Plan::default()
        })
        .build()
        .unwrap_err()
        .to_string();
    for key in ["chaos.error_rate", "chaos.error_status", "chaos.delay"] {
        assert!(err.contains(key), "{key} in {err}");
    }
    let plan: Plan = serde_json::from_str(
        r#"{"error_rate": 0.1, "error_status": 429, "retry_after": 1500, "latency_rate": 1, "delay": {"uniform": [100, 200]}}"#,
    )
    .unwrap();
    assert_eq!(plan.retry_after, Some(Duration::from_millis(1_500)));
    assert_eq!(
        plan.delay,
        Some(Delay::Uniform(
            Duration::from_millis(100),
            Duration::from_millis(200)
        ))
    );
}

mod streams {
    use super::*;
    use bytes::Bytes;
    use http_body_util::combinators::UnsyncBoxBody;
    use http_body_util::{BodyExt, StreamBody};
    use palisade_chaos::HttpStreams;

    type Body = UnsyncBoxBody<Bytes, BoxError>;

    /// A streamed answer of five frames.
    fn streaming() -> impl Service<
        (),
        Response = http::Response<Body>,
        Error = BoxError,
        Future = impl Future<Output = Result<http::Response<Body>, BoxError>>,
    > + Clone {
        service_fn(|()| async {
            let frames = (0..5).map(|i| {
                Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(format!("tok{i} "))))
            });
            let body = StreamBody::new(futures_util::stream::iter(frames));
            Ok::<_, BoxError>(http::Response::new(UnsyncBoxBody::new(body)))
        })
    }

    /// Reads frames until the body ends, fails, or goes quiet for 10 s.
    async fn read(mut body: Body) -> (Vec<String>, Option<BoxError>, bool) {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
                Err(_) => return (got, None, true),
                Ok(None) => return (got, None, false),
                Ok(Some(Err(e))) => return (got, Some(e), false),
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        got.push(String::from_utf8_lossy(&d).into_owned());
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_stalls_or_is_cut_after_its_frames() {
        let stall = ChaosLayer::builder()
            .plan(Plan::default().stall(1.0, 2))
            .streams(HttpStreams)
            .enabled(true)
            .build()
            .unwrap();
        let res = stall.layer(streaming()).oneshot(()).await.unwrap();
        let (frames, err, quiet) = read(res.into_body()).await;
        assert_eq!(frames, ["tok0 ", "tok1 "]);
        assert!(err.is_none() && quiet, "stalled: no end, no error");

        let cut = ChaosLayer::builder()
            .plan(Plan::default().cut(1.0, 3))
            .streams(HttpStreams)
            .enabled(true)
            .build()
            .unwrap();
        let res = cut.layer(streaming()).oneshot(()).await.unwrap();
        let (frames, err, _) = read(res.into_body()).await;
        assert_eq!(frames.len(), 3);
        let err = err.expect("cut");
        assert_eq!(classify_error(&*err).kind, FailureKind::Connect);
        assert_eq!(cut.handle().snapshot().streams, 1);

        // Without a way to reach bodies, stream faults are never drawn.
        let blind = ChaosLayer::builder()
            .plan(Plan::default().cut(1.0, 0))
            .enabled(true)
            .build()
            .unwrap();
        let res = blind.layer(streaming()).oneshot(()).await.unwrap();
        assert_eq!(read(res.into_body()).await.0.len(), 5);
    }
}
