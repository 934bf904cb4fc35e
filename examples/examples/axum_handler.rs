//! An axum app that calls LLM providers through palisade's router, held in
//! the app's state; the handler just awaits it. Only palisade's public
//! crates, axum, hyper and tower are used: copy it as a template.
//!
//! The two providers are of different types, as in real life: "remote" is
//! a hyper HTTP client calling an OpenAI-style endpoint (here a small axum
//! server started below, answering 503 as a provider in an outage would),
//! "local" is an in-process model (a closure). Providers of one registry
//! share one service type, so each is boxed into a
//! `BoxCloneSyncService`; the router itself is boxed into a `BoxRouter`, a
//! nameable type for the state whose future can be awaited in handlers and
//! spawned tasks.
//!
//! Run with `cargo run -p examples --example axum_handler`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::prelude::*;
use palisade::{http_status, BoxRouter, Config, Router};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, ServiceExt};

type Req = http::Request<String>;
type Res = http::Response<String>;
/// The one service type every provider of the registry has.
type Provider = BoxCloneSyncService<Req, Res, BoxError>;

/// The handler: the router answers, or says why not with the status
/// `palisade::http_status` gives; who answered goes into headers.
async fn ask(
    State(router): State<BoxRouter<Req, Res>>,
    prompt: String,
) -> (StatusCode, HeaderMap, String) {
    let mut headers = HeaderMap::new();
    match router.oneshot(http::Request::new(prompt)).await {
        Ok(res) => {
            if let Some(served) = res.extensions().get::<Served>() {
                if let Some(p) = &served.provider {
                    headers.insert("x-provider", HeaderValue::from_str(p.as_str()).unwrap());
                }
                headers.insert("x-fallbacks", served.fallbacks.into());
            }
            (res.status(), headers, res.into_body())
        }
        Err(e) => (
            http_status(&*e),
            headers,
            format!("no provider could answer: {e}"),
        ),
    }
}

/// A provider over HTTP: POSTs the prompt to `base`'s chat endpoint with a
/// pooled hyper client and reads the whole answer.
fn remote(base: String) -> Provider {
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    BoxCloneSyncService::new(service_fn(move |req: Req| {
        let (client, uri) = (client.clone(), format!("{base}/v1/chat/completions"));
        async move {
            let (mut parts, prompt) = req.into_parts();
            parts.method = http::Method::POST;
            parts.uri = uri.parse()?;
            let res = client
                .request(http::Request::from_parts(parts, prompt))
                .await?;
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::from_parts(
                parts,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        }
    }))
}

/// A provider in process.
fn local() -> Provider {
    BoxCloneSyncService::new(service_fn(|req: Req| async move {
        Ok::<_, BoxError>(http::Response::new(format!("local model: {}", req.body())))
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A stand-in for a remote provider in an outage: every call gets 503.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let outage = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }),
    );
    tokio::spawn(async move { axum::serve(listener, outage).await });

    let cfg = Config::from_toml(
        r#"
        [router]
        order = ["remote", "local"]
        request_timeout_ms = 10000
        [defaults.retry]
        backoff_base_ms = 10
        [defaults.breaker]
        consecutive_failures = 3
        [providers.remote]
        [providers.local]
        "#,
    )?;
    let router = Router::from_config(&cfg, HttpClassifier::new(), |p| {
        if p.id == "remote" {
            remote(base.clone())
        } else {
            local()
        }
    })?;
    let registry = router.registry().clone();
    let app = axum::Router::new()
        .route("/ask", post(ask))
        .with_state(router.clone().boxed());

    for i in 0..4 {
        let req =
            http::Request::post("/ask").body(axum::body::Body::from(format!("question {i}")))?;
        let res = app.clone().oneshot(req).await?;
        let (status, from) = (res.status(), res.headers().get("x-provider").cloned());
        let text = axum::body::to_bytes(res.into_body(), 1 << 16).await?;
        println!(
            "request {i}: {status} from {from:?}: {}",
            String::from_utf8_lossy(&text)
        );
    }

    // The boxed router can be awaited in a spawned task too.
    let boxed = router.boxed();
    let answer =
        tokio::spawn(async move { boxed.oneshot(http::Request::new("spawned".into())).await })
            .await??;
    println!("spawned task: {}", answer.body());

    let health = registry.health();
    println!(
        "\nremote's breaker: {}; overall: {}",
        health.providers[0]
            .layer("breaker")
            .map_or("off".into(), |b| b.detail["state"].to_string()),
        health.status
    );
    Ok(())
}
