//! OpenAI-style embeddings (`POST /v1/embeddings` with an `input` of one
//! or many texts, or token arrays): the JSON work of batching them, and
//! [`OpenAiEmbeddings`], a [`Batcher`] for JSON requests and answers.

use futures_util::future::BoxFuture;
use palisade_core::{BoxError, WithDeadline};
use serde_json::{Map, Value};

use crate::batcher::{Batcher, Size};

/// What requests must share to be embedded in one call: the model, the
/// answer's format and size, the end user, and whether the inputs are
/// texts or token arrays. `None` for a body with no `model` or no usable
/// `input`.
///
/// ```
/// use palisade_batch::embeddings_key;
/// use serde_json::json;
///
/// let a = json!({"model": "e", "input": "hi"});
/// let b = json!({"model": "e", "input": ["x", "y"]});
/// let c = json!({"model": "e", "input": "hi", "dimensions": 8});
/// let key = |v: &serde_json::Value| embeddings_key(v.as_object().unwrap());
/// assert_eq!(key(&a), key(&b));
/// assert_ne!(key(&a), key(&c));
/// assert_eq!(key(&json!({"model": "e"})), None);
/// ```
pub fn embeddings_key(body: &Map<String, Value>) -> Option<String> {
    let model = body.get("model")?.as_str()?;
    let kind = inputs(body)?.0;
    let field = |name: &str| body.get(name).map(Value::to_string).unwrap_or_default();
    Some(format!(
        "{model}\u{0}{kind}\u{0}{}\u{0}{}\u{0}{}",
        field("encoding_format"),
        field("dimensions"),
        field("user")
    ))
}

/// A body's inputs, each as sent, and what kind they are (`text` or
/// `tokens`).
fn inputs(body: &Map<String, Value>) -> Option<(&'static str, Vec<&Value>)> {
    match body.get("input")? {
        s @ Value::String(_) => Some(("text", vec![s])),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) if a.iter().all(Value::is_string) => Some(("text", a.iter().collect())),
        // One token array.
        Value::Array(a) if a.iter().all(Value::is_number) => {
            Some(("tokens", vec![body.get("input")?]))
        }
        // Many token arrays.
        Value::Array(a) if a.iter().all(Value::is_array) => Some(("tokens", a.iter().collect())),
        _ => None,
    }
}

/// A body's inputs and estimated tokens (a text's characters / 4, a token
/// array's length).
pub fn embeddings_size(body: &Map<String, Value>) -> Size {
    let Some((_, inputs)) = inputs(body) else {
        return Size {
            items: 1,
            tokens: 1,
        };
    };
    let tokens = inputs
        .iter()
        .map(|v| match v {
            Value::String(s) => (s.chars().count() as u64).div_ceil(4).max(1),
            Value::Array(a) => a.len() as u64,
            _ => 1,
        })
        .sum();
    Size {
        items: inputs.len(),
        tokens,
    }
}

/// One body holding every input of `bodies`, in order: the first body's
/// other fields, `input` the inputs of all (all of one
/// [`embeddings_key`]).
pub fn merge_embeddings(bodies: Vec<Map<String, Value>>) -> Map<String, Value> {
    let mut all = Vec::new();
    let mut first = None;
    for body in bodies {
        if let Some((_, inputs)) = inputs(&body) {
            all.extend(inputs.into_iter().cloned());
        }
        first.get_or_insert(body);
    }
    let mut merged = first.unwrap_or_default();
    merged.insert("input".into(), Value::Array(all));
    merged
}

/// The answer to a merged request split into one answer per request, the
/// `i`-th holding the next `sizes[i]` embeddings (by `index`, renumbered
/// from 0), the answer's other fields, and its share of `usage` (by
/// inputs; the last gets what rounding left).
///
/// ```
/// use palisade_batch::split_embeddings;
/// use serde_json::json;
///
/// let answer = json!({"object": "list", "model": "e",
///     "data": [{"index": 1, "embedding": [1.0]}, {"index": 0, "embedding": [0.0]}, {"index": 2, "embedding": [2.0]}],
///     "usage": {"prompt_tokens": 9, "total_tokens": 9}});
/// let parts = split_embeddings(&answer, &[1, 2]).unwrap();
/// assert_eq!(parts[0]["data"], json!([{"index": 0, "embedding": [0.0]}]));
/// assert_eq!(parts[1]["data"][1], json!({"index": 1, "embedding": [2.0]}));
/// assert_eq!(parts[0]["usage"]["prompt_tokens"], 3);
/// assert_eq!(parts[1]["usage"]["prompt_tokens"], 6);
/// ```
pub fn split_embeddings(answer: &Value, sizes: &[usize]) -> Result<Vec<Value>, BoxError> {
    let mut data: Vec<&Value> = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the embeddings answer has no `data` array")?
        .iter()
        .collect();
    let wanted: usize = sizes.iter().sum();
    if data.len() != wanted {
        return Err(format!(
            "the embeddings answer has {} embeddings for {wanted} inputs",
            data.len()
        )
        .into());
    }
    data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    let usage = answer.get("usage").and_then(Value::as_object);
    let mut given: Map<String, Value> = Map::new();
    let mut parts = Vec::with_capacity(sizes.len());
    let mut rest = &data[..];
    for (n, &size) in sizes.iter().enumerate() {
        let (mine, tail) = rest.split_at(size);
        rest = tail;
        let mut part = answer.as_object().cloned().unwrap_or_default();
        let mine: Vec<Value> = mine
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut d = (*d).clone();
                if let Some(o) = d.as_object_mut() {
                    o.insert("index".into(), Value::from(i));
                }
                d
            })
            .collect();
        part.insert("data".into(), Value::Array(mine));
        if let Some(usage) = usage {
            let last = n + 1 == sizes.len();
            let mut share = Map::new();
            for (field, total) in usage {
                let Some(total) = total.as_u64() else {
                    continue;
                };
                let so_far = given.get(field).and_then(Value::as_u64).unwrap_or(0);
                let mine = if last {
                    total.saturating_sub(so_far)
                } else {
                    total * size as u64 / wanted.max(1) as u64
                };
                given.insert(field.clone(), Value::from(so_far + mine));
                share.insert(field.clone(), Value::from(mine));
            }
            part.insert("usage".into(), Value::Object(share));
        }
        parts.push(Value::Object(part));
    }
    Ok(parts)
}

/// Batches OpenAI-style embeddings requests given as JSON
/// (`WithDeadline<serde_json::Value>`, the body) whose answers are JSON
/// (`serde_json::Value`). For other request types, build a [`Batcher`]
/// on [`embeddings_key`], [`embeddings_size`], [`merge_embeddings`] and
/// [`split_embeddings`] (palisade's gateway does).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAiEmbeddings;

impl Batcher<WithDeadline<Value>, Value> for OpenAiEmbeddings {
    type Key = String;

    fn key(&self, req: &WithDeadline<Value>) -> Option<String> {
        embeddings_key(req.get_ref().as_object()?)
    }

    fn size(&self, req: &WithDeadline<Value>) -> Size {
        req.get_ref().as_object().map_or(
            Size {
                items: 1,
                tokens: 1,
            },
            embeddings_size,
        )
    }

    fn merge(&self, reqs: Vec<WithDeadline<Value>>) -> WithDeadline<Value> {
        let bodies = reqs
            .into_iter()
            .filter_map(|r| match r.into_inner() {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .collect();
        WithDeadline::new(Value::Object(merge_embeddings(bodies)))
    }

    fn split(
        &self,
        res: Value,
        sizes: Vec<usize>,
    ) -> BoxFuture<'static, Result<Vec<Value>, BoxError>> {
        Box::pin(std::future::ready(split_embeddings(&res, &sizes)))
    }
}
