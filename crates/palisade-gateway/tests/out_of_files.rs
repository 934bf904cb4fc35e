//! A gateway out of open files: its connects to providers fail with
//! `EMFILE` before reaching them. That is the gateway's own shortage, not
//! the providers' fault: callers get a 503 with `Retry-After` (their SDKs
//! retry it), and the providers' breakers stay closed, so the gateway
//! serves again as soon as files are free.
//!
//! The test fills this process's open-file table itself, so it is the
//! only test in its binary.
#![cfg(target_os = "linux")]

mod common;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use common::{Running, CHAT};

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.breaker]
consecutive_failures = 2
open_ms = 60000
max_open_ms = 60000
"#;

/// One request on `conn`: (status, body, headers).
async fn send(
    conn: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, http::HeaderMap) {
    conn.ready().await.unwrap();
    let req = common::request(method, path, body, &[("host", "gateway")]);
    common::read(conn.send_request(req).await.unwrap()).await
}

/// Opens `/dev/null` until the process has no file left (`EMFILE`).
fn fill_open_files() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "expected EMFILE, got {e}");
                return held;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_files_callers_get_503_and_the_providers_are_not_blamed() {
    // A soft limit small enough to fill at once.
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.maximum.map_or(4096, |hard| hard.min(4096));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: before.maximum,
        },
    )
    .unwrap();

    let gw = Running::start(CONFIG).await;
    // One connection to the gateway, opened (and accepted: /health has
    // answered on it) while there are files to spare.
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(driver);
    assert_eq!(send(&mut conn, "GET", "/health", "").await.0, 200);

    // No file left: neither provider can be connected to.
    let held = fill_open_files();
    assert!(!held.is_empty());
    for i in 0..4 {
        let (status, body, headers) = send(&mut conn, "POST", "/v1/chat/completions", CHAT).await;
        assert_eq!(status, 503, "request {i}: {body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["code"], "no_provider_available", "{body}");
        let providers = err["error"]["providers"].to_string();
        for p in ["primary", "secondary"] {
            assert!(
                providers.contains(&format!("{p}: this process is out of resources")),
                "{providers}"
            );
        }
        assert!(providers.contains("open files"), "{providers}");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["retry-after-ms"], "1000");
        assert!(
            headers.get("x-should-retry").is_none(),
            "the caller may retry: {headers:?}"
        );
    }

    // Files free again: served at once, by the primary, whose breaker
    // (two failures open it) never counted the refusals.
    drop(held);
    let (status, body, headers) = send(&mut conn, "POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "primary");
    let (_, health, _) = send(&mut conn, "GET", "/health", "").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    for p in health["providers"].as_array().unwrap() {
        assert_eq!(p["breaker"]["state"], "closed", "{p}");
    }
    setrlimit(Resource::Nofile, before).unwrap();
}
