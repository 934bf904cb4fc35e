//! Calling one upstream provider over HTTP, built from palisade's own
//! layers: the request the router carries ([`ChatRequest`]), the
//! classifier that reads the answers ([`GatewayClassifier`]), and
//! [`Upstream`], the service the router's per-provider stack wraps.

mod answer;
mod classify;
mod exhausted;
mod length;
mod link;
mod pool;
mod request;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use palisade_core::{BoxError, Classified, FailureKind, HasDeadline, ProviderId, RejectReason};
use palisade_deadline::{FirstFrameLayer, StreamTimeoutLayer, StreamTimeouts, TimeoutHeader};
use tower::{Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

pub use self::classify::{GatewayClassifier, UpstreamFailure};
pub use self::pool::{HttpClient, MAX_IDLE, POOL_IDLE};
pub use self::request::{CacheControl, ChatRequest, Endpoint};
pub use self::tls::client_config;
pub(crate) use self::tls::read_ca_file;

/// The body of every response the gateway passes on.
pub type GatewayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The header the time left is sent in, so the upstream can stop working
/// on a request nobody waits for.
pub(crate) const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// How the time left is told upstream.
const TIME_LEFT: TimeoutHeader = TimeoutHeader::Millis(HeaderName::from_static(TIMEOUT_HEADER));

/// What an upstream call answers.
type CallFuture = Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, BoxError>> + Send>>;

/// An attempt's span and the provider's GenAI system, when traces are on.
type Traced = Option<(crate::traces::AttemptSpan, &'static str)>;

/// One HTTP exchange with an upstream, from the request to the answer's
/// future, boxed once: the exchange's own future lives inside that box
/// rather than in a box of its own (as a boxed service's would), and the
/// service is cloned by reference counts, not through a vtable.
type Exchange = Box<dyn Fn(Request<Full<Bytes>>, Traced) -> CallFuture + Send + Sync>;

/// One upstream provider as a service: maps the gateway's model name to
/// the provider's, and sends the request through palisade's layers:
///
/// ```text
/// every request:  the time left written as x-request-timeout-ms (as
///                 palisade-deadline's PropagateDeadline would) > client
///                 error bodies read and classified (UpstreamFailure)
/// streams:        StreamTimeout (idle, deadline) > FirstFrame (first token, deadline) > the above
/// whole answers:  the body is read within the attempt, so a body cut
///                 short fails the attempt (and can be retried)
/// ```
///
/// A stream is not an answer until its first token: a provider that sends
/// headers and then nothing fails over before the caller has seen a byte.
///
/// A clone shares everything (one reference count): the layers above clone
/// their inner service for each call.
#[derive(Clone)]
pub struct Upstream {
    parts: Arc<Parts>,
}

/// What an [`Upstream`] is made of.
struct Parts {
    id: ProviderId,
    /// The provider's URL for each [`Endpoint`], in `Endpoint::ALL` order.
    endpoints: [Uri; Endpoint::ALL.len()],
    api_key: Option<HeaderValue>,
    /// Sent with every request (the config's `headers`; the key, when it
    /// goes in a header of its own).
    headers: http::HeaderMap,
    /// Whether a stream's usage is asked for when the caller did not
    /// (see [`Upstream::with_stream_usage`]).
    stream_usage: bool,
    /// The provider refused the option once (a `400` naming
    /// `stream_options`): it is not asked again.
    stream_usage_refused: std::sync::atomic::AtomicBool,
    models: BTreeMap<String, String>,
    whole: Exchange,
    streaming: Exchange,
    /// Its GenAI `gen_ai.system`, from its host (for traces).
    system: &'static str,
}

/// Who answered, carried on the answer for the request's span when
/// traces are on: the provider's GenAI system and the model it said
/// answered.
#[derive(Debug, Clone)]
pub(crate) struct AnsweredBy {
    pub(crate) system: &'static str,
    pub(crate) model: Option<Arc<str>>,
}

/// The URL of `endpoint` at `base_url`, which names the API as the
/// OpenAI SDKs' base URL does (`https://api.openai.com/v1`,
/// `https://generativelanguage.googleapis.com/v1beta/openai`): the
/// endpoint's path after the version (`/chat/completions`) is added to
/// it. A base URL with no path (`https://api.openai.com`) gets `/v1` too.
fn endpoint_url(base_url: &str, endpoint: Endpoint) -> String {
    let base = base_url.trim_end_matches('/');
    // The path after the scheme and authority, if any.
    let path = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split_once('/')
        .map_or("", |(_, path)| path);
    if path.is_empty() {
        format!("{base}{}", endpoint.path())
    } else {
        format!("{base}{}", endpoint.api_path())
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("id", &self.parts.id)
            .field("endpoint", &self.parts.endpoints[0])
            .finish()
    }
}

/// Settings shared by every upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for a stream's first token.
    pub first_token: Duration,
    /// Longest pause between tokens.
    pub idle: Duration,
}

impl Upstream {
    /// An upstream at `base_url` (as the OpenAI SDKs take it, with the
    /// API's path, or the host alone: see `UpstreamConfig::base_url`), with
    /// its API key (sent as a bearer token) and model map. `chaos` sits right above the
    /// HTTP exchange, below the stream timeouts (and, in the router, below
    /// the attempt timeout and the breaker): a fault it injects (off until
    /// switched on) enters where a real one would.
    pub fn new(
        id: &str,
        base_url: &str,
        api_key: Option<String>,
        models: BTreeMap<String, String>,
        client: &HttpClient,
        settings: &UpstreamSettings,
        chaos: palisade_chaos::ChaosLayer<palisade_chaos::Every, palisade_chaos::HttpStreams>,
    ) -> Result<Self, BoxError> {
        let [chat, completions, embeddings, responses] =
            Endpoint::ALL.map(|e| endpoint_url(base_url, e).parse::<Uri>());
        let endpoints = [chat?, completions?, embeddings?, responses?];
        let pool = client.pool(&endpoints[0])?;
        let api_key = match api_key {
            Some(k) => Some(HeaderValue::from_str(&format!("Bearer {k}"))?),
            None => None,
        };
        let exchange = ServiceBuilder::new()
            .layer(chaos)
            .and_then(classify::read_error_body)
            .map_err(classify::transport_error)
            .service(pool);
        let streaming = ServiceBuilder::new()
            .map_response(|res: Response<_>| res.map(BodyExt::boxed_unsync))
            .layer(StreamTimeoutLayer::new(
                StreamTimeouts::new()
                    .idle(settings.idle)
                    .provider(id)
                    .build()?,
            ))
            .layer(FirstFrameLayer::new(settings.first_token)?.provider(id))
            .service(exchange.clone());
        let whole: Exchange =
            Box::new(move |req, traced| Box::pin(whole_answer(exchange.clone(), req, traced)));
        let streaming: Exchange =
            Box::new(move |req, traced| Box::pin(stream_answer(streaming.clone(), req, traced)));
        let system = crate::traces::system_of(endpoints_host(&endpoints[0]));
        Ok(Upstream {
            parts: Arc::new(Parts {
                id: id.into(),
                endpoints,
                api_key,
                headers: http::HeaderMap::new(),
                stream_usage: true,
                stream_usage_refused: std::sync::atomic::AtomicBool::new(false),
                models,
                whole,
                streaming,
                system,
            }),
        })
    }

    /// Sends `headers` with every request to this upstream too (headers
    /// the gateway writes itself, `content-type`, `x-request-id` and the
    /// time left, are written after them). Call it on a new upstream:
    /// its clones keep the headers they were made with.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use http::{HeaderMap, HeaderValue};
    /// use palisade_gateway::upstream::{client_config, HttpClient, Upstream, UpstreamSettings, POOL_IDLE};
    ///
    /// let client = HttpClient::new(Duration::from_secs(5), POOL_IDLE, client_config(None).unwrap());
    /// let settings = UpstreamSettings {
    ///     connect_timeout: Duration::from_secs(5),
    ///     first_token: Duration::from_secs(30),
    ///     idle: Duration::from_secs(30),
    /// };
    /// let mut headers = HeaderMap::new();
    /// headers.insert("openai-organization", HeaderValue::from_static("org-123"));
    /// let models = [("m".to_string(), "gpt-4o-mini".to_string())].into();
    /// // The chaos layer every upstream has (no faults until switched on).
    /// let chaos = palisade_chaos::ChaosLayer::builder()
    ///     .streams(palisade_chaos::HttpStreams)
    ///     .build()
    ///     .unwrap();
    /// let openai = Upstream::new("openai", "https://api.openai.com/v1", None, models, &client, &settings, chaos)
    ///     .unwrap()
    ///     .with_headers(headers);
    /// # drop(openai); }
    /// ```
    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        if let Some(parts) = Arc::get_mut(&mut self.parts) {
            parts.headers = headers;
        } else {
            tracing::warn!(provider = %self.parts.id, "with_headers on a shared upstream: ignored");
        }
        self
    }

    /// Whether to ask this upstream for a stream's usage
    /// (`stream_options.include_usage`) when the caller did not (default
    /// `true`): the token limits and counts need it, and the caller's
    /// stream has that chunk taken out. `false` for a provider that
    /// refuses the option; its streams then count their estimates alone.
    pub fn with_stream_usage(mut self, ask: bool) -> Self {
        if let Some(parts) = Arc::get_mut(&mut self.parts) {
            parts.stream_usage = ask;
        } else {
            tracing::warn!(provider = %self.parts.id, "with_stream_usage on a shared upstream: ignored");
        }
        self
    }

    /// Sends a call about a response this provider stored (OpenAI's
    /// `GET` and `DELETE /responses/{id}`, `GET
    /// /responses/{id}/input_items`, `POST /responses/{id}/cancel`):
    /// `method` to its Responses URL with `rest` added (the path after
    /// `/responses`, with the caller's query), the caller's `body`, its
    /// request id, and the provider's key and headers. The answer comes
    /// back whatever its status (a `404` is the provider's to give);
    /// `stream` (a `GET` with `stream=true`, a background response's
    /// events) passes the body through as it comes, under the stream
    /// timeouts. Such calls go to this one provider, outside its stack:
    /// no retry, no breaker, no fallback (the response lives there alone).
    pub(crate) fn stored_response(
        &self,
        method: http::Method,
        rest: &str,
        body: Bytes,
        request_id: Option<HeaderValue>,
        stream: bool,
    ) -> CallFuture {
        let url = format!(
            "{}{rest}",
            self.parts.endpoints[Endpoint::Responses.index()]
        );
        let uri = match url.parse::<Uri>() {
            Ok(u) => u,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        };
        let req = self.request(method, uri, body, request_id.as_ref());
        if stream {
            (self.parts.streaming)(req, None)
        } else {
            (self.parts.whole)(req, None)
        }
    }

    /// The span of an attempt for `req` (traces on).
    fn attempt_span(&self, req: &ChatRequest) -> crate::traces::AttemptSpan {
        let uri = &self.parts.endpoints[req.endpoint.index()];
        crate::traces::AttemptSpan::new(
            crate::traces::Target {
                provider: self.parts.id.as_str(),
                system: self.parts.system,
                host: endpoints_host(uri),
                endpoint: req.endpoint,
                model: self
                    .parts
                    .models
                    .get(&*req.model)
                    .map_or(&*req.model, String::as_str),
            },
            req.trace.next_attempt(),
        )
    }

    /// Whether this provider serves the gateway's model `model`.
    pub(crate) fn serves(&self, model: &str) -> bool {
        self.parts.models.contains_key(model)
    }

    /// Whether to ask the provider for `req`'s usage chunk: a chat or
    /// completion stream whose caller did not, to a provider that takes
    /// the option.
    fn asks_stream_usage(&self, req: &ChatRequest) -> bool {
        self.parts.stream_usage
            && req.usage_unasked()
            && !self
                .parts
                .stream_usage_refused
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A request to this provider: `method` to `uri`, `body` (JSON, when
    /// not empty), the config's headers, the key, and the request's id.
    fn request(
        &self,
        method: http::Method,
        uri: Uri,
        body: Bytes,
        request_id: Option<&HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let len = body.len();
        // Built in place: the builder parses and copies a text value.
        let mut http_req = Request::new(Full::new(body));
        *http_req.method_mut() = method;
        *http_req.uri_mut() = uri;
        // Room made once: hyper reads the answer's headers into this very
        // map (emptied), so the answer has room for the gateway's own
        // headers too instead of growing for them.
        *http_req.headers_mut() = http::HeaderMap::with_capacity(HEADERS_ROOM);
        for (name, value) in &self.parts.headers {
            http_req.headers_mut().append(name, value.clone());
        }
        if len > 0 {
            let headers = http_req.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // Else hyper writes it, into two allocations.
            if let Some(length) = length::content_length(len) {
                headers.insert(http::header::CONTENT_LENGTH, length);
            }
        }
        if let Some(key) = &self.parts.api_key {
            http_req.headers_mut().insert(AUTHORIZATION, key.clone());
        }
        if let Some(id) = request_id {
            http_req
                .headers_mut()
                .insert(crate::routes::REQUEST_ID_HEADER, id.clone());
        }
        http_req
    }

    /// The HTTP request for `req`, or a refusal when this provider does
    /// not serve its model (not counted against the provider: the chain
    /// moves on).
    fn encode(&self, req: &ChatRequest, ask_usage: bool) -> Result<Request<Full<Bytes>>, BoxError> {
        let Some(model) = self.parts.models.get(&*req.model) else {
            return Err(Classified::new(
                FailureKind::Rejected(RejectReason::NoProvider),
                format!("provider {} does not serve {}", self.parts.id, req.model),
            )
            .into());
        };
        // A stream's usage, asked for when the caller did not (its chunk
        // is taken out of what the caller gets): the token limits and
        // counts need it.
        let body = match req.raw() {
            // The provider calls the model by the gateway's name: the
            // caller's bytes go as they came.
            Some(raw) if **model == *req.model && !ask_usage => raw.clone(),
            Some(raw) if **model == *req.model => match with_usage_asked(raw) {
                Some(body) => body,
                None => encode_body(req.body(), model, true)?,
            },
            _ => encode_body(req.body(), model, ask_usage)?,
        };
        let url = self.parts.endpoints[req.endpoint.index()].clone();
        let mut http_req = self.request(http::Method::POST, url, body, req.request_id.as_ref());
        if let Some(d) = req.deadline() {
            // The time left told upstream here, not by a layer reading it
            // back from the request's extensions: only a stream's timeouts
            // need it there, and an extension map costs three allocations.
            TIME_LEFT.write(
                http_req.headers_mut(),
                d.remaining_at(palisade_core::clock::now()),
            );
            if req.stream {
                http_req.replace_deadline(d);
            }
        }
        Ok(http_req)
    }
}

impl Service<ChatRequest> for Upstream {
    type Response = Response<GatewayBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        if !self.asks_stream_usage(&req) {
            return self.send(&req, false);
        }
        // Asked for the usage, a provider that does not take the option
        // says so with a 400: it is sent again without, and never asked
        // again.
        let up = self.clone();
        Box::pin(async move {
            let res = up.send(&req, true).await?;
            match refused_stream_options(res).await {
                Ok(res) => Ok(res),
                Err(()) => {
                    up.parts
                        .stream_usage_refused
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        provider = %up.parts.id,
                        "the provider refuses stream_options: its streams are counted at their estimates (set stream_usage = false to say so)"
                    );
                    up.send(&req, false).await
                }
            }
        })
    }
}

/// `res` as it came, unless it is a `400` whose error names
/// `stream_options` (`Err`).
async fn refused_stream_options(res: Response<GatewayBody>) -> Result<Response<GatewayBody>, ()> {
    if res.status() != http::StatusCode::BAD_REQUEST {
        return Ok(res);
    }
    // An error body, read whole already (`read_error_body`): small.
    let (parts, body) = res.into_parts();
    let bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if memchr::memmem::find(&bytes, b"stream_options").is_some() {
        return Err(());
    }
    Ok(Response::from_parts(parts, classify::full_body(bytes)))
}

impl Upstream {
    /// Sends `req` (with its usage asked for, `ask_usage`), in an attempt
    /// span when traces are on.
    fn send(
        &self,
        req: &ChatRequest,
        ask_usage: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, BoxError>> + Send>> {
        let mut http_req = match self.encode(req, ask_usage) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let exchange = if req.stream {
            &self.parts.streaming
        } else {
            &self.parts.whole
        };
        if !crate::traces::on() {
            req.trace
                .inject(&tracing::Span::none(), http_req.headers_mut());
            return exchange(http_req, None);
        }
        let attempt = self.attempt_span(req);
        let span = attempt.span();
        req.trace.inject(&span, http_req.headers_mut());
        Box::pin(exchange(http_req, Some((attempt, self.parts.system))).instrument(span))
    }
}

/// The headers an upstream request's map has room for: the request's
/// own (six or so), and, as hyper reuses the map for the answer, a short
/// answer's with the gateway's (`x-palisade-*`, `x-request-id`) added.
const HEADERS_ROOM: usize = 12;

/// A request's JSON object with `model` put in (first, in place of the
/// caller's) and, with `ask_usage`, `stream_options.include_usage` set,
/// encoded without copying the object.
struct WithModel<'a> {
    body: &'a serde_json::Map<String, serde_json::Value>,
    model: &'a str,
    ask_usage: bool,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.body.len() + 2))?;
        map.serialize_entry("model", self.model)?;
        for (k, v) in self.body {
            if k == "model" || (self.ask_usage && k == "stream_options") {
                continue;
            }
            map.serialize_entry(k, v)?;
        }
        if self.ask_usage {
            // The caller's other stream options kept.
            let mut options = match self.body.get("stream_options") {
                Some(serde_json::Value::Object(o)) => o.clone(),
                _ => serde_json::Map::new(),
            };
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            map.serialize_entry("stream_options", &options)?;
        }
        map.end()
    }
}

/// `body` encoded for a provider calling the model `model`
/// ([`WithModel`]).
fn encode_body(
    body: &serde_json::Map<String, serde_json::Value>,
    model: &str,
    ask_usage: bool,
) -> Result<Bytes, BoxError> {
    Ok(Bytes::from(serde_json::to_vec(&WithModel {
        body,
        model,
        ask_usage,
    })?))
}

/// The caller's bytes with `"stream_options":{"include_usage":true}` put
/// first in the object, when they have no `stream_options` of their own
/// (else `None`: the object is re-encoded with it).
fn with_usage_asked(raw: &[u8]) -> Option<Bytes> {
    const ASK: &[u8] = br#""stream_options":{"include_usage":true}"#;
    if memchr::memmem::find(raw, b"\"stream_options\"").is_some() {
        return None;
    }
    let open = raw.iter().position(|&b| b == b'{')?;
    let empty = raw[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = Vec::with_capacity(raw.len() + ASK.len() + 1);
    out.extend_from_slice(&raw[..=open]);
    out.extend_from_slice(ASK);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&raw[open + 1..]);
    Some(Bytes::from(out))
}

/// Sends a request for a stream; with an attempt span, ends it with the
/// stream's status (its first token has come: the layers below wait for
/// it).
async fn stream_answer<S>(
    streaming: S,
    http_req: Request<Full<Bytes>>,
    traced: Traced,
) -> Result<Response<GatewayBody>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<GatewayBody>, Error = BoxError>,
{
    // A stream's usage comes at its end: the token limits that charged
    // the call settle then (`UsageLater`, reported by the answer's tail).
    let res = streaming.oneshot(http_req).await.map(|mut res| {
        if res.status().is_success() {
            res.extensions_mut()
                .insert(palisade_core::UsageLater::new());
        }
        res
    });
    if let Some((attempt, system)) = traced {
        match res {
            Ok(mut res) => {
                attempt.answered(res.status().as_u16(), None, None);
                res.extensions_mut().insert(AnsweredBy {
                    system,
                    model: None,
                });
                return Ok(res);
            }
            Err(e) => {
                attempt.failed(&*e);
                return Err(e);
            }
        }
    }
    res
}

/// Sends a request for a whole answer and reads its body within the
/// attempt; with an attempt span, ends it with what the answer said.
async fn whole_answer<S>(
    whole: S,
    http_req: Request<Full<Bytes>>,
    traced: Traced,
) -> Result<Response<GatewayBody>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<GatewayBody>, Error = BoxError>,
{
    let (attempt, system) = match traced {
        Some((a, s)) => (a, Some(s)),
        None => (crate::traces::AttemptSpan::none(), None),
    };
    let res = match whole.oneshot(http_req).await {
        Ok(res) => res,
        Err(e) => {
            attempt.failed(&*e);
            return Err(e);
        }
    };
    if !res.status().is_success() {
        attempt.answered(res.status().as_u16(), None, None);
        return Ok(res);
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match crate::whole::read_whole(body).await {
        Ok(b) => b,
        Err(e) => {
            attempt.failed(&*e);
            return Err(e);
        }
    };
    // Traces name the model that answered: the whole answer is read for
    // it. Otherwise only the usage, from the answer's end.
    let answer = match system {
        Some(_) => answer::read_answer(&bytes),
        None => answer::Answer {
            model: None,
            usage: answer::read_usage(&bytes),
        },
    };
    // What the answer used, for the rate limit's token quota to be
    // corrected by (see `GatewayClassifier::rate_info`) and the token
    // counters.
    if let Some(used) = answer.usage {
        parts.extensions.insert(used);
    }
    if let Some(system) = system {
        attempt.answered(
            parts.status.as_u16(),
            answer.model.as_deref(),
            answer.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        );
        parts.extensions.insert(AnsweredBy {
            system,
            model: answer.model.as_deref().map(Arc::from),
        });
    }
    Ok(Response::from_parts(parts, classify::full_body(bytes)))
}

/// The host of a URL, for `server.address`.
fn endpoints_host(uri: &Uri) -> &str {
    uri.host().unwrap_or("")
}

/// The tokens an answer used, as its `usage` says (carried on the answer
/// for the gateway's token counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub struct Usage {
    /// `usage.prompt_tokens` (0 if absent), or the Responses API's
    /// `input_tokens`.
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    /// `usage.completion_tokens` (0 if absent: embeddings), or the
    /// Responses API's `output_tokens`.
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
    /// `usage.total_tokens`.
    #[serde(rename = "total_tokens")]
    pub total: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_streams_usage_is_asked_for_keeping_the_callers_other_options() {
        use super::{encode_body, with_usage_asked};
        let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        // Spliced into the caller's bytes, which are otherwise unchanged.
        let raw = br#" {"model":"m","stream":true,"messages":[]}"#;
        let asked = with_usage_asked(raw).unwrap();
        assert_eq!(
            &asked[..],
            &br#" {"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#[..]
        );
        assert_eq!(
            json(&with_usage_asked(b"{ }").unwrap())["stream_options"]["include_usage"],
            true
        );
        // Options of the caller's own: the object is encoded again, with
        // them kept and the usage asked for.
        let own = br#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#;
        assert!(with_usage_asked(own).is_none());
        let map = json(own).as_object().unwrap().clone();
        let v = json(&encode_body(&map, "provider-m", true).unwrap());
        assert_eq!(v["model"], "provider-m");
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        // Not asked: the options as they were.
        let v = json(&encode_body(&map, "provider-m", false).unwrap());
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": false, "x": 1})
        );
    }

    #[test]
    fn endpoint_urls_are_made_as_the_openai_sdks_make_theirs() {
        use super::{endpoint_url, Endpoint};
        for (base, chat, embeddings) in [
            (
                "https://api.openai.com",
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.openai.com/",
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.openai.com/v1",
                "https://api.openai.com/v1/chat/completions",
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.groq.com/openai/v1/",
                "https://api.groq.com/openai/v1/chat/completions",
                "https://api.groq.com/openai/v1/embeddings",
            ),
            (
                "https://generativelanguage.googleapis.com/v1beta/openai",
                "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
                "https://generativelanguage.googleapis.com/v1beta/openai/embeddings",
            ),
            (
                "http://127.0.0.1:8000",
                "http://127.0.0.1:8000/v1/chat/completions",
                "http://127.0.0.1:8000/v1/embeddings",
            ),
        ] {
            assert_eq!(endpoint_url(base, Endpoint::Chat), chat, "{base}");
            assert_eq!(
                endpoint_url(base, Endpoint::Embeddings),
                embeddings,
                "{base}"
            );
        }
        assert_eq!(
            endpoint_url("https://api.openai.com/v1", Endpoint::Responses),
            "https://api.openai.com/v1/responses"
        );
    }

    async fn upstream(models: &[(&str, &str)]) -> super::Upstream {
        let settings = super::UpstreamSettings {
            connect_timeout: std::time::Duration::from_secs(1),
            first_token: std::time::Duration::from_secs(1),
            idle: std::time::Duration::from_secs(1),
        };
        super::Upstream::new(
            "p",
            "http://127.0.0.1:9",
            None,
            models
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            &super::HttpClient::new(
                settings.connect_timeout,
                super::POOL_IDLE,
                super::client_config(None).unwrap(),
            ),
            &settings,
            palisade_chaos::ChaosLayer::builder()
                .streams(palisade_chaos::HttpStreams)
                .build()
                .unwrap(),
        )
        .unwrap()
    }

    async fn sent(u: &super::Upstream, req: &super::ChatRequest) -> bytes::Bytes {
        use http_body_util::BodyExt;
        let http = u.encode(req, u.asks_stream_usage(req)).unwrap();
        let length = http.headers().get(http::header::CONTENT_LENGTH).cloned();
        let body = http.into_body().collect().await.unwrap().to_bytes();
        // The length written with the request (hyper writes a long one).
        match length {
            Some(v) => assert_eq!(v.to_str().unwrap(), body.len().to_string()),
            None => assert!(body.len() >= super::length::STATIC_BELOW),
        }
        body
    }

    #[tokio::test]
    async fn a_long_body_goes_as_it_came_its_length_left_to_hyper() {
        let text = "x".repeat(super::length::STATIC_BELOW);
        let raw = bytes::Bytes::from(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#
        ));
        let req = super::ChatRequest::from_wire("m", raw.clone(), false);
        assert_eq!(sent(&upstream(&[("m", "m")]).await, &req).await, raw);
    }

    #[tokio::test]
    async fn the_callers_bytes_go_as_they_came_unless_the_model_is_renamed() {
        let raw = bytes::Bytes::from_static(
            br#"{ "messages": [{"role":"user","content":"hi"}], "model":"m",  "temperature": 0.50 }"#,
        );
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&raw).unwrap();
        let req = super::ChatRequest::from_wire("m", raw.clone(), false);

        // Same name at the provider: the very bytes, spacing and all.
        let same = upstream(&[("m", "m")]).await;
        assert_eq!(sent(&same, &req).await, raw);

        // Renamed: the object re-encoded with the provider's name, the
        // rest as it was.
        let renamed = upstream(&[("m", "p-model")]).await;
        let out: serde_json::Value = serde_json::from_slice(&sent(&renamed, &req).await).unwrap();
        let mut want = serde_json::Value::Object(body.clone());
        want["model"] = "p-model".into();
        assert_eq!(out, want);

        // A body replaced after reading: its own encoding, never the old
        // bytes.
        let mut changed = req.clone();
        let mut other = body;
        other.insert("temperature".into(), 1.into());
        changed.set_body(other);
        let out: serde_json::Value = serde_json::from_slice(&sent(&same, &changed).await).unwrap();
        assert_eq!(out["temperature"], 1);
        assert_eq!(out["model"], "m");
    }
}
