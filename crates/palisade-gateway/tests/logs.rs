//! The gateway binary's logs: one access event per request, in the
//! request's span (its id), on stderr, filtered by `RUST_LOG`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const CONFIG: &str = r#"
[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 5, down = true }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 5 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false
"#;

/// A plain HTTP/1.1 POST; returns the response's head.
fn post(addr: &str, body: &str, request_id: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_failed_over_request_is_one_access_line_with_its_id_and_who_answered() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no banner");
        if let Some(rest) = line
            .trim()
            .strip_prefix("palisade-gateway listening on http://")
        {
            break rest.to_owned();
        }
    };
    let head = post(
        &addr,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "log-test-7",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    child.kill().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    let access: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("palisade_gateway::access"))
        .collect();
    assert_eq!(access.len(), 1, "{err}");
    let l = access[0];
    for field in [
        "request_id=\"log-test-7\"",
        "model=\"m\"",
        "status=200",
        "provider=\"secondary\"",
        "fallbacks=\"1\"",
    ] {
        assert!(l.contains(field), "{field} not in {l}");
    }
    // The layers' own events are in the same request's span.
    assert!(
        err.lines()
            .any(|l| l.contains("log-test-7") && l.contains("falling back")),
        "{err}"
    );
}
