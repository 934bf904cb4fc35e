//! Calling one upstream provider over HTTP: the request the router
//! carries, the pooled client service, and the classifier that reads its
//! answers.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::{
    classify_error, BoxError, Classified, Classify, Deadline, Elapsed, Failure, FailureKind,
    HasDeadline, HttpClassifier, Outcome, ProviderId, TimeoutScope,
};
use palisade_deadline::{StreamTimeouts, TimeoutHeader};
use pin_project_lite::pin_project;

/// The body of every response the gateway passes on.
pub type GatewayBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The largest upstream error body read (to classify it).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A chat completion request on its way through the router: the caller's
/// JSON (shared, so each provider's copy is cheap), the model it asked
/// for, and the deadline.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The gateway's model name.
    pub model: Arc<str>,
    /// The caller's JSON object.
    pub body: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    deadline: Option<Deadline>,
}

impl ChatRequest {
    /// A request for `model`.
    pub fn new(
        model: &str,
        body: serde_json::Map<String, serde_json::Value>,
        stream: bool,
    ) -> Self {
        ChatRequest {
            model: model.into(),
            body: Arc::new(body),
            stream,
            deadline: None,
        }
    }
}

impl HasDeadline for ChatRequest {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn replace_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

/// The failure the upstream's error body showed (context length, content
/// filter...), attached to the response so the classifier need not read
/// the body again.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamFailure(pub Failure);

/// Reads the gateway's responses: the kind found in the body when there
/// is one, else the status and headers (`Retry-After` and all).
#[derive(Debug, Clone, Default)]
pub struct GatewayClassifier(HttpClassifier);

impl<B> Classify<Response<B>, BoxError> for GatewayClassifier {
    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => match res.extensions().get::<UpstreamFailure>() {
                Some(UpstreamFailure(f)) => Outcome::Failure(*f),
                None => Classify::<_, BoxError>::classify(&self.0, Ok(res)),
            },
            Err(e) => Outcome::Failure(classify_error(&**e)),
        }
    }
}

/// One upstream provider as a service: maps the model name, sends the
/// request with the pooled client, classifies error bodies, and for
/// streams waits for the first token (so a provider that never starts
/// streaming fails over before the caller has seen a byte) and holds the
/// rest to the idle timeout and the deadline.
#[derive(Clone)]
pub struct Upstream {
    id: ProviderId,
    endpoint: Uri,
    api_key: Option<HeaderValue>,
    models: Arc<BTreeMap<String, String>>,
    client: Client<HttpConnector, Full<Bytes>>,
    first_token: Duration,
    stream_timeouts: StreamTimeouts,
    classifier: HttpClassifier,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
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

/// A pooled HTTP/1 client with a connect timeout, shared by upstreams.
pub fn client(connect_timeout: Duration) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

impl Upstream {
    /// An upstream at `base_url` (scheme and authority), with its API key
    /// (sent as a bearer token) and model map.
    pub fn new(
        id: &str,
        base_url: &str,
        api_key: Option<String>,
        models: BTreeMap<String, String>,
        client: Client<HttpConnector, Full<Bytes>>,
        settings: &UpstreamSettings,
    ) -> Result<Self, BoxError> {
        let endpoint: Uri =
            format!("{}/v1/chat/completions", base_url.trim_end_matches('/')).parse()?;
        let api_key = match api_key {
            Some(k) => Some(HeaderValue::from_str(&format!("Bearer {k}"))?),
            None => None,
        };
        let stream_timeouts = StreamTimeouts::new()
            .idle(settings.idle)
            .provider(id)
            .build()?;
        Ok(Upstream {
            id: id.into(),
            endpoint,
            api_key,
            models: Arc::new(models),
            client,
            first_token: settings.first_token,
            stream_timeouts,
            classifier: HttpClassifier::new(),
        })
    }

    async fn send(self, req: ChatRequest) -> Result<Response<GatewayBody>, BoxError> {
        let Some(model) = self.models.get(&*req.model) else {
            // Not this provider's model: move on without counting it
            // against the provider.
            return Err(Classified::new(
                FailureKind::Rejected(palisade_core::RejectReason::NoProvider),
                format!("provider {} does not serve {}", self.id, req.model),
            )
            .into());
        };
        let mut json = (*req.body).clone();
        json.insert("model".into(), serde_json::Value::String(model.clone()));
        let body = Bytes::from(serde_json::to_vec(&json)?);
        let mut http_req = Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        if let Some(key) = &self.api_key {
            http_req.headers_mut().insert(AUTHORIZATION, key.clone());
        }
        if let Some(d) = req.deadline {
            TimeoutHeader::Millis(http::HeaderName::from_static("x-request-timeout-ms"))
                .write(http_req.headers_mut(), d.remaining());
        }
        let res = self.client.request(http_req).await?;
        let (parts, incoming) = res.into_parts();
        if !parts.status.is_success() {
            // Read the (small) error body, to classify it and pass it on.
            let bytes = Limited::new(incoming, MAX_ERROR_BODY)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let buffered = Response::from_parts(parts, bytes);
            let outcome = self.classifier.classify_buffered(&buffered);
            let (mut parts, bytes) = buffered.into_parts();
            if let Outcome::Failure(f) = outcome {
                parts.extensions.insert(UpstreamFailure(f));
            }
            return Ok(Response::from_parts(parts, full_body(bytes)));
        }
        if !req.stream {
            let bytes = incoming.collect().await?.to_bytes();
            return Ok(Response::from_parts(parts, full_body(bytes)));
        }
        // A stream: wait for the first frame, within the first-token
        // timeout and the deadline.
        let limit = match req.deadline {
            Some(d) => d.clamp(self.first_token),
            None => self.first_token,
        };
        let mut incoming = incoming;
        let first = match tokio::time::timeout(limit, incoming.frame()).await {
            Ok(Some(frame)) => Some(frame?),
            Ok(None) => None,
            Err(_) => {
                let scope = if limit < self.first_token {
                    TimeoutScope::Request
                } else {
                    TimeoutScope::FirstFrame
                };
                return Err(Elapsed::new(scope, limit)
                    .with_provider(self.id.clone())
                    .into());
            }
        };
        let rest = self.stream_timeouts.wrap(incoming, req.deadline);
        let body = Prepended { first, rest };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

impl tower::Service<ChatRequest> for Upstream {
    type Response = Response<GatewayBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}

/// A body already read in full.
fn full_body(bytes: Bytes) -> GatewayBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

pin_project! {
    /// A body that yields one frame already read, then the rest.
    struct Prepended<B> {
        first: Option<Frame<Bytes>>,
        #[pin]
        rest: B,
    }
}

impl<B> Body for Prepended<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }
}
