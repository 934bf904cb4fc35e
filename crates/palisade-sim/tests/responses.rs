//! The simulated provider's Responses API (`POST /v1/responses`), whole
//! and streamed, as OpenAI's wire format has it.

mod common;

use common::{exchange, header, status};
use palisade_sim::{spawn, Faults};

fn quick() -> Faults {
    Faults {
        latency_ms: 0,
        token_interval_ms: 0,
        tokens: 3,
        ..Faults::default()
    }
}

fn body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn a_whole_response_has_its_message_and_usage() {
    let sim = spawn("resp", quick()).await.unwrap();
    // "be brief" (8 bytes: 2 tokens) as instructions, "hello" (2) as a
    // string input.
    let req = r#"{"model":"m","instructions":"be brief","input":"hello"}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", req).await;
    assert_eq!(status(&raw), 200, "{raw}");
    let v: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "m");
    assert_eq!(v["instructions"], "be brief");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("resp_resp_"),
        "{id}: the provider's name in it"
    );
    let message = &v["output"][0];
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["text"], "[resp] tok0 tok1 tok2");
    let usage = &v["usage"];
    assert_eq!(usage["input_tokens"], 4, "{usage}");
    assert_eq!(usage["output_tokens"], 3);
    assert_eq!(usage["total_tokens"], 7);

    // A list of messages, one with parts: every text counts.
    let req = r#"{"model":"m","input":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"input_text","text":"abcde"}]}]}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", req).await;
    let v: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(v["usage"]["input_tokens"], 3, "{raw}");
}

#[tokio::test]
async fn a_streamed_response_is_typed_events_in_order_ending_completed() {
    let sim = spawn("resp", quick()).await.unwrap();
    let req = r#"{"model":"m","stream":true,"input":"hello"}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", req).await;
    assert_eq!(status(&raw), 200, "{raw}");
    assert_eq!(header(&raw, "content-type"), Some("text/event-stream"));
    // Chunked transfer: keep the event lines, drop the chunk sizes.
    let lines: Vec<&str> = body(&raw)
        .lines()
        .filter(|l| l.starts_with("event: ") || l.starts_with("data: "))
        .collect();
    let mut kinds = Vec::new();
    let mut text = String::new();
    let mut last = serde_json::Value::Null;
    for pair in lines.chunks(2) {
        let kind = pair[0]
            .strip_prefix("event: ")
            .expect("an event line first");
        let data: serde_json::Value =
            serde_json::from_str(pair[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], kind, "the event names its data's type");
        assert_eq!(data["sequence_number"], kinds.len(), "numbered in order");
        if kind == "response.output_text.delta" {
            text.push_str(data["delta"].as_str().unwrap());
        }
        kinds.push(kind.to_owned());
        last = data;
    }
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(text, "[resp] tok0 tok1 tok2");
    assert_eq!(last["response"]["status"], "completed");
    assert_eq!(last["response"]["usage"]["output_tokens"], 3);
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        "[resp] tok0 tok1 tok2"
    );
    assert!(
        !body(&raw).contains("[DONE]"),
        "the Responses API sends none"
    );
}

#[tokio::test]
async fn a_response_continues_only_one_this_provider_stored() {
    let sim = spawn("east", quick()).await.unwrap();
    let raw = exchange(
        sim.addr(),
        "POST",
        "/v1/responses",
        r#"{"model":"m","input":"hi"}"#,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    let id = v["id"].as_str().unwrap();
    let next = format!(r#"{{"model":"m","input":"more","previous_response_id":"{id}"}}"#);
    let raw = exchange(sim.addr(), "POST", "/v1/responses", &next).await;
    assert_eq!(status(&raw), 200, "{raw}");
    // Another provider's response: not found here, as OpenAI answers.
    let other = r#"{"model":"m","input":"more","previous_response_id":"resp_west_1"}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", other).await;
    assert_eq!(status(&raw), 404, "{raw}");
    let v: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(v["error"]["code"], "previous_response_not_found");
}

#[tokio::test]
async fn a_stored_response_is_read_listed_refused_cancel_and_deleted() {
    let sim = spawn("resp", quick()).await.unwrap();
    let req = r#"{"model":"m","input":[{"role":"user","content":"first"},{"role":"user","content":"second"}]}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", req).await;
    let made: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/responses/{id}");

    let raw = exchange(sim.addr(), "GET", &path, "").await;
    assert_eq!(status(&raw), 200, "{raw}");
    let read: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(read, made, "the response as it was made");

    let raw = exchange(sim.addr(), "GET", &format!("{path}/input_items"), "").await;
    assert_eq!(status(&raw), 200, "{raw}");
    let items: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(items["object"], "list");
    let texts: Vec<&str> = items["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(items["has_more"], false);

    // Answered at once, never in the background: nothing to cancel.
    let raw = exchange(sim.addr(), "POST", &format!("{path}/cancel"), "").await;
    assert_eq!(status(&raw), 400, "{raw}");

    let raw = exchange(sim.addr(), "DELETE", &path, "").await;
    assert_eq!(status(&raw), 200, "{raw}");
    let deleted: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    assert_eq!(deleted["id"], id.as_str());
    assert_eq!(deleted["deleted"], true);
    for (method, path) in [
        ("GET", path.clone()),
        ("DELETE", path.clone()),
        ("GET", format!("{path}/input_items")),
        ("POST", format!("{path}/cancel")),
    ] {
        let raw = exchange(sim.addr(), method, &path, "").await;
        assert_eq!(status(&raw), 404, "{method} {path} once deleted: {raw}");
        assert!(body(&raw).contains("not found"), "{raw}");
    }

    // `store: false`: nothing kept.
    let req = r#"{"model":"m","input":"hello","store":false}"#;
    let raw = exchange(sim.addr(), "POST", "/v1/responses", req).await;
    let made: serde_json::Value = serde_json::from_str(body(&raw)).unwrap();
    let raw = exchange(
        sim.addr(),
        "GET",
        &format!("/v1/responses/{}", made["id"].as_str().unwrap()),
        "",
    )
    .await;
    assert_eq!(status(&raw), 404, "{raw}");
}
