//! Batching on tokio's paused clock: many callers, few calls, each its own
//! answer in order; delays, deadlines, failures and callers that go away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_batch::{BatchLayer, BatchSettings, OpenAiEmbeddings};
use palisade_core::{BoxError, Deadline, SharedError, WithDeadline};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = WithDeadline<Value>;

/// An embeddings API that answers after `latency`: each text's vector is
/// `[its length, its first byte]`; records the inputs of every call; fails
/// while `fail` is set.
#[derive(Clone, Default)]
struct Api {
    calls: Arc<Mutex<Vec<usize>>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    latency: Duration,
}

impl Api {
    fn service(
        &self,
    ) -> impl Service<Req, Response = Value, Error = BoxError, Future = impl Send> + Clone {
        let this = self.clone();
        service_fn(move |req: Req| {
            let this = this.clone();
            async move {
                let inputs: Vec<String> = match &req.get_ref()["input"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
                    _ => vec![],
                };
                this.calls.lock().unwrap().push(inputs.len());
                tokio::time::sleep(this.latency).await;
                if this.fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err::<Value, BoxError>("upstream 503".into());
                }
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len(), t.as_bytes()[0]]}))
                    .collect();
                let n = inputs.len();
                Ok(
                    json!({"object": "list", "model": "e", "data": data, "usage": {"prompt_tokens": n, "total_tokens": n}}),
                )
            }
        })
    }

    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

fn embed(text: &str) -> Req {
    WithDeadline::new(json!({"model": "e", "input": text}))
}

fn settings(max_items: usize, max_delay_ms: u64) -> BatchSettings {
    BatchSettings {
        max_items,
        max_delay_ms,
        ..BatchSettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_distinct_requests_make_at_most_sixteen_calls_each_caller_its_own_vector() {
    let api = Api::default();
    let layer = BatchLayer::new(OpenAiEmbeddings, settings(64, 20)).unwrap();
    let svc = layer.layer(api.service());
    let start = Instant::now();
    let callers: Vec<_> = (0..1_000)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let text = format!("{}text {i}", (b'a' + (i % 26) as u8) as char);
                let t0 = Instant::now();
                let out = svc.oneshot(embed(&text)).await.unwrap();
                (text, out, t0.elapsed())
            })
        })
        .collect();
    let mut waits = Vec::new();
    for c in callers {
        let (text, out, waited) = c.await.unwrap();
        let data = out["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{out}");
        assert_eq!(data[0]["index"], 0);
        assert_eq!(
            data[0]["embedding"],
            json!([text.len(), text.as_bytes()[0]]),
            "{text}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 1);
        waits.push(waited);
    }
    let calls = api.calls();
    assert!(calls.len() <= 16, "{} calls: {calls:?}", calls.len());
    assert_eq!(calls.iter().sum::<usize>(), 1_000);
    assert!(calls.iter().all(|&n| n <= 64));
    waits.sort();
    let p99 = waits[989];
    assert!(p99 <= Duration::from_millis(20), "p99 added delay {p99:?}");
    let snap = layer.handle().snapshot();
    assert_eq!(
        (snap.batches as usize, snap.requests, snap.largest),
        (calls.len(), 1_000, 64)
    );
    println!(
        "| 1 000 distinct embeddings, max_items 64 | {} upstream calls | p99 added delay {:?} | {:?} in all |",
        calls.len(),
        p99,
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_alone_waits_max_delay_and_is_sent_as_it_is() {
    let api = Api::default();
    let svc = BatchLayer::new(OpenAiEmbeddings, settings(64, 25))
        .unwrap()
        .layer(api.service());
    let t0 = Instant::now();
    let out = svc
        .oneshot(WithDeadline::new(
            json!({"model": "e", "input": ["a", "bb"]}),
        ))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(25));
    assert_eq!(out["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["usage"]["prompt_tokens"], 2,
        "its own answer, untouched"
    );
    assert_eq!(api.calls(), [2]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_reaches_every_caller_of_its_batch() {
    let api = Api::default();
    api.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let layer = BatchLayer::new(OpenAiEmbeddings, settings(64, 10)).unwrap();
    let svc = layer.layer(api.service());
    let callers: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(embed(&format!("t{i}")))))
        .collect();
    for c in callers {
        let err = c.await.unwrap().unwrap_err();
        assert!(err.is::<SharedError>());
        assert_eq!(SharedError::original(&*err).to_string(), "upstream 503");
    }
    assert_eq!(api.calls(), [5]);
    assert_eq!(layer.handle().snapshot().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_is_left_out_of_its_batch() {
    let api = Api::default();
    let layer = BatchLayer::new(OpenAiEmbeddings, settings(64, 50)).unwrap();
    let svc = layer.layer(api.service());
    let stay = tokio::spawn(svc.clone().oneshot(embed("stay")));
    let leave = tokio::spawn(svc.clone().oneshot(embed("leave")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    leave.abort();
    let out = stay.await.unwrap().unwrap();
    assert_eq!(out["data"][0]["embedding"], json!([4, b's']));
    assert_eq!(api.calls(), [1], "only the caller still waiting was sent");
    assert_eq!(layer.handle().snapshot().gone, 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_sent_early_when_a_deadline_calls_for_it() {
    let api = Api::default();
    let layer = BatchLayer::new(
        OpenAiEmbeddings,
        BatchSettings {
            max_delay_ms: 1_000,
            deadline_margin_ms: 200,
            ..BatchSettings::default()
        },
    )
    .unwrap();
    let svc = layer.layer(api.service());
    let t0 = Instant::now();
    let patient = tokio::spawn(svc.clone().oneshot(embed("patient")));
    let hurried = WithDeadline::with(
        json!({"model": "e", "input": "hurried"}),
        Deadline::after(Duration::from_millis(300)),
    );
    let hurried = tokio::spawn(svc.clone().oneshot(hurried));
    hurried.await.unwrap().unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(100),
        "300 ms deadline - 200 ms margin"
    );
    patient.await.unwrap().unwrap();
    assert_eq!(api.calls(), [2], "both went in the early batch");
}

#[tokio::test(start_paused = true)]
async fn batches_hold_at_most_max_items_and_max_tokens() {
    let api = Api::default();
    let layer = BatchLayer::new(
        OpenAiEmbeddings,
        BatchSettings {
            max_items: 3,
            max_tokens: 1_000,
            ..BatchSettings::default()
        },
    )
    .unwrap();
    let svc = layer.layer(api.service());
    let mut callers: Vec<_> = (0..7)
        .map(|i| tokio::spawn(svc.clone().oneshot(embed(&format!("x{i}")))))
        .collect();
    // Two texts of ~600 tokens each cannot share a call.
    let long = "y".repeat(2_400);
    callers.push(tokio::spawn(svc.clone().oneshot(embed(&long))));
    callers.push(tokio::spawn(svc.clone().oneshot(embed(&long))));
    for c in callers {
        c.await.unwrap().unwrap();
    }
    let calls = api.calls();
    assert!(calls.iter().all(|&n| n <= 3), "{calls:?}");
    assert_eq!(calls.iter().sum::<usize>(), 9);
    assert!(calls.len() >= 4, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn requests_of_other_models_or_without_input_are_not_mixed() {
    let api = Api::default();
    let layer = BatchLayer::new(OpenAiEmbeddings, settings(64, 10)).unwrap();
    let svc = layer.layer(api.service());
    let a = tokio::spawn(
        svc.clone()
            .oneshot(WithDeadline::new(json!({"model": "e", "input": "aa"}))),
    );
    let b = tokio::spawn(
        svc.clone()
            .oneshot(WithDeadline::new(json!({"model": "f", "input": "bb"}))),
    );
    let odd = tokio::spawn(svc.clone().oneshot(WithDeadline::new(
        json!({"model": "e", "input": {"not": "valid"}}),
    )));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    odd.await.unwrap().unwrap();
    let mut calls = api.calls();
    calls.sort();
    assert_eq!(
        calls,
        [0, 1, 1],
        "one call per model, the odd one passed as it is"
    );
    assert_eq!(layer.handle().snapshot().passed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_worker_idle_for_long_ends_and_the_next_request_gets_a_new_one() {
    let api = Api::default();
    let svc = BatchLayer::new(OpenAiEmbeddings, settings(64, 5))
        .unwrap()
        .layer(api.service());
    svc.clone().oneshot(embed("first")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(45)).await;
    svc.clone().oneshot(embed("again")).await.unwrap();
    assert_eq!(api.calls(), [1, 1]);
}

#[test]
fn bad_settings_are_refused_each_named() {
    let err = BatchLayer::<_, Req>::new(
        OpenAiEmbeddings,
        BatchSettings {
            max_items: 0,
            max_tokens: 0,
            max_delay_ms: 90_000,
            ..BatchSettings::default()
        },
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["batch.max_delay_ms", "batch.max_items", "batch.max_tokens"]
    );
}

#[tokio::test(start_paused = true)]
async fn with_no_delay_what_is_queued_goes_at_once() {
    let api = Api::default();
    let svc = BatchLayer::new(OpenAiEmbeddings, settings(64, 0))
        .unwrap()
        .layer(api.service());
    let t0 = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|i| tokio::spawn(svc.clone().oneshot(embed(&format!("t{i}")))))
        .collect();
    for c in callers {
        c.await.unwrap().unwrap();
    }
    assert_eq!(t0.elapsed(), Duration::ZERO, "no wait at all");
    assert_eq!(api.calls().iter().sum::<usize>(), 10);
    assert!(
        api.calls().len() < 10,
        "those queued together went together: {:?}",
        api.calls()
    );
}
