//! Traces over OTLP: the gateway binary exports to a real OTLP/gRPC
//! receiver (the collector's trace service, from the OpenTelemetry
//! protocol crate, served by tonic in this test). A request that was
//! retried and failed over arrives as one server span, a child of the
//! caller's `traceparent`, with a span per fallback step (`provider`) and
//! a client span per attempt under its step; the
//! provider that answered received the trace context of its attempt.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;

/// The spans received, with their resource's `service.name`.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|a| Some((a.key.clone(), text(a.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

/// The spans of one kind.
fn of_kind(spans: &[(String, Span)], kind: SpanKind) -> Vec<&Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == kind as i32)
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OpenAI-style upstream that notes each request's `traceparent`.
async fn upstream(seen: Arc<Mutex<Vec<String>>>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(
                    headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                );
                axum::Json(serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                    "model": "s-model-0613",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "hi"}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                }))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// An OTLP/gRPC receiver on a free loopback port: what it received and
/// its endpoint.
async fn collector() -> (Receiver, String) {
    let received = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    (received, endpoint)
}

/// An OTLP/gRPC receiver over TLS, with a certificate for `localhost`
/// from a private CA: what it received, its endpoint and the CA's PEM.
async fn tls_collector() -> (Receiver, String, String) {
    use tonic::transport::{Identity, ServerTlsConfig};
    let pki = pki::localhost();
    let received = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://localhost:{}", l.local_addr().unwrap().port());
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    (received, endpoint, pki.ca_pem)
}

/// The spans received once there are at least `n` (or after 5 s).
async fn spans(received: &Receiver, n: usize) -> Vec<(String, Span)> {
    for _ in 0..100 {
        let got = received.0.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    received.0.lock().unwrap().clone()
}

/// Starts the binary on `config`, exporting to `endpoint` every 50 ms,
/// with `env` too.
async fn gateway(
    name: &'static str,
    config: String,
    endpoint: String,
    env: Vec<(&'static str, String)>,
) -> (std::process::Child, String) {
    tokio::task::spawn_blocking(move || {
        let mut all = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "gw-under-test"),
        ];
        all.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
        binary::spawn("traces", name, &config, &all)
    })
    .await
    .unwrap()
}

/// Runs the binary with `env`, which must make it refuse to start; what
/// it said.
async fn refused_at_start_up(env: &[(&'static str, &'static str)]) -> String {
    let env = env.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
            .args(["--listen", "127.0.0.1:0"])
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A POST from a blocking thread.
async fn post(addr: &str, body: &'static str, headers: Vec<(&'static str, String)>) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        binary::post(&addr, body, &headers)
    })
    .await
    .unwrap()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_over_request_arrives_as_a_server_span_with_an_attempt_span_per_call() {
    let (received, collector) = collector().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let secondary = upstream(seen.clone()).await;
    let config = format!(
        r#"
[upstreams.primary]
models = {{ "m" = "p-model" }}
simulated = {{ latency_ms = 2, down = true }}

[upstreams.secondary]
base_url = "{secondary}"
models = {{ "m" = "s-model" }}

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
max_attempts = 2
backoff_base_ms = 5
"#
    );
    let (child, addr) = gateway("gw.toml", config, collector, vec![]).await;
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let head = post(
        &addr,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        vec![
            ("traceparent", parent),
            ("x-request-id", "trace-test-1".into()),
        ],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The request's span, its two fallback steps and three attempts,
    // within a few export rounds.
    let spans = spans(&received, 6).await;
    let err = binary::stop(child);
    // Its access log line names the trace, to go from the log to it.
    let access = err
        .lines()
        .find(|l| l.contains("palisade_gateway::access"))
        .unwrap_or_else(|| panic!("no access line: {err}"));
    assert!(
        access.contains(&format!("trace_id=\"{CALLER_TRACE}\"")),
        "{access}"
    );
    let request = of_kind(&spans, SpanKind::Server);
    assert_eq!(request.len(), 1, "one server span: {spans:#?}\n{err}");
    let request = request[0];
    assert!(spans.iter().all(|(svc, _)| svc == "gw-under-test"));
    assert_eq!(request.name, "chat");
    assert_eq!(hex(&request.trace_id), CALLER_TRACE, "the caller's trace");
    assert_eq!(
        hex(&request.parent_span_id),
        CALLER_SPAN,
        "the caller's span"
    );
    let a = attrs(request);
    for (k, v) in [
        ("request_id", "trace-test-1"),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "m"),
        ("gen_ai.response.model", "s-model-0613"),
        ("gen_ai.system", "openai"),
        ("gen_ai.usage.input_tokens", "11"),
        ("gen_ai.usage.output_tokens", "7"),
        ("http.response.status_code", "200"),
        ("palisade.provider", "secondary"),
        ("palisade.attempts", "3"),
        ("palisade.fallbacks", "1"),
        ("palisade.outcome", "ok"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:?}");
    }

    let mut attempts = of_kind(&spans, SpanKind::Client);
    attempts.sort_by_key(|s| attrs(s)["palisade.attempt"].parse::<u32>().unwrap());
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    // The fallback's steps are sibling `provider` spans under the
    // request; the retries of one provider are sibling attempts under its
    // step.
    let steps: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "provider")
        .collect();
    assert_eq!(steps.len(), 2, "{spans:#?}");
    let step_of = |provider: &str| {
        steps
            .iter()
            .find(|s| attrs(s)["provider"] == provider)
            .unwrap_or_else(|| panic!("no step for {provider}: {steps:#?}"))
    };
    for s in &steps {
        assert_eq!(s.trace_id, request.trace_id);
        assert_eq!(s.parent_span_id, request.span_id);
    }
    for s in &attempts {
        assert_eq!(s.trace_id, request.trace_id);
        let step = step_of(&attrs(s)["palisade.provider"]);
        assert_eq!(s.parent_span_id, step.span_id, "under its provider's step");
    }
    let expect = [
        ("1", "primary", "p-model", "error"),
        ("2", "primary", "p-model", "error"),
        ("3", "secondary", "s-model", "ok"),
    ];
    for (s, (n, provider, model, outcome)) in attempts.iter().zip(expect) {
        let a = attrs(s);
        assert_eq!(s.name, format!("chat {model}"));
        assert_eq!(a["palisade.attempt"], n);
        assert_eq!(a["palisade.provider"], provider);
        assert_eq!(a["gen_ai.request.model"], model);
        assert_eq!(a["palisade.outcome"], outcome, "{a:?}");
    }
    let failed = attrs(attempts[0]);
    assert_eq!(failed["http.response.status_code"], "503");
    assert_eq!(failed["error.type"], "503");
    let answered = attrs(attempts[2]);
    assert_eq!(answered["gen_ai.response.model"], "s-model-0613");
    assert_eq!(answered["gen_ai.usage.input_tokens"], "11");

    // The secondary got the trace context of the attempt that reached it.
    let sent = seen.lock().unwrap().clone();
    assert_eq!(
        sent,
        [format!(
            "00-{CALLER_TRACE}-{}-01",
            hex(&attempts[2].span_id)
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_protocol_is_refused_at_start_up_with_what_to_do() {
    let err = refused_at_start_up(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ])
    .await;
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_PROTOCOL is \"http/protobuf\"") && err.contains("gRPC"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_attempts_end_at_its_first_token_and_the_stream_is_whole() {
    let (received, collector) = collector().await;
    let config = r#"
[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 2, down = true }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 2, tokens = 3, token_interval_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false
"#;
    let (child, addr) = gateway("stream.toml", config.into(), collector, vec![]).await;
    let out = post(
        &addr,
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        vec![],
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("data: [DONE]"),
        "the stream arrives whole: {out}"
    );
    let spans = spans(&received, 5).await;
    let err = binary::stop(child);
    let server = of_kind(&spans, SpanKind::Server);
    assert_eq!(server.len(), 1, "{spans:#?}\n{err}");
    let request = attrs(server[0]);
    assert_eq!(request["palisade.outcome"], "ok");
    assert_eq!(request["palisade.provider"], "secondary");
    assert_eq!(request["palisade.attempts"], "2");
    assert!(
        server[0].parent_span_id.is_empty(),
        "no caller context: a root"
    );
    let mut attempts: Vec<HashMap<String, String>> = of_kind(&spans, SpanKind::Client)
        .into_iter()
        .map(attrs)
        .collect();
    attempts.sort_by(|a, b| a["palisade.attempt"].cmp(&b["palisade.attempt"]));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0]["palisade.provider"], "primary");
    assert_eq!(attempts[0]["palisade.outcome"], "error");
    assert_eq!(attempts[1]["palisade.provider"], "secondary");
    assert_eq!(attempts[1]["palisade.outcome"], "ok");
    assert_eq!(attempts[1]["http.response.status_code"], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_over_tls_gets_the_spans_once_its_ca_is_given() {
    let (received, endpoint, ca_pem) = tls_collector().await;
    let ca = pki::write("otlp-ca.pem", &ca_pem);
    let config = r#"
[upstreams.only]
models = { "m" = "o-model" }
simulated = { latency_ms = 1 }
"#;
    let (child, addr) = gateway(
        "tls.toml",
        config.into(),
        endpoint,
        vec![(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ca.to_str().unwrap().to_owned(),
        )],
    )
    .await;
    let head = post(
        &addr,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        vec![],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let spans = spans(&received, 3).await;
    let err = binary::stop(child);
    assert_eq!(
        of_kind(&spans, SpanKind::Server).len(),
        1,
        "{spans:#?}\n{err}"
    );
    assert_eq!(of_kind(&spans, SpanKind::Client).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_collector_ca_is_refused_at_start_up() {
    let err = refused_at_start_up(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://localhost:4317"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
    ])
    .await;
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}
