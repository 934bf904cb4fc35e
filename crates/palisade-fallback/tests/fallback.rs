//! Fallback chains on the paused clock, over fake HTTP providers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, Classify, Deadline, HasDeadline, HttpClassifier, Outcome};
use palisade_fallback::{AllFailed, AttemptOutcome, Degraded, Fallback, Target, DEGRADED_HEADER};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

type Req = Request<String>;
type Res = Response<String>;
type Svc = BoxCloneSyncService<Req, Res, BoxError>;

const CONTEXT_TOO_LONG: &str = r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#;

/// A provider answering from a script (the last entry repeats) after
/// `delay`, logging each request's `x-model` header.
#[derive(Clone)]
struct Fake {
    name: &'static str,
    script: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    delay: Duration,
    calls: Arc<AtomicUsize>,
    models: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn new(name: &'static str, script: &[(u16, &'static str)]) -> Self {
        Fake {
            name,
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            delay: Duration::ZERO,
            calls: Arc::default(),
            models: Arc::default(),
        }
    }

    fn ok(name: &'static str) -> Self {
        Self::new(name, &[(200, "")])
    }

    fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn svc(&self) -> Svc {
        BoxCloneSyncService::new(self.clone())
    }
}

impl Service<Req> for Fake {
    type Response = Res;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = req.headers().get("x-model") {
            self.models
                .lock()
                .unwrap()
                .push(m.to_str().unwrap().to_owned());
        }
        let (status, body) = {
            let mut q = self.script.lock().unwrap();
            if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                *q.front().unwrap()
            }
        };
        let (name, delay) = (self.name, self.delay);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let body = if body.is_empty() {
                format!("{name}: {}", req.body())
            } else {
                body.to_owned()
            };
            Ok(Response::builder().status(status).body(body)?)
        })
    }
}

/// Classifies buffered bodies too, so context-length errors are seen. (A
/// struct rather than a closure: futures holding a closure over borrowed
/// arguments trip a rustc limitation when spawned.)
#[derive(Clone, Default)]
struct Buffered(HttpClassifier);

impl Classify<Res, BoxError> for Buffered {
    fn classify(&self, r: Result<&Res, &BoxError>) -> Outcome {
        match r {
            Ok(res) => self.0.classify_buffered(res),
            Err(e) => Classify::<Res, BoxError>::classify(&self.0, Err(e)),
        }
    }

    fn served<'r>(&self, res: &'r mut Res) -> Option<&'r mut palisade_core::Served> {
        Classify::<Res, BoxError>::served(&self.0, res)
    }
}

fn classifier() -> Buffered {
    Buffered::default()
}

/// A chain of `a`, then `b`.
fn a_then_b(a: &Fake, b: &Fake) -> Fallback<Svc, Req, Buffered> {
    Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", b.svc()))
        .classifier(classifier())
        .build()
        .unwrap()
}

fn req(text: &str) -> Req {
    Request::new(text.to_owned())
}

fn all_failed(err: &BoxError) -> &AllFailed {
    err.downcast_ref::<AllFailed>()
        .unwrap_or_else(|| panic!("not AllFailed: {err}"))
}

#[tokio::test(start_paused = true)]
async fn providers_are_tried_in_order_until_one_answers() {
    let (a, b, c) = (
        Fake::new("a", &[(503, "down")]),
        Fake::new("b", &[(502, "bad gateway")]),
        Fake::ok("c"),
    );
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", b.svc()))
        .target(Target::new("c", c.svc()))
        .classifier(classifier())
        .build()
        .unwrap();
    let res = chain.oneshot(req("hi")).await.unwrap();
    assert_eq!(res.body(), "c: hi");
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_provider_whose_breaker_is_open_is_skipped_without_a_call() {
    let a = Fake::ok("a").slow(Duration::from_secs(5));
    let b = Fake::ok("b");
    let breaker = CircuitBreakerLayer::builder()
        .provider("a")
        .build()
        .unwrap();
    let handle = breaker.handle();
    handle.force_open();
    let chain = Fallback::builder()
        .target(
            Target::new(
                "a",
                BoxCloneSyncService::new(breaker.layer(a.clone()).map_err(BoxError::from)),
            )
            .admission(handle),
        )
        .target(Target::new("b", b.svc()))
        .classifier(classifier())
        .build()
        .unwrap();
    let start = Instant::now();
    let res = chain.oneshot(req("hi")).await.unwrap();
    assert_eq!(res.body(), "b: hi");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a dead primary costs no latency"
    );
    assert_eq!(a.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_callers_own_fault_is_returned_without_fallback() {
    for status in [400, 401, 403, 404, 422] {
        let (a, b) = (Fake::new("a", &[(status, "no")]), Fake::ok("b"));
        let chain = a_then_b(&a, &b);
        let res = chain.oneshot(req("hi")).await.unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(b.calls(), 0, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn context_length_failures_go_only_to_large_context_providers() {
    let a = Fake::new("a", &[(400, CONTEXT_TOO_LONG)]);
    let b = Fake::ok("b");
    let big = Fake::ok("big");
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", b.svc()))
        .target(Target::new("big", big.svc()).large_context())
        .classifier(classifier())
        .build()
        .unwrap();
    let res = chain.oneshot(req("a long prompt")).await.unwrap();
    assert_eq!(res.body(), "big: a long prompt");
    assert_eq!(b.calls(), 0, "b would have the same small window");

    // With no large-context provider, the provider's own refusal is the
    // answer: the caller's prompt is too long, a 400 it can act on.
    let a = Fake::new("a", &[(400, CONTEXT_TOO_LONG)]);
    let chain = a_then_b(&a, &b);
    let res = chain.oneshot(req("x")).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.body(), CONTEXT_TOO_LONG);
    let served = res.extensions().get::<palisade_core::Served>().unwrap();
    assert_eq!(served.provider.as_ref().unwrap().as_str(), "a");
    assert_eq!(b.calls(), 0);

    // A large-context provider that was called and failed: that failure,
    // not the first refusal, ends the chain, and the error says why each
    // was passed.
    let a = Fake::new("a", &[(400, CONTEXT_TOO_LONG)]);
    let big = Fake::new("big", &[(503, "down")]);
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", b.svc()))
        .target(Target::new("big", big.svc()).large_context())
        .classifier(classifier())
        .build()
        .unwrap();
    let err = chain.oneshot(req("x")).await.unwrap_err();
    let all = all_failed(&err);
    assert!(matches!(
        all.attempts()[1].outcome,
        AttemptOutcome::SkippedUnsuited
    ));
    assert_eq!(all.http_status(), 502);
}

#[tokio::test(start_paused = true)]
async fn content_filter_refusals_go_only_to_providers_marked_for_them() {
    let a = Fake::new(
        "a",
        &[(
            400,
            r#"{"error":{"code":"content_filter","message":"filtered"}}"#,
        )],
    );
    let (b, lenient) = (Fake::ok("b"), Fake::ok("lenient"));
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", b.svc()))
        .target(Target::new("lenient", lenient.svc()).content_filter())
        .classifier(classifier())
        .build()
        .unwrap();
    let res = chain.oneshot(req("a story")).await.unwrap();
    assert_eq!(res.body(), "lenient: a story");
    assert_eq!(b.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_the_chain() {
    let a = Fake::new("a", &[(503, "down")]).slow(Duration::from_secs(2));
    let b = Fake::ok("b");
    let chain = a_then_b(&a, &b);
    let mut r = req("hi");
    r.replace_deadline(Deadline::after(Duration::from_secs(1)));
    let err = chain.oneshot(r).await.unwrap_err();
    assert_eq!(b.calls(), 0, "not started after the deadline");
    let all = all_failed(&err);
    assert!(matches!(
        all.attempts()[1].outcome,
        AttemptOutcome::DeadlineExceeded
    ));
    assert!(
        err.to_string()
            .contains("b: not started, the request deadline had passed"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_provider_gets_its_own_rewrite() {
    let (a, b) = (Fake::new("a", &[(503, "down")]), Fake::ok("b"));
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()).rewrite(|r: &mut Req| {
            r.headers_mut().insert("x-model", "gpt-4o".parse().unwrap());
        }))
        .target(Target::new("b", b.svc()).rewrite(|r: &mut Req| {
            r.headers_mut()
                .insert("x-model", "claude-sonnet".parse().unwrap());
        }))
        .classifier(classifier())
        .build()
        .unwrap();
    chain.oneshot(req("hi")).await.unwrap();
    assert_eq!(*a.models.lock().unwrap(), ["gpt-4o"]);
    assert_eq!(
        *b.models.lock().unwrap(),
        ["claude-sonnet"],
        "b's copy is not a's"
    );
}

#[tokio::test(start_paused = true)]
async fn when_all_fail_the_error_lists_every_provider() {
    let a = Fake::new("a", &[(503, "down")]);
    let breaker = CircuitBreakerLayer::builder()
        .provider("b")
        .build()
        .unwrap();
    let bh = breaker.handle();
    bh.force_open();
    let b = Fake::ok("b");
    let c = Fake::new("c", &[(500, "oops")]);
    let d: Svc = BoxCloneSyncService::new(tower::service_fn(|_: Req| async {
        Err::<Res, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    }));
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(
            Target::new(
                "b",
                BoxCloneSyncService::new(breaker.layer(b).map_err(BoxError::from)),
            )
            .admission(bh),
        )
        .target(Target::new("c", c.svc()))
        .target(Target::new("d", d))
        .classifier(classifier())
        .build()
        .unwrap();
    let err = chain.oneshot(req("hi")).await.unwrap_err();
    let all = all_failed(&err);
    let names: Vec<_> = all.attempts().iter().map(|a| a.provider.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let text = err.to_string();
    for part in [
        "a: overloaded",
        "b: skipped, circuit breaker is forced_open",
        "c: server error",
        "d: connection refused",
    ] {
        assert!(
            text.to_lowercase().contains(part),
            "{part:?} missing from {text}"
        );
    }
    // The last real error is the source, so classifiers see a failure.
    assert!(std::error::Error::source(all).is_some());
}

/// A provider whose stack refuses every call with `refusal`.
fn refusing(refusal: palisade_core::Rejected) -> Svc {
    BoxCloneSyncService::new(tower::service_fn(move |_: Req| {
        let refusal = refusal.clone();
        async move { Err::<Res, BoxError>(refusal.into()) }
    }))
}

fn chain_of(targets: Vec<(&'static str, Svc)>) -> Fallback<Svc, Req, Buffered> {
    let mut b = Fallback::builder();
    for (name, svc) in targets {
        b = b.target(Target::new(name, svc));
    }
    b.classifier(classifier()).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn refusals_returned_by_the_providers_stacks_are_not_calls() {
    use palisade_core::{RejectReason, Rejected};
    let out_of_files = Rejected::new(RejectReason::OutOfResources)
        .with_detail("too many open files")
        .with_retry_after(Duration::from_secs(1));
    let full =
        Rejected::new(RejectReason::BulkheadFull).with_retry_after(Duration::from_millis(300));

    // Refused by both stacks before any call: unavailable (503), with the
    // soonest wait either gave.
    let chain = chain_of(vec![
        ("a", refusing(out_of_files.clone())),
        ("b", refusing(full.clone())),
    ]);
    let err = chain.oneshot(req("hi")).await.unwrap_err();
    let all = all_failed(&err);
    assert!(!all.any_called());
    assert_eq!(all.http_status(), 503);
    assert_eq!(all.retry_after(), Some(Duration::from_millis(300)));
    assert!(
        err.to_string()
            .contains("a: this process is out of resources (too many open files)"),
        "{err}"
    );

    // One provider called and failed: the chain failed (502).
    let c = Fake::new("c", &[(500, "oops")]);
    let chain = chain_of(vec![("a", refusing(out_of_files.clone())), ("c", c.svc())]);
    let err = chain.oneshot(req("hi")).await.unwrap_err();
    assert!(all_failed(&err).any_called());
    assert_eq!(all_failed(&err).http_status(), 502);

    // A retry refused after calls that failed (the refusal keeps the
    // failure as its source) was a call.
    let after_calls = out_of_files
        .clone()
        .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let chain = chain_of(vec![("a", refusing(after_calls))]);
    let err = chain.oneshot(req("hi")).await.unwrap_err();
    assert!(all_failed(&err).any_called());
    assert_eq!(all_failed(&err).http_status(), 502);

    // Every stack out of quota: 429 with the wait.
    let quota = Rejected::new(RejectReason::RateLimited).with_retry_after(Duration::from_secs(7));
    let chain = chain_of(vec![("a", refusing(quota.clone())), ("b", refusing(quota))]);
    let err = chain.oneshot(req("hi")).await.unwrap_err();
    assert_eq!(all_failed(&err).http_status(), 429);
    assert_eq!(all_failed(&err).retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test(start_paused = true)]
async fn a_degraded_answer_is_marked() {
    let a = Fake::new("a", &[(503, "down")]);
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .classifier(classifier())
        .degrade(|all: &AllFailed| {
            Some(Response::new(format!(
                "cached answer ({} tried)",
                all.attempts().len()
            )))
        })
        .build()
        .unwrap();
    let res = chain.oneshot(req("hi")).await.unwrap();
    assert_eq!(res.body(), "cached answer (1 tried)");
    assert_eq!(res.headers()[DEGRADED_HEADER], "1");
    let d = res.extensions().get::<Degraded>().expect("marked");
    assert!(d.reason.contains("a: "), "{}", d.reason);
}

#[tokio::test(start_paused = true)]
async fn only_the_provider_called_is_readied() {
    /// Never ready: calling code that waits for it would hang.
    #[derive(Clone)]
    struct NeverReady;
    impl Service<Req> for NeverReady {
        type Response = Res;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Res, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }
        fn call(&mut self, _: Req) -> Self::Future {
            unreachable!("never readied")
        }
    }
    let a = Fake::ok("a");
    let chain = Fallback::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("b", BoxCloneSyncService::new(NeverReady)))
        .classifier(classifier())
        .build()
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(1), chain.oneshot(req("hi")))
        .await
        .expect("did not wait for b")
        .unwrap();
    assert_eq!(res.body(), "a: hi");
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_requests_while_the_primary_flaps() {
    // The primary fails whenever `down` is set; a task flips it every 500ms.
    let down = Arc::new(AtomicBool::new(false));
    let primary_calls = Arc::new(AtomicUsize::new(0));
    let primary = {
        let (down, calls) = (down.clone(), primary_calls.clone());
        tower::service_fn(move |r: Req| {
            calls.fetch_add(1, Ordering::SeqCst);
            let failing = down.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let status = if failing { 503 } else { 200 };
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .body(format!("p: {}", r.body()))?,
                )
            }
        })
    };
    let breaker = CircuitBreakerLayer::builder()
        .provider("primary")
        .classifier(HttpClassifier::new())
        .consecutive_failures(Some(3))
        .open_duration(Duration::from_millis(300))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let secondary = Fake::ok("s").slow(Duration::from_millis(30));
    let chain = Fallback::builder()
        .target(
            Target::new(
                "primary",
                BoxCloneSyncService::new(breaker.layer(primary).map_err(BoxError::from)),
            )
            .admission(handle.clone()),
        )
        .target(Target::new("secondary", secondary.svc()))
        .classifier(classifier())
        .build()
        .unwrap();
    let flipper = {
        let down = down.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                down.store(i % 2 == 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let chain = chain.clone();
        // Boxed as `dyn Future + Send`: rustc cannot prove an async block
        // holding a generic `Into<BoxError>` future is Send (rust-lang/rust
        // #110338), the boxed future it can.
        let call: Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>> =
            Box::pin(chain.oneshot(req(&i.to_string())));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            call.await
        }));
    }
    let mut served_by_secondary = 0;
    for t in tasks {
        let res = t
            .await
            .unwrap()
            .expect("a healthy secondary answers every request");
        assert_eq!(res.status(), 200);
        if res.body().starts_with("s: ") {
            served_by_secondary += 1;
        }
    }
    flipper.await.unwrap();
    assert!(served_by_secondary > 0);
    assert!(
        primary_calls.load(Ordering::SeqCst) < 500,
        "the open breaker kept some calls from the primary"
    );
    assert!(handle.snapshot().times_opened >= 2, "it flapped");
}

#[test]
fn bad_chains_are_refused() {
    let e = Fallback::<Svc, Req>::builder().build().unwrap_err();
    assert_eq!(e.problems()[0].path, "fallback.targets");
    let a = Fake::ok("a");
    let e = Fallback::<Svc, Req>::builder()
        .target(Target::new("a", a.svc()))
        .target(Target::new("a", a.svc()))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("provider a is in the chain twice"),
        "{e}"
    );
}

/// Counts the copies made of the request it rides on.
#[derive(Debug)]
struct Copies(Arc<AtomicUsize>);

impl Clone for Copies {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Copies(self.0.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_one_gives_its_provider_the_request_itself_and_longer_chains_a_copy_each() {
    let counted = |copies: &Arc<AtomicUsize>| {
        let mut r = req("hi");
        r.extensions_mut().insert(Copies(copies.clone()));
        r
    };
    // One provider: the request goes to it as it came, answered or not.
    for (status, answered) in [(200, true), (503, false)] {
        let a = Fake::new("a", &[(status, "")]);
        let chain = Fallback::builder()
            .target(Target::new("a", a.svc()).rewrite(|r: &mut Req| r.body_mut().push('!')))
            .classifier(classifier())
            .build()
            .unwrap();
        let copies = Arc::new(AtomicUsize::new(0));
        let res = chain.oneshot(counted(&copies)).await;
        assert_eq!(copies.load(Ordering::SeqCst), 0, "{status}");
        assert_eq!(a.calls(), 1);
        match res {
            Ok(res) if answered => assert_eq!(res.body(), "a: hi!", "rewritten too"),
            Err(e) if !answered => assert_eq!(all_failed(&e).attempts().len(), 1),
            other => panic!("{status}: {other:?}"),
        }
    }
    // Two: each call gets its copy (the request is kept for the next).
    let (a, b) = (Fake::new("a", &[(503, "down")]), Fake::ok("b"));
    let chain = a_then_b(&a, &b);
    let copies = Arc::new(AtomicUsize::new(0));
    let res = chain.oneshot(counted(&copies)).await.unwrap();
    assert_eq!(res.body(), "b: hi");
    assert_eq!(copies.load(Ordering::SeqCst), 2);
}
