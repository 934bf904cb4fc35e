//! `/metrics`: palisade's numbers per provider (from the layers'
//! inspection views) and the gateway's own counters, as Prometheus text.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub(crate) async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(refused) = s.admin(&headers) {
        return refused.into_response();
    }
    let mut text = s.registry.health().prometheus_text();
    let c = &s.counters;
    for (name, help, v) in [
        (
            "palisade_gateway_requests_total",
            "Chat completion requests received.",
            &c.requests,
        ),
        (
            "palisade_gateway_ok_total",
            "Requests answered by a provider.",
            &c.ok,
        ),
        (
            "palisade_gateway_client_errors_total",
            "Requests refused as the caller's fault (400/404/413).",
            &c.client_errors,
        ),
        (
            "palisade_gateway_upstream_errors_total",
            "Requests no provider could answer (502/503/504).",
            &c.upstream_errors,
        ),
        (
            "palisade_gateway_stream_errors_total",
            "Streams cut by a timeout after they started.",
            &*c.stream_errors,
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    if let Some(fleet) = &s.fleet {
        use palisade_core::{Inspect, MetricKind};
        for sample in fleet.inspect().samples {
            let kind = match sample.kind {
                MetricKind::Counter => "counter",
                _ => "gauge",
            };
            text.push_str(&format!(
                "# HELP {n} {h}\n# TYPE {n} {kind}\n{n} {v}\n",
                n = sample.name,
                h = sample.help,
                v = sample.value
            ));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
