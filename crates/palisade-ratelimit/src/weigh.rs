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
/// its text over 4 (a chat request's messages, a completion's `prompt`, an
/// embeddings request's `input`: a string or an array of strings), plus
/// what it may generate (`max_completion_tokens`, else `max_tokens`, else
/// nothing).
///
/// ```
/// let body = serde_json::json!({
///     "messages": [{"role": "user", "content": "Say hello in twelve characters"}],
///     "max_tokens": 50
/// });
/// assert_eq!(palisade_ratelimit::estimate_openai_tokens(&body), 30 / 4 + 1 + 50);
/// let embed = serde_json::json!({"input": ["twelve chars", "and sixteen more"]});
/// assert_eq!(palisade_ratelimit::estimate_openai_tokens(&embed), 28 / 4);
/// ```
pub fn estimate_openai_tokens(body: &serde_json::Value) -> u64 {
    body.as_object().map_or(0, estimate_openai_tokens_in)
}

/// [`estimate_openai_tokens`] of a request body already parsed into its
/// JSON object.
pub fn estimate_openai_tokens_in(body: &serde_json::Map<String, serde_json::Value>) -> u64 {
    let mut chars = 0usize;
    if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
        for m in messages {
            match m.get("content") {
                Some(serde_json::Value::String(s)) => chars += s.chars().count(),
                Some(serde_json::Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                            chars += t.chars().count();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for field in ["prompt", "input"] {
        match body.get(field) {
            Some(serde_json::Value::String(t)) => chars += t.chars().count(),
            Some(serde_json::Value::Array(items)) => {
                chars += items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .map(|t| t.chars().count())
                    .sum::<usize>();
            }
            _ => {}
        }
    }
    let prompt = (chars as u64).div_ceil(4);
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(|v| v.as_u64()))
        .unwrap_or(0);
    prompt + completion
}
