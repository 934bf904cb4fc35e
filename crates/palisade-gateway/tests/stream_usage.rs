//! A stream's tokens: the gateway asks the provider for the usage chunk
//! when the caller did not (and takes it out of what the caller gets), so
//! token limits and counts see every stream, settled when it ends.

mod common;

use common::Running;

const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const STREAM_WITH_USAGE: &str = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

fn config(extra_upstream: &str, extra: &str) -> String {
    format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"

        [upstreams.primary]
        models = {{ "m" = "p-model" }}
        simulated = {{ latency_ms = 1, tokens = 40 }}
        {extra_upstream}

        [palisade.router]
        order = ["primary"]
        {extra}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_counted_though_its_caller_did_not_ask_for_the_usage() {
    let r = Running::start(&config("", "")).await;
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200, "{body}");
    // The caller's stream is as OpenAI sends it without the option: no
    // usage chunk, no `usage` member in any chunk.
    assert!(!body.contains("usage"), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let chunks = body.matches("data: {").count();
    assert_eq!(chunks, 41, "40 tokens and the finish: {body}");
    assert_eq!(r.tokens("primary", "completion").await, 40);
    assert_eq!(r.tokens("primary", "prompt").await, 1);

    // A caller that asks gets the usage chunk, as before.
    let (_, body, _) = r.post(STREAM_WITH_USAGE).await;
    assert!(body.contains(r#""choices":[],"#), "{body}");
    assert!(body.contains(r#""completion_tokens":40"#), "{body}");
    assert_eq!(r.tokens("primary", "completion").await, 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stream_usage_off_the_provider_is_not_asked() {
    let r = Running::start(&config("stream_usage = false", "")).await;
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("usage"), "{body}");
    assert_eq!(
        r.tokens("primary", "completion").await,
        0,
        "nothing to count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_tokens_are_charged_to_the_providers_token_quota_when_it_ends() {
    let cfg = config(
        "",
        "[palisade.defaults.rate_limit]\ntokens_per_minute = 1000",
    );
    let r = Running::start(&cfg).await;
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200, "{body}");
    let quota = &r.provider("primary").await["rate_limit"]["quotas"][0];
    assert_eq!(quota["unit"], "tokens", "{quota}");
    // "hi" (1 prompt token) and 40 completion tokens, charged after the
    // stream (at 1000 a minute, at most a token or two refill meanwhile).
    let available = quota["available"].as_u64().unwrap();
    assert!((959..=961).contains(&available), "available {available}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_token_limit_counts_what_its_streams_used() {
    let cfg = r#"
[gateway]
listen = "127.0.0.1:0"

[gateway.auth]
tokens_per_minute = 100
keys = [
  # sha256 of "client-a-secret"
  { id = "a", sha256 = "dc9bd1cfb2a24027fa7b694afa718b9d0d343855917ea049dc192e4cdd2b1d04" },
]

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, tokens = 40 }
"#;
    let r = Running::start(cfg).await;
    let a = [("authorization", "Bearer client-a-secret")];
    // Each stream is estimated at its prompt (a token) and uses 41: after
    // two, 18 are left, so a third is let in (its estimate fits) and
    // spends past the minute's 100; the fourth finds none. (Charged by
    // the estimate alone, a hundred would have gone.)
    for i in 0..3 {
        let (status, body, _) = r.post_with(STREAM, &a).await;
        assert_eq!(status, 200, "stream {i}: {body}");
    }
    let (status, body, headers) = r.post_with(STREAM, &a).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_refuses_the_option_is_asked_once_and_the_caller_never_sees_it() {
    let r = Running::start(&config("", "").replace(
        "tokens = 40 }",
        "tokens = 40, refuses_stream_options = true }",
    ))
    .await;
    // Refused (400 naming stream_options): sent again without it, and the
    // caller gets the stream.
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert_eq!(r.sim("primary").requests(), 2);
    // Not asked again: one call a stream from now on.
    let (status, _, _) = r.post(STREAM).await;
    assert_eq!(status, 200);
    assert_eq!(r.sim("primary").requests(), 3);
    assert_eq!(
        r.tokens("primary", "completion").await,
        0,
        "nothing to count"
    );
    // A caller that asks for the option itself gets the provider's own 400.
    let (status, body, _) = r.post(STREAM_WITH_USAGE).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("stream_options"), "{body}");
}
