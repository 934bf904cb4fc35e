//! The gateway's HTTP server: OpenAI-compatible endpoints over palisade's
//! router, health and metrics, and graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use palisade::{HealthStatus, Registry, RegistryBuilder, Router};
use palisade_core::{BoxError, Elapsed, RejectReason, Rejected};
use palisade_fallback::{AllFailed, AttemptOutcome};
use tower::ServiceExt;

use crate::config::GatewayConfig;
use crate::openai::{ChatHead, ErrorBody};
use crate::sim::{self, SimHandle};
use crate::upstream::{self, ChatRequest, GatewayClassifier, Upstream, UpstreamSettings};
use palisade::bulkhead::OnBodyEnd;

/// The registry type the gateway runs. Its bulkheads hold a call's slot
/// until the answer's body ends ([`OnBodyEnd`]), so a provider's
/// `max_concurrent` caps the streams in progress, not only the calls
/// still waiting for their first token.
pub type GatewayRegistry = Registry<Upstream, GatewayClassifier, OnBodyEnd>;
/// The router type the gateway runs.
pub type GatewayRouter = Router<Upstream, GatewayClassifier, ChatRequest, OnBodyEnd>;

/// Counters the gateway keeps about the answers it gave.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    client_errors: AtomicU64,
    upstream_errors: AtomicU64,
    stream_errors: Arc<AtomicU64>,
}

struct AppState {
    router: GatewayRouter,
    registry: Arc<GatewayRegistry>,
    models: BTreeMap<String, Vec<String>>,
    max_body: usize,
    counters: Counters,
}

/// A gateway ready to serve: its router and registry, the simulated
/// providers it started, and its listener.
pub struct Gateway {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    sims: BTreeMap<String, SimHandle>,
    grace: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.listener.local_addr().ok())
            .field("sims", &self.sims)
            .finish()
    }
}

impl Gateway {
    /// Starts the simulated providers the config asks for, builds the
    /// registry and router, and binds the listener (`listen` overrides the
    /// config's address; port 0 picks a free one).
    pub async fn bind(cfg: GatewayConfig, listen: Option<SocketAddr>) -> Result<Gateway, BoxError> {
        let settings = UpstreamSettings {
            connect_timeout: Duration::from_millis(cfg.gateway.connect_timeout_ms),
            first_token: Duration::from_millis(cfg.gateway.first_token_timeout_ms),
            idle: Duration::from_millis(cfg.gateway.idle_timeout_ms),
        };
        let client = upstream::client(settings.connect_timeout);
        let mut sims = BTreeMap::new();
        let mut upstreams = BTreeMap::new();
        for (id, u) in &cfg.upstreams {
            let base = match &u.simulated {
                Some(faults) => {
                    let sim = sim::spawn(id, faults.clone()).await?;
                    let base = sim.base_url();
                    sims.insert(id.clone(), sim);
                    base
                }
                None => u.base_url.clone().unwrap_or_default(),
            };
            let key = u.api_key_env.as_ref().and_then(|v| std::env::var(v).ok());
            upstreams.insert(
                id.clone(),
                Upstream::new(id, &base, key, u.models.clone(), client.clone(), &settings)?,
            );
        }
        let registry = Arc::new(
            RegistryBuilder::new(&cfg.palisade, GatewayClassifier::default())
                .release_mode(OnBodyEnd)
                .build(|p| upstreams[&p.id].clone())?,
        );
        let router = Router::new(
            registry.clone(),
            Duration::from_millis(cfg.palisade.router.request_timeout_ms),
            GatewayClassifier::default(),
        )?;
        let addr = match listen {
            Some(a) => a,
            None => cfg.gateway.listen.parse()?,
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Gateway {
            state: Arc::new(AppState {
                router,
                registry,
                models: cfg.models(),
                max_body: cfg.gateway.max_body_bytes,
                counters: Counters::default(),
            }),
            listener,
            sims,
            grace: Duration::from_millis(cfg.gateway.shutdown_grace_ms),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The simulated providers it started, by id.
    pub fn sims(&self) -> &BTreeMap<String, SimHandle> {
        &self.sims
    }

    /// The registry (for handles and health).
    pub fn registry(&self) -> Arc<GatewayRegistry> {
        self.state.registry.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish for up to the grace period, and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = app(self.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(());
        });
        let grace = self.grace;
        let deadline = async move {
            if rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            res = server => res,
            _ = deadline => {
                tracing::warn!("shutdown grace period over; dropping requests still in flight");
                Ok(())
            }
        }
    }
}

/// The axum app.
fn app(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, body: ErrorBody) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorBody::new(
            "invalid_request_error",
            Some("not_found"),
            "no such endpoint",
        ),
    )
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let data: Vec<_> = s
        .models
        .iter()
        .map(|(m, providers)| {
            serde_json::json!({"id": m, "object": "model", "owned_by": "palisade", "providers": providers})
        })
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let report = s.registry.health();
    let status = if report.status == HealthStatus::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let mut text = s.registry.health().prometheus_text();
    let c = &s.counters;
    for (name, help, v) in [
        (
            "palisade_gateway_requests_total",
            "Chat completion requests received.",
            &c.requests,
        ),
        (
            "palisade_gateway_ok_total",
            "Requests answered by a provider.",
            &c.ok,
        ),
        (
            "palisade_gateway_client_errors_total",
            "Requests refused as the caller's fault (400/404/413).",
            &c.client_errors,
        ),
        (
            "palisade_gateway_upstream_errors_total",
            "Requests no provider could answer (502/503/504).",
            &c.upstream_errors,
        ),
        (
            "palisade_gateway_stream_errors_total",
            "Streams cut by a timeout after they started.",
            &*c.stream_errors,
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn chat(State(s): State<Arc<AppState>>, req: Request) -> Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    match read_request(&s, req).await {
        Ok(chat) => route(&s, chat).await,
        Err(res) => {
            s.counters.client_errors.fetch_add(1, Ordering::Relaxed);
            res
        }
    }
}

/// Reads and checks the caller's request; a refusal is the response to
/// send.
async fn read_request(s: &AppState, req: Request) -> Result<ChatRequest, Response> {
    let bytes = match Limited::new(req.into_body(), s.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(
                    "invalid_request_error",
                    Some("request_too_large"),
                    format!("the request body is larger than {} bytes", s.max_body),
                ),
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                ErrorBody::new("invalid_request_error", Some("bad_body"), e.to_string()),
            ))
        }
    };
    let bad = |msg: String| {
        error(
            StatusCode::BAD_REQUEST,
            ErrorBody::new("invalid_request_error", Some("invalid_json"), msg),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let not_object = || bad("the body must be a JSON object".into());
    if !value.is_object() {
        return Err(not_object());
    }
    // Read the fields we need from the parsed value by reference: no copy
    // of the caller's (possibly long) messages.
    let head = <ChatHead as serde::Deserialize>::deserialize(&value)
        .map_err(|e| bad(format!("not a chat completion request: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(not_object());
    };
    if !s.models.contains_key(&head.model) {
        return Err(error(
            StatusCode::NOT_FOUND,
            ErrorBody::new(
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "the model {:?} does not exist; GET /v1/models lists the models served",
                    head.model
                ),
            ),
        ));
    }
    Ok(ChatRequest::new(&head.model, map, head.stream))
}

async fn route(s: &AppState, req: ChatRequest) -> Response {
    let stream = req.stream;
    match s.router.clone().oneshot(req).await {
        Ok(res) => {
            if res.status().is_success() {
                s.counters.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                s.counters.client_errors.fetch_add(1, Ordering::Relaxed);
            }
            let (mut parts, body) = res.into_parts();
            parts.extensions.clear();
            let body = if stream && parts.status.is_success() {
                parts.headers.insert(
                    "content-type",
                    HeaderValue::from_static("text/event-stream"),
                );
                Body::new(SseTail::new(body, &s.counters))
            } else {
                Body::new(body)
            };
            Response::from_parts(parts, body)
        }
        Err(e) => {
            s.counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
            upstream_error(&e)
        }
    }
}

/// Maps a routing failure to 502 / 503 / 504 with every provider's error.
fn upstream_error(e: &BoxError) -> Response {
    let mut providers = Vec::new();
    let (status, code) = if let Some(all) = e.downcast_ref::<AllFailed>() {
        for a in all.attempts() {
            providers.push(format!("{}: {}", a.provider, a.outcome));
        }
        let timed_out = all.attempts().iter().any(|a| {
            matches!(a.outcome, AttemptOutcome::DeadlineExceeded)
                || matches!(&a.outcome, AttemptOutcome::Error(e) if e.is::<Elapsed>())
        });
        if timed_out {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
        } else if all.any_called() {
            (StatusCode::BAD_GATEWAY, "upstream_failed")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "no_provider_available")
        }
    } else if e.is::<Elapsed>() {
        (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
    } else if let Some(r) = e.downcast_ref::<Rejected>() {
        match r.reason() {
            RejectReason::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "no_provider_available"),
        }
    } else {
        (StatusCode::BAD_GATEWAY, "upstream_failed")
    };
    let mut body = ErrorBody::new("upstream_error", Some(code), e.to_string());
    body.error.providers = providers;
    error(status, body)
}

pin_project_lite::pin_project! {
    /// A streamed body whose mid-stream failure (an idle or deadline
    /// timeout after tokens were sent) ends with one SSE error event
    /// instead of a cut connection.
    struct SseTail<B> {
        #[pin]
        body: B,
        done: bool,
        errors: Arc<AtomicU64>,
    }
}

impl<B> SseTail<B> {
    fn new(body: B, counters: &Counters) -> Self {
        SseTail {
            body,
            done: false,
            errors: counters.stream_errors.clone(),
        }
    }
}

impl<B> http_body::Body for SseTail<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                this.errors.fetch_add(1, Ordering::Relaxed);
                let err =
                    ErrorBody::new("upstream_error", Some("stream_interrupted"), e.to_string());
                let json = serde_json::to_string(&err).unwrap_or_default();
                *this.done = true;
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(format!(
                    "data: {json}\n\n"
                ))))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}
