//! Bulkhead behaviour on tokio's paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_bulkhead::{Bulkhead, BulkheadLayer, OnResponse};
use palisade_core::{BoxError, RejectReason, Rejected};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An inner service that counts calls in flight (and the most ever), logs
/// the order requests arrive in, and answers after the request's delay.
#[derive(Clone, Default)]
struct Counting {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<u64>>>,
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<(u64, Duration)> for Counting {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (id, delay): (u64, Duration)) -> Self::Future {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.order.lock().unwrap().push(id);
        let guard = InFlight(self.now.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            drop(guard);
            Ok(id)
        })
    }
}

fn bulkhead(
    max: usize,
    waiting: usize,
    wait: Option<Duration>,
) -> (
    Bulkhead<Counting, OnResponse>,
    Counting,
    palisade_bulkhead::BulkheadHandle,
) {
    let layer = BulkheadLayer::builder()
        .provider("p")
        .max_concurrent(max)
        .max_waiting(waiting)
        .max_wait(wait)
        .build()
        .unwrap();
    let inner = Counting::default();
    let handle = layer.handle();
    (layer.layer(inner.clone()), inner, handle)
}

fn reason(err: &BoxError) -> RejectReason {
    err.downcast_ref::<Rejected>()
        .unwrap_or_else(|| panic!("not a rejection: {err}"))
        .reason()
}

/// Lets spawned tasks run until they all wait on the (paused) clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_calls_never_exceed_the_limit() {
    let (svc, inner, handle) = bulkhead(10, 1000, None);
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.oneshot((i, ms(1 + i % 7))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(inner.max.load(Ordering::SeqCst), 10);
    let snap = handle.snapshot();
    assert_eq!(snap.peak_in_flight, 10);
    assert_eq!((snap.in_flight, snap.waiting), (0, 0));
    assert_eq!((snap.rejected, snap.timed_out), (0, 0));
    assert_eq!(snap.queued, 990, "all but the first ten queued");
    assert!(snap.mean_wait > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_queue_limit_is_exact_and_the_rejection_names_the_numbers() {
    let (svc, _inner, handle) = bulkhead(2, 3, None);
    let mut running = Vec::new();
    for i in 0..5 {
        running.push(tokio::spawn(svc.clone().oneshot((i, 100 * MS))));
    }
    settle().await;
    assert_eq!((handle.in_flight(), handle.waiting()), (2, 3));
    let err = svc.clone().oneshot((9, MS)).await.unwrap_err();
    assert_eq!(reason(&err), RejectReason::BulkheadFull);
    assert_eq!(
        err.to_string(),
        "provider p: bulkhead is full (2 in flight of 2, 3 waiting of 3)"
    );
    for t in running {
        t.await.unwrap().unwrap();
    }
    assert_eq!(handle.snapshot().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn no_queue_rejects_at_once() {
    let (svc, _inner, _handle) = bulkhead(1, 0, None);
    let first = tokio::spawn(svc.clone().oneshot((1, 10 * MS)));
    settle().await;
    let start = Instant::now();
    let err = svc.clone().oneshot((2, MS)).await.unwrap_err();
    assert_eq!(reason(&err), RejectReason::BulkheadFull);
    assert_eq!(start.elapsed(), Duration::ZERO);
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_times_out_at_exactly_max_wait() {
    let (svc, inner, handle) = bulkhead(1, 4, Some(100 * MS));
    let first = tokio::spawn(svc.clone().oneshot((1, 250 * MS)));
    settle().await;
    let start = Instant::now();
    let err = svc.clone().oneshot((2, MS)).await.unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(reason(&err), RejectReason::BulkheadTimeout);
    assert!(err.to_string().contains("waited 100ms"), "{err}");
    assert_eq!(handle.snapshot().timed_out, 1);
    assert_eq!(handle.waiting(), 0, "the timed-out call left the queue");
    first.await.unwrap().unwrap();
    assert_eq!(*inner.order.lock().unwrap(), vec![1], "2 was never sent");
}

#[tokio::test(start_paused = true)]
async fn a_call_queued_just_under_max_wait_goes_ahead() {
    let (svc, _inner, _handle) = bulkhead(1, 4, Some(100 * MS));
    let first = tokio::spawn(svc.clone().oneshot((1, 99 * MS)));
    settle().await;
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot((2, MS)).await.unwrap(), 2);
    assert_eq!(start.elapsed(), 100 * MS, "waited 99ms, then ran 1ms");
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn queued_calls_are_served_in_arrival_order() {
    let (svc, inner, _handle) = bulkhead(1, 100, None);
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        tasks.push(tokio::spawn(svc.clone().oneshot((i, MS))));
        // Each call is queued before the next is made.
        settle().await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(*inner.order.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_queued_future_frees_its_place_and_takes_no_slot() {
    let (mut svc, inner, handle) = bulkhead(1, 1, None);
    let first = tokio::spawn(svc.clone().oneshot((1, 50 * MS)));
    settle().await;
    let mut queued = svc.ready().await.unwrap().call((2, MS));
    assert!(futures_poll(&mut queued).is_pending());
    assert_eq!(handle.waiting(), 1);
    // The queue is full...
    let err = svc.clone().oneshot((3, MS)).await.unwrap_err();
    assert_eq!(reason(&err), RejectReason::BulkheadFull);
    // ...until the queued future is dropped.
    drop(queued);
    assert_eq!(handle.waiting(), 0);
    let next = tokio::spawn(svc.clone().oneshot((4, MS)));
    first.await.unwrap().unwrap();
    next.await.unwrap().unwrap();
    assert_eq!(*inner.order.lock().unwrap(), vec![1, 4]);
    let snap = handle.snapshot();
    assert_eq!((snap.in_flight, snap.waiting), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_queued_future_dropped_after_being_handed_a_slot_passes_it_on() {
    let (mut svc, inner, handle) = bulkhead(1, 4, None);
    let mut first = svc.ready().await.unwrap().call((1, 10 * MS));
    let mut second = svc.ready().await.unwrap().call((2, MS));
    let third = tokio::spawn(svc.clone().oneshot((3, MS)));
    settle().await;
    assert!(futures_poll(&mut first).is_pending());
    assert!(futures_poll(&mut second).is_pending());
    tokio::time::advance(10 * MS).await;
    // First finishes and hands its slot to the second, which never runs.
    assert!(futures_poll(&mut first).is_ready());
    drop(second);
    assert_eq!(third.await.unwrap().unwrap(), 3);
    assert_eq!(*inner.order.lock().unwrap(), vec![1, 3]);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_in_flight_future_frees_its_slot() {
    let (mut svc, _inner, handle) = bulkhead(1, 0, None);
    let mut fut = svc.ready().await.unwrap().call((1, 100 * MS));
    assert!(futures_poll(&mut fut).is_pending());
    assert_eq!(handle.in_flight(), 1);
    drop(fut);
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(svc.oneshot((2, MS)).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_a_storm_the_bulkhead_is_back_to_full_capacity() {
    let (svc, inner, handle) = bulkhead(4, 8, Some(5 * MS));
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            // Some callers give up early, some calls run long.
            tokio::select! {
                r = svc.oneshot((i, ms(i % 13))) => r.map(|_| ()),
                _ = tokio::time::sleep(ms(i % 9)) => Ok(()),
            }
        }));
    }
    let mut rejected = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            rejected += 1;
        }
    }
    assert!(rejected > 0, "the storm overflowed the queue");
    assert!(inner.max.load(Ordering::SeqCst) <= 4);
    let snap = handle.snapshot();
    assert_eq!((snap.in_flight, snap.waiting), (0, 0));
    // Four calls at once are all admitted without queueing.
    let queued_before = snap.queued;
    let burst: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot((1000 + i, 10 * MS))))
        .collect();
    settle().await;
    assert_eq!(handle.in_flight(), 4);
    for t in burst {
        t.await.unwrap().unwrap();
    }
    assert_eq!(handle.snapshot().queued, queued_before);
}

#[tokio::test(start_paused = true)]
async fn resize_up_admits_queued_calls_at_once() {
    let (svc, _inner, handle) = bulkhead(1, 10, None);
    let tasks: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, 100 * MS))))
        .collect();
    settle().await;
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 3));
    handle.set_max_concurrent(3).unwrap();
    assert_eq!((handle.in_flight(), handle.waiting()), (3, 1));
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), 200 * MS, "three at once, then the fourth");
}

#[tokio::test(start_paused = true)]
async fn resize_down_lets_calls_in_flight_finish_and_then_holds_the_new_limit() {
    let (svc, inner, handle) = bulkhead(4, 100, None);
    let first: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, ms(10 + i)))))
        .collect();
    settle().await;
    handle.set_max_concurrent(1).unwrap();
    assert_eq!(handle.in_flight(), 4, "nothing in flight was cancelled");
    let later: Vec<_> = (10..14)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, 10 * MS))))
        .collect();
    for t in first {
        t.await.unwrap().unwrap();
    }
    inner.max.store(0, Ordering::SeqCst);
    for t in later {
        t.await.unwrap().unwrap();
    }
    assert_eq!(inner.max.load(Ordering::SeqCst), 1);
    assert_eq!(handle.snapshot().max_concurrent, 1);
    // And back up: two at once again.
    handle.set_max_concurrent(2).unwrap();
    let pair: Vec<_> = (20..22)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, 10 * MS))))
        .collect();
    settle().await;
    assert_eq!(handle.in_flight(), 2);
    for t in pair {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn shrinking_then_growing_before_calls_finish_loses_no_slot() {
    let (svc, _inner, handle) = bulkhead(4, 100, None);
    let first: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, 10 * MS))))
        .collect();
    settle().await;
    handle.set_max_concurrent(1).unwrap();
    handle.set_max_concurrent(4).unwrap();
    for t in first {
        t.await.unwrap().unwrap();
    }
    let again: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot((i, 10 * MS))))
        .collect();
    settle().await;
    assert_eq!((handle.in_flight(), handle.waiting()), (4, 0));
    for t in again {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_field_named() {
    let e = BulkheadLayer::builder()
        .max_concurrent(0)
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "bulkhead.max_concurrent");
    let e = BulkheadLayer::builder()
        .max_waiting(3)
        .max_wait(Some(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "bulkhead.max_wait");
    let e = BulkheadLayer::builder()
        .adaptive(palisade_bulkhead::AdaptiveLimit::vegas(10, 5))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "bulkhead.adaptive");
    assert!(e.to_string().contains("10..=5"), "{e}");
    let e = BulkheadLayer::builder()
        .adaptive(palisade_bulkhead::AdaptiveLimit::vegas(1, 5).smoothing(0.0))
        .build()
        .unwrap_err();
    assert_eq!(e.problems()[0].path, "bulkhead.adaptive.smoothing");
    let handle = BulkheadLayer::new(2).unwrap().handle();
    assert_eq!(
        handle.set_max_concurrent(0).unwrap_err().problems()[0].path,
        "bulkhead.max_concurrent"
    );
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged_and_free_the_slot() {
    let layer = BulkheadLayer::new(1).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(tower::service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("upstream broke"))
    }));
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(handle.in_flight(), 0);
}

fn futures_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    Pin::new(f).poll(&mut cx)
}
