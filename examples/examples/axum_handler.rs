//! An axum handler that calls LLM providers through palisade: the router
//! (deadline, fallback, per-provider bulkhead, retry, breaker, timeout)
//! lives in the app's state; the handler just calls it.
//!
//! Two simulated providers: the first is down, so every answer comes from
//! the second, and the first's breaker opens.
//!
//! Run with `cargo run -p examples --example axum_handler`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use palisade::prelude::*;
use palisade_gateway::upstream::{ChatRequest, GatewayClassifier, Upstream, UpstreamSettings};
use tower::ServiceExt;

type AppRouter = palisade::Router<Upstream, GatewayClassifier, ChatRequest>;

async fn ask(State(router): State<AppRouter>, prompt: String) -> String {
    let mut body = serde_json::Map::new();
    body.insert(
        "messages".into(),
        serde_json::json!([{"role": "user", "content": prompt}]),
    );
    match router.oneshot(ChatRequest::new("chat", body, false)).await {
        Ok(res) if res.status().is_success() => format!("answered ({})", res.status()),
        Ok(res) => format!("provider said {}", res.status()),
        Err(e) => format!("no provider could answer: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    use palisade_sim::{spawn, Faults};
    let down = spawn(
        "first",
        Faults {
            down: true,
            ..Default::default()
        },
    )
    .await?;
    let up = spawn("second", Faults::default()).await?;

    let cfg = Config::from_toml(
        r#"
        [router]
        order = ["first", "second"]
        [defaults.breaker]
        consecutive_failures = 3
        [providers.first]
        [providers.second]
        "#,
    )?;
    let settings = UpstreamSettings {
        connect_timeout: std::time::Duration::from_secs(1),
        first_token: std::time::Duration::from_secs(5),
        idle: std::time::Duration::from_secs(5),
    };
    let client = palisade_gateway::upstream::client(settings.connect_timeout);
    let models = std::collections::BTreeMap::from([("chat".to_owned(), "sim-model".to_owned())]);
    let registry = Arc::new(Registry::from_config(
        &cfg,
        GatewayClassifier::default(),
        |p| {
            let base = if p.id == "first" {
                down.base_url()
            } else {
                up.base_url()
            };
            Upstream::new(
                &p.id,
                &base,
                None,
                models.clone(),
                client.clone(),
                &settings,
            )
            .expect("valid upstream")
        },
    )?);
    let router = palisade::Router::new(
        registry.clone(),
        std::time::Duration::from_secs(10),
        GatewayClassifier::default(),
    )?;

    let app = axum::Router::new()
        .route("/ask", post(ask))
        .with_state(router);
    for i in 0..5 {
        let req =
            http::Request::post("/ask").body(axum::body::Body::from(format!("question {i}")))?;
        let res = app.clone().oneshot(req).await?;
        let text = axum::body::to_bytes(res.into_body(), 1 << 16).await?;
        println!("request {i}: {}", String::from_utf8_lossy(&text));
    }
    let health = registry.health();
    println!(
        "\nfirst provider's breaker: {}; overall: {}",
        health.providers[0]
            .layer("breaker")
            .map_or("off".into(), |b| b.detail["state"].to_string()),
        health.status
    );
    Ok(())
}
