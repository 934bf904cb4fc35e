//! What the gateway's server refuses, over raw loopback sockets: too many
//! connections, a slow or oversized head, a slow body, and more requests on
//! one connection than allowed. (Real sockets, so the real clock, with
//! limits of a few hundred milliseconds.)

use std::time::{Duration, Instant};

use palisade_gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(limits: &str) -> String {
    format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"
        {limits}

        [upstreams.primary]
        models = {{ "m" = "p-model" }}
        simulated = {{ latency_ms = 1, tokens = 2 }}
        "#
    )
}

async fn start(limits: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let gw = Gateway::bind(GatewayConfig::from_toml(&config(limits)).unwrap(), None)
        .await
        .unwrap();
    let addr = gw.local_addr().unwrap().to_string();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    (addr, stop)
}

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn request(extra_headers: &str, close: bool) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n{}\r\n{BODY}",
        BODY.len(),
        if close { "connection: close\r\n" } else { "" }
    )
}

/// Reads until the peer closes (or `within` passes): what arrived, and
/// whether it closed.
async fn read_all(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_a_freed_slot_is_reused() {
    let (addr, _stop) = start("max_connections = 2\nheader_timeout_ms = 5000").await;
    let mut held = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    // Let the server accept both before the third knocks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let _ = third.write_all(request("", true).as_bytes()).await;
    let (got, closed) = read_all(&mut third, Duration::from_secs(2)).await;
    assert!(closed && got.is_empty(), "the third was served: {got:?}");
    // One held connection goes away: its slot serves the next.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = TcpStream::connect(&addr).await.unwrap();
    next.write_all(request("", true).as_bytes()).await.unwrap();
    let (got, _) = read_all(&mut next, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let (addr, _stop) = start("header_timeout_ms = 300").await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let t0 = Instant::now();
    // Half a head, then nothing (slowloris).
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_all(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "still open after 3 s");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // An idle kept-alive connection is closed the same way.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(request("", false).as_bytes()).await.unwrap();
    let (got, closed) = read_all(&mut s, Duration::from_secs(3)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "an idle connection was kept past the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431_and_a_slow_body_408() {
    let (addr, _stop) = start("max_header_bytes = 8192\nbody_timeout_ms = 300").await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let big = format!("x-padding: {}\r\n", "a".repeat(20_000));
    let _ = s.write_all(request(&big, true).as_bytes()).await;
    let (got, _) = read_all(&mut s, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // Headers in full, then a tenth of the body and a pause.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let whole = request("", true);
    let cut = whole.len() - BODY.len() + 5;
    s.write_all(&whole.as_bytes()[..cut]).await.unwrap();
    let (got, _) = read_all(&mut s, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    // The rest of a body after a short pause, well within the timeout: the
    // body still on its way when first read is timed, and served.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&whole.as_bytes()[..cut]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&whole.as_bytes()[cut..]).await.unwrap();
    let (got, _) = read_all(&mut s, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_its_last_allowed_request() {
    let (addr, _stop) = start("max_requests_per_connection = 2").await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    // Two requests, pipelined on one kept-alive connection.
    let two = format!("{}{}", request("", false), request("", false));
    s.write_all(two.as_bytes()).await.unwrap();
    let (got, closed) = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
    assert_eq!(got.matches("connection: close").count(), 1, "{got}");
    assert!(closed, "the connection stayed open after the second answer");
}

#[test]
fn limits_that_cannot_work_are_refused_with_their_keys() {
    let err = GatewayConfig::from_toml(&config(
        "max_connections = 0\nheader_timeout_ms = 0\nmax_header_bytes = 100",
    ))
    .unwrap_err()
    .to_string();
    for key in [
        "gateway.max_connections",
        "gateway.header_timeout_ms",
        "gateway.max_header_bytes",
    ] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}
