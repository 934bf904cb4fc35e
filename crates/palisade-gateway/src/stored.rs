//! Calls about a response a provider stored (OpenAI's Responses API):
//! `GET` and `DELETE /v1/responses/{id}`, `GET
//! /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`,
//! what the SDKs' `responses.retrieve`, `.delete`, `.input_items.list`
//! and `.cancel` send (a background response is polled with the first).
//!
//! A stored response lives at the provider that made it alone, so such a
//! call goes there: to the provider the gateway remembers for the id
//! (`affinity.rs`, which in a fleet asks the fleet's notes too), or, for
//! an id it does not remember (forgotten, made before a restart, Redis
//! down), to each upstream in turn (by id) until one has it. One that
//! cannot tell (5xx, 429, no answer) does not end the asking; if no other
//! has the response, its failure is the caller's answer (no answer:
//! 502), not another's `404`. With
//! client keys, only the key that made a response may call about it: an
//! id made with another key, or one the gateway does not remember (whose
//! maker it cannot tell), is answered `404` as OpenAI answers for a
//! response that does not exist. The call goes to the provider alone,
//! outside its stack (no retry, no breaker, no fallback: no other
//! provider has the response); its answer is passed on as it came, with
//! `x-request-id` and, with `served_headers`, `x-palisade-provider`.
//!
//! Each call is counted in `palisade_gateway_stored_calls_total` (by
//! provider, call and status class) and, with the access log on, written
//! as a line of its own (`stored response call`: the key's id, the call,
//! the response's id, the status, the provider, the time).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::affinity::Known;
use crate::errors::{error, upstream_error};
use crate::openai::ErrorBody;
use crate::routes::{provider_value, PROVIDER_HEADER, REQUEST_ID_HEADER};
use crate::state::AppState;

/// `404` in OpenAI's form, with `code` (`null` when `None`).
pub(crate) fn not_found(code: &str, message: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorBody::new("invalid_request_error", Some(code), message),
    )
}

/// The response id a path names and the rest of the path after
/// `/v1/responses` (with the query added): `("resp_1",
/// "/resp_1/input_items?limit=5")`. `None` for an id that is empty or
/// has anything but letters, digits, `_` and `-` (as OpenAI's ids have):
/// the id goes into the provider's URL, where `..` or an escape could
/// name another of its paths.
fn id_and_rest(uri: &http::Uri) -> Option<(&str, String)> {
    let after = uri.path().strip_prefix("/v1/responses")?;
    let id = after.strip_prefix('/')?.split('/').next()?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let rest = match uri.query() {
        Some(q) => format!("{after}?{q}"),
        None => after.to_owned(),
    };
    Some((id, rest))
}

/// Whether a call asks for the response's events as a stream
/// (`?stream=true`, a background response followed as it runs).
fn streamed(method: &http::Method, uri: &http::Uri) -> bool {
    *method == http::Method::GET
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "stream=true"))
}

/// Any call about a stored response (see the module's documentation).
pub(crate) async fn call(
    State(s): State<Arc<AppState>>,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let started = tokio::time::Instant::now();
    let request_id = crate::routes::request_id(&headers);
    let (key, mut res) = match s.client(&headers) {
        Ok(key) => {
            let res = answer(&s, &method, &uri, key.as_deref(), body, &request_id).await;
            (key, res)
        }
        Err(refused) => {
            s.counters.client_errors.add(1);
            (None, refused.into_response())
        }
    };
    let call = call_name(&method, &uri);
    let at = res.extensions_mut().remove::<AnsweredAt>().map(|a| a.0);
    s.requests.record_stored(at.as_ref(), call, res.status());
    if tracing::enabled!(target: "palisade_gateway::access", tracing::Level::INFO) {
        tracing::info!(
            target: "palisade_gateway::access",
            key = key.as_ref().map_or("-", |k| &*k.id),
            call,
            id = id_and_rest(&uri).map_or("-", |(id, _)| id),
            status = res.status().as_u16(),
            provider = at.as_ref().map_or("-", |p| p.as_str()),
            request_id = request_id.to_str().unwrap_or("-"),
            total_ms = started.elapsed().as_millis() as u64,
            "stored response call"
        );
    }
    res.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    res
}

/// The provider that gave a stored-response call's answer, on the answer
/// until it is counted.
#[derive(Debug, Clone)]
struct AnsweredAt(palisade_core::ProviderId);

/// Which call a request about a stored response is, as the SDKs name it.
fn call_name(method: &http::Method, uri: &http::Uri) -> &'static str {
    let path = uri.path();
    if *method == http::Method::DELETE {
        "delete"
    } else if path.ends_with("/input_items") {
        "input_items"
    } else if path.ends_with("/cancel") {
        "cancel"
    } else {
        "retrieve"
    }
}

async fn answer(
    s: &AppState,
    method: &http::Method,
    uri: &http::Uri,
    key: Option<&crate::auth::ClientKey>,
    body: Bytes,
    request_id: &HeaderValue,
) -> Response {
    let Some((id, rest)) = id_and_rest(uri) else {
        return not_found("not_found", "no response has such an id");
    };
    let missing = || not_found("not_found", &format!("Response with id '{id}' not found."));
    let upstreams = s.upstreams.load();
    let known = s.affinity.known(id, key.map(|k| &*k.id)).await;
    let asked_around = known == Known::Unknown;
    let candidates: Vec<&String> = match known {
        Known::At(p) => upstreams
            .get_key_value(p.as_str())
            .map(|(id, _)| id)
            .into_iter()
            .collect(),
        // Its maker cannot be told: only a gateway open to all asks around.
        Known::Unknown if key.is_none() => upstreams.keys().collect(),
        Known::Unknown | Known::Others => return missing(),
    };
    let stream = streamed(method, uri);
    // Asking around, a provider that failed to answer may have it: its
    // error, rather than another's 404, is the caller's.
    let (mut absent, mut failed) = (None, None);
    for provider in candidates {
        let upstream = &upstreams[provider];
        let sent = upstream.stored_response(
            method.clone(),
            &rest,
            body.clone(),
            Some(request_id.clone()),
            stream,
        );
        let provider = palisade_core::ProviderId::new(provider);
        let passed = |res: http::Response<_>| {
            let mut res = res.map(Body::new);
            res.extensions_mut().insert(AnsweredAt(provider.clone()));
            if s.served_headers {
                if let Some(v) = provider_value(&provider) {
                    res.headers_mut().insert(PROVIDER_HEADER, v);
                }
            }
            res
        };
        match sent.await {
            // Not there: the next upstream may have it.
            Ok(res) if res.status() == StatusCode::NOT_FOUND => absent = Some(passed(res)),
            // It could not tell (overloaded, limited, failing): the next
            // may have it; if none does, this is the caller's answer.
            Ok(res) if could_not_tell(res.status()) => failed = Some(Ok(passed(res))),
            Ok(res) => {
                if res.status().is_success() {
                    if *method == http::Method::DELETE {
                        s.affinity.forget(id);
                    } else if asked_around {
                        // Found by asking around: remembered for next time.
                        let owner = key.map(|k| k.id.clone());
                        s.affinity.stored(id, &provider, owner);
                    }
                }
                return passed(res);
            }
            Err(e) => failed = Some(Err(e)),
        }
    }
    match (failed, absent) {
        (Some(Ok(res)), _) => res,
        (Some(Err(e)), _) => {
            s.counters.upstream_errors.add(1);
            upstream_error(&e)
        }
        (None, Some(res)) => res,
        // The provider that made it is gone from the config.
        (None, None) => missing(),
    }
}

/// Whether a provider asked about a response answered without telling
/// whether it has it (failing, overloaded, limited): the response may be
/// there, so its answer must not give way to another's `404`.
pub(crate) fn could_not_tell(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Whether `body` is an OpenAI error object whose `code` is `code`.
pub(crate) fn is_code(body: &[u8], code: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Wrapper<'a> {
        #[serde(borrow)]
        error: Inner<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        code: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Wrapper<'_>>(body).is_ok_and(|w| w.error.code.as_deref() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_and_the_rest_of_the_path_are_read_from_the_uri() {
        let uri: http::Uri = "/v1/responses/resp_1/input_items?limit=5&order=asc"
            .parse()
            .unwrap();
        assert_eq!(
            id_and_rest(&uri),
            Some(("resp_1", "/resp_1/input_items?limit=5&order=asc".into()))
        );
        let uri: http::Uri = "/v1/responses/resp_2".parse().unwrap();
        assert_eq!(id_and_rest(&uri), Some(("resp_2", "/resp_2".into())));
        for bad in [
            "/v1/responses/",
            "/v1/responses/..",
            "/v1/responses/%2E%2E/x",
            "/v1/responses/a.b",
        ] {
            let uri: http::Uri = bad.parse().unwrap();
            assert_eq!(id_and_rest(&uri), None, "{bad}");
        }
        let get = http::Method::GET;
        let uri: http::Uri = "/v1/responses/r?stream=true&starting_after=3"
            .parse()
            .unwrap();
        assert!(streamed(&get, &uri));
        assert!(!streamed(&http::Method::DELETE, &uri));
        let uri: http::Uri = "/v1/responses/r?stream=false".parse().unwrap();
        assert!(!streamed(&get, &uri));
    }
}
