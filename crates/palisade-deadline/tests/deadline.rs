//! Deadlines, attempt timeouts and stream timeouts on the paused clock.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_core::{
    classify_error, BoxError, Deadline, Elapsed, FailureKind, HasDeadline, RejectReason, Rejected,
    TimeoutScope, WithDeadline,
};
use palisade_deadline::{
    AttemptTimeoutLayer, DeadlineLayer, FirstFrameLayer, PropagateDeadlineLayer,
    StreamTimeoutLayer, StreamTimeouts, TimeoutHeader,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn elapsed(err: &BoxError) -> &Elapsed {
    err.downcast_ref::<Elapsed>()
        .unwrap_or_else(|| panic!("not an Elapsed: {err}"))
}

/// The deadlines a recorder saw, as time left.
type Seen = Arc<Mutex<Vec<Option<Duration>>>>;

/// A service that records the deadline it was given (as time left) and
/// then takes `work` to answer.
fn recorder(
    work: Duration,
) -> (
    impl tower::Service<WithDeadline<()>, Response = (), Error = BoxError, Future: Send> + Clone,
    Seen,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let svc = service_fn(move |req: WithDeadline<()>| {
        s.lock()
            .unwrap()
            .push(req.deadline().map(|d| d.remaining()));
        async move {
            tokio::time::sleep(work).await;
            Ok::<_, BoxError>(())
        }
    });
    (svc, seen)
}

#[tokio::test(start_paused = true)]
async fn nesting_shortens_and_never_extends() {
    let (svc, seen) = recorder(Duration::ZERO);
    let outer30_inner60 = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(30)).unwrap())
        .layer(DeadlineLayer::new(secs(60)).unwrap())
        .service(svc.clone());
    outer30_inner60
        .oneshot(WithDeadline::new(()))
        .await
        .unwrap();
    let outer30_inner10 = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(30)).unwrap())
        .layer(DeadlineLayer::new(secs(10)).unwrap())
        .service(svc.clone());
    outer30_inner10
        .oneshot(WithDeadline::new(()))
        .await
        .unwrap();
    let attempt_longer = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(5)).unwrap())
        .layer(AttemptTimeoutLayer::new(secs(20)).unwrap())
        .service(svc.clone());
    attempt_longer.oneshot(WithDeadline::new(())).await.unwrap();
    let attempt_shorter = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(50)).unwrap())
        .layer(AttemptTimeoutLayer::new(secs(20)).unwrap())
        .service(svc);
    attempt_shorter
        .oneshot(WithDeadline::new(()))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Some(secs(30)),
            Some(secs(10)),
            Some(secs(5)),
            Some(secs(20))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_fires_at_its_exact_instant() {
    let (svc, _) = recorder(secs(100));
    let svc = DeadlineLayer::new(secs(30))
        .unwrap()
        .provider("openai")
        .layer(svc);
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(30));
    let e = elapsed(&err);
    assert_eq!((e.scope(), e.after()), (TimeoutScope::Request, secs(30)));
    assert_eq!(
        err.to_string(),
        "provider openai: request deadline fired after 30s"
    );
    assert_eq!(classify_error(&*err).kind, FailureKind::Timeout);
}

#[tokio::test(start_paused = true)]
async fn an_inherited_earlier_deadline_wins_and_is_reported_as_such() {
    let (svc, _) = recorder(secs(100));
    let svc = DeadlineLayer::new(secs(30)).unwrap().layer(svc);
    let start = Instant::now();
    let req = WithDeadline::with((), Deadline::after(secs(4)));
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(elapsed(&err).after(), secs(4));
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_fires_at_its_exact_instant() {
    let (svc, _) = recorder(secs(100));
    let svc = AttemptTimeoutLayer::new(secs(10))
        .unwrap()
        .provider("anthropic")
        .layer(svc);
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    let e = elapsed(&err);
    assert_eq!((e.scope(), e.after()), (TimeoutScope::Attempt, secs(10)));
    assert_eq!(e.provider().map(|p| p.as_str()), Some("anthropic"));
}

/// A layer that calls its inner service only after `wait`, from its
/// future: the shape of a queued bulkhead call or a retry after backoff.
#[derive(Clone)]
struct CallLater<S> {
    inner: S,
    wait: Duration,
}

impl<S> tower::Service<WithDeadline<()>> for CallLater<S>
where
    S: tower::Service<WithDeadline<()>, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: WithDeadline<()>) -> Self::Future {
        let inner = self.inner.clone();
        let wait = self.wait;
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            inner.oneshot(req).await
        })
    }
}

/// The attempt timeout reuses the deadline layer's clock reading only while
/// the deadline's `call` runs: an attempt started later, from a future,
/// times itself from when it starts.
#[tokio::test(start_paused = true)]
async fn an_attempt_started_later_times_itself_from_its_own_start() {
    let (svc, _) = recorder(secs(100));
    let attempt = AttemptTimeoutLayer::new(secs(10)).unwrap().layer(svc);
    let svc = DeadlineLayer::new(secs(60)).unwrap().layer(CallLater {
        inner: attempt,
        wait: secs(5),
    });
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(15), "5 s queued, then a 10 s attempt");
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Attempt);

    // Called at once from inside the deadline's call, the attempt shares
    // its reading and fires exactly on time.
    let (svc, _) = recorder(secs(100));
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(60)).unwrap())
        .layer(AttemptTimeoutLayer::new(secs(10)).unwrap())
        .service(svc);
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Attempt);
}

/// Whether a deadline's future has armed its own timer (as its `Debug`
/// says).
fn armed(fut: &impl std::fmt::Debug) -> bool {
    format!("{fut:?}").contains("armed: true")
}

/// A provider that never answers.
fn never(_: WithDeadline<()>) -> std::future::Pending<Result<(), BoxError>> {
    std::future::pending()
}

/// A service whose call times an attempt of `attempt` (never answered) and
/// then, the attempt timed out, waits on nothing with a timer: the shape of
/// a call that goes on after its timed part (a queue, a fallback's own
/// wait).
fn attempt_then_untimed(
    attempt: Duration,
) -> impl tower::Service<
    WithDeadline<()>,
    Response = (),
    Error = BoxError,
    Future = Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>,
> + Clone {
    service_fn(move |req: WithDeadline<()>| {
        let timed = AttemptTimeoutLayer::new(attempt)
            .unwrap()
            .layer(service_fn(never))
            .call(req);
        Box::pin(async move {
            let err = timed.await.unwrap_err();
            assert_eq!(elapsed(&err).scope(), TimeoutScope::Attempt);
            std::future::pending::<()>().await;
            Ok::<(), BoxError>(())
        }) as Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>
    })
}

/// The request's deadline arms no timer of its own while an attempt's
/// timer inside it wakes the task first, and arms it on the first poll
/// that finds none: it still fires at its exact instant.
#[tokio::test(start_paused = true)]
async fn the_deadline_leans_on_an_attempts_earlier_timer_and_arms_its_own_when_it_is_gone() {
    let mut svc = DeadlineLayer::new(secs(60))
        .unwrap()
        .layer(attempt_then_untimed(secs(10)));
    let mut fut = tokio_test::task::spawn(svc.call(WithDeadline::new(())));
    assert!(fut.poll().is_pending());
    assert!(
        !armed(&*fut),
        "the attempt's timer covers the deadline: {:?}",
        *fut
    );
    tokio::time::advance(secs(10)).await;
    assert!(fut.is_woken(), "the attempt's timer fired");
    assert!(fut.poll().is_pending());
    assert!(armed(&*fut), "nothing timed under it any more: {:?}", *fut);
    tokio::time::advance(secs(50) - Duration::from_millis(1)).await;
    assert!(!fut.is_woken());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(fut.is_woken(), "the deadline's own timer fired");
    let Poll::Ready(Err(err)) = fut.poll() else {
        panic!("the deadline fired")
    };
    assert_eq!(
        (elapsed(&err).scope(), elapsed(&err).after()),
        (TimeoutScope::Request, secs(60))
    );
}

/// A timer under the deadline that fires after it covers nothing, and one
/// armed with another waker (a combinator's own, or another task's) is not
/// taken as ours.
#[tokio::test(start_paused = true)]
async fn only_an_earlier_timer_that_wakes_this_task_covers_the_deadline() {
    // Deadline 5 s; the attempt inside is given a request without it (so
    // not clamped to it): its timer fires at 8 s.
    let later = service_fn(|_: WithDeadline<()>| {
        let mut inner = AttemptTimeoutLayer::new(secs(8))
            .unwrap()
            .layer(service_fn(never));
        let fut = inner.call(WithDeadline::new(()));
        Box::pin(fut) as Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>
    });
    let mut svc = DeadlineLayer::new(secs(5)).unwrap().layer(later);
    let mut fut = tokio_test::task::spawn(svc.call(WithDeadline::new(())));
    assert!(fut.poll().is_pending());
    assert!(armed(&*fut), "{:?}", *fut);
    tokio::time::advance(secs(5)).await;
    let Poll::Ready(Err(err)) = fut.poll() else {
        panic!("the deadline fired")
    };
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Request);

    // The attempt polled with a waker of its own (woken, it wakes ours):
    // its timer is not taken as ours.
    let foreign = service_fn(|req: WithDeadline<()>| {
        let mut inner = AttemptTimeoutLayer::new(secs(3))
            .unwrap()
            .layer(service_fn(never));
        let mut fut = Box::pin(inner.call(req));
        Box::pin(std::future::poll_fn(move |cx| {
            let own = Arc::new(Relay(Mutex::new(cx.waker().clone())));
            fut.as_mut().poll(&mut Context::from_waker(&own.into()))
        })) as Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>
    });
    let mut svc = DeadlineLayer::new(secs(60)).unwrap().layer(foreign);
    let mut fut = tokio_test::task::spawn(svc.call(WithDeadline::new(())));
    assert!(fut.poll().is_pending());
    assert!(armed(&*fut), "{:?}", *fut);
}

/// A child polled (its attempt's timer armed and reported) and then
/// dropped within the same poll takes its report back: the deadline around
/// arms its own timer and still fires on time.
#[tokio::test(start_paused = true)]
async fn a_timer_dropped_in_the_poll_that_reported_it_covers_nothing() {
    let drops_its_child = service_fn(|req: WithDeadline<()>| {
        let mut child = Some(
            AttemptTimeoutLayer::new(secs(10))
                .unwrap()
                .layer(service_fn(never))
                .call(req),
        );
        Box::pin(std::future::poll_fn(move |cx| {
            if let Some(mut fut) = child.take() {
                // Polled (pending, its timer armed), then given up on: the
                // shape of a race whose other side the combinator keeps
                // waiting for, here with nothing timed.
                assert!(Pin::new(&mut fut).poll(cx).is_pending());
            }
            Poll::<Result<(), BoxError>>::Pending
        })) as Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>
    });
    let mut svc = DeadlineLayer::new(secs(60)).unwrap().layer(drops_its_child);
    let mut fut = tokio_test::task::spawn(svc.call(WithDeadline::new(())));
    assert!(fut.poll().is_pending());
    assert!(
        armed(&*fut),
        "the dropped child's timer is gone: {:?}",
        *fut
    );
    tokio::time::advance(secs(60)).await;
    assert!(fut.is_woken(), "the deadline's own timer fired");
    let Poll::Ready(Err(err)) = fut.poll() else {
        panic!("the deadline fired")
    };
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Request);
}

/// A waker that wakes another.
struct Relay(Mutex<std::task::Waker>);

impl std::task::Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.0.lock().unwrap().wake_by_ref();
    }
}

#[tokio::test(start_paused = true)]
async fn stamp_only_arms_nothing_but_inner_layers_still_enforce() {
    let (svc, _) = recorder(secs(100));
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(7)).unwrap().stamp_only())
        .layer(AttemptTimeoutLayer::new(secs(20)).unwrap())
        .service(svc);
    let start = Instant::now();
    let err = svc.oneshot(WithDeadline::new(())).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        secs(7),
        "the attempt timer honoured the deadline"
    );
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Request);

    // Stamp only, nothing inside enforcing: the call runs to its end.
    let (svc, _) = recorder(secs(9));
    let svc = DeadlineLayer::new(secs(7)).unwrap().stamp_only().layer(svc);
    svc.oneshot(WithDeadline::new(())).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_passed_is_refused_without_a_call() {
    let (svc, seen) = recorder(Duration::ZERO);
    let svc = AttemptTimeoutLayer::new(secs(10))
        .unwrap()
        .provider("local")
        .layer(svc);
    let req = WithDeadline::with((), Deadline::after(secs(1)));
    tokio::time::advance(secs(2)).await;
    let err = svc.clone().oneshot(req).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().expect("refused");
    assert_eq!(r.reason(), RejectReason::DeadlineExceeded);
    assert_eq!(r.provider().map(|p| p.as_str()), Some("local"));
    assert!(
        seen.lock().unwrap().is_empty(),
        "the provider was not called"
    );
}

#[tokio::test(start_paused = true)]
async fn adopts_the_callers_timeout_from_headers_and_ignores_garbage() {
    let svc = |total| {
        DeadlineLayer::new(total)
            .unwrap()
            .adopt(vec![
                TimeoutHeader::Grpc,
                TimeoutHeader::millis("x-timeout-ms").unwrap(),
            ])
            .layer(service_fn(|_: http::Request<()>| async {
                tokio::time::sleep(secs(100)).await;
                Ok::<_, BoxError>(())
            }))
    };
    let cases: [(&str, &str, Duration); 4] = [
        ("grpc-timeout", "2S", secs(2)),
        ("x-timeout-ms", "1500", Duration::from_millis(1500)),
        ("grpc-timeout", "soon", secs(30)),
        ("grpc-timeout", "99H", secs(30)), // longer than ours: ours wins
    ];
    for (name, value, expected) in cases {
        let mut req = http::Request::new(());
        req.headers_mut()
            .insert(name, http::HeaderValue::from_static(value));
        let start = Instant::now();
        let _ = svc(secs(30)).oneshot(req).await.unwrap_err();
        assert_eq!(start.elapsed(), expected, "{name}: {value}");
    }
}

#[tokio::test(start_paused = true)]
async fn propagation_writes_the_attempts_time_left() {
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(30)).unwrap())
        .layer(AttemptTimeoutLayer::new(secs(10)).unwrap())
        .layer(PropagateDeadlineLayer::new(
            TimeoutHeader::millis("x-timeout-ms").unwrap(),
        ))
        .service(service_fn(|req: http::Request<()>| async move {
            Ok::<_, BoxError>(req.headers().get("x-timeout-ms").cloned())
        }));
    let got = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(got.unwrap(), "10000");
    // No deadline: nothing written.
    let bare = PropagateDeadlineLayer::new(TimeoutHeader::Grpc).layer(service_fn(
        |req: http::Request<()>| async move {
            Ok::<_, BoxError>(req.headers().contains_key("grpc-timeout"))
        },
    ));
    assert!(!bare.oneshot(http::Request::new(())).await.unwrap());
}

// ---- streaming ----

/// A body fed by a channel.
struct Channel(mpsc::UnboundedReceiver<&'static str>);

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|s| Ok(Frame::data(Bytes::from_static(s.as_bytes())))))
    }
}

/// A stream that sends one frame after each of `gaps`, then ends.
fn stream(gaps: Vec<Duration>) -> Channel {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for g in gaps {
            tokio::time::sleep(g).await;
            if tx.send("data: token\n\n").is_err() {
                return;
            }
        }
    });
    Channel(rx)
}

fn timeouts() -> StreamTimeouts {
    StreamTimeouts::new()
        .first_frame(secs(20))
        .idle(secs(5))
        .provider("local")
        .build()
        .unwrap()
}

/// Reads a body to its end; returns the frames and the error, if any, and
/// when it ended.
async fn drain<B>(body: B) -> (usize, Option<BoxError>, Duration)
where
    B: Body<Error = BoxError> + Unpin,
{
    let start = Instant::now();
    let mut body = body;
    let mut frames = 0;
    while let Some(f) = body.frame().await {
        match f {
            Ok(_) => frames += 1,
            Err(e) => return (frames, Some(e), start.elapsed()),
        }
    }
    (frames, None, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_late_first_frame_fires_the_first_frame_timeout() {
    let body = timeouts().wrap(stream(vec![secs(25)]), None);
    let (frames, err, at) = drain(body).await;
    assert_eq!((frames, at), (0, secs(20)));
    let err = err.unwrap();
    let e = elapsed(&err);
    assert_eq!((e.scope(), e.after()), (TimeoutScope::FirstFrame, secs(20)));
    assert_eq!(
        err.to_string(),
        "provider local: first-frame timeout fired after 20s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stall_mid_stream_fires_the_idle_timeout() {
    let body = timeouts().wrap(stream(vec![secs(3), secs(1), secs(1), secs(60)]), None);
    let (frames, err, at) = drain(body).await;
    assert_eq!(frames, 3);
    assert_eq!(at, secs(5 + 5), "5 s of stream, then 5 s idle");
    assert_eq!(elapsed(&err.unwrap()).scope(), TimeoutScope::Idle);
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_longer_than_both_timeouts_is_not_cut() {
    // 100 frames, 4 s apart: 400 s in all, never 5 s quiet.
    let body = timeouts().wrap(stream(vec![secs(4); 100]), None);
    let (frames, err, at) = drain(body).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((frames, at), (100, secs(400)));
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_cuts_a_stream_that_never_stalls() {
    let deadline = Deadline::after(secs(30));
    let body = timeouts().wrap(stream(vec![secs(2); 100]), Some(deadline));
    let (frames, err, at) = drain(body).await;
    assert_eq!(at, secs(30));
    assert_eq!(frames, 14, "frames at 2, 4, ... 28 s");
    assert_eq!(elapsed(&err.unwrap()).scope(), TimeoutScope::Request);
}

#[tokio::test(start_paused = true)]
async fn the_stream_layer_wraps_http_responses_with_the_requests_deadline() {
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(secs(12)).unwrap())
        .layer(StreamTimeoutLayer::new(timeouts()))
        .service(service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(stream(vec![secs(1); 100])))
        }));
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    let (frames, err, at) = drain(res.into_body()).await;
    assert_eq!((frames, at), (11, secs(12)));
    assert_eq!(elapsed(&err.unwrap()).scope(), TimeoutScope::Request);
}

#[test]
fn bad_settings_are_refused() {
    assert_eq!(
        DeadlineLayer::new(Duration::ZERO).unwrap_err().problems()[0].path,
        "timeout.total"
    );
    assert_eq!(
        AttemptTimeoutLayer::new(Duration::MAX)
            .unwrap_err()
            .problems()[0]
            .path,
        "timeout.per_attempt"
    );
    assert_eq!(
        StreamTimeouts::new()
            .idle(Duration::ZERO)
            .build()
            .unwrap_err()
            .problems()[0]
            .path,
        "timeout.idle"
    );
    let _ = S;
}

// ---- waiting for the first frame ----

/// A provider whose answers' bodies send a frame after each of `gaps`.
fn streaming_provider(
    gaps: Vec<Duration>,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<Channel>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |_: http::Request<()>| {
        let gaps = gaps.clone();
        async move { Ok::<_, BoxError>(http::Response::new(stream(gaps))) }
    })
}

#[tokio::test(start_paused = true)]
async fn the_response_waits_for_its_first_frame_then_streams_the_rest() {
    let svc = FirstFrameLayer::new(secs(10))
        .unwrap()
        .layer(streaming_provider(vec![secs(3), secs(1), secs(1)]));
    let start = Instant::now();
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), secs(3), "held back until the first frame");
    let (frames, err, at) = drain(res.into_body()).await;
    assert!(err.is_none());
    assert_eq!((frames, at), (3, secs(2)), "the first frame, then the rest");
}

#[tokio::test(start_paused = true)]
async fn no_first_frame_in_time_fails_the_call_naming_the_provider() {
    let svc = FirstFrameLayer::new(secs(10))
        .unwrap()
        .provider("openai")
        .layer(streaming_provider(vec![secs(11)]));
    let start = Instant::now();
    let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(10));
    let e = elapsed(&err);
    assert_eq!(e.scope(), TimeoutScope::FirstFrame);
    assert_eq!(e.provider().map(|p| p.as_str()), Some("openai"));
}

#[tokio::test(start_paused = true)]
async fn a_nearer_deadline_bounds_the_wait_and_is_named() {
    // The request carries a deadline and no layer above enforces it: the
    // wait itself stops there, and says the request's time ran out.
    let svc = FirstFrameLayer::new(secs(10))
        .unwrap()
        .layer(streaming_provider(vec![secs(11)]));
    let mut req = http::Request::new(());
    req.replace_deadline(Deadline::after(secs(4)));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), secs(4));
    assert_eq!(elapsed(&err).scope(), TimeoutScope::Request);
}

#[tokio::test(start_paused = true)]
async fn an_ended_body_passes_at_once_and_an_early_error_fails_the_call() {
    let empty = service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>(http::Response::new(http_body_util::Empty::<Bytes>::new()))
    });
    let svc = FirstFrameLayer::new(secs(10)).unwrap().layer(empty);
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert!(res.body().is_end_stream());

    let failing = service_fn(|_: http::Request<()>| async {
        let (tx, rx) = mpsc::unbounded_channel::<Result<Frame<Bytes>, BoxError>>();
        tx.send(Err("connection reset".into())).unwrap();
        let body = http_body_util::StreamBody::new(tokio_stream_like(rx));
        Ok::<_, BoxError>(http::Response::new(body))
    });
    let svc = FirstFrameLayer::new(secs(10)).unwrap().layer(failing);
    let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    assert_eq!(err.to_string(), "connection reset");
}

/// The receiver as a stream of frames.
fn tokio_stream_like(
    mut rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Unpin {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
