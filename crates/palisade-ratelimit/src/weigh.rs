//! [`Weigh`]: what a request costs in tokens, before it is sent.

/// Gives a request's weight in tokens, for token quotas (request quotas
/// always count 1). Estimates are corrected by the usage the response
/// reports ([`TokenUsage`](palisade_core::TokenUsage)), so they need only
/// be cheap and roughly right. Closures `Fn(&Req) -> u64` implement it.
pub trait Weigh<Req> {
    /// The request's estimated tokens.
    fn tokens(&self, req: &Req) -> u64;
}

impl<Req, F: Fn(&Req) -> u64> Weigh<Req> for F {
    fn tokens(&self, req: &Req) -> u64 {
        self(req)
    }
}

/// Weighs nothing up front: token quotas are charged only by the usage
/// responses report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unweighted;

impl<Req> Weigh<Req> for Unweighted {
    fn tokens(&self, _: &Req) -> u64 {
        0
    }
}

/// Estimates an OpenAI-style request's tokens cheaply: the characters of
/// its text over 4, plus what it may generate (`max_completion_tokens`,
/// else `max_tokens`, else the Responses API's `max_output_tokens`, else
/// nothing).
///
/// Its text: a chat request's `messages` (each `content` a string or a
/// list of parts with `text`), a completion's `prompt`, and `input`: an
/// embeddings request's string or list of strings, or a Responses API
/// request's string or list of items (strings, or messages with a
/// `content` as above), with its `instructions`.
///
/// ```
/// let body = serde_json::json!({
///     "messages": [{"role": "user", "content": "Say hello in twelve characters"}],
///     "max_tokens": 50
/// });
/// assert_eq!(palisade_ratelimit::estimate_openai_tokens(&body), 30 / 4 + 1 + 50);
/// let embed = serde_json::json!({"input": ["twelve chars", "and sixteen more"]});
/// assert_eq!(palisade_ratelimit::estimate_openai_tokens(&embed), 28 / 4);
/// let response = serde_json::json!({
///     "instructions": "be brief",
///     "input": [{"role": "user", "content": [{"type": "input_text", "text": "and sixteen more"}]}],
///     "max_output_tokens": 100
/// });
/// assert_eq!(palisade_ratelimit::estimate_openai_tokens(&response), 24 / 4 + 100);
/// ```
pub fn estimate_openai_tokens(body: &serde_json::Value) -> u64 {
    body.as_object().map_or(0, estimate_openai_tokens_in)
}

/// The characters of a message's `content`: a string, or a list of parts
/// whose `text` counts.
fn content_chars(content: Option<&serde_json::Value>) -> usize {
    match content {
        Some(serde_json::Value::String(s)) => s.chars().count(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .map(|t| t.chars().count())
            .sum(),
        _ => 0,
    }
}

/// [`estimate_openai_tokens`] of a request body already parsed into its
/// JSON object.
pub fn estimate_openai_tokens_in(body: &serde_json::Map<String, serde_json::Value>) -> u64 {
    let mut chars = 0usize;
    if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
        for m in messages {
            chars += content_chars(m.get("content"));
        }
    }
    for field in ["prompt", "input", "instructions"] {
        match body.get(field) {
            Some(serde_json::Value::String(t)) => chars += t.chars().count(),
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    chars += match item {
                        serde_json::Value::String(t) => t.chars().count(),
                        // A Responses API input item: a message.
                        serde_json::Value::Object(m) => content_chars(m.get("content")),
                        _ => 0,
                    };
                }
            }
            _ => {}
        }
    }
    let prompt = (chars as u64).div_ceil(4);
    let completion = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(|v| v.as_u64()))
        .unwrap_or(0);
    prompt + completion
}
