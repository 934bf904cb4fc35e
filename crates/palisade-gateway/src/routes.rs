//! The HTTP routes: OpenAI's chat completions, completions, embeddings
//! and models, health, and metrics.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderName;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::Limited;
use palisade::HealthStatus;
use palisade_core::{Deadline, HasDeadline, ProviderId, Served};
use palisade_deadline::TimeoutHeader;

use crate::upstream::TIMEOUT_HEADER;
use tower::ServiceExt;
use tracing::{Instrument, Span};

use crate::errors::{error, not_found, upstream_error};
use crate::openai::{ErrorBody, RequestHead};
use crate::sse::SseTail;
use crate::state::AppState;
use crate::upstream::{ChatRequest, Endpoint};

/// What `POST /admin/reload` needs: the reloader and the file to read.
#[derive(Clone)]
pub(crate) struct AdminReload {
    pub(crate) reloader: crate::Reloader,
    pub(crate) file: Option<std::path::PathBuf>,
}

/// The axum app.
pub(crate) fn app(state: Arc<AppState>, reload: AdminReload) -> axum::Router {
    axum::Router::new()
        .route(
            "/admin/reload",
            post(move |s: State<Arc<AppState>>, headers: http::HeaderMap| {
                admin_reload(s, headers, reload.clone())
            }),
        )
        .route(Endpoint::Chat.path(), post(chat))
        .route(Endpoint::Completions.path(), post(completions))
        .route(Endpoint::Embeddings.path(), post(embeddings))
        .route(Endpoint::Responses.path(), post(responses))
        .route(
            "/v1/responses/{id}",
            get(crate::stored::call).delete(crate::stored::call),
        )
        .route("/v1/responses/{id}/input_items", get(crate::stored::call))
        .route("/v1/responses/{id}/cancel", post(crate::stored::call))
        .route("/v1/models", get(models))
        .route("/v1/models/{*model}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/admin/chaos", get(crate::chaos::list))
        .route("/admin/chaos/{provider}", post(crate::chaos::set))
        .fallback(not_found)
        .with_state(state)
}

async fn models(State(s): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    let key = match s.client(&headers) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    // A key with an allow-list sees only its models.
    let models = s.models.load();
    let data: Vec<_> = models
        .iter()
        .filter(|(m, _)| key.as_ref().is_none_or(|k| k.allows(m)))
        .map(|(m, providers)| model_entry(&s, m, providers))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// A model as `GET /v1/models` lists it and `GET /v1/models/{model}` gives
/// it: OpenAI's model object, with the providers that serve it.
fn model_entry(s: &AppState, model: &str, providers: &impl serde::Serialize) -> serde_json::Value {
    serde_json::json!({"id": model, "object": "model", "created": s.started, "owned_by": "palisade", "providers": providers})
}

/// `GET /v1/models/{model}` (the SDKs' `models.retrieve`): the model, or
/// a 404 in OpenAI's form for one the gateway does not serve or the
/// caller's key may not use.
async fn model(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: http::HeaderMap,
) -> Response {
    let key = match s.client(&headers) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    let models = s.models.load();
    match models
        .get_key_value(name.as_str())
        .filter(|(m, _)| key.as_ref().is_none_or(|k| k.allows(m)))
    {
        Some((m, providers)) => axum::Json(model_entry(&s, m, providers)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            ErrorBody::new(
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "the model {name:?} does not exist; GET /v1/models lists the models served"
                ),
            ),
        ),
    }
}

async fn health(State(s): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    if let Err(refused) = s.admin(&headers) {
        return refused.into_response();
    }
    let report = s.registry.health();
    let critical = report.status == HealthStatus::Critical;
    // The registry's report, with the gateway's last minute beside it; a
    // gateway shedding more than SHED_DEGRADED of its requests is at least
    // degraded, whatever its providers' layers say.
    let (recent, shedding) = s.recent.report();
    let mut json = serde_json::to_value(&report).unwrap_or_default();
    if shedding && report.status < HealthStatus::Degraded {
        json["status"] = serde_json::to_value(HealthStatus::Degraded).unwrap_or_default();
        if let Some(r) = json["recommendations"].as_array_mut() {
            r.push(serde_json::Value::String(format!(
                "the gateway refused {:.0}% of its requests over the last minute (429/503): add capacity or providers, or raise the limits",
                recent["shed_share"].as_f64().unwrap_or(0.0) * 100.0
            )));
        }
    }
    json["gateway"] = recent;
    if let Some(fleet) = &s.fleet {
        let view = fleet.snapshot();
        if !view.connected {
            if let Some(r) = json["recommendations"].as_array_mut() {
                r.push(serde_json::Value::String(format!(
                    "the fleet's Redis does not answer: this gateway limits alone on 1/{} of each quota and its breakers act alone; it rejoins when Redis answers",
                    view.replicas
                )));
            }
        }
        json["fleet"] = serde_json::to_value(view).unwrap_or_default();
    }
    if let Some(cache) = &s.cache {
        json["cache"] = serde_json::to_value(cache.snapshot()).unwrap_or_default();
    }
    if let Some(batch) = &s.batch {
        json["batch"] = serde_json::to_value(batch.snapshot()).unwrap_or_default();
    }
    let status = if critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(json)).into_response()
}

/// `POST /admin/reload`: the config file read again and applied, as on
/// SIGHUP; 200 with what happened to each provider, 400 with why not.
async fn admin_reload(
    State(s): State<Arc<AppState>>,
    headers: http::HeaderMap,
    reload: AdminReload,
) -> Response {
    if let Err(refused) = s.admin(&headers) {
        return refused.into_response();
    }
    let Some(file) = &reload.file else {
        let body = serde_json::json!({
            "reloaded": false,
            "error": "the gateway runs its embedded config: there is no file to reload",
        });
        return (StatusCode::CONFLICT, axum::Json(body)).into_response();
    };
    match reload.reloader.reload_file(file).await {
        Ok(done) => {
            tracing::info!(
                kept = ?done.kept, replaced = ?done.replaced, added = ?done.added, removed = ?done.removed,
                "admin: {} reloaded", file.display()
            );
            let ids = |v: &[palisade_core::ProviderId]| {
                v.iter().map(|p| p.as_str().to_string()).collect::<Vec<_>>()
            };
            axum::Json(serde_json::json!({
                "reloaded": true,
                "kept": ids(&done.kept),
                "replaced": ids(&done.replaced),
                "added": ids(&done.added),
                "removed": ids(&done.removed),
            }))
            .into_response()
        }
        Err(e) => {
            tracing::warn!("admin reload refused: {e}");
            let body = serde_json::json!({"reloaded": false, "error": e.to_string()});
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
    }
}

async fn chat(State(s): State<Arc<AppState>>, req: Request) -> Response {
    serve(s, req, Endpoint::Chat).await
}

async fn completions(State(s): State<Arc<AppState>>, req: Request) -> Response {
    serve(s, req, Endpoint::Completions).await
}

async fn embeddings(State(s): State<Arc<AppState>>, req: Request) -> Response {
    serve(s, req, Endpoint::Embeddings).await
}

async fn responses(State(s): State<Arc<AppState>>, req: Request) -> Response {
    serve(s, req, Endpoint::Responses).await
}

/// The model endpoint a request is for, when it is a `POST` to one: the
/// server answers those itself (see [`serve`]), everything else through
/// the axum app, whose routes for them are the same.
pub(crate) fn model_endpoint<B>(req: &http::Request<B>) -> Option<Endpoint> {
    if req.method() != http::Method::POST {
        return None;
    }
    let path = req.uri().path();
    Endpoint::ALL.into_iter().find(|e| e.path() == path)
}

/// Any of the model endpoints: read and check the request, route it
/// through palisade, answer with the request's id and log it. The server
/// calls it directly for a `POST` to one (see [`model_endpoint`]): the
/// axum app's routing, extractors and boxing spared on every request.
///
/// The whole of it runs in the request's span: every event of the layers
/// below, for every provider called, is in it (and with traces on, every
/// attempt's span under it). The span is made here, before the future: the
/// future is one state machine in that span rather than an inner one moved
/// into an outer (each move a copy of a few KiB). The server makes the
/// future itself ([`start`], then [`serve_started`] made in its box).
pub(crate) fn serve(
    s: Arc<AppState>,
    req: Request,
    endpoint: Endpoint,
) -> tracing::instrument::Instrumented<impl std::future::Future<Output = Response>> {
    let started = start(&s, &req, endpoint);
    let span = started.span.clone();
    serve_started(s, req, endpoint, started).instrument(span)
}

/// A request's start: counted, its headers scanned, its id and span made.
pub(crate) fn start(s: &AppState, req: &Request, endpoint: Endpoint) -> Started {
    s.counters.requests.add(1);
    let asked = Asked::scan(req.headers());
    let id = asked.request_id();
    let (span, trace) = crate::traces::request_span(
        id.to_str().unwrap_or_default(),
        endpoint,
        req.headers(),
        asked.traceparent,
    );
    Started {
        id,
        span,
        trace,
        asked: (asked.timeout(), asked.hedge()),
        at: palisade_core::clock::now(),
    }
}

/// What [`serve`] knows of a request before reading it.
pub(crate) struct Started {
    id: HeaderValue,
    /// The request's span, which [`serve_started`]'s future is to run in.
    pub(crate) span: Span,
    trace: crate::traces::RequestTrace,
    /// The caller's timeout and hedge mark.
    asked: (Option<std::time::Duration>, Option<bool>),
    at: tokio::time::Instant,
}

/// [`serve`]'s work once [`start`]ed, to be run in `started.span`.
pub(crate) async fn serve_started(
    s: Arc<AppState>,
    req: Request,
    endpoint: Endpoint,
    started: Started,
) -> Response {
    let Started {
        id,
        span,
        trace,
        asked,
        at: started,
    } = started;
    let attempts = trace.clone();
    let mut seen = Seen::default();
    let mut res = 'answered: {
        let key = match s.client(req.headers()) {
            Ok(k) => k,
            Err(refused) => {
                s.counters.client_errors.add(1);
                break 'answered refused.into_response();
            }
        };
        seen.key = key.as_ref().map(|k| k.id.clone());
        match read_request(&s, req, endpoint, key.as_deref(), asked, started).await {
            Ok(mut chat) => {
                seen.model = Some(chat.model.clone());
                seen.stream = chat.stream;
                seen.hide_usage = chat.usage_unasked();
                crate::traces::record_request(&span, &chat.model);
                chat.client = seen.key.clone();
                chat.request_id = Some(id.clone());
                chat.trace = trace;
                route(&s, chat).await
            }
            Err(res) => {
                s.counters.client_errors.add(1);
                res
            }
        }
    };
    // One clock read for the request's time and the window it counts in
    // (the poll's: see rewake.rs).
    let ended = palisade_core::clock::now();
    let took = ended.saturating_duration_since(started);
    // The line's fields are read only when the line is written.
    let logged = tracing::enabled!(target: "palisade_gateway::access", tracing::Level::INFO);
    if seen.stream && res.status().is_success() {
        // A stream's line is written when it ends: its whole time and its
        // usage (the usage chunk) are known then; its tokens are counted
        // then too.
        let head = logged.then(|| access_head(&res, &seen, &span, took).owned());
        // A stand-in (a stale cached stream) used no provider's tokens, nor
        // did a cache hit or a copy of another caller's call: each call's
        // tokens are counted once, with the caller that made it.
        let answered_by = res
            .extensions()
            .get::<Served>()
            .and_then(|served| served.provider.as_ref())
            .filter(|_| {
                !res.headers().contains_key(DEGRADED)
                    && !res.headers().contains_key(palisade_cache::CACHE_HEADER)
            });
        let on_usage = answered_by.cloned().map(|p| {
            let (metrics, model) = (s.requests.clone(), seen.model.clone());
            Box::new(move |used| metrics.record_tokens(&p, model.as_ref(), used))
                as crate::tail::OnUsage
        });
        // The token limits that charged the call settle when it ends.
        let later = res.extensions().get::<palisade_core::UsageLater>().cloned();
        // A streamed response is remembered with the provider that stored
        // it, as a whole one is (see `remember_response`).
        let on_id = answered_by
            .filter(|_| endpoint == Endpoint::Responses)
            .cloned()
            .map(|p| {
                let s = s.clone();
                let owner = seen.key.clone();
                Box::new(move |id: String| s.affinity.stored(&id, &p, owner.clone()))
                    as crate::tail::OnId
            });
        // The tail inside, so it sees a failure as the failure it is; the
        // caller sees it as one SSE event.
        res = res.map(|body| {
            let body = if head.is_some()
                || on_usage.is_some()
                || later.is_some()
                || seen.hide_usage
                || on_id.is_some()
            {
                Body::new(
                    crate::tail::Tail::new(body, head, span.clone(), started, on_usage)
                        .report_to(later)
                        .hiding_usage(seen.hide_usage)
                        .on_response_id(on_id),
                )
            } else {
                body
            };
            Body::new(SseTail::new(
                body,
                &s.counters,
                endpoint == Endpoint::Responses,
            ))
        });
    } else if logged {
        let used = res
            .extensions()
            .get::<crate::upstream::Usage>()
            .copied()
            .unwrap_or_default();
        let head = access_head(&res, &seen, &span, took);
        span.in_scope(|| crate::tail::write(&head, used, took, "whole"));
    }
    if crate::traces::on() {
        trace_answer(&span, &res, attempts.attempts());
    }
    s.requests
        .record(&res, seen.model.as_ref(), seen.stream, took);
    let failover = failed_over(&res);
    s.recent
        .record(ended, res.status().as_u16(), failover, took, seen.stream);
    answer_ids(res.headers_mut(), id, s.served_headers);
    res
}

/// Puts the request's id on its answer as `x-request-id`. The provider's
/// own id for the call (OpenAI sends one), there under that name, is
/// kept under another, `x-upstream-request-id`, when `keep_theirs`
/// (`served_headers`), else dropped: one lookup of the name does both.
fn answer_ids(headers: &mut http::HeaderMap, id: HeaderValue, keep_theirs: bool) {
    match headers.entry(REQUEST_ID_HEADER) {
        http::header::Entry::Occupied(mut theirs) => {
            let theirs = theirs.insert(id);
            if keep_theirs {
                headers.insert(UPSTREAM_REQUEST_ID_HEADER, theirs);
            }
        }
        http::header::Entry::Vacant(none) => {
            none.insert(id);
        }
    }
}

/// Whether another provider answered than the first asked (as
/// `x-palisade-fallbacks` says, read where it was written from).
pub(crate) fn failed_over<B>(res: &http::Response<B>) -> bool {
    res.extensions()
        .get::<Served>()
        .is_some_and(|served| served.fallbacks > 0)
}

/// What the access log says of a request besides its answer: the client
/// key's id, the model asked, whether a stream.
#[derive(Debug, Default)]
struct Seen {
    key: Option<Arc<str>>,
    model: Option<Arc<str>>,
    stream: bool,
    /// A chat or completion stream whose caller did not ask for the usage
    /// chunk (the gateway asks the provider for it, and takes it out).
    hide_usage: bool,
}

/// What the access line of a request says besides its end and tokens
/// (see [`crate::tail::write`]): the client key's id (never the key), the
/// model asked, whether a stream, the status, who answered after how many
/// calls and providers, whether a hedge won, whether the answer stands in
/// for a failure (`degraded`: `1`, `stale-cache`, or `-`), the time to the
/// answer (a stream's first token), and with traces on the request's
/// `trace_id` (`-` otherwise), to find its trace from its log line.
fn access_head<'a>(
    res: &'a Response,
    seen: &'a Seen,
    span: &Span,
    took: std::time::Duration,
) -> crate::tail::Head<'a> {
    let h = res.headers();
    let text =
        |name: &HeaderName| Cow::Borrowed(h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-"));
    crate::tail::Head {
        key: Cow::Borrowed(seen.key.as_deref().unwrap_or("-")),
        model: Cow::Borrowed(seen.model.as_deref().unwrap_or("-")),
        stream: seen.stream,
        status: res.status().as_u16(),
        provider: text(&PROVIDER_HEADER),
        attempts: text(&ATTEMPTS_HEADER),
        fallbacks: text(&FALLBACKS_HEADER),
        hedged: h.contains_key(HEDGED_HEADER),
        degraded: text(&DEGRADED),
        trace_id: crate::traces::trace_id(span).map_or(Cow::Borrowed("-"), Cow::Owned),
        first: took,
    }
}

/// Records the answer on the request's span (traces on).
fn trace_answer(span: &Span, res: &Response, attempts: u32) {
    let h = res.headers();
    let text = |name: &HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let used = res.extensions().get::<crate::upstream::Usage>();
    let by = res.extensions().get::<crate::upstream::AnsweredBy>();
    crate::traces::record_answer(
        span,
        crate::traces::Answered {
            status: res.status().as_u16(),
            provider: text(&PROVIDER_HEADER),
            attempts,
            fallbacks: text(&FALLBACKS_HEADER),
            degraded: h.contains_key(DEGRADED),
            system: by.map(|b| b.system),
            response_model: by.and_then(|b| b.model.as_deref()),
            input_tokens: used.map_or(0, |u| u.prompt_tokens),
            output_tokens: used.map_or(0, |u| u.completion_tokens),
        },
    );
}

/// The request headers the gateway reads, found in one pass over them
/// (the first value of each, as `HeaderMap::get` answers): a hashed lookup
/// per name cost about 170 instructions, and there are six.
#[derive(Debug, Default)]
struct Asked<'a> {
    request_id: Option<&'a HeaderValue>,
    /// In [`CALLER_TIMEOUTS`]' order.
    timeouts: [Option<&'a HeaderValue>; 3],
    hedge: Option<&'a HeaderValue>,
    /// Whether the caller sent a W3C `traceparent`.
    traceparent: bool,
}

impl<'a> Asked<'a> {
    fn scan(headers: &'a http::HeaderMap) -> Self {
        let mut asked = Asked::default();
        let first = |slot: &mut Option<&'a HeaderValue>, v| {
            slot.get_or_insert(v);
        };
        for (name, value) in headers {
            if *name == REQUEST_ID_HEADER {
                first(&mut asked.request_id, value);
            } else if *name == HEDGE_HEADER {
                first(&mut asked.hedge, value);
            } else if *name == crate::traces::TRACEPARENT {
                asked.traceparent = true;
            } else if let Some(i) = CALLER_TIMEOUTS.iter().position(|t| t.is_named(name)) {
                first(&mut asked.timeouts[i], value);
            }
        }
        asked
    }

    /// The request's id: the caller's `x-request-id` when it is 1 to 200
    /// visible ASCII characters, else a new one (`req_` and 32 hex digits).
    fn request_id(&self) -> HeaderValue {
        self.request_id
            .filter(|v| {
                let b = v.as_bytes();
                (1..=200).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
            })
            .cloned()
            .unwrap_or_else(new_request_id)
    }

    /// The caller's own timeout, the shortest it names: the OpenAI SDKs'
    /// `x-stainless-timeout` (seconds), `x-request-timeout-ms`, or
    /// `grpc-timeout`. Garbage is ignored.
    fn timeout(&self) -> Option<std::time::Duration> {
        CALLER_TIMEOUTS
            .iter()
            .zip(self.timeouts)
            .filter_map(|(h, v)| h.parse(v?))
            .min()
    }

    /// The caller's hedge mark: `x-palisade-hedge: 1` (or `true`) allows
    /// hedging this request, `0` (or `false`) forbids it; anything else is
    /// ignored and the config's default applies.
    fn hedge(&self) -> Option<bool> {
        match self.hedge?.to_str().ok()?.trim() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        }
    }
}

/// The request's id for a call the gateway answers outside [`serve`]
/// (see [`Asked::request_id`]).
pub(crate) fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    Asked::scan(headers).request_id()
}

/// A new request id: `req_` and 32 random hex digits (written by hand:
/// `format!` costs several times as much, on every request).
fn new_request_id() -> HeaderValue {
    request_id_of(rand::random())
}

/// `req_` and `n` in 32 hex digits.
fn request_id_of(mut n: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_00000000000000000000000000000000";
    for b in id[4..].iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // Owned by its bytes' one allocation: the id is cloned (the request
    // sent upstream, the answer), and a clone of bytes copied from a slice
    // allocates again to share them.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .expect("hex is a valid header value")
}

/// Reads and checks the caller's request; a refusal is the response to
/// send.
async fn read_request(
    s: &AppState,
    req: Request,
    endpoint: Endpoint,
    key: Option<&crate::auth::ClientKey>,
    (asked, hedge): (Option<std::time::Duration>, Option<bool>),
    started: tokio::time::Instant,
) -> Result<ChatRequest, Response> {
    let cache = crate::upstream::CacheControl::from_headers(req.headers());
    let mut body = std::pin::pin!(crate::whole::read_whole(Limited::new(
        req.into_body(),
        s.max_body
    )));
    // A body that came with its head is read at once, and no timer is made
    // for it (making one clones the runtime's handle, shared by every
    // thread). Only a body still on its way is timed.
    let first = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll(cx))).await;
    let timed = match first {
        Poll::Ready(collected) => Ok(collected),
        // Counted from the request's start (its head read): no clock read.
        Poll::Pending => match started.checked_add(s.body_timeout) {
            Some(at) => tokio::time::timeout_at(at, body).await,
            None => tokio::time::timeout(s.body_timeout, body).await,
        },
    };
    let Ok(collected) = timed else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorBody::new(
                "invalid_request_error",
                Some("request_timeout"),
                format!(
                    "the request body did not arrive within {} ms",
                    s.body_timeout.as_millis()
                ),
            ),
        ));
    };
    let bytes = match collected {
        Ok(b) => b,
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
    // Only the fields the gateway needs are read; the rest is checked to
    // be JSON and skipped, never built (the bytes go upstream as they are).
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad(
            match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Ok(_) => "the body must be a JSON object".into(),
                Err(e) => format!("the body is not JSON: {e}"),
            },
        ));
    }
    let head: RequestHead<'_> = serde_json::from_slice(&bytes).map_err(|e| {
        bad(if e.is_data() {
            format!("not a request for {}: {e}", endpoint.path())
        } else {
            format!("the body is not JSON: {e}")
        })
    })?;
    endpoint
        .check(&head)
        .map_err(|e| bad(format!("not a request for {}: {e}", endpoint.path())))?;
    let Some(model) = s
        .models
        .load()
        .get_key_value(&*head.model)
        .map(|(name, _)| name.clone())
    else {
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
    };
    if let Some(key) = key.filter(|k| !k.allows(&head.model)) {
        return Err(crate::auth::model_not_allowed(key, &head.model));
    }
    // Embeddings are never streamed, whatever the body says.
    let stream = head.stream && endpoint != Endpoint::Embeddings;
    let mut chat = ChatRequest::from_wire(model, bytes.clone(), stream);
    chat.endpoint = endpoint;
    if endpoint == Endpoint::Responses {
        // A continued response goes to the provider that stored it.
        let previous = || {
            chat.body()
                .get("previous_response_id")?
                .as_str()
                .map(str::to_owned)
        };
        let caller = key.map(|k| &*k.id);
        match s.affinity.pin_for(&bytes, previous, caller).await {
            Some((_, crate::affinity::Known::At(p))) => chat.pinned = Some(p),
            // Asked around if the provider it reaches has no such response.
            Some((id, crate::affinity::Known::Unknown)) => chat.unknown_previous = Some(id),
            None => {}
            // Another key's response: as if it did not exist.
            Some((id, crate::affinity::Known::Others)) => {
                return Err(crate::stored::not_found(
                    "previous_response_not_found",
                    &format!("Previous response with id '{id}' not found."),
                ));
            }
        }
    }
    chat.hedgeable = hedge;
    chat.cache = cache;
    if let Some(timeout) = asked {
        // The router's own deadline only shortens this one.
        chat.replace_deadline(Deadline::after(timeout));
    }
    Ok(chat)
}

/// Where a caller's own timeout may come: the header the OpenAI SDKs send
/// theirs in (seconds), the milliseconds header the gateway itself sends
/// upstream, and gRPC's. Names built once, at compile time.
static CALLER_TIMEOUTS: [TimeoutHeader; 3] = [
    TimeoutHeader::Seconds(HeaderName::from_static("x-stainless-timeout")),
    TimeoutHeader::Millis(HeaderName::from_static(TIMEOUT_HEADER)),
    TimeoutHeader::Grpc,
];

async fn route(s: &AppState, req: ChatRequest) -> Response {
    // Kept only for a continuation nobody remembers, which may be asked
    // around.
    let again = req.unknown_previous.clone().map(|id| (id, req.clone()));
    let mut answered = route_once(s, req).await;
    if let Some((previous, req)) = again.filter(|_| answered.0.status() == StatusCode::NOT_FOUND) {
        answered = elsewhere(s, req, &previous, answered).await;
    }
    // Counted once, by the answer the caller gets.
    let (res, tally) = answered;
    let counter = match tally {
        Tally::Ok => &s.counters.ok,
        Tally::ClientError => &s.counters.client_errors,
        Tally::UpstreamError => &s.counters.upstream_errors,
    };
    counter.add(1);
    res
}

/// Which of the gateway's request counters an answer adds to: a provider's
/// answer, a success or not, or no answer at all.
#[derive(Debug, Clone, Copy)]
enum Tally {
    Ok,
    ClientError,
    UpstreamError,
}

/// A continuation of response `previous`, which no one here (nor the
/// fleet) remembered, answered `first` (404) by the provider it was routed
/// to: when that says the provider has no such response
/// (`previous_response_not_found`), each other upstream serving the model
/// is asked in turn, pinned, until one answers otherwise; the one that
/// does is remembered as `previous`'s. Every one saying 404, the caller
/// gets the first; one failing to answer, the caller gets its error (the
/// response may be there), not a 404.
async fn elsewhere(
    s: &AppState,
    req: ChatRequest,
    previous: &str,
    (first, tally): (Response, Tally),
) -> (Response, Tally) {
    let (parts, body) = first.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, s.max_body).await else {
        return (Response::from_parts(parts, Body::empty()), tally);
    };
    let first = (
        Response::from_parts(parts, Body::from(bytes.clone())),
        tally,
    );
    if !crate::stored::is_code(&bytes, "previous_response_not_found") {
        return first;
    }
    let served = first.0.extensions().get::<Served>();
    let tried = served.and_then(|served| served.provider.clone());
    // Providers asked before the next: those the first route went through,
    // then one for each 404.
    let mut before = served.map_or(1, |served| served.fallbacks + 1);
    let upstreams = s.upstreams.load();
    let mut failed = None;
    for (id, upstream) in upstreams.iter() {
        if tried.as_ref().is_some_and(|t| t.as_str() == id) || !upstream.serves(&req.model) {
            continue;
        }
        let mut pinned = req.clone();
        pinned.pinned = Some(palisade_core::ProviderId::new(id));
        pinned.unknown_previous = None;
        let mut answered = Box::pin(route_once(s, pinned)).await;
        fell_back(&mut answered.0, before, s.served_headers);
        match answered.0.status() {
            StatusCode::NOT_FOUND => before += 1,
            status if crate::stored::could_not_tell(status) => {
                failed = Some(answered);
                before += 1;
            }
            status => {
                let at = answered.0.extensions().get::<Served>();
                if let Some(p) = at.and_then(|sv| sv.provider.as_ref()) {
                    if status.is_success() {
                        s.affinity.stored(previous, p, req.client.clone());
                    }
                }
                return answered;
            }
        }
    }
    failed.unwrap_or(first)
}

/// An answer found by asking around, `before` providers asked before the
/// one that gave it: counted among its fallbacks, on its [`Served`] (the
/// metrics and the access line) and its `x-palisade-fallbacks` header.
fn fell_back(res: &mut Response, before: u32, headers: bool) {
    let Some(served) = res.extensions_mut().get_mut::<Served>() else {
        return;
    };
    served.fallbacks += before;
    let value = count_value(served.fallbacks);
    if headers {
        res.headers_mut().insert(FALLBACKS_HEADER, value);
    }
}

/// [`route`] without asking around: the answer, and the counter it is to
/// add to (the caller counts the answer it gives).
async fn route_once(s: &AppState, req: ChatRequest) -> (Response, Tally) {
    let stream = req.stream;
    let responses = req.endpoint == Endpoint::Responses;
    // The client key a stored response is remembered for.
    let owner = req.client.clone().filter(|_| responses);
    let answer = match crate::front::bare(&s.router) {
        Some(router) => router
            .route(req)
            .await
            .map(|res| res.map(crate::front::EntryBody::Left)),
        None => s.router.clone().oneshot(req).await,
    };
    match answer {
        Ok(res) => {
            let tally = if res.status().is_success() {
                Tally::Ok
            } else {
                Tally::ClientError
            };
            let (mut parts, body) = res.into_parts();
            // Which provider answered, after how many calls: on the answer's
            // headers. Its extensions stay as the layers left them (who
            // answered, what it used) for the metrics and the access line.
            if s.served_headers {
                if let Some(served) = parts.extensions.get::<Served>() {
                    served_headers(served, &mut parts.headers);
                }
            }
            // A stream's body is finished in `serve` (its access line, then
            // a failure as one SSE event).
            if stream && parts.status.is_success() {
                parts.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
            }
            if responses && !stream && parts.status.is_success() {
                return (
                    remember_response(s, parts, Body::new(body), owner).await,
                    tally,
                );
            }
            (Response::from_parts(parts, Body::new(body)), tally)
        }
        Err(e) => (upstream_error(&e), Tally::UpstreamError),
    }
}

/// A whole Responses API answer, its `id` remembered with the provider
/// that stored it (its continuations go there). The body is already read
/// whole upstream: collecting it here copies nothing.
async fn remember_response(
    s: &AppState,
    parts: http::response::Parts,
    body: Body,
    owner: Option<Arc<str>>,
) -> Response {
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            s.counters.upstream_errors.add(1);
            return upstream_error(&palisade_core::BoxError::from(e));
        }
    };
    let provider = parts
        .extensions
        .get::<Served>()
        .and_then(|sv| sv.provider.as_ref());
    if let (Some(p), Some(id)) = (provider, crate::affinity::answer_id(&bytes)) {
        s.affinity.stored(&id, p, owner);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Which provider answered (`x-palisade-provider`), after how many calls
/// there (`x-palisade-attempts`), how many providers before it
/// (`x-palisade-fallbacks`), and `x-palisade-hedged: 1` when a hedge won.
fn served_headers(served: &Served, headers: &mut http::HeaderMap) {
    if let Some(p) = served.provider.as_ref().and_then(provider_value) {
        headers.insert(PROVIDER_HEADER, p);
    }
    headers.insert(ATTEMPTS_HEADER, count_value(served.attempts));
    headers.insert(FALLBACKS_HEADER, count_value(served.fallbacks));
    if served.hedged {
        headers.insert(HEDGED_HEADER, HeaderValue::from_static("1"));
    }
}

/// A count as a header value: a static one for 0 to 9 (nearly every
/// answer's attempts and fallbacks), else written out.
fn count_value(n: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(n as usize) {
        Some(d) => HeaderValue::from_static(d),
        None => HeaderValue::from(n),
    }
}

/// A provider's name as a header value, `None` if it cannot be one. The
/// last one made on this thread is kept and shared: most answers on a
/// thread come from the provider the one before came from, and sharing a
/// value is a name comparison and a reference count, where a new one is
/// checked, copied and allocated.
pub(crate) fn provider_value(p: &ProviderId) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(ProviderId, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((id, value)) = &*last {
            if id == p {
                return Some(value.clone());
            }
        }
        let value = HeaderValue::from_str(p.as_str()).ok()?;
        *last = Some((p.clone(), value.clone()));
        Some(value)
    })
}

// The names are `HeaderName`s made at compile time: a `&str` name is
// parsed and checked again on every insert or lookup.

/// The request's id, on the answer and sent upstream: the caller's, or one
/// the gateway made.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// The answering provider's own request id, when it sent one.
pub const UPSTREAM_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-upstream-request-id");
/// The request header allowing (`1`) or forbidding (`0`) a hedge.
pub const HEDGE_HEADER: HeaderName = HeaderName::from_static("x-palisade-hedge");
/// The response header (`1`) saying a hedge answered, not the first call.
pub const HEDGED_HEADER: HeaderName = HeaderName::from_static("x-palisade-hedged");
/// The header naming the provider that answered.
pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-palisade-provider");
/// The header counting the calls made to that provider (1: not retried).
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-palisade-attempts");
/// The header counting the providers tried or skipped before it.
pub const FALLBACKS_HEADER: HeaderName = HeaderName::from_static("x-palisade-fallbacks");
/// `x-palisade-degraded` (see [`palisade_core::DEGRADED_HEADER`]).
const DEGRADED: HeaderName = HeaderName::from_static(palisade_core::DEGRADED_HEADER);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_carries_our_id_and_the_providers_beside_it() {
        // The provider sent its own id (twice, even): it moves aside.
        let mut h = http::HeaderMap::new();
        h.append(REQUEST_ID_HEADER, HeaderValue::from_static("theirs-1"));
        h.append(REQUEST_ID_HEADER, HeaderValue::from_static("theirs-2"));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        let sent = h.clone();
        answer_ids(&mut h, HeaderValue::from_static("ours"), true);
        let all = |h: &http::HeaderMap, n| h.get_all(n).iter().cloned().collect::<Vec<_>>();
        assert_eq!(all(&h, REQUEST_ID_HEADER), ["ours"]);
        assert_eq!(all(&h, UPSTREAM_REQUEST_ID_HEADER), ["theirs-1"]);
        assert_eq!(h[http::header::CONTENT_TYPE], "a/b");
        assert_eq!(h.len(), 3);
        // Without the served headers, theirs is dropped: ours alone.
        let mut h = sent;
        answer_ids(&mut h, HeaderValue::from_static("ours"), false);
        assert_eq!(all(&h, REQUEST_ID_HEADER), ["ours"]);
        assert!(!h.contains_key(UPSTREAM_REQUEST_ID_HEADER));
        assert_eq!(h.len(), 2);
        // None sent (a refusal, say): ours alone, either way.
        for keep in [true, false] {
            let mut h = http::HeaderMap::new();
            answer_ids(&mut h, HeaderValue::from_static("ours"), keep);
            assert_eq!(all(&h, REQUEST_ID_HEADER), ["ours"]);
            assert!(!h.contains_key(UPSTREAM_REQUEST_ID_HEADER));
        }
    }

    #[test]
    fn a_new_request_id_is_req_and_32_hex_digits() {
        for n in [
            0,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(request_id_of(n), format!("req_{n:032x}").as_str());
        }
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn counts_and_provider_names_become_header_values() {
        for n in [0, 1, 9, 10, 12345, u32::MAX] {
            assert_eq!(count_value(n).to_str().unwrap(), n.to_string());
        }
        // Kept per thread and shared, whichever provider comes next.
        for name in ["primary", "primary", "backup", "primary"] {
            let value = provider_value(&ProviderId::new(name)).unwrap();
            assert_eq!(value.to_str().unwrap(), name);
        }
        // A name no header can carry gives none, and is not kept.
        assert!(provider_value(&ProviderId::new("bad\nname")).is_none());
        assert_eq!(
            provider_value(&ProviderId::new("primary")).unwrap(),
            "primary"
        );
    }

    #[test]
    fn only_a_post_to_a_model_endpoint_is_served_directly() {
        let req = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
        };
        for e in Endpoint::ALL {
            assert_eq!(model_endpoint(&req("POST", e.path())), Some(e));
            // The query is not the path.
            let with_query = format!("{}?api-version=1", e.path());
            assert_eq!(model_endpoint(&req("POST", &with_query)), Some(e));
            // Other methods are the app's (405), as are near misses (404).
            assert_eq!(model_endpoint(&req("GET", e.path())), None);
            assert_eq!(model_endpoint(&req("HEAD", e.path())), None);
            let slash = format!("{}/", e.path());
            assert_eq!(model_endpoint(&req("POST", &slash)), None);
        }
        assert_eq!(model_endpoint(&req("POST", "/v1/models")), None);
        assert_eq!(model_endpoint(&req("POST", "/admin/reload")), None);
    }

    #[test]
    fn the_hedge_mark_is_read_and_garbage_ignored() {
        let mark = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(HEDGE_HEADER, HeaderValue::from_static(v));
            Asked::scan(&h).hedge()
        };
        assert_eq!(mark("1"), Some(true));
        assert_eq!(mark(" false "), Some(false));
        assert_eq!(mark("maybe"), None);
        assert_eq!(Asked::scan(&http::HeaderMap::new()).hedge(), None);
    }

    /// The one pass finds what a lookup per name found: the first value
    /// of each header, whatever else the request carries.
    #[test]
    fn one_pass_over_the_headers_reads_what_lookups_read() {
        let mut h = http::HeaderMap::new();
        for (name, value) in [
            ("host", "gw"),
            ("x-request-id", "caller-1"),
            ("authorization", "Bearer k"),
            ("x-stainless-timeout", "2.5"),
            ("x-request-id", "caller-2"),
            ("grpc-timeout", "900m"),
            ("x-request-timeout-ms", "garbage"),
            ("x-palisade-hedge", "0"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let asked = Asked::scan(&h);
        assert_eq!(asked.request_id(), "caller-1");
        assert_eq!(asked.timeout(), Some(std::time::Duration::from_millis(900)));
        assert_eq!(asked.hedge(), Some(false));
        assert!(asked.traceparent);
        for t in &CALLER_TIMEOUTS {
            // Each slot holds what a lookup of its name reads.
            let i = CALLER_TIMEOUTS.iter().position(|c| c == t).unwrap();
            assert_eq!(
                asked.timeouts[i].and_then(|v| t.parse(v)),
                t.read(&h),
                "{t:?}"
            );
        }

        let empty = http::HeaderMap::new();
        let none = Asked::scan(&empty);
        assert!(none.request_id().as_bytes().starts_with(b"req_"));
        assert_eq!(
            (none.timeout(), none.hedge(), none.traceparent),
            (None, None, false)
        );
        // An id that is not 1 to 200 visible characters is replaced.
        let mut bad = http::HeaderMap::new();
        bad.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert!(Asked::scan(&bad)
            .request_id()
            .as_bytes()
            .starts_with(b"req_"));
    }
}
