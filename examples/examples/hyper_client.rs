//! A hyper client with palisade's stack: a pooled `hyper_util` client is
//! the provider service, wrapped in deadline > retry (with budget) >
//! circuit breaker > attempt timeout > deadline propagation, calling a
//! simulated OpenAI-compatible provider on loopback that fails now and
//! then and rate-limits once.
//!
//! Run with `cargo run -p examples --example hyper_client`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::prelude::*;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A simulated provider: 30% of requests fail with a 500.
    let sim = palisade_sim::spawn(
        "sim",
        palisade_sim::Faults {
            error_rate: 0.3,
            ..Default::default()
        },
    )
    .await?;
    let url = format!("{}/v1/chat/completions", sim.base_url());

    // The provider service: hyper's pooled client, errors boxed.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let provider = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let res = client.request(req).await?;
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, bytes))
        }
    });

    let breaker = CircuitBreakerLayer::http().provider("sim").build()?;
    let retry = RetryLayer::http()
        .provider("sim")
        .max_attempts(4)
        .backoff(Backoff::exponential(
            Duration::from_millis(20),
            2.0,
            Duration::from_millis(200),
        ))
        .budget(RetryBudget::ratio(0.5, Duration::from_secs(10), 5)?)
        .build()?;
    let stats = retry.handle();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(5))?)
        .layer(retry)
        .layer(breaker)
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2))?)
        .layer(PropagateDeadlineLayer::new(
            TimeoutHeader::millis("x-request-timeout-ms").expect("valid name"),
        ))
        .service(provider);

    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
    let mut ok = 0;
    for _ in 0..20 {
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        match svc.clone().oneshot(req).await {
            Ok(res) if res.status().is_success() => ok += 1,
            Ok(res) => println!("the provider's last answer: {}", res.status()),
            // A run of failures can open the breaker: its refusal says
            // what the provider last did (its source).
            Err(e) => println!("refused: {e}"),
        }
    }
    let s = stats.snapshot();
    println!(
        "{ok}/20 answered 200 by a provider failing 30% of the time; {} attempts ({} reached the provider), {} retries, {} refused by the budget",
        s.attempts, s.provider_calls, s.retries, s.budget_refusals
    );
    Ok(())
}
