//! Holding a slot until a streamed response body ends, and the adaptive
//! limit driven through the service.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_bulkhead::{AdaptiveLimit, BulkheadLayer};
use palisade_core::BoxError;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};

/// A body whose frames arrive through a channel; ends when the sender is
/// dropped.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn the_slot_is_held_until_the_streamed_body_ends() {
    let layer = BulkheadLayer::new(1).unwrap().hold_until_body_end();
    let handle = layer.handle();
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = layer.layer(tower::service_fn(move |_: ()| {
        let body = ChannelBody(rx.lock().unwrap().take().expect("one call"));
        async move { Ok::<_, BoxError>(http::Response::new(body)) }
    }));
    let res = svc.oneshot(()).await.unwrap();
    let mut body = res.into_body();
    assert!(body.holds_permit());
    assert_eq!(
        handle.in_flight(),
        1,
        "the response is back, the stream is not"
    );
    tx.send(Bytes::from_static(b"data: hello\n\n")).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "data: hello\n\n");
    assert_eq!(handle.in_flight(), 1, "mid-stream");
    drop(tx);
    assert!(body.frame().await.is_none());
    assert!(!body.holds_permit());
    assert_eq!(handle.in_flight(), 0, "released at the end of the stream");
}

#[tokio::test]
async fn dropping_a_streamed_body_midway_releases_the_slot() {
    let layer = BulkheadLayer::new(1).unwrap().hold_until_body_end();
    let handle = layer.handle();
    let (_tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = layer.layer(tower::service_fn(move |_: ()| {
        let body = ChannelBody(rx.lock().unwrap().take().expect("one call"));
        async move { Ok::<_, BoxError>(http::Response::new(body)) }
    }));
    let res = svc.oneshot(()).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(res);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_shrinks_as_latency_climbs_and_grows_back() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(40)
        .max_waiting(1000)
        .adaptive(AdaptiveLimit::vegas(2, 40))
        .build()
        .unwrap();
    let handle = layer.handle();
    // Latency is 10ms plus 5ms per call already in flight at the provider:
    // a provider that queues internally.
    // Once `healed`, latency is a flat 10ms however many calls are in flight.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let healed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healed2 = healed.clone();
    let svc = layer.layer(tower::service_fn(move |_: u32| {
        let busy = busy.clone();
        let healed = healed2.clone();
        async move {
            let n = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let extra = if healed.load(std::sync::atomic::Ordering::SeqCst) {
                0
            } else {
                5 * n
            };
            tokio::time::sleep(Duration::from_millis(10 + extra)).await;
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    }));
    // One call alone first: the unloaded latency.
    svc.clone().oneshot(0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..400 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let loaded = handle.snapshot().max_concurrent;
    assert!(
        loaded < 40,
        "a queueing provider pulls the limit down: {loaded}"
    );
    assert!(loaded >= 2);

    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..400 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let healthy = handle.snapshot().max_concurrent;
    assert!(
        healthy > loaded,
        "a flat latency lets it grow back: {loaded} -> {healthy}"
    );
}
