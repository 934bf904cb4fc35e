//! `https://` upstreams: the gateway speaks TLS to a real TLS server (a
//! certificate for `localhost` from a private CA, made by the test), trusts
//! it when `gateway.ca_file` names that CA, and refuses it, sending
//! nothing, when it does not. Bad CA files and schemes are refused by the
//! config check.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Running, CHAT};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and a server configuration for `localhost` signed by it; the CA's
/// certificate as PEM.
fn pki() -> (String, rustls::ServerConfig) {
    let pki = common::pki::localhost();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(pki.cert_der)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der)),
    )
    .unwrap();
    (pki.ca_pem, server)
}

/// An OpenAI-style upstream over TLS; counts the requests it answered.
async fn https_upstream(config: rustls::ServerConfig) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // A client that does not trust us ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {
                        let body = serde_json::json!({
                            "id": "chatcmpl-tls", "object": "chat.completion", "created": 1,
                            "model": "tls-model",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "over TLS"}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
                        });
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(
                                    body.to_string(),
                                )))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, answered)
}

fn config(port: u16, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file
        .map(|p| format!("ca_file = {:?}\n", p.to_str().unwrap()))
        .unwrap_or_default();
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
{ca}
[upstreams.secure]
base_url = "https://localhost:{port}"
models = {{ "m" = "tls-model" }}

[palisade.defaults.retry]
enabled = false
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_behind_a_private_ca_answers_once_the_ca_is_trusted() {
    let (ca_pem, server) = pki();
    let (port, answered) = https_upstream(server).await;
    let ca = common::pki::write("ca.pem", &ca_pem);

    let gw = Running::start(&config(port, Some(&ca))).await;
    let (status, body, headers) = gw.post(CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "secure");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "over TLS");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    let (_, server) = pki();
    let (port, answered) = https_upstream(server).await;
    let gw = Running::start(&config(port, None)).await;
    let (status, body, _) = gw.post(CHAT).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("secure"), "the provider is named: {body}");
    assert!(
        body.contains("invalid peer certificate: UnknownIssuer"),
        "the cause is said: {body}"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 0, "no request crossed");
}

#[test]
fn a_bad_ca_file_or_scheme_is_refused_by_the_config_check() {
    let garbage = common::pki::write("garbage.pem", "not a certificate\n");
    let cfg = config(443, Some(&garbage)).replace("https://", "ftp://");
    let err = palisade_gateway::GatewayConfig::from_toml(&cfg).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"gateway.ca_file"), "{err}");
    assert!(paths.contains(&"upstreams.secure.base_url"), "{err}");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
    assert!(err.to_string().contains("http or https"), "{err}");
}
