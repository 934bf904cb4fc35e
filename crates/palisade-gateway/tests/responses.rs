//! OpenAI's Responses API (`POST /v1/responses`) through the gateway: the
//! same router, fallback and stack as chat completions; a stream's typed
//! events passed through as they come; the tokens each answer used
//! counted, whole or streamed.

mod common;

use common::Running;

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"
first_token_timeout_ms = 300
idle_timeout_ms = 300

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 2, tokens = 4, token_interval_ms = 2 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 2, tokens = 4, token_interval_ms = 2 }

[palisade.router]
order = ["primary", "secondary"]
request_timeout_ms = 3000

[palisade.defaults.retry]
enabled = false
"#;

const WHOLE: &str =
    r#"{"model":"m","instructions":"be brief","input":[{"role":"user","content":"hello"}]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"input":"hello"}"#;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A stream's events: (the `event:` line's name, its data).
fn events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (event, data) = e.split_once('\n').unwrap_or_else(|| panic!("{e:?}"));
            let name = event
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("{e:?}"));
            (name.to_owned(), json(data.strip_prefix("data: ").unwrap()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_fails_over_and_its_usage_is_counted() {
    let r = Running::start(CONFIG).await;
    let (status, body, headers) = r.post_to("/v1/responses", WHOLE, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "primary");
    let v = json(&body);
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], "p-model", "the model name was mapped");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "[primary] tok0 tok1 tok2 tok3"
    );
    // The provider's usage, under the Responses API's names, counted.
    assert_eq!(v["usage"]["output_tokens"], 4);
    let input = v["usage"]["input_tokens"].as_u64().unwrap();
    assert_eq!(r.tokens("primary", "completion").await, 4);
    assert_eq!(r.tokens("primary", "prompt").await, input);

    r.sim("primary").set_faults(|f| f.down = true);
    let (status, body, headers) = r.post_to("/v1/responses", WHOLE, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "secondary");
    assert_eq!(headers["x-palisade-fallbacks"], "1");
    assert_eq!(json(&body)["model"], "s-model");
    assert_eq!(r.tokens("secondary", "completion").await, 4);

    // Every provider down: an OpenAI error object, as on every endpoint.
    r.sim("secondary").set_faults(|f| f.down = true);
    let (status, body, _) = r.post_to("/v1/responses", WHOLE, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(json(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("every provider failed"));
    // And a model the gateway does not serve is the caller's 404.
    let (status, body, _) = r
        .post_to("/v1/responses", r#"{"model":"nope","input":"hi"}"#, &[])
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_passes_its_events_through_and_is_counted_at_its_end() {
    let r = Running::start(CONFIG).await;
    let (status, body, headers) = r.post_to("/v1/responses", STREAM, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-palisade-provider"], "primary");
    let events = events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "response.output_text.delta")
            .count(),
        4
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "unchanged, in order");
    }
    assert!(!body.contains("[DONE]"));
    // The usage in `response.completed` is counted once the stream ended.
    assert_eq!(r.tokens("primary", "completion").await, 4);

    // Primary down before its first event: the stream comes from the
    // secondary.
    r.sim("primary").set_faults(|f| f.down = true);
    let (status, body, headers) = r.post_to("/v1/responses", STREAM, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "secondary");
    assert!(body.contains("[secondary] tok0"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stream_that_stalls_ends_with_an_error_event() {
    let r = Running::start(CONFIG).await;
    r.sim("primary")
        .set_faults(|f| f.stall_after_tokens = Some(2));
    let (status, body, _) = r.post_to("/v1/responses", STREAM, &[]).await;
    assert_eq!(status, 200);
    let events = events(&body);
    let (name, err) = events.last().unwrap();
    assert_eq!(name, "error", "{body}");
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "stream_interrupted");
    assert!(
        err["message"].as_str().unwrap().contains("idle timeout"),
        "{err}"
    );
    assert_eq!(err["error"]["code"], "stream_interrupted");
}

/// Two deployments of one model, balanced in turn: without affinity, a
/// continuation would land on the other half the time.
const BALANCED: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.east]
models = { "m" = "m" }
simulated = { latency_ms = 1, tokens = 2 }

[upstreams.west]
models = { "m" = "m" }
simulated = { latency_ms = 1, tokens = 2 }

[palisade.router]
tiers = [["east", "west"]]
strategy = "round_robin"

[palisade.defaults.retry]
enabled = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_response_goes_to_the_provider_that_stored_it() {
    let r = Running::start(BALANCED).await;
    for stream in [false, true] {
        let first = format!(r#"{{"model":"m","input":"hi","stream":{stream}}}"#);
        let (status, body, headers) = r.post_to("/v1/responses", &first, &[]).await;
        assert_eq!(status, 200, "{body}");
        let stored_at = headers["x-palisade-provider"].to_str().unwrap().to_owned();
        let id = if stream {
            let (_, created) = &events(&body)[0];
            created["response"]["id"].as_str().unwrap().to_owned()
        } else {
            json(&body)["id"].as_str().unwrap().to_owned()
        };
        // Continued four times, whole and streamed: always where it was
        // stored, though the balancer takes turns.
        for i in 0..4 {
            let next = format!(
                r#"{{"model":"m","input":"more","previous_response_id":"{id}","stream":{}}}"#,
                i % 2 == 1
            );
            let (status, body, headers) = r.post_to("/v1/responses", &next, &[]).await;
            assert_eq!(status, 200, "stream {stream}, continuation {i}: {body}");
            assert_eq!(headers["x-palisade-provider"], stored_at.as_str());
        }
    }
    // A response the gateway never saw is routed as any request: the
    // provider that has no such response says so (404, the caller's).
    let unknown = r#"{"model":"m","input":"more","previous_response_id":"resp_elsewhere_1"}"#;
    let (status, body, _) = r.post_to("/v1/responses", unknown, &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"]["code"], "previous_response_not_found");

    // The provider that stored it down: the continuation is not sent to
    // the other, which could only say it has no such response.
    let (_, body, headers) = r
        .post_to("/v1/responses", r#"{"model":"m","input":"hi"}"#, &[])
        .await;
    let stored_at = headers["x-palisade-provider"].to_str().unwrap().to_owned();
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    r.sim(&stored_at).set_faults(|f| f.down = true);
    let other = if stored_at == "east" { "west" } else { "east" };
    let before = r.sim(other).requests();
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    let (status, body, _) = r.post_to("/v1/responses", &next, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains(&format!("{other}:")),
        "only {stored_at} was tried: {body}"
    );
    assert_eq!(r.sim(other).requests(), before);
}

/// The id of a response made through `r` (whole), and the provider that
/// stored it.
async fn made(r: &Running, headers: &[(&str, &str)]) -> (String, String) {
    let (status, body, h) = r
        .post_to("/v1/responses", r#"{"model":"m","input":"hi"}"#, headers)
        .await;
    assert_eq!(status, 200, "{body}");
    let at = h["x-palisade-provider"].to_str().unwrap().to_owned();
    (json(&body)["id"].as_str().unwrap().to_owned(), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_is_read_listed_and_deleted_where_it_lives() {
    let r = Running::start(BALANCED).await;
    for stream in [false, true] {
        // Made in a balanced tier: one of the two has it.
        let first = format!(r#"{{"model":"m","input":"hi there","stream":{stream}}}"#);
        let (_, body, headers) = r.post_to("/v1/responses", &first, &[]).await;
        let stored_at = headers["x-palisade-provider"].to_str().unwrap().to_owned();
        let id = if stream {
            events(&body)[0].1["response"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        } else {
            json(&body)["id"].as_str().unwrap().to_owned()
        };
        let other = if stored_at == "east" { "west" } else { "east" };
        let before = r.sim(other).requests();
        // Read back several times: always from where it lives.
        for _ in 0..3 {
            let (status, body, h) = r.send("GET", &format!("/v1/responses/{id}"), "").await;
            assert_eq!(status, 200, "stream {stream}: {body}");
            assert_eq!(h["x-palisade-provider"], stored_at.as_str());
            assert!(h.contains_key("x-request-id"));
            let v = json(&body);
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v["status"], "completed");
            assert_eq!(v["provider"], stored_at.as_str());
        }
        let (status, body, _) = r
            .send(
                "GET",
                &format!("/v1/responses/{id}/input_items?limit=10"),
                "",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["data"][0]["content"][0]["text"], "hi there");
        // The provider's own refusal, passed on.
        let (status, body, _) = r
            .send("POST", &format!("/v1/responses/{id}/cancel"), "")
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("Cannot cancel"), "{body}");
        let (status, body, _) = r.send("DELETE", &format!("/v1/responses/{id}"), "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["deleted"], true);
        assert_eq!(
            r.sim(other).requests(),
            before,
            "{other} was not sent the cancel"
        );
        // Deleted and forgotten: asked around, nobody has it.
        let (status, body, _) = r.send("GET", &format!("/v1/responses/{id}"), "").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("not found"), "{body}");
    }
    // Each call counted, by call and status, over both providers.
    let metrics = r.text("/metrics").await;
    for (call, status, n) in [
        ("retrieve", "2xx", 6),
        ("input_items", "2xx", 2),
        ("cancel", "4xx", 2),
        ("delete", "2xx", 2),
        ("retrieve", "4xx", 2),
    ] {
        let counted: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("palisade_gateway_stored_calls_total{")
                    && l.contains(&format!("call=\"{call}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(counted, n as f64, "{call} {status}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_another_gateway_made_is_found_by_asking_each_upstream() {
    let r = Running::start(BALANCED).await;
    // Made at west directly, as through another gateway of a fleet.
    let west = r.sim("west").addr();
    let made = post_to_provider(west, r#"{"model":"m","input":"elsewhere"}"#).await;
    let id = json(&made)["id"].as_str().unwrap().to_owned();
    let (status, body, h) = r.send("GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-palisade-provider"], "west");
    // Found, it is remembered: continuations go there too.
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    for _ in 0..3 {
        let (status, body, h) = r.post_to("/v1/responses", &next, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h["x-palisade-provider"], "west");
    }
    // An id nobody has: 404 in OpenAI's form.
    let (status, body, _) = r.send("GET", "/v1/responses/resp_nowhere_7", "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_the_first_provider_cannot_find_is_taken_to_the_one_that_can() {
    // primary first: a continuation of a response it does not have
    // reaches it first.
    let r = Running::start(CONFIG).await;
    let secondary = r.sim("secondary").addr();
    for stream in [false, true] {
        let made = post_to_provider(secondary, r#"{"model":"s-model","input":"elsewhere"}"#).await;
        let id = json(&made)["id"].as_str().unwrap().to_owned();
        let next = format!(
            r#"{{"model":"m","input":"more","previous_response_id":"{id}","stream":{stream}}}"#
        );
        let before = r.sim("primary").requests();
        let (status, body, h) = r.post_to("/v1/responses", &next, &[]).await;
        assert_eq!(status, 200, "stream {stream}: {body}");
        assert_eq!(h["x-palisade-provider"], "secondary");
        assert_eq!(
            r.sim("primary").requests(),
            before + 1,
            "primary was asked first"
        );
        assert_eq!(h["x-palisade-fallbacks"], "1", "after primary");
        // Found, it is remembered: the next go straight there.
        for _ in 0..3 {
            let (status, body, h) = r.post_to("/v1/responses", &next, &[]).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(h["x-palisade-provider"], "secondary");
            assert_eq!(h["x-palisade-fallbacks"], "0", "pinned straight there");
        }
        assert_eq!(r.sim("primary").requests(), before + 1);
    }
    // Nobody has it: the first 404, in OpenAI's form.
    let unknown = r#"{"model":"m","input":"more","previous_response_id":"resp_nowhere_3"}"#;
    let (status, body, _) = r.post_to("/v1/responses", unknown, &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"]["code"], "previous_response_not_found");
    // One that has none and one that cannot answer: the caller hears of
    // the failure (the response may be there), not a 404.
    r.sim("secondary").set_faults(|f| f.down = true);
    let (status, body, _) = r.post_to("/v1/responses", unknown, &[]).await;
    assert!(status >= 500, "{status}: {body}");
    let (status, body, h) = r.send("GET", "/v1/responses/resp_nowhere_4", "").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(h["x-palisade-provider"], "secondary");
    // The one failing asked first: the others are still asked, and the
    // one that has it answers.
    r.sim("secondary").set_faults(|f| f.down = false);
    let made = post_to_provider(secondary, r#"{"model":"s-model","input":"again"}"#).await;
    let id = json(&made)["id"].as_str().unwrap().to_owned();
    r.sim("primary").set_faults(|f| f.down = true);
    let (status, body, h) = r.send("GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["x-palisade-provider"], "secondary");
    let (status, body, h) = r.send("GET", "/v1/responses/resp_nowhere_5", "").await;
    assert_eq!(
        status, 503,
        "the first asked failed, the last said 404: {body}"
    );
    assert_eq!(h["x-palisade-provider"], "primary");
    // Unreachable rather than failing: 502.
    let down = Running::start(
        r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
base_url = "http://127.0.0.1:9/v1"

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 1 }
"#,
    )
    .await;
    let (status, body, _) = down.send("GET", "/v1/responses/resp_nowhere_6", "").await;
    assert_eq!(status, 502, "{body}");
}

/// `body` posted to `/v1/responses` at `addr` (a simulated provider).
async fn post_to_provider(addr: std::net::SocketAddr, body: &str) -> String {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = common::request("POST", &format!("http://{addr}/v1/responses"), body, &[]);
    common::read(client.request(req).await.unwrap()).await.1
}

const KEYED: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[gateway.auth]
keys = [
  # sha256 of "client-a-secret"
  { id = "a", sha256 = "dc9bd1cfb2a24027fa7b694afa718b9d0d343855917ea049dc192e4cdd2b1d04" },
  # sha256 of "client-b-secret"
  { id = "b", sha256 = "4ac2cabcc8d1bc2deb7f60567d9bb8bb7b3bc06aca588c5259889573232228f5" },
]

[upstreams.east]
models = { "m" = "m" }
simulated = { latency_ms = 1, tokens = 2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_a_response_is_its_makers_alone() {
    let r = Running::start(KEYED).await;
    let a = [("authorization", "Bearer client-a-secret")];
    let b = [("authorization", "Bearer client-b-secret")];
    let (id, _) = made(&r, &a).await;
    let path = format!("/v1/responses/{id}");
    let (status, body, _) = r.send_with("GET", &path, "", &a).await;
    assert_eq!(status, 200, "{body}");
    // Another key: as if there were no such response, at every call.
    let before = r.sim("east").requests();
    for (method, p) in [
        ("GET", path.clone()),
        ("GET", format!("{path}/input_items")),
        ("POST", format!("{path}/cancel")),
        ("DELETE", path.clone()),
    ] {
        let (status, body, _) = r.send_with(method, &p, "", &b).await;
        assert_eq!(status, 404, "{method} {p}: {body}");
    }
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    let (status, body, _) = r.post_to("/v1/responses", &next, &b).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(&body)["error"]["code"], "previous_response_not_found");
    assert_eq!(
        r.sim("east").requests(),
        before,
        "nothing reached the provider"
    );
    // No key at all: 401.
    let (status, _, _) = r.send("GET", &path, "").await;
    assert_eq!(status, 401);
    // An id the gateway never saw: its maker cannot be told, so no key
    // may read it.
    let (status, _, _) = r
        .send_with("GET", "/v1/responses/resp_east_999", "", &a)
        .await;
    assert_eq!(status, 404);
    // Its maker still can, and may continue it.
    let (status, body, _) = r.post_to("/v1/responses", &next, &a).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = r.send_with("DELETE", &path, "", &a).await;
    assert_eq!(status, 200);
}
