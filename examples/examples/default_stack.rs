//! The default per-provider stack (ARCHITECTURE.md), composed by hand with
//! `ServiceBuilder`: deadline > bulkhead > retry (with a budget) > circuit
//! breaker > attempt timeout, over a fake LLM provider that answers, then
//! browns out (503s and hangs), then rate-limits with `Retry-After`, then
//! recovers. Runs on tokio's paused clock, so it finishes at once.
//!
//! Run with `cargo run -p examples --example default_stack`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use palisade_breaker::CircuitBreakerLayer;
use palisade_bulkhead::BulkheadLayer;
use palisade_core::{BoxError, Elapsed, Rejected};
use palisade_deadline::{AttemptTimeoutLayer, DeadlineLayer};
use palisade_retry::{Backoff, RetryBudget, RetryLayer, RetryStopped};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        service_fn(move |req: Request<String>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = match n {
                    0..=2 => 200,
                    3..=5 => 503,
                    6 => {
                        // A hang: only the attempt timeout ends it.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        200
                    }
                    7 => 429,
                    _ => 200,
                };
                let mut res = Response::builder().status(status);
                if status == 429 {
                    res = res.header("retry-after", "2");
                }
                Ok::<_, BoxError>(res.body(format!("echo: {}", req.body()))?)
            }
        })
    };

    let budget = RetryBudget::ratio(0.5, Duration::from_secs(10), 1)?;
    let bulkhead = BulkheadLayer::builder()
        .provider("fake-llm")
        .max_concurrent(8)
        .build()?;
    let retry = RetryLayer::http()
        .provider("fake-llm")
        .max_attempts(3)
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            2.0,
            Duration::from_secs(2),
        ))
        .budget(budget)
        .jitter_seed(7)
        .build()?;
    let breaker = CircuitBreakerLayer::http()
        .provider("fake-llm")
        .consecutive_failures(Some(4))
        .open_duration(Duration::from_secs(5))
        .open_jitter(0.0)
        .half_open_probes(1)
        .half_open_successes(1)
        .build()?;
    let (retry_stats, breaker_handle) = (retry.handle(), breaker.handle());
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(8))?)
        .layer(bulkhead)
        .layer(retry)
        .layer(breaker)
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(3))?.provider("fake-llm"))
        .service(provider);

    for i in 0..12 {
        let start = tokio::time::Instant::now();
        let result = svc
            .clone()
            .oneshot(Request::new(format!("prompt {i}")))
            .await;
        let what = match &result {
            Ok(r) => format!("{} {}", r.status(), r.body()),
            Err(e) if e.is::<Rejected>() => format!("failed fast: {e}"),
            Err(e) if e.is::<Elapsed>() => format!("timed out: {e}"),
            Err(e) if e.is::<RetryStopped>() => format!("gave up: {e}"),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "request {i}: {:>6.1}s  breaker {:<9} -> {what}",
            start.elapsed().as_secs_f64(),
            breaker_handle.state().to_string()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let stats = retry_stats.snapshot();
    println!(
        "\nprovider saw {} attempts for 12 requests: {} retries, {} refused by the budget, {} stopped by the deadline",
        calls.load(Ordering::SeqCst),
        stats.retries,
        stats.budget_refusals,
        stats.deadline_stops
    );
    Ok(())
}
