//! The readiness mode and the pacer (the waiting half of wait mode, outside
//! a bulkhead), on tokio's paused clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use palisade_bulkhead::BulkheadLayer;
use palisade_core::{BoxError, Deadline, RejectReason, Rejected, WithDeadline};
use palisade_ratelimit::{Mode, Quota, RateLimitLayer};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type Req = WithDeadline<u64>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn counting() -> (
    impl Service<Req, Response = u64, Error = BoxError, Future = impl Send> + Clone + Send,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: Req| {
        c.fetch_add(1, Ordering::SeqCst);
        let v = *req.get_ref();
        async move { Ok::<_, BoxError>(v) }
    });
    (svc, calls)
}

#[tokio::test(start_paused = true)]
async fn ready_mode_is_pending_until_there_is_room_and_wakes_then() {
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Ready)
        .build()
        .unwrap();
    let (provider, calls) = counting();
    let mut svc = layer.layer(provider);
    svc.ready().await.unwrap().call(Req::new(1)).await.unwrap();

    let mut ready = tokio_test::task::spawn(async { svc.ready().await.map(drop) });
    assert!(ready.poll().is_pending(), "no room: not ready");
    tokio::time::advance(ms(990)).await;
    assert!(
        ready.poll().is_pending(),
        "still none 10 ms before the second"
    );
    tokio::time::advance(ms(20)).await;
    assert!(ready.is_woken(), "the task is woken when room comes");
    assert!(matches!(ready.poll(), Poll::Ready(Ok(()))));
    drop(ready);
    svc.call(Req::new(2)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn ready_mode_refuses_a_call_that_lost_the_room_to_another_clone() {
    let layer = RateLimitLayer::builder()
        .provider("p")
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Ready)
        .build()
        .unwrap();
    let (provider, calls) = counting();
    let mut a = layer.layer(provider.clone());
    let mut b = layer.layer(provider);
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    a.call(Req::new(1)).await.unwrap();
    let err = b.call(Req::new(2)).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.reason(), RejectReason::RateLimited);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_behind_the_pacer_hold_no_bulkhead_slot() {
    let limit = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    // Two slots, no queue: without the pacer, two requests waiting for
    // quota inside would fill it and the bulkhead would refuse the rest.
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(2)
        .max_waiting(0)
        .build()
        .unwrap();
    let slots = bulkhead.handle();
    let (provider, calls) = counting();
    let svc = ServiceBuilder::new()
        .layer(limit.pacer())
        .layer(bulkhead)
        .layer(limit.clone())
        .service(provider);
    let start = Instant::now();
    let tasks: Vec<_> = (0..5u64)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let v = svc.oneshot(Req::new(i)).await.unwrap();
                (v, Instant::now() - start)
            })
        })
        .collect();
    tokio::time::sleep(ms(500)).await;
    assert_eq!(slots.snapshot().in_flight, 0, "the waiting hold no slot");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    // In arrival order, one a second.
    let want: Vec<_> = (0..5u64).map(|i| (i, Duration::from_secs(i))).collect();
    assert_eq!(got, want);
    let s = limit.handle().snapshot();
    assert_eq!((s.admitted, s.waited, s.refused), (5, 4, 0));
    assert_eq!(slots.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_limiter_behind_a_pacer_still_counts_every_retry() {
    // A provider that fails every call, behind pacer > retry > limiter: the
    // first attempt uses the pacer's room, each retry takes its own.
    let limit = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(3))
        .mode(Mode::Wait(Duration::from_secs(60)))
        .build()
        .unwrap();
    let attempts = Arc::new(AtomicU64::new(0));
    let a = attempts.clone();
    let failing = service_fn(move |_: Req| {
        a.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<u64, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
        }
    });
    let retry = palisade_retry::RetryLayer::builder()
        .max_attempts(3)
        .backoff(palisade_retry::Backoff::constant(ms(1)))
        .jitter(palisade_retry::Jitter::None)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(limit.pacer())
        .layer(retry)
        .layer(limit.clone())
        .service(failing);
    let start = Instant::now();
    let _ = svc.clone().oneshot(Req::new(0)).await;
    // Three attempts fit the burst of three; nothing was charged twice.
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(limit.handle().snapshot().admitted, 3);
    let _ = svc.oneshot(Req::new(1)).await;
    // The second request waits for the room its three attempts need: one
    // second each (the first via the pacer, the retries inside).
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    assert_eq!(limit.handle().snapshot().admitted, 6);
    assert!(Instant::now() - start >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_pacer_refuses_at_once_when_room_comes_after_the_deadline() {
    let limit = RateLimitLayer::builder()
        .quota(Quota::per_second(1).burst(1))
        .mode(Mode::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let (provider, calls) = counting();
    let svc = limit.pacer().layer(limit.layer(provider));
    svc.clone().oneshot(Req::new(0)).await.unwrap();
    let start = Instant::now();
    let err = svc
        .clone()
        .oneshot(WithDeadline::with(1, Deadline::after(ms(500))))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), start, "refused without sleeping");
    assert!(err.downcast_ref::<Rejected>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The refusal took nothing: the next caller gets the room at 1 s.
    svc.oneshot(Req::new(2)).await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(1));
}
