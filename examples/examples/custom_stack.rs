//! A custom stack composed with `ServiceBuilder`: tower's timeout inside
//! palisade's circuit breaker, over a fake LLM provider that starts failing
//! with 503s and then asks us to come back later with a 429 and
//! `Retry-After`.
//!
//! Run with `cargo run -p examples --example custom_stack`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use palisade_breaker::{BreakerError, CircuitBreakerLayer};
use palisade_core::BoxError;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        service_fn(move |prompt: String| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let res = match n {
                    0..=1 => Response::builder()
                        .status(200)
                        .body(format!("echo: {prompt}")),
                    2..=4 => Response::builder().status(503).body(String::new()),
                    5 => Response::builder()
                        .status(429)
                        .header("retry-after", "20")
                        .body(String::new()),
                    _ => Response::builder()
                        .status(200)
                        .body(format!("echo: {prompt}")),
                };
                Ok::<_, BoxError>(res?)
            }
        })
    };

    let breaker = CircuitBreakerLayer::http()
        .provider("fake-llm")
        .consecutive_failures(Some(3))
        .open_duration(Duration::from_secs(10))
        .open_jitter(0.0)
        .half_open_probes(1)
        .half_open_successes(1)
        .build()?;
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .timeout(Duration::from_secs(30))
        .service(provider);

    for i in 0..12 {
        let result = svc.clone().oneshot(format!("prompt {i}")).await;
        let what = match &result {
            Ok(r) if r.status() == StatusCode::OK => format!("200 {}", r.body()),
            Ok(r) => format!("{} from the provider", r.status()),
            Err(BreakerError::Refused(r)) => format!("failed fast: {r}"),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "call {i:>2}: breaker {:<9} -> {what}",
            handle.state().to_string()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let m = handle.snapshot();
    println!(
        "\nprovider saw {} of 12 calls; breaker opened {} times, rejected {}",
        calls.load(Ordering::SeqCst),
        m.times_opened,
        m.rejected
    );
    Ok(())
}
