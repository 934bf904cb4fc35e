//! The gateway binary started for a test on a free loopback port, and
//! plain HTTP/1.1 requests to it.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// A POST to `/v1/chat/completions` with `headers`, on a connection of
/// its own; returns the whole response as text.
pub fn post(addr: &str, body: &str, headers: &[(&str, &str)]) -> String {
    send(addr, "POST", "/v1/chat/completions", body, headers)
}

/// `method` to `path` with `body` and `headers`, on a connection of its
/// own; returns the whole response as text.
pub fn send(addr: &str, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts the binary on `config` (written to `dir/name` under the test
/// target's temporary directory) with `RUST_LOG=info` and `env`; returns
/// it and its address once its banner says it listens.
pub fn spawn(dir: &str, name: &str, config: &str, env: &[(&str, &str)]) -> (Child, String) {
    spawn_from(
        Command::new(env!("CARGO_BIN_EXE_palisade-gateway")),
        dir,
        name,
        config,
        env,
    )
}

/// [`spawn`], with the shell's `ulimit` run on `limit` first (see
/// [`under_ulimit`]).
pub fn spawn_under_ulimit(dir: &str, name: &str, config: &str, limit: &str) -> (Child, String) {
    spawn_from(under_ulimit(limit), dir, name, config, &[])
}

/// The binary, to be given its arguments, run by a shell after its
/// `ulimit` on `limit` (`-S -n 256`: a soft open-file limit of 256), in
/// the shell's place (same process).
pub fn under_ulimit(limit: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_palisade-gateway"));
    sh
}

fn spawn_from(
    mut command: Command,
    dir: &str,
    name: &str,
    config: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join(name);
    std::fs::write(&cfg, config).unwrap();
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("no banner: {}", stop(child));
        }
        if let Some(rest) = line
            .trim()
            .strip_prefix("palisade-gateway listening on http://")
        {
            break rest.to_owned();
        }
    };
    // Keep reading its stdout: a closed pipe would fail its next print.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (child, addr)
}

/// Stops the binary and returns what it wrote to stderr.
pub fn stop(mut child: Child) -> String {
    let _ = child.kill();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    let _ = child.wait();
    err
}
