//! Two gateways sharing their providers through a real `redis-server`
//! (started by the test on loopback): a provider's `Retry-After` met by one
//! gateway keeps the other away from it too, `/health` shows the fleet, and
//! with Redis killed both keep answering, alone, and say so.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{Gateway, GatewayConfig};
use palisade_redis::testing::Redis;

fn config(redis: &str, replica: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = {{ "m" = "p-model" }}
simulated = {{ latency_ms = 2, tokens = 3, token_interval_ms = 1 }}

[upstreams.secondary]
models = {{ "m" = "s-model" }}
simulated = {{ latency_ms = 2, tokens = 3, token_interval_ms = 1 }}

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false

[palisade.fleet]
redis_url = "{redis}"
replica_id = "{replica}"
heartbeat_ms = 200
retry_ms = 200
"#
    )
}

struct Running {
    base: String,
    sims: std::collections::BTreeMap<String, palisade_sim::SimHandle>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(cfg: &str) -> Running {
    let gw = Gateway::bind(GatewayConfig::from_toml(cfg).unwrap(), None)
        .await
        .unwrap();
    let base = format!("http://{}", gw.local_addr().unwrap());
    let sims = gw.sims().clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    Running {
        base,
        sims,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _stop: stop,
    }
}

impl Running {
    /// A chat completion: (status, the provider that answered).
    async fn chat(&self) -> (u16, String) {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let req = http::Request::post(format!("{}/v1/chat/completions", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status().as_u16();
        let provider = res
            .headers()
            .get("x-palisade-provider")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let _ = res.into_body().collect().await;
        (status, provider)
    }

    async fn metrics(&self) -> String {
        let req = http::Request::get(format!("{}/metrics", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn health(&self) -> serde_json::Value {
        let req = http::Request::get(format!("{}/health", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }
}

async fn until(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_keep_away_from_a_provider_together_and_carry_on_without_redis() {
    let mut redis = Redis::start();
    let a = start(&config(&redis.url(), "gw-a")).await;
    let b = start(&config(&redis.url(), "gw-b")).await;
    assert!(
        until(Duration::from_secs(5), async || {
            let h = b.health().await;
            h["fleet"]["connected"] == true && h["fleet"]["replicas"] == 2
        })
        .await,
        "both gateways joined: {}",
        b.health().await["fleet"]
    );
    assert_eq!(b.chat().await, (200, "primary".to_string()));
    let metrics = b.metrics().await;
    for line in ["palisade_fleet_connected 1", "palisade_fleet_replicas 2"] {
        assert!(metrics.contains(line), "{line} in /metrics:\n{metrics}");
    }

    // A's primary answers 429 with Retry-After: 3; A falls back, and B
    // keeps away from its primary until the same end.
    a.sims["primary"].set_faults(|f| f.rate_limit_secs = Some(3));
    assert_eq!(a.chat().await, (200, "secondary".to_string()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = b.sims["primary"].requests();
    for _ in 0..20 {
        assert_eq!(b.chat().await, (200, "secondary".to_string()));
    }
    assert_eq!(
        b.sims["primary"].requests(),
        before,
        "B sent nothing to the provider A was told to keep away from"
    );
    let breaker = &b.health().await["providers"];
    assert!(breaker.to_string().contains("open"), "{breaker}");

    // Redis killed: both answer every request, and say they are alone.
    redis.kill();
    a.sims["primary"].set_faults(|f| f.rate_limit_secs = None);
    for _ in 0..20 {
        assert_eq!(a.chat().await.0, 200);
        assert_eq!(b.chat().await.0, 200);
    }
    assert!(
        until(Duration::from_secs(3), async || {
            b.health().await["fleet"]["connected"] == false
        })
        .await
    );
    let h = b.health().await;
    assert!(
        h["recommendations"]
            .to_string()
            .contains("Redis does not answer"),
        "{h}"
    );
    // Back: both rejoin without a restart.
    redis.restart();
    assert!(
        until(Duration::from_secs(5), async || {
            a.health().await["fleet"]["connected"] == true
                && b.health().await["fleet"]["connected"] == true
        })
        .await,
        "both rejoined"
    );
}
