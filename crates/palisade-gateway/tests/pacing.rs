//! Pacing by the provider's own rate headers, against a simulated provider
//! that enforces 60 requests a minute and publishes OpenAI's
//! `x-ratelimit-*` headers, on tokio's paused clock: with no quota
//! configured, palisade sends it nothing it would refuse.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::core::{BoxError, HttpClassifier};
use palisade::ratelimit::{Mode, RateLimitLayer};
use palisade_sim::{spawn, Faults};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn chat(base: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

/// An HTTP client as a service, answers read whole.
fn provider() -> impl Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Bytes>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<http::Response<Bytes>, BoxError>> + Send,
> + Clone
       + Send {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let res = client.request(req).await?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_provider_enforcing_60_rpm_gets_no_request_it_refuses() {
    let sim = spawn(
        "limited",
        Faults {
            latency_ms: 0,
            tokens: 2,
            requests_per_minute: Some(60),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let provider = provider();
    // No quota: the limiter knows only what the provider's headers say.
    let limit = RateLimitLayer::builder()
        .provider("limited")
        .classifier(HttpClassifier::new())
        .mode(Mode::Wait(Duration::from_secs(120)))
        .build()
        .unwrap();
    let mut svc = limit.layer(provider);
    let start = Instant::now();
    for i in 0..150 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(chat(&sim.base_url()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "request {i}: {:?}", res.body());
    }
    assert_eq!(sim.rate_limited(), 0, "the provider refused nothing");
    assert_eq!(sim.requests(), 150);
    // 60 at once, then nothing until the provider said its window resets,
    // twice: the pacing came from the headers alone.
    let took = Instant::now() - start;
    assert!(took >= Duration::from_secs(100), "took {took:?}");
    let snap = limit.handle().snapshot();
    assert_eq!(snap.admitted, 150);
    assert!(snap.waited >= 2, "waited {}", snap.waited);
}

#[tokio::test(start_paused = true)]
async fn without_following_headers_the_same_traffic_gets_429s() {
    let sim = spawn(
        "limited",
        Faults {
            latency_ms: 0,
            requests_per_minute: Some(60),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut refused = 0;
    for _ in 0..150 {
        let res = client.request(chat(&sim.base_url())).await.unwrap();
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
            refused += 1;
        }
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(refused, 90);
    assert_eq!(sim.rate_limited(), 90);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_whose_answers_overtake_each_other_get_no_429_either() {
    // Jitter makes answers come back out of order, so an older answer's
    // "remaining" can arrive after a newer one's.
    let sim = spawn(
        "limited",
        Faults {
            latency_ms: 1,
            jitter_ms: 40,
            tokens: 2,
            requests_per_minute: Some(60),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let provider = provider();
    let limit = RateLimitLayer::builder()
        .classifier(HttpClassifier::new())
        .mode(Mode::Wait(Duration::from_secs(300)))
        .build()
        .unwrap();
    let svc = tower::util::BoxCloneService::new(limit.layer(provider));
    let base = sim.base_url();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            let base = base.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let res = svc.clone().oneshot(chat(&base)).await.unwrap();
                    assert_eq!(res.status(), 200, "{:?}", res.body());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(sim.requests(), 200);
    assert_eq!(sim.rate_limited(), 0, "the provider refused nothing");
}
