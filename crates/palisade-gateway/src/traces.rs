//! Traces over OTLP ([`Traces`]): one span per request and a child per
//! provider attempt, with the OpenTelemetry GenAI attributes, exported
//! through `tracing-opentelemetry`; and W3C trace context
//! (`traceparent`, `tracestate`) taken from the caller and sent upstream.
//!
//! Off unless an OTLP endpoint is given. The standard variables apply:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! turn it on, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! keep it off, `OTEL_SERVICE_NAME` (default `palisade-gateway`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`
//! are read by the OpenTelemetry SDK. The protocol is gRPC
//! (`OTEL_EXPORTER_OTLP_PROTOCOL` may say `grpc` or nothing), over TLS to
//! an `https://` endpoint (Mozilla's and the system's CAs, and the one
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` names).
//!
//! With traces off the gateway makes no attempt spans and records nothing
//! extra; a caller's `traceparent` and `tracestate` are still passed to
//! the provider as they came, so the provider's spans join the caller's
//! trace.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::upstream::Endpoint;

/// Whether this process exports traces (set once, by [`Traces::from_env`]).
static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: the request path makes and fills its
/// spans only then.
#[inline]
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

// Names made at compile time: the caller's headers are read on every
// request, traces on or off.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or its traces form) asks for a
    /// protocol this build does not speak.
    #[error("{var} is {value:?}: palisade-gateway exports traces over OTLP/gRPC only (set it to \"grpc\" or unset it, and point the endpoint at the collector's gRPC port, usually 4317)")]
    Protocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The CA certificate for a TLS collector
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`) cannot be read.
    #[error("{var}: cannot read {path}: {why}")]
    Certificate {
        /// The variable that names it.
        var: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The exporter could not be built (a bad endpoint, most often).
    #[error("cannot export traces to the OTLP endpoint: {0}")]
    Exporter(String),
}

/// The OTLP trace pipeline: build it with [`from_env`](Self::from_env),
/// add [`layer`](Self::layer) to the subscriber, and
/// [`shutdown`](Self::shutdown) at exit to send what is buffered.
///
/// ```no_run
/// use palisade_gateway::traces::Traces;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // On when OTEL_EXPORTER_OTLP_ENDPOINT is set, or given here.
/// let traces = Traces::from_env(Some("http://127.0.0.1:4317"))?;
/// tracing_subscriber::registry()
///     .with(traces.as_ref().map(Traces::layer))
///     .init();
/// // ... serve ...
/// if let Some(t) = traces {
///     t.shutdown();
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The pipeline, if traces are asked for: `endpoint` (the command
    /// line's), else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `None` when none is set or the SDK
    /// is disabled. Must run inside a tokio runtime.
    pub fn from_env(endpoint: Option<&str>) -> Result<Option<Traces>, TracesError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let from_env = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let Some(target) = endpoint.map(str::to_owned).or(from_env) else {
            return Ok(None);
        };
        // An endpoint with no scheme is https:// by the OTLP spec, unless
        // OTEL_EXPORTER_OTLP_INSECURE says otherwise.
        let insecure = var("OTEL_EXPORTER_OTLP_TRACES_INSECURE")
            .or_else(|| var("OTEL_EXPORTER_OTLP_INSECURE"))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let t = target.trim().to_ascii_lowercase();
        let tls = !(t.starts_with("http://") || (insecure && !t.contains("://")));
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(v) = var(name).filter(|v| v.trim() != "grpc") {
                return Err(TracesError::Protocol {
                    var: name,
                    value: v,
                });
            }
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(e) = endpoint {
            exporter = exporter.with_endpoint(e);
        }
        if tls {
            exporter = exporter.with_tls_config(tls_config(&var)?);
        }
        let exporter = exporter
            .build()
            .map_err(|e| TracesError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("palisade-gateway");
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build();
        ON.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider }))
    }

    /// The `tracing` layer that turns spans at `info` and above into
    /// OpenTelemetry spans (and events in them into span events), whatever
    /// `RUST_LOG` lets the log print.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("palisade-gateway"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(LevelFilter::INFO)
    }

    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("palisade-gateway: traces not all sent at exit: {e}");
        }
    }
}

/// TLS to a collector: Mozilla's and the system's CAs, and the one named
/// by `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (PEM), if any.
fn tls_config(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, TracesError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new().with_enabled_roots();
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ] {
        if let Some(path) = var(name) {
            let pem = std::fs::read(&path).map_err(|e| TracesError::Certificate {
                var: name,
                path: path.clone(),
                why: e.to_string(),
            })?;
            if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(TracesError::Certificate {
                    var: name,
                    path,
                    why: "no PEM certificate in it".into(),
                });
            }
            tls = tls.ca_certificate(Certificate::from_pem(pem));
            break;
        }
    }
    Ok(tls)
}

/// A request's trace context on its way to the providers.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestTrace {
    /// The caller's `traceparent` and `tracestate`, passed on as they came
    /// when the gateway exports no traces. Boxed: most callers send none,
    /// and the request, moved through every layer, stays 72 bytes smaller.
    caller: Option<Box<(HeaderValue, Option<HeaderValue>)>>,
    /// The attempts made so far (shared by the request's copies), when
    /// traces are on.
    attempts: Option<Arc<AtomicU32>>,
}

impl RequestTrace {
    /// The calls made to providers so far (0 when traces are off).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The next attempt's number, from 1 (0 when traces are off).
    pub(crate) fn next_attempt(&self) -> u32 {
        self.attempts
            .as_ref()
            .map_or(0, |n| n.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Puts the trace context in a provider's request headers: the
    /// attempt span's when traces are on, else the caller's as it came.
    pub(crate) fn inject(&self, attempt: &Span, headers: &mut HeaderMap) {
        if on() {
            TraceContextPropagator::new()
                .inject_context(&attempt.context(), &mut HeaderInjector(headers));
        } else if let Some((parent, state)) = self.caller.as_deref() {
            headers.insert(TRACEPARENT, parent.clone());
            if let Some(state) = state {
                headers.insert(TRACESTATE, state.clone());
            }
        }
    }
}

/// The span of a request (`request`, kind server). With traces on it is
/// named for its operation (`chat`, `embeddings`, `text_completion`: the
/// model is not read yet when it starts), carries the GenAI and palisade
/// attributes, its parent is the caller's `traceparent` when there is a
/// valid one, and it returns the context the attempts count in.
pub(crate) fn request_span(
    request_id: &str,
    endpoint: Endpoint,
    headers: &HeaderMap,
    traceparent: bool,
) -> (Span, RequestTrace) {
    if !on() {
        // Passed on only if it is a valid W3C trace context; garbage is
        // dropped. Looked for only when the caller sent one (`traceparent`,
        // from the one pass over the request's headers).
        let caller = traceparent
            .then(|| headers.get(TRACEPARENT))
            .flatten()
            .filter(|_| {
                TraceContextPropagator::new()
                    .extract(&HeaderExtractor(headers))
                    .span()
                    .span_context()
                    .is_valid()
            })
            .map(|p| Box::new((p.clone(), headers.get(TRACESTATE).cloned())));
        return (
            tracing::info_span!("request", request_id),
            RequestTrace {
                caller,
                attempts: None,
            },
        );
    }
    let span = tracing::info_span!(
        "request",
        request_id,
        otel.name = operation(endpoint),
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = operation(endpoint),
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.system = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.response.status_code = Empty,
        palisade.provider = Empty,
        palisade.attempts = Empty,
        palisade.fallbacks = Empty,
        palisade.outcome = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // No valid parent: the request starts its own trace.
    let _ = span.set_parent(parent);
    (
        span,
        RequestTrace {
            caller: None,
            attempts: Some(Arc::new(AtomicU32::new(0))),
        },
    )
}

/// The trace id of `span` (32 hex digits) when traces are on.
pub(crate) fn trace_id(span: &Span) -> Option<String> {
    if !on() {
        return None;
    }
    let cx = span.context();
    let id = cx.span().span_context().trace_id();
    (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
}

/// The GenAI name of an endpoint's operation.
pub(crate) fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        // A response is a turn of a conversation, as a chat completion.
        Endpoint::Responses => "chat",
    }
}

/// Records the model asked on a request span, once it is read.
pub(crate) fn record_request(span: &Span, model: &str) {
    if on() {
        span.record("gen_ai.request.model", model);
    }
}

/// What a request span says of its answer.
#[derive(Debug, Default)]
pub(crate) struct Answered<'a> {
    pub(crate) status: u16,
    pub(crate) provider: Option<&'a str>,
    pub(crate) attempts: u32,
    pub(crate) fallbacks: Option<&'a str>,
    pub(crate) degraded: bool,
    pub(crate) system: Option<&'static str>,
    pub(crate) response_model: Option<&'a str>,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
}

/// Records a request's answer on its span: status, who answered after how
/// many attempts, the outcome (`ok`, `degraded`, `refused` for the
/// caller's own errors, `failed`), the model and tokens the provider
/// reported.
pub(crate) fn record_answer(span: &Span, a: Answered<'_>) {
    if !on() {
        return;
    }
    span.record("http.response.status_code", a.status);
    let outcome = match a.status {
        200..=299 if a.degraded => "degraded",
        200..=299 => "ok",
        400..=499 => "refused",
        _ => "failed",
    };
    span.record("palisade.outcome", outcome);
    if a.status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(p) = a.provider {
        span.record("palisade.provider", p);
    }
    span.record("palisade.attempts", a.attempts);
    if let Some(n) = a.fallbacks.and_then(|n| n.parse::<u64>().ok()) {
        span.record("palisade.fallbacks", n);
    }
    if let Some(s) = a.system {
        span.record("gen_ai.system", s);
    }
    if let Some(m) = a.response_model {
        span.record("gen_ai.response.model", m);
    }
    if a.input_tokens > 0 || a.output_tokens > 0 {
        span.record("gen_ai.usage.input_tokens", a.input_tokens);
        span.record("gen_ai.usage.output_tokens", a.output_tokens);
    }
}

/// The GenAI `gen_ai.system` of a provider, from its base URL's host:
/// `openai`, `azure.ai.openai`, `anthropic`, ... and `openai` for any
/// other OpenAI-compatible server (the wire the gateway speaks).
pub(crate) fn system_of(host: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    // The domain itself or a name under it, never a look-alike
    // (`notanthropic.com`).
    let within = |domain: &str| {
        host.strip_suffix(domain)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    };
    [
        ("openai.azure.com", "azure.ai.openai"),
        ("anthropic.com", "anthropic"),
        ("googleapis.com", "gcp.gemini"),
        ("mistral.ai", "mistral_ai"),
        ("groq.com", "groq"),
        ("deepseek.com", "deepseek"),
        ("x.ai", "xai"),
    ]
    .into_iter()
    .find(|(domain, _)| within(domain))
    .map_or("openai", |(_, system)| system)
}

/// The span of one call to a provider (`attempt`, kind client, a child of
/// the request's), ended by [`AttemptSpan::answered`] or
/// [`AttemptSpan::failed`] or, if its call is dropped first (a hedge that
/// lost, a deadline), marked `cancelled`.
#[derive(Debug)]
pub(crate) struct AttemptSpan(Option<Span>);

/// Who an attempt goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) provider: &'a str,
    pub(crate) system: &'static str,
    pub(crate) host: &'a str,
    pub(crate) endpoint: Endpoint,
    pub(crate) model: &'a str,
}

impl AttemptSpan {
    /// No span (traces off).
    pub(crate) fn none() -> Self {
        AttemptSpan(None)
    }

    /// The span of attempt `n` to `to`.
    pub(crate) fn new(to: Target<'_>, n: u32) -> Self {
        let op = operation(to.endpoint);
        AttemptSpan(Some(tracing::info_span!(
            "attempt",
            otel.name = format!("{op} {}", to.model),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = op,
            gen_ai.system = to.system,
            gen_ai.request.model = to.model,
            gen_ai.response.model = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            server.address = to.host,
            http.response.status_code = Empty,
            error.type = Empty,
            palisade.provider = to.provider,
            palisade.attempt = n,
            palisade.outcome = Empty,
        )))
    }

    /// The span (a disabled one when traces are off).
    pub(crate) fn span(&self) -> Span {
        self.0.clone().unwrap_or_else(Span::none)
    }

    /// Ends the attempt with its answer's status (`ok` for 2xx, else
    /// `error` with the status as `error.type`).
    pub(crate) fn answered(mut self, status: u16, model: Option<&str>, tokens: Option<(u64, u64)>) {
        let Some(span) = self.0.take() else { return };
        span.record("http.response.status_code", status);
        if (200..300).contains(&status) {
            span.record("palisade.outcome", "ok");
        } else {
            span.record("palisade.outcome", "error");
            span.record("error.type", status.to_string());
            span.record("otel.status_code", "ERROR");
        }
        if let Some(m) = model {
            span.record("gen_ai.response.model", m);
        }
        if let Some((input, output)) = tokens {
            span.record("gen_ai.usage.input_tokens", input);
            span.record("gen_ai.usage.output_tokens", output);
        }
    }

    /// Ends the attempt with an error: `error.type` is its kind
    /// (`timeout`, `connect`, ...).
    pub(crate) fn failed(mut self, err: &(dyn std::error::Error + 'static)) {
        let Some(span) = self.0.take() else { return };
        let kind = palisade_core::classify_error(err).kind;
        span.record("palisade.outcome", "error");
        span.record("error.type", kind.to_string());
        span.record("otel.status_code", "ERROR");
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("palisade.outcome", "cancelled");
        }
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_are_named_by_host() {
        assert_eq!(system_of("api.openai.com"), "openai");
        assert_eq!(system_of("my-east.openai.azure.com"), "azure.ai.openai");
        assert_eq!(system_of("API.ANTHROPIC.COM"), "anthropic");
        assert_eq!(system_of("127.0.0.1"), "openai");
        assert_eq!(system_of("api.x.ai"), "xai");
        assert_eq!(system_of("fox.ai"), "openai", "a look-alike is not x.ai");
        assert_eq!(system_of("notanthropic.com"), "openai");
    }

    #[test]
    fn with_traces_off_the_callers_context_is_passed_on_as_it_came() {
        let mut h = HeaderMap::new();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(parent));
        h.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let (_span, trace) = request_span("req_1", Endpoint::Chat, &h, true);
        assert_eq!(trace.next_attempt(), 0);
        let mut out = HeaderMap::new();
        trace.inject(&Span::none(), &mut out);
        assert_eq!(out.get(TRACEPARENT).unwrap(), parent);
        assert_eq!(out.get(TRACESTATE).unwrap(), "congo=t61rcWkgMzE");

        let (_span, none) = request_span("req_2", Endpoint::Chat, &HeaderMap::new(), false);
        let mut out = HeaderMap::new();
        none.inject(&Span::none(), &mut out);
        assert!(out.is_empty());

        let mut garbage = HeaderMap::new();
        garbage.insert(TRACEPARENT, HeaderValue::from_static("00-not-a-trace-01"));
        let (_span, dropped) = request_span("req_3", Endpoint::Chat, &garbage, true);
        let mut out = HeaderMap::new();
        dropped.inject(&Span::none(), &mut out);
        assert!(out.is_empty());
    }
}
