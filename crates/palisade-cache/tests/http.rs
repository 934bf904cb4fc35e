//! HTTP answers: a streamed OpenAI answer recorded as it passes, replayed
//! whole or as a stream, marked; answers cut short, failed or refused are
//! never stored. And OpenAI keys, property-tested.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use palisade_cache::{
    stream_to_answer, CacheLayer, CacheSettings, FreshWhen, HttpRecord, Lookup, OpenAiKey,
    CACHE_HEADER,
};
use palisade_core::{BoxError, Served};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tower::{service_fn, Layer, ServiceExt};

type Body = UnsyncBoxBody<Bytes, BoxError>;

const SSE: [&str; 3] = [
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];

/// What the provider does with a request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Stream,
    Status(u16),
    BrokenStream,
    Down,
}

fn request(prompt: &str, stream: bool) -> Map<String, Value> {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
        .as_object()
        .unwrap()
        .clone()
}

fn provider(
    mode: Arc<std::sync::Mutex<Mode>>,
) -> impl tower::Service<
    Map<String, Value>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Map<String, Value>| {
        let mode = *mode.lock().unwrap();
        async move {
            let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = match mode {
                Mode::Down => return Err::<_, BoxError>("every provider failed".into()),
                Mode::BrokenStream => vec![
                    Ok(http_body::Frame::data(Bytes::from(SSE[0]))),
                    Err("connection reset".into()),
                ],
                _ => SSE
                    .iter()
                    .map(|s| Ok(http_body::Frame::data(Bytes::from(*s))))
                    .collect(),
            };
            let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
            let mut res = Response::new(body);
            if let Mode::Status(s) = mode {
                *res.status_mut() = StatusCode::from_u16(s).unwrap();
            }
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            let served = Served::in_response(&mut res);
            served.provider = Some("primary".into());
            served.attempts = 2;
            Ok(res)
        }
    })
}

fn keyer(fresh: bool) -> impl Fn(&Map<String, Value>) -> Option<Lookup> + Clone {
    let keys = OpenAiKey::new().fresh_when(if fresh {
        FreshWhen::Always
    } else {
        FreshWhen::TemperatureZero
    });
    move |body: &Map<String, Value>| Some(keys.lookup("/v1/chat/completions", body))
}

async fn read(res: Response<Body>) -> (http::response::Parts, Result<Bytes, BoxError>) {
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.map(|c| c.to_bytes()))
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_is_recorded_as_it_passes_and_stands_in_whole_or_streamed() {
    let mode = Arc::new(std::sync::Mutex::new(Mode::Stream));
    let cache = CacheLayer::builder::<_, Response<Body>>(HttpRecord::openai())
        .build(keyer(false))
        .unwrap();
    let svc = cache.layer(provider(mode.clone()));

    let (parts, body) = read(svc.clone().oneshot(request("hi", true)).await.unwrap()).await;
    assert_eq!(body.unwrap(), SSE.concat(), "the stream passed untouched");
    assert!(parts.headers.get(CACHE_HEADER).is_none());
    assert_eq!(cache.handle().snapshot().stored, 1);

    *mode.lock().unwrap() = Mode::Down;
    tokio::time::advance(Duration::from_secs(90)).await;
    // Asked whole: the whole answer, marked stale and degraded.
    let (parts, body) = read(svc.clone().oneshot(request("hi", false)).await.unwrap()).await;
    let answer: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(parts.headers[CACHE_HEADER], "stale");
    assert_eq!(parts.headers["x-palisade-degraded"], "stale-cache");
    assert_eq!(parts.headers["age"], "90");
    assert_eq!(parts.headers["content-type"], "application/json");
    let served = parts.extensions.get::<Served>().unwrap();
    assert!(served.degraded);
    assert_eq!(served.provider.as_ref().unwrap().as_str(), "primary");
    assert_eq!(served.attempts, 0, "no call answered this");
    assert!(parts
        .extensions
        .get::<palisade_core::Degraded>()
        .unwrap()
        .reason
        .contains("every provider failed"));
    // Asked as a stream: a stream carrying the same answer.
    let (parts, body) = read(svc.clone().oneshot(request("hi", true)).await.unwrap()).await;
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    let again = stream_to_answer(&body.unwrap()).unwrap();
    assert_eq!(again["choices"][0]["message"]["content"], "Hello");
    assert_eq!(cache.handle().snapshot().stale, 2);
}

#[tokio::test(start_paused = true)]
async fn answers_cut_short_failed_or_refused_are_never_stored() {
    let mode = Arc::new(std::sync::Mutex::new(Mode::BrokenStream));
    let cache = CacheLayer::builder::<_, Response<Body>>(HttpRecord::openai())
        .build(keyer(false))
        .unwrap();
    let svc = cache.layer(provider(mode.clone()));
    let (_, body) = read(svc.clone().oneshot(request("a", true)).await.unwrap()).await;
    assert!(body.is_err(), "the caller sees the break");
    // Read halfway, then dropped.
    *mode.lock().unwrap() = Mode::Stream;
    let res = svc.clone().oneshot(request("b", true)).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    // An error status.
    *mode.lock().unwrap() = Mode::Status(500);
    let (parts, _) = read(svc.clone().oneshot(request("c", true)).await.unwrap()).await;
    assert_eq!(parts.status, 500);
    assert_eq!(cache.handle().snapshot().stored, 0);
    *mode.lock().unwrap() = Mode::Down;
    for p in ["a", "b", "c"] {
        assert!(svc.clone().oneshot(request(p, false)).await.is_err(), "{p}");
    }
}

#[tokio::test(start_paused = true)]
async fn fresh_hits_and_shared_copies_say_so() {
    let mode = Arc::new(std::sync::Mutex::new(Mode::Stream));
    let cache = CacheLayer::builder::<_, Response<Body>>(HttpRecord::openai())
        .settings(CacheSettings {
            fresh: true,
            ..CacheSettings::default()
        })
        .build(keyer(true))
        .unwrap();
    let svc = cache.layer(provider(mode.clone()));
    // Alone: the call's answer passes as sent (this provider streams
    // even when asked for a whole answer), recorded as it passes.
    let (parts, body) = read(svc.clone().oneshot(request("x", false)).await.unwrap()).await;
    assert!(parts.headers.get(CACHE_HEADER).is_none(), "its own call");
    assert_eq!(body.unwrap(), SSE.concat());
    tokio::time::advance(Duration::from_secs(3)).await;
    let (parts, body) = read(svc.clone().oneshot(request("x", false)).await.unwrap()).await;
    assert_eq!(parts.headers[CACHE_HEADER], "hit");
    assert_eq!(parts.headers["age"], "3");
    assert!(parts.headers.get("x-palisade-degraded").is_none());
    // Stored as the whole answer it adds up to.
    let hit: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(hit["choices"][0]["message"]["content"], "Hello");

    // Requests that join a call in flight get copies of the whole answer,
    // marked shared; the one that started it, unmarked.
    let (open, gate) = tokio::sync::watch::channel(false);
    let gated = tower::service_fn(move |_req: Map<String, Value>| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|o| *o).await;
            let body = http_body_util::Full::new(Bytes::from_static(b"{\"choices\":[]}"))
                .map_err(|e: std::convert::Infallible| -> BoxError { match e {} })
                .boxed_unsync();
            let mut res = Response::new(body);
            res.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, BoxError>(res)
        }
    });
    let svc = CacheLayer::builder::<_, Response<Body>>(HttpRecord::openai())
        .build(keyer(false))
        .unwrap()
        .layer(gated);
    let callers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot(request("y", false))))
        .collect();
    tokio::task::yield_now().await;
    open.send_replace(true);
    let mut marks = Vec::new();
    for c in callers {
        let (parts, body) = read(c.await.unwrap().unwrap()).await;
        assert_eq!(body.unwrap(), "{\"choices\":[]}");
        marks.push(
            parts
                .headers
                .get(CACHE_HEADER)
                .map(|v| v.to_str().unwrap().to_owned()),
        );
    }
    marks.sort();
    assert_eq!(marks, [None, Some("shared".into()), Some("shared".into())]);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn the_key_ignores_spelling_and_follows_content(
        fields in prop::collection::btree_map("[a-z]{1,6}", json_value(), 1..6),
        user in "[a-z]{0,5}",
    ) {
        let keys = OpenAiKey::new();
        let body: Map<String, Value> = fields.clone().into_iter().collect();
        let key = keys.lookup("/v1/chat/completions", &body).key;
        // Pretty-printed and parsed again, with a user and a stream flag:
        // the same key.
        let mut respelled: Map<String, Value> =
            serde_json::from_str(&serde_json::to_string_pretty(&body).unwrap()).unwrap();
        respelled.insert("user".into(), Value::from(user));
        respelled.insert("stream".into(), Value::from(true));
        prop_assert_eq!(keys.lookup("/v1/chat/completions", &respelled).key, key);
        // Any field changed (one that is not ignored): another key.
        let (name, _) = fields.iter().find(|(k, _)| !["user", "stream", "stream_options"].contains(&k.as_str())).unwrap();
        let mut changed = body.clone();
        changed.insert(name.clone(), json!({"changed": [name]}));
        if changed != body {
            prop_assert_ne!(keys.lookup("/v1/chat/completions", &changed).key, key);
        }
    }
}

#[test]
fn the_stream_flag_is_known_to_the_lookup() {
    let keys = OpenAiKey::new();
    assert!(keys.lookup("/", &request("x", true)).stream);
    assert!(!keys.lookup("/", &request("x", false)).stream);
}
