//! Simulated OpenAI-compatible providers, served in-process on loopback,
//! with faults that can be changed while they run: errors, latency, 429s
//! with `Retry-After`, outages, hangs, streams that stall, small context
//! windows. The gateway's embedded default runs three of them; tests,
//! examples and the chaos demo use them as upstreams.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_sim::{spawn, Faults};
//!
//! let sim = spawn("flaky", Faults { error_rate: 0.5, ..Faults::default() }).await.unwrap();
//! assert!(sim.base_url().starts_with("http://127.0.0.1:"));
//! sim.set_faults(|f| f.down = true);
//! assert!(sim.faults().down);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a simulated provider does wrong (and how fast it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of requests answered `500`, 0..=1.
    pub error_rate: f64,
    /// Time to the response (or the first token), in ms.
    pub latency_ms: u64,
    /// Up to this much more, at random, in ms.
    pub jitter_ms: u64,
    /// A heavy tail: this share of requests, 0..=1, takes
    /// [`slow_ms`](Self::slow_ms) more before answering (or before the
    /// first token).
    pub slow_rate: f64,
    /// How much longer a slow request takes, in ms.
    pub slow_ms: u64,
    /// Tokens per completion.
    pub tokens: u32,
    /// Time between streamed tokens, in ms.
    pub token_interval_ms: u64,
    /// An outage: every request gets `503`.
    pub down: bool,
    /// Scheduled outages, as `[from_ms, to_ms]` after the provider
    /// started: requests in a window get `503`.
    pub outages: Vec<[u64; 2]>,
    /// Rate limiting: every request gets `429` with `Retry-After` of this
    /// many seconds.
    pub rate_limit_secs: Option<u64>,
    /// Requests are accepted and never answered.
    pub hang: bool,
    /// Streams stop sending (without ending) after this many tokens.
    pub stall_after_tokens: Option<u32>,
    /// Prompts longer than this many characters get `400
    /// context_length_exceeded`.
    pub context_window: Option<usize>,
    /// The provider's own request limit, per minute: enforced (a request
    /// over it gets `429` with `Retry-After`) and published on every
    /// answer in OpenAI's `x-ratelimit-*-requests` headers.
    pub requests_per_minute: Option<u64>,
    /// The provider's own token limit, per minute (a request costs its
    /// prompt's characters / 4 plus the completion's tokens), enforced and
    /// published in `x-ratelimit-*-tokens`.
    pub tokens_per_minute: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            latency_ms: 20,
            jitter_ms: 0,
            slow_rate: 0.0,
            slow_ms: 0,
            tokens: 16,
            token_interval_ms: 10,
            down: false,
            outages: Vec::new(),
            rate_limit_secs: None,
            hang: false,
            stall_after_tokens: None,
            context_window: None,
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }
}

struct SimState {
    name: String,
    started: tokio::time::Instant,
    faults: Mutex<Faults>,
    requests: AtomicU64,
    limits: Mutex<Limits>,
    rate_limited: AtomicU64,
    last_request_id: Mutex<Option<String>>,
}

/// The provider's own limits as OpenAI keeps them: a bucket per unit that
/// refills continuously to its per-minute limit.
#[derive(Default)]
struct Limits {
    requests: Bucket,
    tokens: Bucket,
}

#[derive(Default)]
struct Bucket {
    /// Units used, as of `at` (drains at `limit` per minute).
    used: f64,
    at: Option<tokio::time::Instant>,
}

impl Bucket {
    /// Refills to `now` under `limit` per minute; the units used then.
    fn level(&mut self, limit: u64, now: tokio::time::Instant) -> f64 {
        if let Some(at) = self.at {
            let drained = now.duration_since(at).as_secs_f64() * limit as f64 / 60.0;
            self.used = (self.used - drained).max(0.0);
        }
        self.at = Some(now);
        self.used
    }

    /// What is left, and how long until the bucket is full again.
    fn state(&self, limit: u64) -> (u64, Duration) {
        let left = (limit as f64 - self.used).max(0.0).floor() as u64;
        let reset = Duration::from_secs_f64(self.used * 60.0 / limit as f64);
        (left, reset)
    }

    /// How long until `cost` more fits.
    fn wait(&self, limit: u64, cost: f64) -> Duration {
        let over = self.used + cost - limit as f64;
        Duration::from_secs_f64(over.max(0.0) * 60.0 / limit as f64)
    }
}

/// A duration in OpenAI's reset format: `20ms`, `1.5s`, `6m0s`.
fn reset_format(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1_000)
    }
}

impl SimState {
    /// Spends one request and `tokens` from the provider's limits, or
    /// says how long until they fit (spending nothing); either way the
    /// rate headers to answer with.
    fn spend(
        &self,
        faults: &Faults,
        tokens: u64,
    ) -> (Option<Duration>, Vec<(&'static str, String)>) {
        let now = tokio::time::Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        let units = [
            (faults.requests_per_minute, 1.0, "requests"),
            (faults.tokens_per_minute, tokens as f64, "tokens"),
        ];
        let Limits {
            requests,
            tokens: token_bucket,
        } = &mut *limits;
        let buckets = [requests, token_bucket];
        for (i, (limit, cost, _)) in units.iter().enumerate() {
            if let Some(limit) = limit.filter(|l| *l > 0) {
                buckets[i].level(limit, now);
                wait = wait.max(buckets[i].wait(limit, *cost));
            }
        }
        let refused = !wait.is_zero();
        let mut headers = Vec::new();
        for (i, (limit, cost, unit)) in units.iter().enumerate() {
            if let Some(limit) = limit.filter(|l| *l > 0) {
                if !refused {
                    buckets[i].used += cost;
                }
                let (left, reset) = buckets[i].state(limit);
                let (l, r, t) = match *unit {
                    "requests" => (
                        "x-ratelimit-limit-requests",
                        "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests",
                    ),
                    _ => (
                        "x-ratelimit-limit-tokens",
                        "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens",
                    ),
                };
                headers.push((l, limit.to_string()));
                headers.push((r, left.to_string()));
                headers.push((t, reset_format(reset)));
            }
        }
        (refused.then_some(wait), headers)
    }
}

/// A running simulated provider: its address, and its faults to change.
#[derive(Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("name", &self.state.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its faults now.
    pub fn faults(&self) -> Faults {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes its faults; requests arriving from now on see them.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.faults.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Requests it has received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The `x-request-id` the last chat request carried, if any.
    pub fn last_request_id(&self) -> Option<String> {
        self.state
            .last_request_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests it refused for being over its own
    /// [`requests_per_minute`](Faults::requests_per_minute) or
    /// [`tokens_per_minute`](Faults::tokens_per_minute).
    pub fn rate_limited(&self) -> u64 {
        self.state.rate_limited.load(Ordering::Relaxed)
    }
}

/// Starts a simulated provider named `name` on a free loopback port.
pub async fn spawn(name: &str, faults: Faults) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        name: name.to_owned(),
        started: tokio::time::Instant::now(),
        faults: Mutex::new(faults),
        requests: AtomicU64::new(0),
        limits: Mutex::new(Limits::default()),
        rate_limited: AtomicU64::new(0),
        last_request_id: Mutex::new(None),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SimHandle { addr, state })
}

async fn models(State(s): State<Arc<SimState>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": format!("{}-model", s.name), "object": "model", "owned_by": s.name}],
    }))
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "code": code}});
    (status, axum::Json(body)).into_response()
}

/// The `system_fingerprint` the simulated providers answer with.
pub const SYSTEM_FINGERPRINT: &str = "fp_palisade_sim";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
    Embedding,
}

async fn chat(s: State<Arc<SimState>>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    handle(s, headers, body, Kind::Chat).await
}

async fn completions(
    s: State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, headers, body, Kind::Completion).await
}

async fn embeddings(
    s: State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, headers, body, Kind::Embedding).await
}

/// Any request: remembers the caller's `x-request-id` and answers with one
/// of its own, as OpenAI does; the faults apply to every kind alike.
async fn handle(
    State(s): State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let n = s.requests.fetch_add(1, Ordering::Relaxed) + 1;
    *s.last_request_id.lock().unwrap_or_else(|e| e.into_inner()) = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut res = answer(s, body, kind).await;
    if let Ok(id) = HeaderValue::from_str(&format!("req_sim_{n}")) {
        res.headers_mut().insert("x-request-id", id);
    }
    res
}

/// A deterministic unit vector for `text`: the same text always embeds the
/// same, different texts (almost always) differently.
fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let v: Vec<f32> = (0..dims)
        .map(|i| {
            let mut z = h.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.into_iter().map(|x| x / norm).collect()
}

async fn answer(s: Arc<SimState>, body: Bytes, kind: Kind) -> Response {
    let faults = s.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad_json",
            "not JSON",
        );
    };
    let model = req["model"].as_str().unwrap_or("unknown").to_owned();
    let stream = kind != Kind::Embedding && req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let texts = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let inputs = match kind {
        Kind::Chat => req["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["content"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        Kind::Completion => texts(&req["prompt"]),
        Kind::Embedding => texts(&req["input"]),
    };
    let prompt_len: usize = inputs.iter().map(String::len).sum();
    if faults.hang {
        std::future::pending::<()>().await;
    }
    let since = s.started.elapsed().as_millis() as u64;
    let scheduled = faults
        .outages
        .iter()
        .any(|[from, to]| (*from..*to).contains(&since));
    if faults.down || scheduled {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "the simulated provider is down",
        );
    }
    if let Some(secs) = faults.rate_limit_secs {
        let mut res = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            "slow down",
        );
        res.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        return res;
    }
    if faults.context_window.is_some_and(|w| prompt_len > w) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            "This model's maximum context length was exceeded",
        );
    }
    let (over, rate_headers) = s.spend(&faults, (prompt_len / 4) as u64 + u64::from(faults.tokens));
    let with_rate = move |mut res: Response| {
        for (name, value) in &rate_headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                res.headers_mut().insert(*name, v);
            }
        }
        res
    };
    if let Some(wait) = over {
        s.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut res = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit reached for requests",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert("retry-after", HeaderValue::from(secs.max(1)));
        return with_rate(res);
    }
    let (fail, jitter) = {
        let mut rng = rand::rng();
        let fail = rng.random::<f64>() < faults.error_rate;
        let mut jitter = if faults.jitter_ms > 0 {
            rng.random_range(0..=faults.jitter_ms)
        } else {
            0
        };
        if faults.slow_rate > 0.0 && rng.random::<f64>() < faults.slow_rate {
            jitter += faults.slow_ms;
        }
        (fail, jitter)
    };
    // No wait at all for none (a zero sleep still waits for the timer's
    // next tick, a millisecond).
    if faults.latency_ms + jitter > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms + jitter)).await;
    }
    if fail {
        return with_rate(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
            "the simulated provider failed",
        ));
    }
    if kind == Kind::Embedding {
        let dims = req["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
        let base64 = req["encoding_format"] == "base64";
        let data: Vec<serde_json::Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let v = embed(text, dims);
                let embedding = if base64 {
                    use base64::Engine as _;
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    serde_json::Value::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    )
                } else {
                    serde_json::json!(v)
                };
                serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        return with_rate(
            axum::Json(serde_json::json!({
                "object": "list",
                "data": data,
                "model": model,
                "provider": s.name,
                "usage": {"prompt_tokens": prompt_len / 4, "total_tokens": prompt_len / 4},
            }))
            .into_response(),
        );
    }
    let (prefix, object, chunk_object) = match kind {
        Kind::Completion => ("cmpl", "text_completion", "text_completion"),
        _ => ("chatcmpl", "chat.completion", "chat.completion.chunk"),
    };
    let id = format!("{prefix}-{}", s.requests.load(Ordering::Relaxed));
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let usage = serde_json::json!({
        "prompt_tokens": prompt_len / 4,
        "completion_tokens": faults.tokens,
        "total_tokens": prompt_len / 4 + faults.tokens as usize,
    });
    if !stream {
        let content = (0..faults.tokens)
            .map(|i| format!("tok{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let content = format!("[{}] {content}", s.name);
        let choice = match kind {
            Kind::Completion => {
                serde_json::json!({"index": 0, "text": content, "logprobs": null, "finish_reason": "stop"})
            }
            _ => {
                serde_json::json!({"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": null, "finish_reason": "stop"})
            }
        };
        return with_rate(
            axum::Json(serde_json::json!({
                "id": id,
                "object": object,
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "provider": s.name,
                "choices": [choice],
                "usage": usage,
            }))
            .into_response(),
        );
    }
    let name = s.name.clone();
    let interval = Duration::from_millis(faults.token_interval_ms);
    let total = faults.tokens;
    let stall = faults.stall_after_tokens;
    // The OpenAI stream: a chunk per token (the first with the role), a
    // last chunk with `finish_reason`, a usage chunk (empty `choices`) when
    // `stream_options.include_usage` asked for it (every chunk then carries
    // `"usage": null`), then `[DONE]`. State: frames sent.
    let frames = total + 1 + u32::from(include_usage);
    let stream = futures_util::stream::unfold(0u32, move |n| {
        let (id, model, name, usage) = (id.clone(), model.clone(), name.clone(), usage.clone());
        async move {
            if n > frames {
                return None;
            }
            if stall.is_some_and(|s| n >= s) {
                std::future::pending::<()>().await;
            }
            if n > 0 && n < total && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let chunk = |choices: serde_json::Value| {
                let mut c = serde_json::json!({
                    "id": id, "object": chunk_object, "created": created,
                    "model": model, "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices,
                });
                if include_usage {
                    c["usage"] = serde_json::Value::Null;
                }
                c
            };
            // A chat chunk carries a `delta`, a completion chunk its `text`.
            let piece = |text: Option<String>, finish: Option<&str>| match (kind, text) {
                (Kind::Completion, text) => {
                    serde_json::json!([{"index": 0, "text": text.unwrap_or_default(), "logprobs": null, "finish_reason": finish}])
                }
                (_, Some(text)) if n == 0 => {
                    serde_json::json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}])
                }
                (_, Some(text)) => {
                    serde_json::json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish}])
                }
                (_, None) => {
                    serde_json::json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}])
                }
            };
            let frame = if n < total {
                let text = if n == 0 {
                    format!("[{name}] tok0")
                } else {
                    format!(" tok{n}")
                };
                format!("data: {}\n\n", chunk(piece(Some(text), None)))
            } else if n == total {
                format!("data: {}\n\n", chunk(piece(None, Some("stop"))))
            } else if include_usage && n == total + 1 {
                let mut c = chunk(serde_json::json!([]));
                c["usage"] = usage;
                format!("data: {c}\n\n")
            } else {
                "data: [DONE]\n\n".to_owned()
            };
            Some((Ok::<_, Infallible>(Bytes::from(frame)), n + 1))
        }
    });
    with_rate(
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    )
}
