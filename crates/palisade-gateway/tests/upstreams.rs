//! What the gateway sends a real upstream: the URL made from its
//! `base_url` as the OpenAI SDKs make theirs, its API key in the header
//! it names, and the config's `headers`. A recording server on loopback
//! stands for three providers.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use common::Running;

/// A request as the upstream saw it: its path and headers.
type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

/// Serves a chat completion to anything, recording each request.
async fn recording_upstream() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map_or("", |p| p.as_str())
                            .to_owned();
                        log.lock().unwrap().push((path, req.headers().clone()));
                        async {
                            let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_urls_keys_and_headers_reach_the_upstream_as_configured() {
    let (base, seen) = recording_upstream().await;
    // Each upstream serves its own model; the router's order does not
    // matter here (a provider not serving a model is passed over).
    std::env::set_var("PALISADE_TEST_UPSTREAMS_KEY", "sk-test");
    let cfg = format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"

        [upstreams.bare]
        base_url = "{base}"
        api_key_env = "PALISADE_TEST_UPSTREAMS_KEY"
        models = {{ "a" = "a" }}

        [upstreams.azure]
        base_url = "{base}/openai/v1/"
        api_key_env = "PALISADE_TEST_UPSTREAMS_KEY"
        api_key_header = "api-key"
        models = {{ "b" = "b" }}

        [upstreams.gemini]
        base_url = "{base}/v1beta/openai"
        models = {{ "c" = "c" }}
        headers = {{ "openai-organization" = "org-1", "x-title" = "palisade test" }}

        [palisade.router]
        order = ["bare", "azure", "gemini"]
        "#
    );
    let r = Running::start(&cfg).await;
    for model in ["a", "b", "c"] {
        let body =
            format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let (status, text, _) = r.post(&body).await;
        assert_eq!(status, 200, "{model}: {text}");
    }
    let (status, text, _) = r
        .post_to("/v1/embeddings", r#"{"model":"c","input":"hi"}"#, &[])
        .await;
    assert_eq!(status, 200, "{text}");
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            // No path: `/v1` added, as before.
            "/v1/chat/completions",
            // The SDKs' way: the API's path given, the endpoint's added.
            "/openai/v1/chat/completions",
            "/v1beta/openai/chat/completions",
            "/v1beta/openai/embeddings",
        ]
    );
    let h = |i: usize, name: &str| seen[i].1.get(name).map(|v| v.to_str().unwrap().to_owned());
    // The key as a bearer token by default; alone in a header of its own.
    assert_eq!(h(0, "authorization").as_deref(), Some("Bearer sk-test"));
    assert_eq!(h(1, "api-key").as_deref(), Some("sk-test"));
    assert_eq!(h(1, "authorization"), None);
    // The config's headers, beside the gateway's own.
    assert_eq!(h(2, "openai-organization").as_deref(), Some("org-1"));
    assert_eq!(h(2, "x-title").as_deref(), Some("palisade test"));
    assert_eq!(h(2, "authorization"), None, "no key configured");
    assert!(h(2, "x-request-id").is_some());
    assert_eq!(h(2, "content-type").as_deref(), Some("application/json"));
    assert_eq!(h(0, "x-title"), None, "headers are per upstream");
}
