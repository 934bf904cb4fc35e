//! [`ChatRequest`]: a chat completion on its way through the router.

use std::sync::Arc;

use palisade_core::{Deadline, HasDeadline, RequestMarks};

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
    /// Whether the caller allowed (`true`) or forbade (`false`) hedging
    /// it (`x-palisade-hedge: 1` / `0`); `None`: the config's default.
    pub hedgeable: Option<bool>,
    /// The request's id (`x-request-id`: the caller's or the gateway's),
    /// sent to every provider called for it.
    pub request_id: Option<http::HeaderValue>,
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
            hedgeable: None,
            request_id: None,
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

impl RequestMarks for ChatRequest {
    fn hedgeable(&self) -> Option<bool> {
        self.hedgeable
    }

    fn streaming(&self) -> bool {
        self.stream
    }
}
