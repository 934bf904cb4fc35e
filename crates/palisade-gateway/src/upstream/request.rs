//! [`ChatRequest`]: a request on its way through the router, and the
//! [`Endpoint`] it is for.

use std::sync::Arc;

use palisade_core::{Deadline, HasDeadline, RequestMarks};

/// Which of OpenAI's endpoints a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    #[default]
    Chat,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings` (never streamed).
    Embeddings,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings];

    /// Its place in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        match self {
            Endpoint::Chat => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
        }
    }

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }

    /// What a request to it must hold besides `model`: chat completions a
    /// `messages` array, completions a `prompt`, embeddings an `input`.
    pub fn check(self, body: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        match self {
            Endpoint::Chat => match body.get("messages") {
                Some(serde_json::Value::Array(_)) => Ok(()),
                Some(_) => Err("`messages` must be an array".into()),
                None => Err("missing field `messages`".into()),
            },
            Endpoint::Completions if !body.contains_key("prompt") => {
                Err("missing field `prompt`".into())
            }
            Endpoint::Embeddings if !body.contains_key("input") => {
                Err("missing field `input`".into())
            }
            _ => Ok(()),
        }
    }
}

/// A request on its way through the router (a chat completion, a
/// completion or embeddings): the caller's JSON (shared, so each
/// provider's copy is cheap), the model it asked for, and the deadline.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The endpoint it is for.
    pub endpoint: Endpoint,
    /// The gateway's model name.
    pub model: Arc<str>,
    /// The caller's JSON object ([`body`](Self::body)).
    body: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The bytes that object was read from, when it is still what they
    /// say: sent as they came to a provider that calls the model by the
    /// gateway's name (no copy, no re-encoding).
    raw: Option<bytes::Bytes>,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// Whether the caller allowed (`true`) or forbade (`false`) hedging
    /// it (`x-palisade-hedge: 1` / `0`); `None`: the config's default.
    pub hedgeable: Option<bool>,
    /// The request's id (`x-request-id`: the caller's or the gateway's),
    /// sent to every provider called for it.
    pub request_id: Option<http::HeaderValue>,
    /// The id of the client key that sent it, when the gateway has keys
    /// (the per-key rate limits count by it).
    pub client: Option<Arc<str>>,
    /// What the caller's `cache-control` allows: `no-store` keeps the
    /// request and its answer out of the cache, `no-cache` forbids a
    /// fresh hit (the answer is still stored).
    pub cache: CacheControl,
    /// The trace context sent to each provider called.
    pub(crate) trace: crate::traces::RequestTrace,
    deadline: Option<Deadline>,
}

/// What a request's `cache-control` header allows the gateway's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheControl {
    /// `no-store`: neither read nor written.
    pub no_store: bool,
    /// `no-cache`: no fresh hit; the call is made.
    pub no_cache: bool,
}

impl CacheControl {
    /// Reads `cache-control` (directives separated by commas, any case);
    /// anything else in it is ignored.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut c = CacheControl::default();
        for v in headers.get_all(http::header::CACHE_CONTROL) {
            for d in v.to_str().unwrap_or("").split(',') {
                let d = d.trim();
                c.no_store |= d.eq_ignore_ascii_case("no-store");
                c.no_cache |= d.eq_ignore_ascii_case("no-cache");
            }
        }
        c
    }
}

impl ChatRequest {
    /// A request for `model`.
    pub fn new(
        model: &str,
        body: serde_json::Map<String, serde_json::Value>,
        stream: bool,
    ) -> Self {
        ChatRequest {
            endpoint: Endpoint::Chat,
            model: model.into(),
            body: Arc::new(body),
            raw: None,
            stream,
            hedgeable: None,
            request_id: None,
            client: None,
            cache: CacheControl::default(),
            trace: Default::default(),
            deadline: None,
        }
    }
}

impl ChatRequest {
    /// A request read from the wire: `body` parsed from `raw`, which is
    /// sent as it is where the provider's model name is the gateway's.
    pub(crate) fn from_wire(
        model: &str,
        body: serde_json::Map<String, serde_json::Value>,
        raw: bytes::Bytes,
        stream: bool,
    ) -> Self {
        ChatRequest {
            raw: Some(raw),
            ..ChatRequest::new(model, body, stream)
        }
    }

    /// The caller's JSON object.
    pub fn body(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.body
    }

    /// Replaces the JSON object (the caller's bytes are no longer sent).
    pub fn set_body(&mut self, body: serde_json::Map<String, serde_json::Value>) {
        self.body = Arc::new(body);
        self.raw = None;
    }

    /// The JSON object, taken out (copied only if shared).
    pub fn into_body(self) -> serde_json::Map<String, serde_json::Value> {
        Arc::unwrap_or_clone(self.body)
    }

    /// The caller's bytes, if they still say what the body says.
    pub(crate) fn raw(&self) -> Option<&bytes::Bytes> {
        self.raw.as_ref()
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

impl RequestMarks for ChatRequest {
    fn hedgeable(&self) -> Option<bool> {
        self.hedgeable
    }

    fn streaming(&self) -> bool {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn each_endpoint_is_at_its_index() {
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }
}
