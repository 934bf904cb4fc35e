//! Knowing health in the gateway, over real loopback sockets: a checked
//! provider that goes down is taken out of rotation by the checks alone,
//! with no user request sent to it, and is back as soon as a check passes;
//! a provider failing more than its tier mates is ejected from the tier.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{Gateway, GatewayConfig};

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 2, tokens = 3, token_interval_ms = 1 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 2, tokens = 3, token_interval_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.providers.primary.health_check]
enabled = true
interval_ms = 100
timeout_ms = 500
unhealthy_threshold = 2
"#;

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
) -> serde_json::Value {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn primary<'a>(health: &'a serde_json::Value, layer: &str) -> &'a serde_json::Value {
    let p = health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "primary")
        .unwrap();
    &p[layer]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_provider_is_taken_out_and_brought_back_by_its_checks() {
    let gw = Gateway::bind(GatewayConfig::from_toml(CONFIG).unwrap(), None)
        .await
        .unwrap();
    let base = format!("http://{}", gw.local_addr().unwrap());
    let sims = gw.sims().clone();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let health = || get(&client, format!("{base}/health"));

    // Healthy and idle: checks pass.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let h = health().await;
    assert_eq!(primary(&h, "health_check")["last"], "passed", "{h}");

    // Down, with no user traffic: two failed checks open its breaker.
    sims["primary"].set_faults(|f| f.down = true);
    let start = Instant::now();
    loop {
        let h = health().await;
        if primary(&h, "breaker")["state"] == "open" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "not opened: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sims["primary"].requests();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let req = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-palisade-provider"], "secondary");
    // Only checks reached the primary (at most a couple in the meantime).
    assert!(sims["primary"].requests() <= before + 2);

    // Back: a passed check moves it to half-open at once (not after its
    // 30 s open period).
    sims["primary"].set_faults(|f| f.down = false);
    let back = Instant::now();
    loop {
        let h = health().await;
        if primary(&h, "breaker")["state"] == "half_open" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(2), "not back: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "primary probing again {:?} after it came back",
        back.elapsed()
    );
}

const TIER: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.a]
models = { "m" = "a-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1, error_rate = 0.3 }

[upstreams.b]
models = { "m" = "b-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }

[upstreams.c]
models = { "m" = "c-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }

[palisade.router]
tiers = [["a", "b", "c"]]
strategy = "round_robin"

[palisade.router.outlier]
interval_ms = 300
min_requests = 10

[palisade.defaults.retry]
enabled = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_more_than_its_tier_mates_is_ejected_by_the_gateway() {
    let gw = Gateway::bind(GatewayConfig::from_toml(TIER).unwrap(), None)
        .await
        .unwrap();
    let base = format!("http://{}", gw.local_addr().unwrap());
    let sims = gw.sims().clone();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let start = Instant::now();
    let mut ejected = false;
    while start.elapsed() < Duration::from_secs(5) && !ejected {
        for _ in 0..20 {
            let req = http::Request::post(format!("{base}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.status(), 200, "the tier answers every request");
            let _ = res.into_body().collect().await;
        }
        let h = get(&client, format!("{base}/health")).await;
        let a = h["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "a")
            .unwrap()
            .clone();
        ejected = a["outlier"]["ejected"] == true;
    }
    assert!(ejected, "a (30% errors) ejected from its tier");
    let before = sims["a"].requests();
    for _ in 0..30 {
        let req = http::Request::post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_ne!(res.headers()["x-palisade-provider"], "a");
        let _ = res.into_body().collect().await;
    }
    assert_eq!(
        sims["a"].requests(),
        before,
        "no call to the ejected provider"
    );
}
