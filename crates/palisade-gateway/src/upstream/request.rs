//! [`ChatRequest`]: a request on its way through the router, and the
//! [`Endpoint`] it is for.

use std::sync::{Arc, OnceLock};

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
    /// `POST /v1/responses` (OpenAI's Responses API; streamed as typed
    /// events, `event:` lines before their `data:`).
    Responses,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
    ];

    /// Its place in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        match self {
            Endpoint::Chat => 0,
            Endpoint::Completions => 1,
            Endpoint::Embeddings => 2,
            Endpoint::Responses => 3,
        }
    }

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// Its path after the API's version (`/chat/completions`): what is
    /// added to an upstream's `base_url` when it names the API's root.
    pub fn api_path(self) -> &'static str {
        let path = self.path();
        path.strip_prefix("/v1").unwrap_or(path)
    }

    /// What a request to it must hold besides `model`: chat completions a
    /// `messages` array, completions a `prompt`, embeddings an `input`.
    /// A response needs nothing more here: its `input` may be left out
    /// when it continues a stored conversation or uses a stored prompt,
    /// which only the provider can check.
    pub fn check(self, head: &crate::openai::RequestHead<'_>) -> Result<(), String> {
        use crate::openai::Field;
        match self {
            Endpoint::Chat => match head.messages {
                Field::Array => Ok(()),
                Field::Other => Err("`messages` must be an array".into()),
                Field::Missing => Err("missing field `messages`".into()),
            },
            Endpoint::Completions if head.prompt == Field::Missing => {
                Err("missing field `prompt`".into())
            }
            Endpoint::Embeddings if head.input == Field::Missing => {
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
    /// The caller's JSON object ([`body`](Self::body)), shared by the
    /// request's copies (a retry's, a hedge's, each provider's).
    body: Arc<Body>,
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
    /// The one provider that may answer it: the one that stored the
    /// response a Responses API request continues (see
    /// [`Pinned`](palisade_core::Pinned)).
    pub pinned: Option<palisade_core::ProviderId>,
    /// The response a Responses API request continues, when neither this
    /// gateway nor its fleet remembers which provider stored it: if the
    /// provider it reaches has no such response, the others are asked.
    pub(crate) unknown_previous: Option<String>,
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
        ChatRequest::with_body(model, Body::given(body), stream)
    }

    fn with_body(model: impl Into<Arc<str>>, body: Body, stream: bool) -> Self {
        ChatRequest {
            endpoint: Endpoint::Chat,
            model: model.into(),
            body: Arc::new(body),
            stream,
            hedgeable: None,
            request_id: None,
            client: None,
            cache: CacheControl::default(),
            pinned: None,
            unknown_previous: None,
            trace: Default::default(),
            deadline: None,
        }
    }
}

impl ChatRequest {
    /// A request read from the wire: `raw`, a JSON object already checked,
    /// is sent as it is where the provider's model name is the gateway's,
    /// and parsed only if something asks for [`body`](Self::body).
    pub(crate) fn from_wire(model: impl Into<Arc<str>>, raw: bytes::Bytes, stream: bool) -> Self {
        let body = Body {
            raw: Some(raw),
            map: OnceLock::new(),
            asks_usage: OnceLock::new(),
        };
        ChatRequest::with_body(model, body, stream)
    }

    /// The caller's JSON object (read from its bytes on the first call).
    pub fn body(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.body.map()
    }

    /// Replaces the JSON object (the caller's bytes are no longer sent).
    pub fn set_body(&mut self, body: serde_json::Map<String, serde_json::Value>) {
        self.body = Arc::new(Body::given(body));
    }

    /// The JSON object, taken out (copied only if shared).
    pub fn into_body(self) -> serde_json::Map<String, serde_json::Value> {
        match Arc::try_unwrap(self.body) {
            Ok(mut body) => {
                body.map();
                body.map.take().unwrap_or_default()
            }
            Err(shared) => shared.map().clone(),
        }
    }

    /// Whether the caller asked for a stream's usage chunk
    /// (`stream_options.include_usage: true`). A body whose bytes never
    /// name `include_usage` is not parsed to say no; the answer is found
    /// once for all of the request's copies.
    pub fn asks_usage(&self) -> bool {
        *self.body.asks_usage.get_or_init(|| {
            if let Some(raw) = self.raw() {
                if memchr::memmem::find(raw, b"include_usage").is_none() {
                    return false;
                }
            }
            self.body()
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        })
    }

    /// Whether it is a chat or completion stream whose caller did not ask
    /// for its usage chunk: the gateway asks the provider for it (the
    /// token limits and counts need it) and takes it out of the caller's
    /// stream.
    pub fn usage_unasked(&self) -> bool {
        self.stream
            && matches!(self.endpoint, Endpoint::Chat | Endpoint::Completions)
            && !self.asks_usage()
    }

    /// The caller's bytes, if they still say what the body says.
    pub(crate) fn raw(&self) -> Option<&bytes::Bytes> {
        self.body.raw.as_ref()
    }
}

/// A request's JSON object: given whole, or the caller's bytes, parsed
/// when first asked for. Most requests never are: their bytes go upstream
/// as they came, and reading a long prompt into a `Value` would cost more
/// than the rest of the gateway's work.
#[derive(Debug)]
struct Body {
    /// The bytes the object is read from, while they still say what it
    /// says.
    raw: Option<bytes::Bytes>,
    map: OnceLock<serde_json::Map<String, serde_json::Value>>,
    /// Whether it asks for a stream's usage chunk, found once for all of
    /// the request's copies (each attempt's).
    asks_usage: OnceLock<bool>,
}

impl Body {
    fn given(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Body {
            raw: None,
            map: OnceLock::from(map),
            asks_usage: OnceLock::new(),
        }
    }

    fn map(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.map.get_or_init(|| {
            // The bytes were checked to be a JSON object when read.
            self.raw
                .as_deref()
                .and_then(|raw| serde_json::from_slice(raw).ok())
                .unwrap_or_default()
        })
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

    fn pinned(&self) -> Option<&palisade_core::ProviderId> {
        self.pinned.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_is_at_its_index() {
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }

    const RAW: &[u8] = br#"{"model":"m", "messages":[{"role":"user","content":"hi \"there\""}], "temperature":0.5}"#;

    #[test]
    fn a_request_from_the_wire_is_parsed_only_when_its_body_is_asked_for() {
        let req = ChatRequest::from_wire("m", bytes::Bytes::from_static(RAW), false);
        let copy = req.clone();
        assert!(req.body.map.get().is_none(), "not parsed yet");
        assert_eq!(req.raw().map(|b| &b[..]), Some(RAW));
        let whole: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(RAW).unwrap();
        assert_eq!(req.body(), &whole);
        // Parsed once, for every copy.
        assert!(copy.body.map.get().is_some());
        assert_eq!(copy.into_body(), whole);
        assert_eq!(req.into_body(), whole, "the last copy gives its own");
    }

    #[test]
    fn a_body_set_replaces_the_bytes() {
        let mut req = ChatRequest::from_wire("m", bytes::Bytes::from_static(RAW), false);
        let mut other = serde_json::Map::new();
        other.insert("input".into(), "x".into());
        req.set_body(other.clone());
        assert_eq!(req.raw(), None);
        assert_eq!(req.body(), &other);
        let made = ChatRequest::new("m", other.clone(), false);
        assert_eq!(made.raw(), None);
        assert_eq!(made.into_body(), other);
    }
}
