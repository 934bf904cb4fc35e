//! A game day against a running gateway, over real loopback sockets:
//! `POST /admin/chaos/{provider}` takes a provider down (its calls fail as
//! connection resets), callers are still answered by the next provider,
//! `/health` shows it, and the provider comes back when chaos is off. Off
//! by default; a bad plan is refused naming the field.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{Gateway, GatewayConfig};

fn config(endpoint: bool) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
chaos_endpoint = {endpoint}

[upstreams.primary]
models = {{ "m" = "p-model" }}
simulated = {{ latency_ms = 1, tokens = 2, token_interval_ms = 1 }}

[upstreams.secondary]
models = {{ "m" = "s-model" }}
simulated = {{ latency_ms = 1, tokens = 2, token_interval_ms = 1 }}

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false

[palisade.defaults.breaker]
consecutive_failures = 3
open_ms = 200
"#
    )
}

struct Running {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(endpoint: bool) -> Running {
    let gw = Gateway::bind(GatewayConfig::from_toml(&config(endpoint)).unwrap(), None)
        .await
        .unwrap();
    let base = format!("http://{}", gw.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    Running {
        base,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _stop: stop,
    }
}

impl Running {
    async fn send(&self, method: &str, path: &str, body: &str) -> (u16, String, http::HeaderMap) {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
            headers,
        )
    }

    async fn chat(&self) -> (u16, String) {
        let (status, _, headers) = self
            .send(
                "POST",
                "/v1/chat/completions",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            )
            .await;
        let who = headers
            .get("x-palisade-provider")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, who)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_day_takes_a_provider_down_and_brings_it_back() {
    let gw = start(true).await;
    assert_eq!(gw.chat().await, (200, "primary".into()));

    // Take the primary down: every call to it is a connection reset.
    let (status, body, _) = gw
        .send("POST", "/admin/chaos/primary", r#"{"reset_rate": 1.0}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    let snap: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["enabled"], true);
    for _ in 0..10 {
        assert_eq!(
            gw.chat().await,
            (200, "secondary".into()),
            "callers are still answered"
        );
    }
    let (_, health, _) = gw.send("GET", "/health", "").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let primary = health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "primary")
        .unwrap();
    assert_eq!(primary["breaker"]["state"], "open", "{primary}");
    let (_, list, _) = gw.send("GET", "/admin/chaos", "").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        list["primary"]["resets"], 3,
        "three resets tripped it: {list}"
    );
    assert_eq!(list["secondary"]["enabled"], false);

    // Bring it back: off, and after its short open period it serves again.
    let (status, _, _) = gw
        .send("POST", "/admin/chaos/primary", r#"{"enabled": false}"#)
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(gw.chat().await, (200, "primary".into()));

    // A bad plan is refused, naming what is wrong; an unknown provider too.
    let (status, body, _) = gw
        .send("POST", "/admin/chaos/primary", r#"{"error_rate": 3}"#)
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("chaos.error_rate"), "{body}");
    let (status, _, _) = gw
        .send("POST", "/admin/chaos/nobody", r#"{"hang_rate": 1}"#)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_endpoint_is_off_by_default_and_needs_an_admin_key_beyond_loopback() {
    let gw = start(false).await;
    let (status, _, _) = gw
        .send("POST", "/admin/chaos/primary", r#"{"reset_rate": 1.0}"#)
        .await;
    assert_eq!(status, 404);
    assert_eq!(gw.chat().await, (200, "primary".into()));

    let cfg = GatewayConfig::from_toml(
        &config(true).replace("[gateway]\n", "[gateway]\nallow_unauthenticated = true\n"),
    )
    .unwrap();
    let err = Gateway::bind(cfg, Some("0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chaos_endpoint"), "{err}");
}
