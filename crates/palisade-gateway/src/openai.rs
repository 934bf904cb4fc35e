//! The slice of the OpenAI wire format the gateway speaks: the requests it
//! reads (chat completions, completions, embeddings), and the error body
//! it writes.

use serde::{Deserialize, Serialize};

/// The fields of a request the gateway looks at; the rest of the JSON
/// object is passed to the provider untouched. What else must be there
/// depends on the endpoint ([`Endpoint::check`](crate::upstream::Endpoint::check)).
#[derive(Debug, Clone, Deserialize)]
pub struct RequestHead {
    /// The model the caller asked for (a name the gateway lists).
    pub model: String,
    /// Whether the caller wants server-sent events.
    #[serde(default)]
    pub stream: bool,
}

/// An OpenAI-style error body: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What happened, for a person.
    pub message: String,
    /// The error type, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
    /// For upstream failures: each provider tried and what happened.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub providers: Vec<String>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(kind: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.to_owned(),
                code: code.map(str::to_owned),
                providers: Vec::new(),
            },
        }
    }
}
