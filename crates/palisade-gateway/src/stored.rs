//! Calls about a response a provider stored (OpenAI's Responses API):
//! `GET` and `DELETE /v1/responses/{id}`, `GET
//! /v1/responses/{id}/input_items` and `POST /v1/responses/{id}/cancel`,
//! what the SDKs' `responses.retrieve`, `.delete`, `.input_items.list`
//! and `.cancel` send (a background response is polled with the first).
//!
//! A stored response lives at the provider that made it alone, so such a
//! call goes there: to the provider the gateway remembers for the id
//! (`affinity.rs`), or, for an id it does not remember (made through
//! another gateway of a fleet, or before a restart), to each upstream in
//! turn (by id) until one has it (answers other than `404`). With
//! client keys, only the key that made a response may call about it: an
//! id made with another key, or one the gateway does not remember (whose
//! maker it cannot tell), is answered `404` as OpenAI answers for a
//! response that does not exist. The call goes to the provider alone,
//! outside its stack (no retry, no breaker, no fallback: no other
//! provider has the response); its answer is passed on as it came, with
//! `x-request-id` and, with `served_headers`, `x-palisade-provider`.

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
    let request_id = crate::routes::request_id(&headers);
    let mut res = answer(&s, &method, &uri, &headers, body, &request_id).await;
    res.headers_mut().insert(REQUEST_ID_HEADER, request_id);
    res
}

async fn answer(
    s: &AppState,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: Bytes,
    request_id: &HeaderValue,
) -> Response {
    let key = match s.client(headers) {
        Ok(k) => k,
        Err(refused) => {
            s.counters.client_errors.add(1);
            return refused.into_response();
        }
    };
    let Some((id, rest)) = id_and_rest(uri) else {
        return not_found("not_found", "no response has such an id");
    };
    let missing = || not_found("not_found", &format!("Response with id '{id}' not found."));
    let upstreams = s.upstreams.load();
    let known = s.affinity.known(id, key.as_ref().map(|k| &*k.id));
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
    let mut last = None;
    for provider in candidates {
        let upstream = &upstreams[provider];
        let sent = upstream.stored_response(
            method.clone(),
            &rest,
            body.clone(),
            Some(request_id.clone()),
            stream,
        );
        match sent.await {
            // Not there: the next upstream may have it.
            Ok(res) if res.status() == StatusCode::NOT_FOUND => last = Some(Ok(res)),
            Ok(res) => {
                let provider = palisade_core::ProviderId::new(provider);
                if res.status().is_success() {
                    if *method == http::Method::DELETE {
                        s.affinity.forget(id);
                    } else if asked_around {
                        // Found by asking around: remembered for next time.
                        let owner = key.as_ref().map(|k| k.id.clone());
                        s.affinity.stored(id, &provider, owner);
                    }
                }
                let mut res = res.map(Body::new);
                if s.served_headers {
                    if let Some(v) = provider_value(&provider) {
                        res.headers_mut().insert(PROVIDER_HEADER, v);
                    }
                }
                return res;
            }
            Err(e) => last = Some(Err(e)),
        }
    }
    match last {
        Some(Ok(res)) => res.map(Body::new),
        Some(Err(e)) => {
            s.counters.upstream_errors.add(1);
            upstream_error(&e)
        }
        // The provider that made it is gone from the config.
        None => missing(),
    }
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
