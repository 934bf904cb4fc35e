//! `[cache]` over real sockets: with every provider down, a repeated
//! prompt is answered from the cache (marked stale and degraded, whole or
//! streamed), a new one gets the error; `no-store` keeps a request out;
//! identical requests in flight make one upstream call.

mod common;

use common::Running;
use palisade_gateway::GatewayConfig;

fn config(cache: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = {{ "m" = "p-model" }}
simulated = {{ latency_ms = 150, tokens = 3, token_interval_ms = 1 }}

[upstreams.secondary]
models = {{ "m" = "s-model" }}
simulated = {{ latency_ms = 1, tokens = 3, token_interval_ms = 1 }}

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false

# Breakers that stay closed: every request reaches the providers.
[palisade.defaults.breaker]
consecutive_failures = 1000
failure_rate = 1.0

{cache}
"#
    )
}

fn chat(prompt: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_provider_down_a_repeated_prompt_is_answered_stale_and_a_new_one_fails() {
    let gw = Running::start(&config("[cache]\nmax_stale_ms = 600000")).await;
    let (status, fresh, headers) = gw
        .send("POST", "/v1/chat/completions", &chat("hi", false))
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert!(
        headers.get("x-palisade-cache").is_none(),
        "the call's own answer"
    );
    // A streamed answer is recorded as it passes.
    let (status, _, _) = gw
        .send("POST", "/v1/chat/completions", &chat("streamed", true))
        .await;
    assert_eq!(status, 200);
    // A no-store request is never kept.
    let no_store = [("cache-control", "no-store")];
    let (status, _, _) = gw
        .send_with(
            "POST",
            "/v1/chat/completions",
            &chat("secret", false),
            &no_store,
        )
        .await;
    assert_eq!(status, 200);

    for sim in gw.sims.values() {
        sim.set_faults(|f| f.down = true);
    }
    let (status, body, headers) = gw
        .send("POST", "/v1/chat/completions", &chat("hi", false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-cache"], "stale");
    assert_eq!(headers["x-palisade-degraded"], "stale-cache");
    assert!(headers.contains_key("age"));
    assert_eq!(headers["x-palisade-attempts"], "0");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let before: serde_json::Value = serde_json::from_str(&fresh).unwrap();
    assert_eq!(answer["choices"], before["choices"], "the same answer");
    // The streamed one, asked whole; and the whole one, asked streamed.
    let (status, body, _) = gw
        .send("POST", "/v1/chat/completions", &chat("streamed", false))
        .await;
    assert_eq!(status, 200, "{body}");
    let whole: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("tok2"),
        "{whole}"
    );
    let (status, body, headers) = gw
        .send("POST", "/v1/chat/completions", &chat("hi", true))
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        body.contains("chat.completion.chunk") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    // New prompts, and the no-store one, get the error.
    for prompt in ["new", "secret"] {
        let (status, body, _) = gw
            .send("POST", "/v1/chat/completions", &chat(prompt, false))
            .await;
        assert!(status >= 500, "{prompt}: {status} {body}");
        assert!(
            body.contains("primary") && body.contains("secondary"),
            "every provider named: {body}"
        );
    }
    let health = gw.json("/health").await;
    assert_eq!(health["cache"]["stale"], 3, "{health}");
    assert_eq!(health["cache"]["bypassed"], 1);
    let metrics = gw.text("/metrics").await;
    assert!(
        metrics.contains("palisade_cache_stale_total 3"),
        "{metrics}"
    );

    // Back up: answers come from providers again, not the cache.
    for sim in gw.sims.values() {
        sim.set_faults(|f| f.down = false);
    }
    let (status, _, headers) = gw
        .send("POST", "/v1/chat/completions", &chat("hi", true))
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("x-palisade-cache").is_none());
    assert_eq!(headers["x-palisade-provider"], "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_in_flight_make_one_upstream_call() {
    let gw = Running::start(&config("[cache]")).await;
    let body = chat("same", false);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (client, base, body) = (gw.client.clone(), gw.base.clone(), body.clone());
            tokio::spawn(async move {
                let req = http::Request::post(format!("{base}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                assert_eq!(res.status(), 200);
                http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap()
                    .to_bytes()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    answers.dedup();
    assert_eq!(answers.len(), 1, "every caller the same answer");
    let upstream = gw.sims["primary"].requests();
    assert!(
        upstream <= 2,
        "50 identical requests, {upstream} upstream calls"
    );
    let health = gw.json("/health").await;
    assert!(
        health["cache"]["coalesced"].as_u64().unwrap() >= 48,
        "{health}"
    );
}

#[test]
fn a_bad_cache_section_is_refused_naming_the_field() {
    let err = GatewayConfig::from_toml(&config("[cache]\nmax_stale_ms = 0\nmax_entry_bytes = 0"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cache.max_stale_ms") && err.contains("cache.max_entry_bytes"),
        "{err}"
    );
    let err = GatewayConfig::from_toml(&config("[cache]\nttl = 5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ttl"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_hits_only_at_temperature_zero_and_never_for_no_cache() {
    let gw = Running::start(&config("[cache]\nfresh = true\nttl_ms = 60000")).await;
    let at = |t: f64| {
        format!(
            r#"{{"model":"m","temperature":{t},"messages":[{{"role":"user","content":"same"}}]}}"#
        )
    };
    let (status, first, _) = gw.send("POST", "/v1/chat/completions", &at(0.0)).await;
    assert_eq!(status, 200);
    let (status, again, headers) = gw.send("POST", "/v1/chat/completions", &at(0.0)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-palisade-cache"], "hit");
    assert_eq!(headers["x-palisade-attempts"], "0");
    assert_eq!(first, again, "the same answer, no call");
    assert_eq!(gw.sims["primary"].requests(), 1);
    // Not deterministic: every request is a call.
    for _ in 0..2 {
        let (_, _, headers) = gw.send("POST", "/v1/chat/completions", &at(0.7)).await;
        assert!(headers.get("x-palisade-cache").is_none());
    }
    assert_eq!(gw.sims["primary"].requests(), 3);
    // no-cache: the call is made even at temperature 0.
    let no_cache = [("cache-control", "no-cache")];
    let (_, _, headers) = gw
        .send_with("POST", "/v1/chat/completions", &at(0.0), &no_cache)
        .await;
    assert!(headers.get("x-palisade-cache").is_none());
    assert_eq!(gw.sims["primary"].requests(), 4);
    // A stream's tokens are counted with the call that made them, not
    // again when a hit replays it.
    let stream = r#"{"model":"m","temperature":0,"stream":true,"messages":[{"role":"user","content":"streamed"}]}"#;
    let before = gw.tokens("primary", "completion").await;
    let (status, _, _) = gw.send("POST", "/v1/chat/completions", stream).await;
    assert_eq!(status, 200);
    assert_eq!(gw.tokens("primary", "completion").await, before + 3);
    let (_, again, headers) = gw.send("POST", "/v1/chat/completions", stream).await;
    assert_eq!(headers["x-palisade-cache"], "hit");
    assert!(!again.contains("usage"), "{again}");
    assert_eq!(gw.tokens("primary", "completion").await, before + 3);
}
