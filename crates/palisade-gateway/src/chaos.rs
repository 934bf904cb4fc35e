//! Game days: a chaos layer in front of every upstream (off until told),
//! and `POST /admin/chaos/{provider}` / `GET /admin/chaos` to change and
//! read them while the gateway serves (`[gateway] chaos_endpoint = true`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_chaos::{ChaosHandle, ChaosLayer, Every, HttpStreams, Plan};

use crate::state::AppState;

/// The chaos layer of each upstream, by id: made once per id and kept
/// across reloads, so a rebuilt upstream keeps its faults.
#[derive(Debug, Default)]
pub(crate) struct ChaosLayers {
    layers: Mutex<BTreeMap<String, ChaosLayer<Every, HttpStreams>>>,
}

impl ChaosLayers {
    /// The layer for upstream `id` (off until enabled).
    pub(crate) fn for_upstream(&self, id: &str) -> ChaosLayer<Every, HttpStreams> {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers
            .entry(id.to_string())
            .or_insert_with(|| {
                ChaosLayer::builder()
                    .name(id)
                    .streams(HttpStreams)
                    .build()
                    .expect("the empty plan is sound")
            })
            .clone()
    }

    fn handle(&self, id: &str) -> Option<ChaosHandle> {
        let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.get(id).map(ChaosLayer::handle)
    }

    fn all(&self) -> BTreeMap<String, ChaosHandle> {
        let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers
            .iter()
            .map(|(id, l)| (id.clone(), l.handle()))
            .collect()
    }
}

fn refused(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

/// `GET /admin/chaos`: every upstream's chaos layer.
pub(crate) async fn list(State(s): State<Arc<AppState>>, headers: http::HeaderMap) -> Response {
    if !s.chaos_endpoint {
        return crate::errors::not_found().await;
    }
    if let Err(no) = s.admin(&headers) {
        return no.into_response();
    }
    let all: BTreeMap<String, _> = s
        .chaos
        .all()
        .into_iter()
        .map(|(id, h)| (id, h.snapshot()))
        .collect();
    axum::Json(all).into_response()
}

/// `POST /admin/chaos/{provider}`: a [`Plan`] as JSON (`error_rate`,
/// `error_status`, `retry_after`, `latency_rate`, `delay`, `hang_rate`,
/// `reset_rate`, `stall_rate` / `stall_after`, `cut_rate` / `cut_after`)
/// and `enabled` (default true). `{"enabled": false}` alone
/// switches it off, keeping the plan.
pub(crate) async fn set(
    State(s): State<Arc<AppState>>,
    Path(provider): Path<String>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !s.chaos_endpoint {
        return crate::errors::not_found().await;
    }
    if let Err(no) = s.admin(&headers) {
        return no.into_response();
    }
    let Some(handle) = s.chaos.handle(&provider) else {
        return refused(StatusCode::NOT_FOUND, format!("no upstream {provider:?}"));
    };
    let mut json: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("a JSON object is expected: {e}"),
            )
        }
    };
    let enabled = match json.remove("enabled") {
        None => true,
        Some(serde_json::Value::Bool(b)) => b,
        Some(v) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("enabled: {v} is not true or false"),
            )
        }
    };
    if !json.is_empty() {
        let plan: Plan = match serde_json::from_value(serde_json::Value::Object(json)) {
            Ok(p) => p,
            Err(e) => return refused(StatusCode::BAD_REQUEST, format!("not a chaos plan: {e}")),
        };
        if let Err(e) = handle.set(plan) {
            return refused(StatusCode::BAD_REQUEST, e.to_string());
        }
    }
    if enabled {
        handle.enable();
    } else {
        handle.disable();
    }
    tracing::warn!(
        provider,
        enabled,
        "chaos changed through the admin endpoint"
    );
    axum::Json(handle.snapshot()).into_response()
}
