//! The binary and its open-file limit: it raises its soft limit to the
//! hard one at start-up, and warns when even the hard one cannot hold
//! `gateway.max_connections`.

#[path = "common/binary.rs"]
mod binary;

use binary::{post, spawn_under_ulimit, stop};

const WHOLE: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn config(max_connections: Option<usize>) -> String {
    let max = max_connections
        .map(|n| format!("max_connections = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"
[gateway]
{max}
[upstreams.sim]
models = {{ "m" = "m" }}
simulated = {{ latency_ms = 1 }}
"#
    )
}

/// The process's open-file limits as `/proc` shows them: (soft, hard).
fn limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut values = line["Max open files".len()..].split_whitespace();
    (
        values.next().unwrap().to_owned(),
        values.next().unwrap().to_owned(),
    )
}

#[test]
fn a_low_soft_limit_is_raised_to_the_hard_one_at_start_up() {
    let (child, addr) = spawn_under_ulimit("open_files", "raised.toml", &config(None), "-S -n 256");
    let (soft, hard) = limits(child.id());
    // To the hard limit; with none, to 2^20 files.
    let expected = if hard == "unlimited" {
        "1048576"
    } else {
        hard.as_str()
    };
    assert_eq!(soft, expected, "soft limit not raised (hard {hard})");
    assert_ne!(soft, "256");
    assert!(post(&addr, WHOLE, &[]).starts_with("HTTP/1.1 200"));
    let err = stop(child);
    assert!(
        err.contains("raised the open-file limit") && err.contains("from=256"),
        "{err}"
    );
}

#[test]
fn a_hard_limit_too_low_for_max_connections_is_a_warning_naming_the_key() {
    // Both limits at 400: room for about 200 connections, not 10 000.
    let (child, addr) = spawn_under_ulimit("open_files", "short.toml", &config(None), "-n 400");
    assert_eq!(limits(child.id()), ("400".into(), "400".into()));
    // It serves all the same.
    assert!(post(&addr, WHOLE, &[]).starts_with("HTTP/1.1 200"));
    let err = stop(child);
    let warning = err
        .lines()
        .find(|l| l.contains("gateway.max_connections = 10000 needs about 20000 open files"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("at most 400"), "{warning}");
    assert!(warning.contains("past about 200 connections"), "{warning}");
    // Nothing to raise: no line says it was.
    assert!(!err.contains("raised the open-file limit"), "{err}");
}

#[test]
fn a_max_connections_the_limit_holds_is_not_warned_of() {
    let (child, addr) = spawn_under_ulimit("open_files", "fits.toml", &config(Some(50)), "-n 400");
    assert!(post(&addr, WHOLE, &[]).starts_with("HTTP/1.1 200"));
    let err = stop(child);
    assert!(!err.contains("max_connections"), "{err}");
}
