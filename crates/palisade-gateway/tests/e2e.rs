//! End to end over real loopback sockets: the gateway and its simulated
//! providers, called with a real HTTP client. (Real sockets, so these run
//! on the real clock, with timeouts of tens of milliseconds.)

mod common;

use std::time::Duration;

use common::{Running, CHAT};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade_gateway::{Gateway, GatewayConfig};

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
first_token_timeout_ms = 300
idle_timeout_ms = 300
max_body_bytes = 4096
shutdown_grace_ms = 2000

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 5, tokens = 5, token_interval_ms = 5 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 5, tokens = 5, token_interval_ms = 5 }

[palisade.router]
order = ["primary", "secondary"]
request_timeout_ms = 3000

[palisade.defaults.retry]
enabled = false

[palisade.defaults.breaker]
consecutive_failures = 3
open_ms = 60000
max_open_ms = 60000
"#;

const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_primary_failing_every_response_comes_from_the_secondary() {
    let r = Running::start(CONFIG).await;
    let (status, body, headers) = r.post(CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["provider"], "primary");
    // Who answered, after how many calls and providers, on the response.
    assert_eq!(headers["x-palisade-provider"], "primary");
    assert_eq!(headers["x-palisade-attempts"], "1");
    assert_eq!(headers["x-palisade-fallbacks"], "0");
    r.sim("primary").set_faults(|f| f.down = true);
    for i in 0..20 {
        let (status, body, headers) = r.post(CHAT).await;
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert_eq!(v["provider"], "secondary");
        assert_eq!(v["model"], "s-model", "the model name was mapped");
        assert_eq!(headers["x-palisade-provider"], "secondary");
        assert_eq!(headers["x-palisade-attempts"], "1");
        assert_eq!(headers["x-palisade-fallbacks"], "1", "request {i}");
    }
    // Three 503s opened the primary's breaker: it saw no more calls.
    assert_eq!(r.sim("primary").requests(), 1 + 3);
    // /health shows it.
    let (status, health) = r.get("/health").await;
    assert_eq!(status, 200);
    let h = json(&health);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["providers"][0]["id"], "primary");
    assert_eq!(h["providers"][0]["breaker"]["state"], "open");
    assert!(h["recommendations"][0]
        .as_str()
        .unwrap()
        .contains("traffic goes to secondary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_passes_through_in_the_openai_wire_format() {
    let r = Running::start(CONFIG).await;
    let (status, body, headers) = r.post(STREAM).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 7, "5 tokens, the finish and [DONE]: {body}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<serde_json::Value> = events[..6]
        .iter()
        .map(|e| json(e.strip_prefix("data: ").unwrap()))
        .collect();
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "[primary] tok0");
    for c in &chunks {
        assert!(c["created"].as_u64().unwrap() > 1_700_000_000, "{c}");
        assert_eq!(c["id"], first["id"], "one id for the whole stream");
        assert!(c.get("usage").is_none(), "no usage unless asked: {c}");
    }
    assert_eq!(
        chunks[4]["choices"][0]["finish_reason"],
        serde_json::Value::Null
    );
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"][0]["delta"], serde_json::json!({}));

    // Asked for usage: every chunk says `"usage": null`, then one more
    // chunk with no choices carries it.
    let with_usage = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body, _) = r.post(with_usage).await;
    assert_eq!(status, 200);
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.len(),
        8,
        "5 tokens, the finish, usage and [DONE]: {body}"
    );
    let usage = json(events[6].strip_prefix("data: ").unwrap());
    assert_eq!(usage["choices"], serde_json::json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert!(events[..6]
        .iter()
        .all(|e| json(e.strip_prefix("data: ").unwrap())["usage"].is_null()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_answers_and_models_carry_the_openai_fields() {
    let r = Running::start(CONFIG).await;
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000, "{v}");
    assert_eq!(v["system_fingerprint"], palisade_sim::SYSTEM_FINGERPRINT);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // "hi" is a token of prompt; five of completion.
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    assert_eq!(v["usage"]["total_tokens"], 6);
    let (status, models) = r.get("/v1/models").await;
    assert_eq!(status, 200);
    let m = json(&models);
    assert_eq!(m["object"], "list");
    for entry in m["data"].as_array().unwrap() {
        assert_eq!(entry["object"], "model");
        assert!(
            entry["created"].as_u64().unwrap() > 1_700_000_000,
            "{entry}"
        );
        assert_eq!(entry["owned_by"], "palisade");
    }
    // One model, as the SDKs' `models.retrieve` asks for it: the same
    // entry as in the list.
    let (status, one) = r.get("/v1/models/m").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(json(&one), m["data"][0]);
    for unknown in ["/v1/models/nope", "/v1/models/org/m"] {
        let (status, body) = r.get(unknown).await;
        assert_eq!(status, 404, "{unknown}: {body}");
        assert_eq!(json(&body)["error"]["code"], "model_not_found", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_timeout_is_kept_when_shorter() {
    let r = Running::start(CONFIG).await;
    // Both providers take 2 s; the router's deadline is 3 s; the caller
    // (as the OpenAI SDKs do) says it waits 0.3 s.
    for id in ["primary", "secondary"] {
        r.sim(id).set_faults(|f| f.latency_ms = 2_000);
    }
    let started = std::time::Instant::now();
    let (status, body, _) = r.post_with(CHAT, &[("x-stainless-timeout", "0.3")]).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(took < std::time::Duration::from_millis(1_500), "{took:?}");
    // Garbage is ignored: the request then runs to the router's deadline
    // (and the 2 s answer arrives within it).
    let (status, body, _) = r
        .post_with(
            CHAT,
            &[
                ("x-stainless-timeout", "soon"),
                ("x-request-timeout-ms", "-1"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The upstream is told how long it has (`x-request-timeout-ms`): the
/// request's deadline, or the caller's own when shorter, less what has
/// passed; for whole answers and streams alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_is_told_the_time_left() {
    let r = Running::start(CONFIG).await;
    let primary = r.sim("primary");
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    for body in [CHAT, STREAM] {
        let (status, _, _) = r.post(body).await;
        assert_eq!(status, 200);
        let left = ms(primary.last_time_left()).expect("told");
        assert!(
            (2_000..=3_000).contains(&left),
            "router deadline 3 s: {left}"
        );
        let (status, _, _) = r.post_with(body, &[("x-stainless-timeout", "1.5")]).await;
        assert_eq!(status, 200);
        let left = ms(primary.last_time_left()).expect("told");
        assert!(
            (1_000..=1_500).contains(&left),
            "the caller's 1.5 s: {left}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_starts_fails_over_on_the_first_token_timeout() {
    let r = Running::start(CONFIG).await;
    r.sim("primary")
        .set_faults(|f| f.stall_after_tokens = Some(0));
    let started = std::time::Instant::now();
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200);
    assert!(body.contains("[secondary] tok0"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited the first-token timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_midway_ends_with_an_error_event_on_the_idle_timeout() {
    let r = Running::start(CONFIG).await;
    r.sim("primary")
        .set_faults(|f| f.stall_after_tokens = Some(2));
    let (status, body, _) = r.post(STREAM).await;
    assert_eq!(status, 200);
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "two tokens, then the error: {body}");
    let err = json(events[2].strip_prefix("data: ").unwrap());
    assert_eq!(err["error"]["code"], "stream_interrupted");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle timeout"),
        "{err}"
    );
    let (_, metrics) = r.get("/metrics").await;
    assert!(
        metrics.contains("palisade_gateway_stream_errors_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_and_openai_style_bodies() {
    let r = Running::start(CONFIG).await;
    let (status, body, _) = r.post("{not json").await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
    assert!(body.contains("the body is not JSON"), "{body}");
    let (status, body, _) = r.post("hello").await;
    assert_eq!(status, 400);
    assert!(body.contains("the body is not JSON"), "{body}");
    let (status, body, _) = r.post(r#"{"model":"m"}"#).await;
    assert_eq!(status, 400, "messages missing");
    assert!(body.contains("missing field `messages`"), "{body}");
    let (status, body, _) = r.post(r#"{"model":"m","messages":null}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("`messages` must be an array"), "{body}");
    let (status, body, _) = r.post(r#"{"model":5,"messages":[]}"#).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("not a request for /v1/chat/completions"),
        "{body}"
    );
    let (status, body, _) = r.post("[1, 2]").await;
    assert_eq!(status, 400);
    assert!(body.contains("the body must be a JSON object"), "{body}");
    let (status, body, _) = r.post(r#"["m", false]"#).await;
    assert_eq!(
        status, 400,
        "an array is no request, even one shaped like the fields"
    );
    assert!(body.contains("the body must be a JSON object"), "{body}");
    let (status, body, _) = r.post(r#"{"model":"gpt-9","messages":[]}"#).await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "model_not_found");
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(5000)
    );
    let (status, body, _) = r.post(&big).await;
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"]["code"], "request_too_large");
    let (status, body) = r.get("/v2/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "not_found");
    let (status, models) = r.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(json(&models)["data"][0]["id"], "m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_provider_fails_the_error_lists_them() {
    let r = Running::start(CONFIG).await;
    r.sim("primary").set_faults(|f| f.down = true);
    r.sim("secondary")
        .set_faults(|f| f.rate_limit_secs = Some(30));
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 502, "{body}");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "upstream_failed");
    let providers: Vec<&str> = v["error"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(providers.len(), 2, "{providers:?}");
    assert!(providers[0].starts_with("primary: "), "{providers:?}");
    assert!(
        providers[1].starts_with("secondary: rate limited"),
        "{providers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_outage_window_fails_over_and_ends() {
    let cfg = CONFIG.replace(
        "simulated = { latency_ms = 5, tokens = 5, token_interval_ms = 5 }\n\n[upstreams.secondary]",
        "simulated = { latency_ms = 5, tokens = 5, token_interval_ms = 5, outages = [[0, 400]] }\n\n[upstreams.secondary]",
    );
    assert_ne!(cfg, CONFIG, "the primary got an outage window");
    let r = Running::start(&cfg).await;
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["provider"], "secondary", "in the window");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let direct = r.sim("primary").requests();
    assert!(direct >= 1);
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["provider"], "primary", "after the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let r = Running::start(CONFIG).await;
    r.post(CHAT).await;
    let (status, text) = r.get("/metrics").await;
    assert_eq!(status, 200);
    let mut samples = 0;
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        // name{labels} value
        let (name, value) = line.rsplit_once(' ').expect("a sample line");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let bare = name.split('{').next().unwrap();
        assert!(
            bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line:?}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line:?}");
            }
        }
        samples += 1;
    }
    assert!(samples > 10);
    assert!(text.contains("palisade_gateway_ok_total 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_requests_in_flight() {
    let r = Running::start(CONFIG).await;
    r.sim("primary").set_faults(|f| f.latency_ms = 400);
    let client = r.client.clone();
    let url = format!("{}/v1/chat/completions", r.base);
    let slow = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(CHAT)))
            .unwrap();
        let res = client.request(req).await.unwrap();
        res.status().as_u16()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.stop();
    assert_eq!(slow.await.unwrap(), 200, "the request in flight finished");
    r.stopped().await.unwrap();
}

/// A provider's `max_concurrent` counts streams in progress, not only calls
/// waiting for their first token: while one stream holds the primary's
/// only slot, the next request goes to the secondary; once the stream has
/// ended, the primary takes requests again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_progress_holds_its_providers_slot() {
    let cfg = CONFIG.replace(
        "[upstreams.primary]\nmodels = { \"m\" = \"p-model\" }\nsimulated = { latency_ms = 5, tokens = 5, token_interval_ms = 5 }",
        "[upstreams.primary]\nmodels = { \"m\" = \"p-model\" }\nsimulated = { latency_ms = 5, tokens = 8, token_interval_ms = 100 }",
    ) + "\n[palisade.providers.primary.bulkhead]\nmax_concurrent = 1\nmax_waiting = 0\n";
    assert!(
        cfg.contains("token_interval_ms = 100"),
        "the config was patched"
    );
    let r = Running::start(&cfg).await;

    // Open a stream on the primary and read its first chunk only.
    let req = http::Request::post(format!("{}/v1/chat/completions", r.base))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(STREAM)))
        .unwrap();
    let res = r.client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("p-model"));

    // While it streams, the primary's one slot is taken.
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["provider"], "secondary");
    let (_, health) = r.get("/health").await;
    assert_eq!(json(&health)["providers"][0]["bulkhead"]["in_flight"], 1);

    // Read the stream to its end: the slot comes back.
    while let Some(frame) = stream.frame().await {
        frame.unwrap();
    }
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["provider"], "primary");
    r.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_answers_usage_is_charged_to_the_token_quota() {
    let cfg = format!("{CONFIG}\n[palisade.defaults.rate_limit]\ntokens_per_minute = 1000\n");
    let r = Running::start(&cfg).await;
    let (status, body, _) = r.post(CHAT).await;
    assert_eq!(status, 200, "{body}");
    let used = json(&body)["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used > 0);
    let (_, health) = r.get("/health").await;
    let health = json(&health);
    let primary = health["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "primary")
        .unwrap_or_else(|| panic!("{health}"));
    let quota = &primary["rate_limit"]["quotas"][0];
    assert_eq!(quota["unit"], "tokens", "{primary}");
    // Nothing was charged up front (the gateway does not estimate): the
    // answer's usage was, afterwards. (At 1000 a minute, at most one token
    // refills in the few milliseconds this takes.)
    let available = quota["available"].as_u64().unwrap();
    assert!(
        (1000 - used..=1001 - used).contains(&available),
        "used {used}, available {available}"
    );
    r.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_stream_is_hedged_on_its_first_token_and_the_answer_says_so() {
    // Two deployments in one tier, round robin; "east" takes 2 s to its
    // first token. Hedged after 100 ms, "west" answers: one whole stream
    // from it, marked `x-palisade-hedged`, and /health counts the hedge.
    let cfg = r#"
        [gateway]
        listen = "127.0.0.1:0"
        first_token_timeout_ms = 5000

        [upstreams.east]
        models = { "m" = "east-model" }
        simulated = { latency_ms = 5, tokens = 3, token_interval_ms = 5, slow_rate = 1.0, slow_ms = 2000 }

        [upstreams.west]
        models = { "m" = "west-model" }
        simulated = { latency_ms = 5, tokens = 3, token_interval_ms = 5 }

        [palisade.router]
        tiers = [["east", "west"]]
        strategy = "round_robin"
        request_timeout_ms = 5000

        [palisade.router.hedge]
        delay_ms = 100
    "#;
    let r = Running::start(cfg).await;
    let t0 = std::time::Instant::now();
    let (status, body, headers) = r.post(STREAM).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(headers["x-palisade-provider"], "west");
    assert_eq!(headers["x-palisade-hedged"], "1");
    assert!(body.contains("west-model") && !body.contains("east-model"));
    assert_eq!(body.matches("data: [DONE]").count(), 1, "{body}");
    // The hedge took "west"'s turn, so a whole answer starts at "east"
    // too, and is hedged the same way; one the caller forbids is not.
    let (status, _, headers) = r.post(CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-palisade-hedged"], "1");
    let t0 = std::time::Instant::now();
    let (status, _, headers) = r.post_with(CHAT, &[("x-palisade-hedge", "0")]).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-palisade-hedged").is_none());
    assert_eq!(headers["x-palisade-provider"], "east");
    assert!(
        t0.elapsed() >= Duration::from_millis(2000),
        "waited for east"
    );
    let (_, health) = r.get("/health").await;
    let h = json(&health);
    assert_eq!(h["hedge"]["sent"], 2, "{h}");
    assert_eq!(h["hedge"]["won"], 2, "{h}");
    assert!(h["providers"][0]["balance"].is_object(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_that_went_upstream_too() {
    let r = Running::start(CONFIG).await;
    // The caller's own id is kept and sent to the provider; the provider's
    // own id comes back beside it.
    let (status, _, headers) = r.post_with(CHAT, &[("x-request-id", "my-trace-42")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "my-trace-42");
    assert_eq!(
        r.sim("primary").last_request_id().as_deref(),
        Some("my-trace-42")
    );
    assert!(headers["x-upstream-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_sim_"));
    // Without one (or with garbage), the gateway makes one and sends it.
    for sent in [None, Some("has spaces in it"), Some(&*"x".repeat(300))] {
        let extra: Vec<(&str, &str)> = sent.iter().map(|v| ("x-request-id", *v)).collect();
        let (status, _, headers) = r.post_with(CHAT, &extra).await;
        assert_eq!(status, 200);
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
        assert_eq!(r.sim("primary").last_request_id(), Some(id));
    }
    // Refusals carry it too.
    let (status, _, headers) = r
        .post_with(
            r#"{"model":"nope","messages":[]}"#,
            &[("x-request-id", "abc")],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-request-id"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_served_headers_off_answers_say_nothing_of_the_providers() {
    let config = CONFIG.replace(
        "shutdown_grace_ms = 2000",
        "shutdown_grace_ms = 2000\nserved_headers = false",
    );
    let r = Running::start(&config).await;
    let hidden = [
        "x-palisade-provider",
        "x-palisade-attempts",
        "x-palisade-fallbacks",
        "x-palisade-hedged",
        "x-upstream-request-id",
    ];
    // A whole answer, a stream, and an answer after a failover: only the
    // gateway's own request id, which still went upstream.
    for (i, body) in [CHAT, STREAM].into_iter().enumerate() {
        let id = format!("caller-{i}");
        let (status, text, headers) = r.post_with(body, &[("x-request-id", &id)]).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("p-model"), "{text}");
        assert_eq!(headers["x-request-id"], id.as_str());
        assert_eq!(r.sim("primary").last_request_id(), Some(id));
        for name in hidden {
            assert!(!headers.contains_key(name), "{name} on {body}");
        }
    }
    r.sim("primary").set_faults(|f| f.down = true);
    let (status, text, headers) = r.post(CHAT).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("s-model"), "the secondary answered: {text}");
    for name in hidden {
        assert!(!headers.contains_key(name), "{name} after a failover");
    }
    assert!(headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_completions_go_through_the_same_fallback() {
    let r = Running::start(CONFIG).await;
    r.sim("primary").set_faults(|f| f.down = true);
    let (status, body, headers) = r
        .post_to("/v1/embeddings", r#"{"model":"m","input":["a","b"]}"#, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "secondary");
    assert_eq!(headers["x-palisade-fallbacks"], "1");
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "s-model", "the model name was mapped");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // `stream` means nothing to embeddings: still one JSON answer.
    let (status, body, _) = r
        .post_to(
            "/v1/embeddings",
            r#"{"model":"m","input":"a","stream":true}"#,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["object"], "list");
    let (status, body, headers) = r
        .post_to(
            "/v1/completions",
            r#"{"model":"m","prompt":"hi","stream":true}"#,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(body.contains("\"object\":\"text_completion\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    // What each endpoint needs besides the model is checked.
    for (path, body, missing) in [
        ("/v1/embeddings", r#"{"model":"m"}"#, "input"),
        ("/v1/completions", r#"{"model":"m"}"#, "prompt"),
        ("/v1/chat/completions", r#"{"model":"m"}"#, "messages"),
    ] {
        let (status, text, _) = r.post_to(path, body, &[]).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(missing), "{path}: {text}");
    }
}

const AUTH: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[gateway.auth]
# sha256 of "admin-secret"
admin_key_sha256 = "16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01"
keys = [
  # sha256 of "client-a-secret": every model
  { id = "a", sha256 = "dc9bd1cfb2a24027fa7b694afa718b9d0d343855917ea049dc192e4cdd2b1d04" },
  # sha256 of "client-b-secret": only "m"
  { id = "b", sha256 = "4ac2cabcc8d1bc2deb7f60567d9bb8bb7b3bc06aca588c5259889573232228f5", models = ["m"] },
]

[upstreams.primary]
models = { "m" = "p-model", "other" = "p-other" }
simulated = { latency_ms = 5, tokens = 3 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_only_a_known_key_gets_in_and_only_to_its_models() {
    let r = Running::start(AUTH).await;
    let other = r#"{"model":"other","messages":[{"role":"user","content":"hi"}]}"#;
    // No key, a wrong key, another scheme: 401 in OpenAI's form.
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic Y2xpZW50LWEtc2VjcmV0"),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let (status, body, h) = r.post_with(CHAT, &headers).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(json(&body)["error"]["code"], "invalid_api_key");
        assert_eq!(h["www-authenticate"], "Bearer");
        assert!(!body.contains("secret"), "{body}");
    }
    assert_eq!(
        r.sim("primary").requests(),
        0,
        "nothing reached the provider"
    );
    let a = [("authorization", "Bearer client-a-secret")];
    let b = [("authorization", "Bearer client-b-secret")];
    assert_eq!(r.post_with(CHAT, &a).await.0, 200);
    assert_eq!(r.post_with(other, &a).await.0, 200);
    assert_eq!(r.post_with(CHAT, &b).await.0, 200);
    let (status, body, _) = r.post_with(other, &b).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(json(&body)["error"]["code"], "model_not_allowed");
    // The model list is the key's.
    let ids = |body: &str| -> Vec<String> {
        json(body)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(r.get_with("/v1/models", &[]).await.0, 401);
    assert_eq!(ids(&r.get_with("/v1/models", &a).await.1), ["m", "other"]);
    assert_eq!(ids(&r.get_with("/v1/models", &b).await.1), ["m"]);
    // And so is each model: one the key may not use is not there for it.
    assert_eq!(r.get_with("/v1/models/other", &[]).await.0, 401);
    assert_eq!(r.get_with("/v1/models/other", &a).await.0, 200);
    assert_eq!(r.get_with("/v1/models/other", &b).await.0, 404);
    assert_eq!(r.get_with("/v1/models/m", &b).await.0, 200);
    // /health and /metrics answer to the admin key only.
    let admin = [("authorization", "Bearer admin-secret")];
    for path in ["/health", "/metrics"] {
        assert_eq!(r.get_with(path, &[]).await.0, 401, "{path}");
        assert_eq!(
            r.get_with(path, &a).await.0,
            401,
            "{path}: a client key is not admin"
        );
        assert_eq!(r.get_with(path, &admin).await.0, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_keys_is_refused_unless_allowed() {
    let open = CONFIG.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let err = GatewayConfig::from_toml(&open).unwrap_err().to_string();
    assert!(
        err.contains("gateway.listen") && err.contains("[gateway.auth]"),
        "{err}"
    );
    let allowed = open.replace("[gateway]", "[gateway]\nallow_unauthenticated = true");
    assert!(GatewayConfig::from_toml(&allowed).is_ok());
    // A --listen override is checked too.
    let cfg = GatewayConfig::from_toml(CONFIG).unwrap();
    let err = Gateway::bind(cfg, Some("0.0.0.0:0".parse().unwrap()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("allow_unauthenticated"), "{err}");
    // With keys, anywhere is fine.
    let keyed = AUTH.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    assert!(GatewayConfig::from_toml(&keyed).is_ok());
}

#[test]
fn bad_auth_settings_are_listed_with_their_keys() {
    let cfg = r#"
        [gateway.auth]
        admin_key_sha256 = "abc"
        keys = [
          { id = "x", sha256 = "not-hex" },
          { id = "x", env = "A", sha256 = "dc9bd1cfb2a24027fa7b694afa718b9d0d343855917ea049dc192e4cdd2b1d04" },
          { id = "", env = "B", models = ["nope"] },
        ]
        [upstreams.primary]
        models = { "m" = "p" }
        simulated = {}
    "#;
    let err = GatewayConfig::from_toml(cfg).unwrap_err().to_string();
    for needle in [
        "gateway.auth.admin_key_sha256",
        "gateway.auth.keys[0].sha256",
        "gateway.auth.keys[1].id: \"x\" is used twice",
        "gateway.auth.keys[1]: give env or sha256",
        "gateway.auth.keys[2].id: is empty",
        "gateway.auth.keys[2].models: \"nope\" is not a model served",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let cfg = AUTH.replace("[gateway.auth]", "[gateway.auth]\nrequests_per_minute = 2");
    let r = Running::start(&cfg).await;
    let a = [("authorization", "Bearer client-a-secret")];
    let b = [("authorization", "Bearer client-b-secret")];
    assert_eq!(r.post_with(CHAT, &a).await.0, 200);
    assert_eq!(r.post_with(CHAT, &a).await.0, 200);
    let (status, body, headers) = r.post_with(CHAT, &a).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(json(&body)["error"]["code"], "rate_limited");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "{after}");
    assert_eq!(
        r.sim("primary").requests(),
        2,
        "the refused call cost the provider nothing"
    );
    // Another key's bucket is its own.
    assert_eq!(r.post_with(CHAT, &b).await.0, 200);
    assert_eq!(r.post_with(CHAT, &b).await.0, 200);
    assert_eq!(r.post_with(CHAT, &b).await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_token_limit_counts_its_prompts() {
    let cfg = AUTH.replace("[gateway.auth]", "[gateway.auth]\ntokens_per_minute = 50");
    let r = Running::start(&cfg).await;
    let a = [("authorization", "Bearer client-a-secret")];
    // 80 characters: 20 estimated tokens each, so two fit in 50 and a
    // third does not.
    let long = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(80)
    );
    assert_eq!(r.post_with(&long, &a).await.0, 200);
    assert_eq!(r.post_with(&long, &a).await.0, 200);
    assert_eq!(r.post_with(&long, &a).await.0, 429);
    // A short one still fits in what is left.
    assert_eq!(r.post_with(CHAT, &a).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_providers_without_dropping_calls_or_resetting_the_unchanged() {
    let mut handles = None;
    let r = Running::start_with(CONFIG, |gw| {
        handles = Some((gw.reloader(), gw.registry().clone()));
        gw
    })
    .await;
    let (reloader, registry) = handles.unwrap();
    // The primary fails three times: its breaker opens.
    r.sim("primary").set_faults(|f| f.down = true);
    for _ in 0..3 {
        assert_eq!(r.post(CHAT).await.0, 200);
    }
    let open = || {
        registry
            .handles("primary")
            .unwrap()
            .breaker
            .unwrap()
            .state()
    };
    assert_eq!(open(), palisade_core::CircuitState::Open);
    // A slow call to the secondary is in flight when the reload removes it.
    r.sim("secondary").set_faults(|f| f.latency_ms = 600);
    let slow = {
        let (client, base) = (r.client.clone(), r.base.clone());
        tokio::spawn(async move {
            let req = http::Request::post(format!("{base}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
                .unwrap();
            let res = client.request(req).await.unwrap();
            let provider = res.headers()["x-palisade-provider"].clone();
            (res.status().as_u16(), provider)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = CONFIG
        .replace("[upstreams.secondary]", "[upstreams.tertiary]")
        .replace(
            r#"models = { "m" = "s-model" }"#,
            r#"models = { "m" = "t-model", "n" = "t-n" }"#,
        )
        .replace(
            r#"order = ["primary", "secondary"]"#,
            r#"order = ["primary", "tertiary"]"#,
        );
    let done = reloader
        .reload(GatewayConfig::from_toml(&v2).unwrap())
        .await
        .unwrap();
    let ids = |v: &[palisade_core::ProviderId]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&done.kept), ["primary"]);
    assert_eq!(ids(&done.added), ["tertiary"]);
    assert_eq!(ids(&done.removed), ["secondary"]);
    assert_eq!(
        open(),
        palisade_core::CircuitState::Open,
        "the unchanged keep their state"
    );
    // The call in flight finished on the removed provider.
    let (status, provider) = slow.await.unwrap();
    assert_eq!((status, provider.to_str().unwrap()), (200, "secondary"));
    // New calls go to the new provider, and its new model is served.
    let (status, _, headers) = r.post(CHAT).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-palisade-provider"], "tertiary");
    let (status, body, _) = r.post(r#"{"model":"n","messages":[]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(r.get("/v1/models").await.1.contains("\"n\""));
    // What needs a restart is refused, and nothing changes.
    let v3 = v2.replace("max_body_bytes = 4096", "max_body_bytes = 8192");
    let err = reloader
        .reload(GatewayConfig::from_toml(&v3).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gateway") && err.contains("restart"), "{err}");
    assert_eq!(registry.order(), ["primary", "tertiary"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_last_minute_and_shedding_is_degraded() {
    // Healthy providers, but a key limited to 2 requests a minute: what
    // the gateway refuses is shedding even though no provider is down.
    let cfg = AUTH.replace("[gateway.auth]", "[gateway.auth]\nrequests_per_minute = 2");
    let r = Running::start(&cfg).await;
    let a = [("authorization", "Bearer client-a-secret")];
    let admin = [("authorization", "Bearer admin-secret")];
    for _ in 0..2 {
        assert_eq!(r.post_with(CHAT, &a).await.0, 200);
    }
    let h = json(&r.get_with("/health", &admin).await.1);
    assert_eq!(h["status"], "healthy", "{h}");
    let g = &h["gateway"];
    assert_eq!(g["requests"], 2, "{h}");
    assert_eq!(g["shed_share"], 0.0);
    assert!(g["latency_ms"]["p50"].as_u64().is_some(), "{h}");
    for _ in 0..23 {
        assert_eq!(r.post_with(CHAT, &a).await.0, 429);
    }
    let (status, body) = r.get_with("/health", &admin).await;
    assert_eq!(status, 200, "degraded still answers");
    let h = json(&body);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["gateway"]["shedding"], true);
    assert_eq!(h["gateway"]["requests"], 25);
    assert!(
        (h["gateway"]["shed_share"].as_f64().unwrap() - 23.0 / 25.0).abs() < 1e-9,
        "{h}"
    );
    assert!(
        h["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("refused")),
        "{h}"
    );
}
