//! OpenAI-style requests and answers: [`OpenAiKey`] keys a request by what
//! decides its answer, and [`stream_to_answer`] / [`answer_to_stream`]
//! turn a streamed answer into a whole one and back, so one cached answer
//! serves callers who stream and callers who do not.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::key::{Hasher128, Lookup};

/// When a fresh cached answer may answer a request without a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshWhen {
    /// Only when the request asks for `temperature` 0 (its answer is then
    /// meant to repeat; OpenAI's default temperature is 1).
    #[default]
    TemperatureZero,
    /// Always: the same request gets the same answer while it is fresh.
    Always,
}

/// Keys an OpenAI-style request body (`/v1/chat/completions`,
/// `/v1/completions`, `/v1/embeddings`) by everything that decides its
/// answer: the endpoint, the model, the messages or prompt or input, the
/// tools and the sampling parameters. Key order, whitespace and a number's
/// spelling (`0` and `0.0`) do not change the key; `user`, `stream` and
/// `stream_options` do not either unless [`vary_user`](Self::vary_user) /
/// [`vary_stream`](Self::vary_stream) say so.
///
/// ```
/// use palisade_cache::OpenAiKey;
/// use serde_json::json;
///
/// let keys = OpenAiKey::new();
/// let a = json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
/// let b = json!({"messages": [{"content": "hi", "role": "user"}], "temperature": 0.0, "model": "gpt-4o", "user": "ann", "stream": true});
/// let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
/// let la = keys.lookup("/v1/chat/completions", a);
/// let lb = keys.lookup("/v1/chat/completions", b);
/// assert_eq!(la.key, lb.key);
/// assert!(la.fresh, "temperature 0: a fresh answer may be reused");
/// assert!(lb.stream && !la.stream);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiKey {
    vary_user: bool,
    vary_stream: bool,
    fresh: FreshWhen,
}

/// Fields that never decide the answer's content.
const STREAM_FIELDS: [&str; 2] = ["stream", "stream_options"];

impl OpenAiKey {
    /// Keys that ignore `user` and `stream`; fresh hits at temperature 0.
    pub fn new() -> Self {
        OpenAiKey::default()
    }

    /// Keys as `settings` say ([`fresh_when`](crate::CacheSettings::fresh_when),
    /// [`vary_user`](crate::CacheSettings::vary_user)).
    pub fn from_settings(settings: &crate::CacheSettings) -> Self {
        OpenAiKey::new()
            .fresh_when(settings.fresh_when)
            .vary_user(settings.vary_user)
    }

    /// Whether `user` is part of the key (callers never share answers).
    pub fn vary_user(mut self, on: bool) -> Self {
        self.vary_user = on;
        self
    }

    /// Whether `stream` is part of the key (a streamed and a whole answer
    /// are cached apart).
    pub fn vary_stream(mut self, on: bool) -> Self {
        self.vary_stream = on;
        self
    }

    /// When a fresh answer may be reused.
    pub fn fresh_when(mut self, when: FreshWhen) -> Self {
        self.fresh = when;
        self
    }

    /// The lookup for a request to `endpoint` with this body.
    pub fn lookup(&self, endpoint: &str, body: &Map<String, Value>) -> Lookup {
        let mut h = Hasher128::new();
        h.write(endpoint.as_bytes());
        let mut keys: Vec<&String> = body
            .keys()
            .filter(|k| {
                (self.vary_user || k.as_str() != "user")
                    && (self.vary_stream || !STREAM_FIELDS.contains(&k.as_str()))
            })
            .collect();
        keys.sort_unstable();
        for k in keys {
            h.sep(b'k');
            h.write(k.as_bytes());
            hash_value(&mut h, &body[k]);
        }
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let fresh = match self.fresh {
            FreshWhen::Always => true,
            FreshWhen::TemperatureZero => body
                .get("temperature")
                .and_then(Value::as_f64)
                .is_some_and(|t| t == 0.0),
        };
        Lookup {
            key: h.finish(),
            fresh,
            stream,
        }
    }
}

/// Hashes a JSON value canonically: objects by sorted key, numbers by
/// value.
fn hash_value(h: &mut Hasher128, v: &Value) {
    match v {
        Value::Null => h.sep(b'n'),
        Value::Bool(b) => {
            h.sep(b'b');
            h.write(&[u8::from(*b)]);
        }
        Value::Number(n) => {
            h.sep(b'#');
            match n.as_f64() {
                Some(f) => h.write(&f.to_bits().to_le_bytes()),
                None => h.write(n.to_string().as_bytes()),
            }
        }
        Value::String(s) => {
            h.sep(b's');
            h.write(s.as_bytes());
        }
        Value::Array(a) => {
            h.sep(b'[');
            for x in a {
                hash_value(h, x);
            }
            h.sep(b']');
        }
        Value::Object(o) => {
            h.sep(b'{');
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            for k in keys {
                h.sep(b'k');
                h.write(k.as_bytes());
                hash_value(h, &o[k]);
            }
            h.sep(b'}');
        }
    }
}

/// The whole answer a streamed OpenAI answer adds up to (the SSE bytes as
/// sent: `data: {chunk}` events and `data: [DONE]`): a `chat.completion`
/// from `chat.completion.chunk`s (each choice's role, content, tool calls
/// and finish reason), a `text_completion` from completion chunks, with the
/// usage chunk's `usage` if there was one. `None` if the stream did not
/// finish (no `[DONE]`) or a chunk is not JSON.
///
/// ```
/// use palisade_cache::{answer_to_stream, stream_to_answer};
///
/// let sse = concat!(
///     "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
///     "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
///     "data: [DONE]\n\n",
/// );
/// let answer = stream_to_answer(sse.as_bytes()).unwrap();
/// assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
/// assert_eq!(answer["object"], "chat.completion");
/// // And back: the same content, streamed.
/// let again = stream_to_answer(&answer_to_stream(&answer)).unwrap();
/// assert_eq!(again["choices"], answer["choices"]);
/// ```
pub fn stream_to_answer(sse: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(sse).ok()?;
    let mut head: Option<Map<String, Value>> = None;
    let mut choices: Vec<Map<String, Value>> = Vec::new();
    let mut usage = Value::Null;
    let mut done = false;
    let mut completion = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Map<String, Value> = serde_json::from_str(data).ok()?;
        if head.is_none() {
            completion = chunk.get("object").and_then(Value::as_str) == Some("text_completion");
            head = Some(chunk.clone());
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for c in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if i >= 128 {
                return None;
            }
            while choices.len() <= i {
                choices.push(Map::new());
            }
            merge_choice(&mut choices[i], c, completion);
        }
    }
    if !done {
        return None;
    }
    let mut out = head?;
    out.insert(
        "object".into(),
        Value::from(if completion {
            "text_completion"
        } else {
            "chat.completion"
        }),
    );
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.insert("index".into(), Value::from(i));
            c.entry("finish_reason").or_insert(Value::Null);
            Value::Object(c)
        })
        .collect();
    out.insert("choices".into(), Value::Array(choices));
    if usage.is_null() {
        out.remove("usage");
    } else {
        out.insert("usage".into(), usage);
    }
    Some(Value::Object(out))
}

/// Adds one chunk's choice to the whole choice being built.
fn merge_choice(whole: &mut Map<String, Value>, chunk: &Value, completion: bool) {
    if let Some(f) = chunk.get("finish_reason").filter(|f| !f.is_null()) {
        whole.insert("finish_reason".into(), f.clone());
    }
    if completion {
        let text = chunk.get("text").and_then(Value::as_str).unwrap_or("");
        append(whole, "text", text);
        return;
    }
    let Some(delta) = chunk.get("delta").and_then(Value::as_object) else {
        return;
    };
    let message = whole
        .entry("message")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(message) = message.as_object_mut() else {
        return;
    };
    if let Some(role) = delta.get("role") {
        message.insert("role".into(), role.clone());
    }
    if let Some(text) = delta.get("content").and_then(Value::as_str) {
        append(message, "content", text);
    }
    if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
        append(message, "refusal", refusal);
    }
    for call in delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        merge_tool_call(message, call);
    }
}

/// A tool call's pieces: its id, type and name once, its arguments in
/// parts.
fn merge_tool_call(message: &mut Map<String, Value>, call: &Value) {
    let i = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    let Some(calls) = message
        .entry("tool_calls")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
    else {
        return;
    };
    if i >= 128 {
        return;
    }
    while calls.len() <= i {
        calls.push(Value::Object(Map::new()));
    }
    let Some(whole) = calls[i].as_object_mut() else {
        return;
    };
    for field in ["id", "type"] {
        if let Some(v) = call.get(field) {
            whole.insert(field.into(), v.clone());
        }
    }
    if let Some(f) = call.get("function").and_then(Value::as_object) {
        let func = whole
            .entry("function")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(func) = func.as_object_mut() {
            if let Some(name) = f.get("name") {
                func.insert("name".into(), name.clone());
            }
            if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                append(func, "arguments", args);
            }
        }
    }
}

fn append(map: &mut Map<String, Value>, field: &str, text: &str) {
    match map.get_mut(field) {
        Some(Value::String(s)) => s.push_str(text),
        _ => {
            map.insert(field.into(), Value::from(text));
        }
    }
}

/// A whole OpenAI answer (`chat.completion` or `text_completion`) as the
/// SSE stream that carries it: per choice a chunk with its role and whole
/// content (and tool calls), then a chunk with its finish reason, then the
/// usage chunk if the answer had usage, then `data: [DONE]`.
pub fn answer_to_stream(answer: &Value) -> Vec<u8> {
    let completion = answer["object"] == "text_completion";
    let object = if completion {
        "text_completion"
    } else {
        "chat.completion.chunk"
    };
    let mut out = Vec::new();
    let mut event = |chunk: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    let chunk = |choices: Value| {
        let mut c = Map::new();
        for field in ["id", "created", "model", "system_fingerprint"] {
            if let Some(v) = answer.get(field) {
                c.insert(field.into(), v.clone());
            }
        }
        c.insert("object".into(), Value::from(object));
        c.insert("choices".into(), choices);
        Value::Object(c)
    };
    for (i, choice) in answer["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let index = choice.get("index").cloned().unwrap_or(Value::from(i));
        let body = if completion {
            serde_json::json!({"index": index, "text": choice["text"], "finish_reason": null})
        } else {
            let mut delta = choice["message"].as_object().cloned().unwrap_or_default();
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for (n, call) in calls.iter_mut().enumerate() {
                    if let Some(call) = call.as_object_mut() {
                        call.insert("index".into(), Value::from(n));
                    }
                }
            }
            serde_json::json!({"index": index, "delta": delta, "finish_reason": null})
        };
        event(chunk(Value::Array(vec![body])));
        let finish = &choice["finish_reason"];
        let end = if completion {
            serde_json::json!({"index": index, "text": "", "finish_reason": finish})
        } else {
            serde_json::json!({"index": index, "delta": {}, "finish_reason": finish})
        };
        event(chunk(Value::Array(vec![end])));
    }
    if let Some(usage) = answer.get("usage").filter(|u| !u.is_null()) {
        let mut c = chunk(Value::Array(Vec::new()));
        c["usage"] = usage.clone();
        event(c);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: Value) -> Lookup {
        OpenAiKey::new().lookup("/v1/chat/completions", v.as_object().unwrap())
    }

    #[test]
    fn what_decides_the_answer_changes_the_key_and_nothing_else_does() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2});
        let k = key(base.clone()).key;
        for changed in [
            json!({"model": "n", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}),
            json!({"model": "m", "messages": [{"role": "user", "content": "ho"}], "temperature": 0.2}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "tools": []}),
            json!({"model": "m", "messages": [{"role": "system", "content": "hi"}], "temperature": 0.2}),
        ] {
            assert_ne!(key(changed.clone()).key, k, "{changed}");
        }
        let same = json!({"temperature": 0.2, "user": "x", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"content": "hi", "role": "user"}], "model": "m"});
        assert_eq!(key(same).key, k);
        assert!(!key(base).fresh, "temperature 0.2 is not deterministic");
        // Other endpoints are other entries.
        let other = OpenAiKey::new().lookup(
            "/v1/completions",
            json!({"model": "m"}).as_object().unwrap(),
        );
        assert_ne!(other.key, key(json!({"model": "m"})).key);
        // vary_user and vary_stream put them back in.
        let with_user = |u: &str| {
            OpenAiKey::new()
                .vary_user(true)
                .lookup("/", json!({"model": "m", "user": u}).as_object().unwrap())
                .key
        };
        assert_ne!(with_user("a"), with_user("b"));
        // Strings cannot masquerade as numbers.
        assert_ne!(key(json!({"seed": 1})).key, key(json!({"seed": "1"})).key);
        assert!(
            OpenAiKey::new()
                .fresh_when(FreshWhen::Always)
                .lookup("/", &Map::new())
                .fresh
        );
    }

    #[test]
    fn tool_calls_and_usage_survive_a_stream_and_back() {
        let answer = json!({
            "id": "c", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        });
        let sse = answer_to_stream(&answer);
        let back = stream_to_answer(&sse).unwrap();
        assert_eq!(
            back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"]["total_tokens"], 7);
        // Arguments in pieces are joined.
        let pieces = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let whole = stream_to_answer(pieces.as_bytes()).unwrap();
        assert_eq!(
            whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        // Unfinished or garbled streams are not answers.
        assert!(stream_to_answer(&pieces.as_bytes()[..pieces.len() - 14]).is_none());
        assert!(stream_to_answer(b"data: {oops\n\ndata: [DONE]\n\n").is_none());
    }

    #[test]
    fn completions_stream_as_text() {
        let answer = json!({"id": "x", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": "abc", "finish_reason": "stop"}]});
        let back = stream_to_answer(&answer_to_stream(&answer)).unwrap();
        assert_eq!(back["choices"][0]["text"], "abc");
        assert_eq!(back["object"], "text_completion");
    }
}
