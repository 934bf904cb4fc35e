//! Simulated OpenAI-compatible providers, served in-process on loopback,
//! with faults that can be changed while they run: errors, latency, 429s
//! with `Retry-After`, outages, hangs, dropped connections, streams that
//! stall or are cut, small context windows, the provider's own rate
//! limits. The gateway's embedded default runs three of them; tests,
//! examples and the chaos demo use them as upstreams.
//!
//! The faults are injected by [`palisade_chaos`], on the provider's side
//! of the socket: [`Faults::chaos`] takes any chaos [`Plan`], and the
//! shorthand fields (`down`, `error_rate`, `rate_limit_secs`, `hang`,
//! `stall_after_tokens`, `slow_rate`) are plans too ([`Faults::plan`]), so
//! a simulated provider and a `ChaosLayer` in a user's stack speak one
//! vocabulary. An injected error is answered as the provider would (its
//! status, an OpenAI error body, `Retry-After`); an injected reset closes
//! the connection without an answer.
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
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use palisade_chaos::{ChaosBody, ChaosHandle, ChaosLayer, StreamFault, Streams};
use palisade_core::{BoxError, FailureKind};
use tower::ServiceExt;
use tower_layer::Layer;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
pub use palisade_chaos::{Delay, Plan};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What a simulated provider does wrong (and how fast it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of requests answered `500`, 0..=1 (shorthand for a chaos
    /// error at that rate).
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
    /// An outage: every request gets `503` (shorthand for a chaos error
    /// at rate 1).
    pub down: bool,
    /// Scheduled outages, as `[from_ms, to_ms]` after the provider
    /// started: requests in a window get `503`.
    pub outages: Vec<[u64; 2]>,
    /// Rate limiting: every request gets `429` with `Retry-After` of this
    /// many seconds (shorthand for a chaos 429 at rate 1).
    pub rate_limit_secs: Option<u64>,
    /// Requests are accepted and never answered (a chaos hang at rate 1).
    pub hang: bool,
    /// Streams stop sending (without ending) after this many frames (a
    /// chaos stall at rate 1; the first frame carries the first token).
    pub stall_after_tokens: Option<u32>,
    /// Prompts longer than this many characters get `400
    /// context_length_exceeded`.
    pub context_window: Option<usize>,
    /// The provider's own request limit, per minute: enforced (a request
    /// over it gets `429` with `Retry-After`) and published on every
    /// answer in OpenAI's `x-ratelimit-*-requests` headers.
    pub requests_per_minute: Option<u64>,
    /// The provider's own token limit, per minute (a request costs its
    /// prompt's tokens, as its `usage` says them: a token for every four
    /// bytes of each text, rounded up, plus the completion's tokens),
    /// enforced and published in `x-ratelimit-*-tokens`.
    pub tokens_per_minute: Option<u64>,
    /// The provider refuses `stream_options` with a `400`, as some
    /// OpenAI-compatible servers do.
    pub refuses_stream_options: bool,
    /// Any other fault, as a chaos [`Plan`] (`chaos = { reset_rate = 0.1 }`
    /// in TOML); the shorthand fields above take precedence where they
    /// say something.
    pub chaos: Plan,
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
            refuses_stream_options: false,
            chaos: Plan::default(),
        }
    }
}

impl Faults {
    /// The chaos plan these faults inject: [`chaos`](Self::chaos) with the
    /// shorthand fields laid over it (`down` is a 503 at rate 1, then
    /// `rate_limit_secs` a 429 at rate 1, then `error_rate` a 500 at that
    /// rate; `hang` a hang at rate 1; `stall_after_tokens` a stall at rate
    /// 1; `slow_rate` a fixed `slow_ms` delay at that rate).
    ///
    /// ```
    /// use palisade_sim::Faults;
    ///
    /// let plan = Faults { down: true, ..Faults::default() }.plan();
    /// assert_eq!((plan.error_rate, plan.error_status), (1.0, Some(503)));
    /// ```
    pub fn plan(&self) -> Plan {
        let mut plan = self.chaos.clone();
        if self.down {
            plan = plan.error(1.0, 503);
            plan.retry_after = None;
        } else if let Some(secs) = self.rate_limit_secs {
            plan = plan.error(1.0, 429).retry_after(Duration::from_secs(secs));
        } else if self.error_rate > 0.0 {
            plan = plan.error(self.error_rate, 500);
            plan.retry_after = None;
        }
        if self.hang {
            plan = plan.hang(1.0);
        }
        if let Some(frames) = self.stall_after_tokens {
            plan = plan.stall(1.0, frames);
        }
        if self.slow_rate > 0.0 {
            plan = plan.latency(
                self.slow_rate,
                Delay::Fixed(Duration::from_millis(self.slow_ms)),
            );
        }
        plan
    }

    /// Every bad value, each named (`simulated.chaos.error_rate`,
    /// `simulated.slow_rate`).
    ///
    /// ```
    /// use palisade_sim::Faults;
    ///
    /// let bad = Faults { error_rate: 2.0, ..Faults::default() };
    /// assert!(bad.check().unwrap_err().to_string().contains("error_rate"));
    /// ```
    pub fn check(&self) -> Result<(), palisade_core::ConfigError> {
        let mut p = palisade_core::Problems::new("simulated");
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("slow_rate", self.slow_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                p.add(name, format!("{rate} is not within [0, 1]"));
            }
        }
        p.finish_with(self.chaos.check().map_err(|e| e.at("simulated")))
    }
}

struct SimState {
    name: String,
    started: tokio::time::Instant,
    faults: Mutex<Faults>,
    /// The chaos layer in front of the routes, set from the faults.
    chaos: ChaosHandle,
    requests: AtomicU64,
    limits: Mutex<Limits>,
    rate_limited: AtomicU64,
    last_request_id: Mutex<Option<String>>,
    /// The last request's `x-request-timeout-ms`, `u64::MAX` for none.
    last_time_left: AtomicU64,
    /// The responses it stored (the Responses API's `store`, on unless
    /// the request says `false`), for the calls that read, list or delete
    /// them.
    stored: Mutex<Stored>,
}

/// Stored responses by id, the oldest forgotten past [`STORED`].
#[derive(Default)]
struct Stored {
    by_id: std::collections::HashMap<String, StoredResponse>,
    order: std::collections::VecDeque<String>,
}

/// A stored response: the whole response object and the request's input
/// texts (its input items).
struct StoredResponse {
    response: serde_json::Value,
    inputs: Vec<String>,
}

/// How many responses a simulated provider keeps.
const STORED: usize = 10_000;

impl Stored {
    fn put(&mut self, id: String, response: StoredResponse) {
        if self.by_id.insert(id.clone(), response).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > STORED {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
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

    /// Changes its faults; requests arriving from now on see them. Faults
    /// that do not [check](Faults::check) are refused, every problem
    /// named, and the faults stay as they were.
    pub fn try_set_faults(
        &self,
        f: impl FnOnce(&mut Faults),
    ) -> Result<(), palisade_core::ConfigError> {
        let mut faults = self.state.faults.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = faults.clone();
        f(&mut next);
        next.check()?;
        let plan = next.plan();
        let on = !plan.is_quiet();
        self.state.chaos.set(plan)?;
        if on {
            self.state.chaos.enable();
        } else {
            self.state.chaos.disable();
        }
        *faults = next;
        Ok(())
    }

    /// Changes its faults, as [`try_set_faults`](Self::try_set_faults);
    /// faults that do not check are logged and left out.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        if let Err(e) = self.try_set_faults(f) {
            tracing::warn!(provider = %self.state.name, error = %e, "simulated faults refused");
        }
    }

    /// The chaos layer in front of it: what it injected so far
    /// ([`snapshot`](ChaosHandle::snapshot)). Its plan follows
    /// [`set_faults`](Self::set_faults); a plan set here directly lasts
    /// until the next.
    pub fn chaos(&self) -> &ChaosHandle {
        &self.state.chaos
    }

    /// Requests it has been sent (every `POST`: chats, completions,
    /// embeddings, those that got an injected fault included; not `GET
    /// /v1/models`).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The time left the last request said it had (its
    /// `x-request-timeout-ms`, as palisade's gateway sends it), if it said.
    pub fn last_time_left(&self) -> Option<std::time::Duration> {
        match self.state.last_time_left.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
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

/// Starts a simulated provider named `name` on a free loopback port;
/// refuses faults that do not [check](Faults::check).
pub async fn spawn(name: &str, faults: Faults) -> std::io::Result<SimHandle> {
    faults
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let plan = faults.plan();
    let on = !plan.is_quiet();
    let chaos = ChaosLayer::builder()
        .name(name)
        .plan(plan)
        .enabled(on)
        .streams(SimStreams)
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        name: name.to_owned(),
        started: tokio::time::Instant::now(),
        faults: Mutex::new(faults),
        chaos: chaos.handle(),
        requests: AtomicU64::new(0),
        limits: Mutex::new(Limits::default()),
        rate_limited: AtomicU64::new(0),
        last_request_id: Mutex::new(None),
        last_time_left: AtomicU64::new(u64::MAX),
        stored: Mutex::new(Stored::default()),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route(
            "/v1/responses/{id}",
            get(stored_response).delete(delete_response),
        )
        .route("/v1/responses/{id}/input_items", get(input_items))
        .route("/v1/responses/{id}/cancel", post(cancel_response))
        .route("/v1/models", get(models))
        .with_state(state.clone());
    tokio::spawn(serve(listener, chaos.layer(app), state.clone()));
    Ok(SimHandle { addr, state })
}

/// The provider's routes behind its chaos layer.
type Stack = palisade_chaos::Chaos<axum::Router, palisade_chaos::Every, SimStreams>;

/// Accepts connections and serves each over HTTP/1.1 until the runtime
/// ends.
async fn serve(listener: tokio::net::TcpListener, stack: Stack, state: Arc<SimState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, most likely: the next accept may work.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (stack, state) = (stack.clone(), state.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                respond(state.clone(), stack.clone(), req.map(Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One request: counted (if it asks for an answer, not the model list),
/// its `x-request-id` remembered, then through the chaos layer to the
/// routes. An injected fault is answered as the provider would; an
/// injected reset is an error, on which the connection is closed with no
/// answer.
async fn respond(
    state: Arc<SimState>,
    stack: Stack,
    req: Request<Body>,
) -> Result<Response, BoxError> {
    let n = if req.method() == axum::http::Method::POST {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        let mut last = state
            .last_request_id
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (id, &mut *last) {
            // Kept in the string the last one was: no allocation a call.
            (Some(id), Some(kept)) => {
                kept.clear();
                kept.push_str(id);
            }
            (id, last) => *last = id.map(str::to_owned),
        }
        drop(last);
        let time_left = req
            .headers()
            .get("x-request-timeout-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(u64::MAX);
        state.last_time_left.store(time_left, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        state.requests.load(Ordering::Relaxed)
    };
    let mut res = match stack.oneshot(req).await {
        Ok(res) => res,
        Err(e) => injected(&e).ok_or(e)?,
    };
    if let Ok(id) = HeaderValue::from_str(&format!("req_sim_{n}")) {
        res.headers_mut().insert("x-request-id", id);
    }
    Ok(res)
}

/// The answer a provider gives for an injected failure; `None` for a
/// reset (no answer at all).
fn injected(e: &BoxError) -> Option<Response> {
    let (status, kind, code, wait) = match palisade_core::classify_error(&**e).kind {
        FailureKind::Connect => return None,
        FailureKind::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            retry_after,
        ),
        FailureKind::Overloaded { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            retry_after,
        ),
        FailureKind::Client(status) => (status, "invalid_request_error", "injected", None),
        FailureKind::Server(status) => (status, "server_error", "internal", None),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
            None,
        ),
    };
    let mut res = error(
        status,
        kind,
        code,
        &format!("the simulated provider failed: {e}"),
    );
    if let Some(wait) = wait {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    Some(res)
}

/// Stream faults on the provider's SSE answers (other answers pass).
#[derive(Debug, Clone, Copy)]
struct SimStreams;

impl Streams<Response> for SimStreams {
    fn enabled(&self) -> bool {
        true
    }

    fn interrupt(&self, res: Response, fault: StreamFault) -> Response {
        let sse = res
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if !sse {
            return res;
        }
        res.map(|body| {
            let body = http_body_util::BodyExt::map_err(body, BoxError::from);
            Body::new(ChaosBody::new(body, fault))
        })
    }
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
    /// OpenAI's Responses API.
    Response,
}

async fn chat(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    answer(s, body, Kind::Chat).await
}

async fn completions(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    answer(s, body, Kind::Completion).await
}

async fn embeddings(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    answer(s, body, Kind::Embedding).await
}

async fn responses(State(s): State<Arc<SimState>>, body: Bytes) -> Response {
    answer(s, body, Kind::Response).await
}

/// 404 for a response this provider does not have, as OpenAI answers.
fn response_not_found(id: &str) -> Response {
    request_error(
        StatusCode::NOT_FOUND,
        &format!("Response with id '{id}' not found."),
    )
}

/// An `invalid_request_error` with no code and no param, as OpenAI
/// answers a call about a stored response it refuses.
fn request_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "invalid_request_error",
        "param": null,
        "code": null,
    }});
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/responses/{id}`: a stored response, whole.
async fn stored_response(
    State(s): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let stored = s.stored.lock().unwrap_or_else(|e| e.into_inner());
    match stored.by_id.get(&id) {
        Some(r) => axum::Json(r.response.clone()).into_response(),
        None => response_not_found(&id),
    }
}

/// `DELETE /v1/responses/{id}`: forgets a stored response.
async fn delete_response(
    State(s): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let mut stored = s.stored.lock().unwrap_or_else(|e| e.into_inner());
    if stored.by_id.remove(&id).is_none() {
        return response_not_found(&id);
    }
    stored.order.retain(|o| *o != id);
    axum::Json(serde_json::json!({"id": id, "object": "response", "deleted": true})).into_response()
}

/// `GET /v1/responses/{id}/input_items`: a stored response's input, as
/// user messages (one page: every item).
async fn input_items(
    State(s): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let stored = s.stored.lock().unwrap_or_else(|e| e.into_inner());
    let Some(r) = stored.by_id.get(&id) else {
        return response_not_found(&id);
    };
    let data: Vec<serde_json::Value> = r
        .inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::json!({
                "id": format!("msg_{id}_{i}"),
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            })
        })
        .collect();
    let first = data.first().map(|d| d["id"].clone());
    let last = data.last().map(|d| d["id"].clone());
    axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": false,
    }))
    .into_response()
}

/// `POST /v1/responses/{id}/cancel`: the simulated provider answers every
/// response at once (none runs in the background), so there is never one
/// to cancel: 400, as OpenAI answers for a response not made with
/// `background: true`; 404 for one it does not have.
async fn cancel_response(
    State(s): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if !s
        .stored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_id
        .contains_key(&id)
    {
        return response_not_found(&id);
    }
    request_error(
        StatusCode::BAD_REQUEST,
        "Cannot cancel a synchronous response.",
    )
}

/// The texts of a Responses API `input`: a string, or a list of items
/// (messages whose `content` is a string or a list of parts with `text`;
/// plain strings too).
fn response_texts(input: &serde_json::Value) -> Vec<String> {
    let mut texts = Vec::new();
    let mut content = |c: &serde_json::Value| match c {
        serde_json::Value::String(t) => texts.push(t.clone()),
        serde_json::Value::Array(parts) => texts.extend(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str().map(str::to_owned)),
        ),
        _ => {}
    };
    match input {
        serde_json::Value::Array(items) => {
            for item in items {
                match item {
                    serde_json::Value::String(_) => content(item),
                    _ => content(&item["content"]),
                }
            }
        }
        other => content(other),
    }
    texts
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
    if faults.refuses_stream_options && req.get("stream_options").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unrecognized_argument",
            "Unrecognized request argument supplied: stream_options",
        );
    }
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
        Kind::Response => {
            let mut t = response_texts(&req["input"]);
            t.extend(req["instructions"].as_str().map(str::to_owned));
            t
        }
    };
    let prompt_len: usize = inputs.iter().map(String::len).sum();
    // About four bytes a token, and a text that is there is at least one:
    // "hi" is not a free prompt.
    let prompt_tokens: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
    let since = s.started.elapsed().as_millis() as u64;
    let scheduled = faults
        .outages
        .iter()
        .any(|[from, to]| (*from..*to).contains(&since));
    if scheduled {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "the simulated provider is down",
        );
    }
    if faults.context_window.is_some_and(|w| prompt_len > w) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            "This model's maximum context length was exceeded",
        );
    }
    let (over, rate_headers) = s.spend(&faults, prompt_tokens as u64 + u64::from(faults.tokens));
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
    let jitter = if faults.jitter_ms > 0 {
        rand::rng().random_range(0..=faults.jitter_ms)
    } else {
        0
    };
    // No wait at all for none (a zero sleep still waits for the timer's
    // next tick, a millisecond).
    if faults.latency_ms + jitter > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms + jitter)).await;
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
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }))
            .into_response(),
        );
    }
    if kind == Kind::Response {
        // A response continued here must be one this provider stored: its
        // ids name it (`resp_<provider>_<n>`), as a real provider knows
        // its own.
        if let Some(previous) = req["previous_response_id"].as_str() {
            if !previous.starts_with(&format!("resp_{}_", s.name)) {
                return with_rate(error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "previous_response_not_found",
                    &format!("Previous response with id '{previous}' not found."),
                ));
            }
        }
        let answer = ResponseAnswer {
            n: s.requests.load(Ordering::Relaxed),
            name: s.name.clone(),
            model,
            req: &req,
            prompt_tokens,
            tokens: faults.tokens,
        };
        let whole = answer.whole();
        if req["store"].as_bool() != Some(false) {
            // Kept whole, as it is once done (a stream's too).
            let id = whole["id"].as_str().unwrap_or_default().to_owned();
            let inputs = response_texts(&req["input"]);
            let response = whole.clone();
            s.stored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .put(id, StoredResponse { response, inputs });
        }
        let res = if stream {
            answer.stream(Duration::from_millis(faults.token_interval_ms))
        } else {
            axum::Json(whole).into_response()
        };
        return with_rate(res);
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
        "prompt_tokens": prompt_tokens,
        "completion_tokens": faults.tokens,
        "total_tokens": prompt_tokens + faults.tokens as usize,
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

/// An answer of the Responses API: one message of `tokens` tokens, whole
/// or as the API streams it.
struct ResponseAnswer<'a> {
    n: u64,
    name: String,
    model: String,
    req: &'a serde_json::Value,
    prompt_tokens: usize,
    tokens: u32,
}

impl ResponseAnswer<'_> {
    fn text(&self) -> String {
        let words: Vec<String> = (0..self.tokens).map(|i| format!("tok{i}")).collect();
        format!("[{}] {}", self.name, words.join(" "))
    }

    /// The output message, `completed` with `text` or `in_progress` and
    /// empty.
    fn message(&self, text: Option<&str>) -> serde_json::Value {
        let content = match text {
            Some(t) => serde_json::json!([{"type": "output_text", "text": t, "annotations": []}]),
            None => serde_json::json!([]),
        };
        serde_json::json!({
            "type": "message", "id": format!("msg_{}", self.n),
            "status": if text.is_some() { "completed" } else { "in_progress" },
            "role": "assistant", "content": content,
        })
    }

    /// The response object: `completed` with its output and usage, or
    /// `in_progress` with neither (a stream's first events).
    fn response(&self, done: bool) -> serde_json::Value {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (output, usage) = if done {
            let prompt = self.prompt_tokens;
            let completion = self.tokens as usize;
            (
                serde_json::json!([self.message(Some(&self.text()))]),
                serde_json::json!({
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": completion,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": prompt + completion,
                }),
            )
        } else {
            (serde_json::json!([]), serde_json::Value::Null)
        };
        let req = self.req;
        serde_json::json!({
            "id": format!("resp_{}_{}", self.name, self.n),
            "object": "response",
            "created_at": created,
            "status": if done { "completed" } else { "in_progress" },
            "error": null,
            "incomplete_details": null,
            "instructions": req["instructions"],
            "max_output_tokens": req["max_output_tokens"],
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": req["previous_response_id"],
            "provider": self.name,
            "store": req["store"].as_bool().unwrap_or(true),
            "temperature": req["temperature"].as_f64().unwrap_or(1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": req["top_p"].as_f64().unwrap_or(1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    }

    fn whole(&self) -> serde_json::Value {
        self.response(true)
    }

    /// The events of a streamed response, each `event:` line before its
    /// `data:`, numbered: created, in progress, the message and its text
    /// part added, a delta per token (one every `interval` after the
    /// first), the text, part and message done, completed (with usage).
    fn stream(&self, interval: Duration) -> Response {
        let item = format!("msg_{}", self.n);
        let text = self.text();
        let mut before: Vec<serde_json::Value> = vec![
            serde_json::json!({"type": "response.created", "response": self.response(false)}),
            serde_json::json!({"type": "response.in_progress", "response": self.response(false)}),
            serde_json::json!({"type": "response.output_item.added", "output_index": 0, "item": self.message(None)}),
            serde_json::json!({"type": "response.content_part.added", "item_id": item, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
        ];
        let deltas: Vec<serde_json::Value> = (0..self.tokens)
            .map(|i| {
                let delta = if i == 0 {
                    format!("[{}] tok0", self.name)
                } else {
                    format!(" tok{i}")
                };
                serde_json::json!({"type": "response.output_text.delta", "item_id": item, "output_index": 0,
                    "content_index": 0, "delta": delta, "logprobs": []})
            })
            .collect();
        let after = [
            serde_json::json!({"type": "response.output_text.done", "item_id": item, "output_index": 0,
                "content_index": 0, "text": text, "logprobs": []}),
            serde_json::json!({"type": "response.content_part.done", "item_id": item, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": []}}),
            serde_json::json!({"type": "response.output_item.done", "output_index": 0, "item": self.message(Some(&text))}),
            serde_json::json!({"type": "response.completed", "response": self.response(true)}),
        ];
        // Those before the first delta and the first delta go at once.
        let first_wait = before.len() + 1;
        before.extend(deltas);
        before.extend(after);
        let events: Vec<Bytes> = before
            .into_iter()
            .enumerate()
            .map(|(seq, mut e)| {
                e["sequence_number"] = serde_json::json!(seq);
                let kind = e["type"].as_str().unwrap_or_default().to_owned();
                Bytes::from(format!("event: {kind}\ndata: {e}\n\n"))
            })
            .collect();
        let deltas_end = first_wait + self.tokens.saturating_sub(1) as usize;
        let stream = futures_util::stream::unfold(0usize, move |i| {
            let event = events.get(i).cloned();
            async move {
                let event = event?;
                if (first_wait..deltas_end).contains(&i) && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                Some((Ok::<_, Infallible>(event), i + 1))
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}
