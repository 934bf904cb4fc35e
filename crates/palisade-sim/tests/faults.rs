//! The simulated provider's faults, as a client on the other end of the
//! socket sees them: raw HTTP/1.1, so a closed connection is seen as one.

mod common;

use std::time::Duration;

use common::{exchange, header, status};
use palisade_sim::{spawn, Delay, Faults, Plan};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn quick() -> Faults {
    Faults {
        latency_ms: 0,
        token_interval_ms: 0,
        tokens: 6,
        ..Faults::default()
    }
}

#[tokio::test]
async fn an_injected_reset_closes_the_connection_without_an_answer() {
    let sim = spawn(
        "p",
        Faults {
            chaos: Plan::default().reset(1.0),
            ..quick()
        },
    )
    .await
    .unwrap();
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(raw, "", "no answer at all");
    assert_eq!(sim.requests(), 1, "the request was received");
    assert_eq!(sim.chaos().snapshot().resets, 1);
    sim.set_faults(|f| f.chaos = Plan::default());
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 200, "{raw}");
}

#[tokio::test]
async fn down_answers_503_as_the_provider_would_on_every_route() {
    let sim = spawn("p", quick()).await.unwrap();
    let raw = exchange(sim.addr(), "GET", "/v1/models", "").await;
    assert_eq!(status(&raw), 200);
    sim.set_faults(|f| f.down = true);
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 503, "{raw}");
    assert!(raw.contains(r#""type":"server_error""#), "{raw}");
    assert_eq!(header(&raw, "retry-after"), None);
    assert_eq!(header(&raw, "x-request-id"), Some("req_sim_1"));
    assert_eq!(sim.last_request_id().as_deref(), Some("caller-1"));
    // A health check's probe sees the outage too.
    let raw = exchange(sim.addr(), "GET", "/v1/models", "").await;
    assert_eq!(status(&raw), 503);
    assert_eq!(sim.requests(), 1, "GETs are not counted");
    sim.set_faults(|f| f.down = false);
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 200);
}

#[tokio::test]
async fn rate_limits_name_their_wait_in_whole_seconds() {
    let sim = spawn(
        "p",
        Faults {
            rate_limit_secs: Some(7),
            ..quick()
        },
    )
    .await
    .unwrap();
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 429, "{raw}");
    assert_eq!(header(&raw, "retry-after"), Some("7"));
    assert!(raw.contains("rate_limit_error"), "{raw}");
    // Any plan: 1.5 s is named as 2 (a client must not come back early).
    sim.set_faults(|f| {
        f.rate_limit_secs = None;
        f.chaos = Plan::default()
            .error(1.0, 429)
            .retry_after(Duration::from_millis(1500));
    });
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(header(&raw, "retry-after"), Some("2"));
    // Another status, as given.
    sim.set_faults(|f| f.chaos = Plan::default().error(1.0, 502));
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 502, "{raw}");
}

#[tokio::test]
async fn a_cut_stream_ends_after_its_frames_without_done() {
    let sim = spawn(
        "p",
        Faults {
            chaos: Plan::default().cut(1.0, 3),
            ..quick()
        },
    )
    .await
    .unwrap();
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", STREAM).await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert_eq!(raw.matches("data: ").count(), 3, "{raw}");
    assert!(!raw.contains("[DONE]"), "{raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "the chunked body never ends");
    // Uncut, the same request streams every token and [DONE].
    sim.set_faults(|f| f.chaos = Plan::default());
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", STREAM).await;
    assert!(raw.contains("[DONE]"), "{raw}");
    assert_eq!(raw.matches("data: ").count(), 6 + 1 + 1);
}

#[tokio::test]
async fn stream_faults_leave_answers_that_are_not_streams_alone() {
    let sim = spawn(
        "p",
        Faults {
            stall_after_tokens: Some(0),
            ..quick()
        },
    )
    .await
    .unwrap();
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert!(raw.contains("tok5"), "the whole answer: {raw}");
    assert_eq!(sim.chaos().snapshot().streams, 1, "the stall was drawn");
}

#[tokio::test]
async fn bad_faults_are_refused_each_named_and_the_old_ones_kept() {
    let err = spawn(
        "p",
        Faults {
            chaos: Plan::default().error(1.0, 503).hang(3.0),
            ..quick()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("simulated.chaos.hang_rate"),
        "{err}"
    );

    let sim = spawn("p", quick()).await.unwrap();
    let err = sim
        .try_set_faults(|f| {
            f.error_rate = 2.0;
            f.down = true;
            f.chaos = Plan::default()
                .latency(0.5, Delay::Fixed(Duration::ZERO))
                .reset(-1.0);
        })
        .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["simulated.error_rate", "simulated.chaos.reset_rate"]
    );
    assert!(!sim.faults().down, "nothing of a refused change is kept");
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status(&raw), 200);
}

#[tokio::test]
async fn usage_counts_a_token_for_every_four_bytes_of_each_text_rounded_up() {
    let sim = spawn("usage", quick()).await.unwrap();
    let body = |raw: &str| -> serde_json::Value {
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    // "hi": two bytes, one token (not a free prompt).
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", CHAT).await;
    let usage = &body(&raw)["usage"];
    assert_eq!(usage["prompt_tokens"], 1, "{raw}");
    assert_eq!(usage["completion_tokens"], 6, "{raw}");
    assert_eq!(usage["total_tokens"], 7, "{raw}");
    // Two messages of 9 and 4 bytes: 3 + 1.
    let two = r#"{"model":"m","messages":[{"role":"system","content":"be brief."},{"role":"user","content":"four"}]}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/chat/completions", two).await;
    assert_eq!(body(&raw)["usage"]["prompt_tokens"], 4, "{raw}");
    // Embeddings: each input counted on its own.
    let emb = r#"{"model":"m","input":["a","abcde"]}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/embeddings", emb).await;
    assert_eq!(body(&raw)["usage"]["prompt_tokens"], 3, "{raw}");
}
