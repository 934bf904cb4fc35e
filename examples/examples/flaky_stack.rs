//! Every error a caller of a palisade stack can get, each produced by a
//! flaky provider behind the same `ServiceBuilder` stack, with what to read
//! from it and the HTTP status `palisade::http_status` gives it (the table
//! "What errors you get, and when" in the README).
//!
//! The stack: deadline (3 s) > retry (HTTP preset, 3 attempts, 100 ms
//! apart, each needing 500 ms of the deadline left) > rate limit (HTTP
//! preset, 6 requests a minute) > breaker (HTTP preset, opens after 5
//! failures in a row) > attempt timeout (1.2 s). Runs on tokio's paused
//! clock, so the waits take no time.
//!
//! Run with `cargo run -p examples --example flaky_stack`.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade::prelude::*;
use palisade::ratelimit::{Quota, Unit};
use palisade::retry::RetryStopped;
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

type Req = http::Request<String>;
type Res = http::Response<String>;

/// What the provider does on each call it gets.
#[derive(Clone, Copy)]
enum Step {
    Answer(u16),
    Reset,
    Hang,
}

/// The default stack over a provider playing `steps` (the last repeated).
fn stack(
    steps: &'static [Step],
) -> impl tower::Service<Req, Response = Res, Error = BoxError> + Clone {
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = service_fn(move |_: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let step = steps[n.min(steps.len() - 1)];
        async move {
            let result: Result<Res, BoxError> = match step {
                Step::Answer(status) => Ok(http::Response::builder()
                    .status(status)
                    .body(String::new())?),
                Step::Reset => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
                }
                Step::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(Res::default())
                }
            };
            result
        }
    });
    let quota = Quota::new(Unit::Requests, 6, Duration::from_secs(60)).burst(6);
    ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(3)).unwrap())
        .layer(
            RetryLayer::http()
                .provider("flaky")
                .backoff(Backoff::constant(Duration::from_millis(100)))
                .jitter(Jitter::None)
                .min_attempt_time(Duration::from_millis(500))
                .build()
                .unwrap(),
        )
        .layer(
            RateLimitLayer::http()
                .provider("flaky")
                .quota(quota)
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::http()
                .provider("flaky")
                .consecutive_failures(Some(5))
                .build()
                .unwrap(),
        )
        .layer(AttemptTimeoutLayer::new(Duration::from_millis(1200)).unwrap())
        .service(provider)
}

/// Says what a caller got, the way a program would tell the cases apart.
fn describe(result: Result<Res, BoxError>) -> String {
    let e = match result {
        Ok(res) => {
            let attempts = res.extensions().get::<Served>().map_or(1, |s| s.attempts);
            return format!(
                "Ok({}) after {attempts} call(s): the provider's own answer",
                res.status()
            );
        }
        Err(e) => e,
    };
    let status = palisade::http_status(&*e);
    let what = if let Some(r) = e.downcast_ref::<Rejected>() {
        let after = r
            .source()
            .map(|s| format!("; after: {s}"))
            .unwrap_or_default();
        format!(
            "Rejected ({}), retry after {:?}{after}",
            r.reason(),
            r.retry_after()
        )
    } else if let Some(t) = e.downcast_ref::<Elapsed>() {
        format!("Elapsed: the {} fired after {:?}", t.scope(), t.after())
    } else if let Some(s) = e.downcast_ref::<RetryStopped>() {
        format!(
            "RetryStopped after {} attempt(s): {}; last error: {}",
            s.attempts(),
            s.reason(),
            s.last_error()
        )
    } else {
        format!("the provider's own error: {e}")
    };
    format!("{what} -> HTTP {}", status.as_u16())
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    use Step::*;
    let cases: [(&str, &'static [Step], usize); 6] = [
        ("a 503, then an answer", &[Answer(503), Answer(200)], 1),
        ("503 every time", &[Answer(503)], 1),
        ("the caller's own 400", &[Answer(400)], 1),
        (
            "503s until the breaker opens mid-retry, then the quota runs out",
            &[Answer(503)],
            3,
        ),
        ("a provider that never answers", &[Hang], 1),
        ("connection resets", &[Reset], 1),
    ];
    for (what, steps, requests) in cases {
        println!("{what}:");
        let svc = stack(steps);
        for _ in 0..requests {
            let result = svc.clone().oneshot(http::Request::new("hi".into())).await;
            println!("  {}", describe(result));
        }
    }
}
