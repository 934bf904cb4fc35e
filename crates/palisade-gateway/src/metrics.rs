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
    if let Some(cache) = &s.cache {
        let c = cache.snapshot();
        for (name, kind, help, v) in [
            (
                "palisade_cache_hits_total",
                "counter",
                "Requests answered by a fresh cached answer, with no call.",
                c.hits,
            ),
            (
                "palisade_cache_stale_total",
                "counter",
                "Failed calls answered by a stale cached answer (degraded).",
                c.stale,
            ),
            (
                "palisade_cache_calls_total",
                "counter",
                "Calls made through the cache (one per coalesced group).",
                c.calls,
            ),
            (
                "palisade_cache_coalesced_total",
                "counter",
                "Requests that shared an identical call in flight.",
                c.coalesced,
            ),
            (
                "palisade_cache_bypassed_total",
                "counter",
                "Requests kept out of the cache (cache-control: no-store).",
                c.bypassed,
            ),
            (
                "palisade_cache_stored_total",
                "counter",
                "Answers stored.",
                c.stored,
            ),
            (
                "palisade_cache_too_large_total",
                "counter",
                "Answers not stored for being over max_entry_bytes.",
                c.too_large,
            ),
            (
                "palisade_cache_entries",
                "gauge",
                "Answers held.",
                c.entries,
            ),
            (
                "palisade_cache_bytes",
                "gauge",
                "Bytes of answers held.",
                c.bytes,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    }
    if let Some(batch) = &s.batch {
        let b = batch.snapshot();
        for (name, kind, help, v) in [
            (
                "palisade_batch_calls_total",
                "counter",
                "Upstream calls made for batched requests.",
                b.batches,
            ),
            (
                "palisade_batch_requests_total",
                "counter",
                "Requests sent in those calls.",
                b.requests,
            ),
            (
                "palisade_batch_largest",
                "gauge",
                "The most requests one call carried.",
                b.largest,
            ),
            (
                "palisade_batch_gone_total",
                "counter",
                "Requests left out of their batch: the caller went away.",
                b.gone,
            ),
            (
                "palisade_batch_failed_total",
                "counter",
                "Batches whose call failed.",
                b.failed,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
