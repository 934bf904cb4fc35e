//! A game day against a running gateway, over real loopback sockets:
//! `POST /admin/chaos/{provider}` takes a provider down (its calls fail as
//! connection resets), callers are still answered by the next provider,
//! `/health` shows it, and the provider comes back when chaos is off. Off
//! by default; a bad plan is refused naming the field.

mod common;

use std::time::Duration;

use common::Running;
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

async fn start(endpoint: bool) -> Running {
    Running::start(&config(endpoint)).await
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
    let primary = gw.provider("primary").await;
    assert_eq!(primary["breaker"]["state"], "open", "{primary}");
    let list = gw.json("/admin/chaos").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_ended_by_the_idle_timeout_with_an_error_event() {
    let cfg = config(true)
        .replace(
            "chaos_endpoint = true\n",
            "chaos_endpoint = true\nidle_timeout_ms = 200\n",
        )
        .replace("tokens = 2,", "tokens = 6,");
    let gw = Running::start(&cfg).await;
    let (status, _, _) = gw
        .send(
            "POST",
            "/admin/chaos/primary",
            r#"{"stall_rate": 1.0, "stall_after": 2}"#,
        )
        .await;
    assert_eq!(status, 200);
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let started = std::time::Instant::now();
    let (status, body, headers) = gw.send("POST", "/v1/chat/completions", stream).await;
    assert_eq!(status, 200, "the stream had started");
    assert_eq!(headers["x-palisade-provider"], "primary");
    assert!(
        body.contains("\"error\""),
        "the cut stream ends with an error event: {body}"
    );
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ended by the idle timeout"
    );
    let list = gw.json("/admin/chaos").await;
    assert_eq!(list["primary"]["streams"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_provider_that_drops_connections_is_failed_over_like_a_real_one() {
    // The same plan, on the provider's side of the socket: its connections
    // close with no answer, which the gateway's HTTP client sees as they
    // come.
    let cfg = config(false).replacen(
        "simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }",
        "simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1, chaos = { reset_rate = 1.0 } }",
        1,
    );
    let gw = Running::start(&cfg).await;
    for _ in 0..5 {
        assert_eq!(gw.chat().await, (200, "secondary".into()));
    }
    let primary = &gw.sims["primary"];
    assert_eq!(primary.chaos().snapshot().resets, 3, "three tripped it");
    assert_eq!(gw.provider("primary").await["breaker"]["state"], "open");

    // Healed on the far side: back after the open period.
    primary.set_faults(|f| f.chaos = palisade_sim::Plan::default());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(gw.chat().await, (200, "primary".into()));

    // A bad plan in a config is refused with its whole path.
    let bad = config(false).replacen(
        "token_interval_ms = 1 }",
        "token_interval_ms = 1, chaos = { cut_rate = 0.5 } }",
        1,
    );
    let err = GatewayConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(
        err.contains("upstreams.primary.simulated.chaos.cut_after"),
        "{err}"
    );
}
