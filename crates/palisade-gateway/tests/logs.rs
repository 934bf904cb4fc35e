//! The gateway binary's logs: one access event per request, in the
//! request's span (its id), on stderr, filtered by `RUST_LOG`.

#[path = "common/binary.rs"]
mod binary;

use binary::stop;
use std::process::Command;

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

fn post(addr: &str, body: &str, request_id: &str) -> String {
    post_as(addr, body, request_id, None)
}

fn post_as(addr: &str, body: &str, request_id: &str, key: Option<&str>) -> String {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("x-request-id", request_id)];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    binary::post(addr, body, &headers)
}

fn spawn(name: &str, config: &str, env: &[(&str, &str)]) -> (std::process::Child, String) {
    binary::spawn("logs", name, config, env)
}

#[test]
fn a_failed_over_request_is_one_access_line_with_its_id_and_who_answered() {
    let (child, addr) = spawn("gw.toml", CONFIG, &[]);
    let head = post(
        &addr,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "log-test-7",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let err = stop(child);
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
        // No traces exported: no trace to name.
        "trace_id=\"-\"",
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

#[test]
fn a_key_from_the_environment_lets_its_client_in_and_logs_its_id_never_itself() {
    let config = format!(
        "[gateway.auth]\nkeys = [{{ id = \"ops\", env = \"PALISADE_TEST_KEY_OPS\" }}]\n{CONFIG}"
    );
    let (child, addr) = spawn(
        "keyed.toml",
        &config,
        &[("PALISADE_TEST_KEY_OPS", "s3cret-ops-key")],
    );
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(post_as(&addr, body, "k1", None).starts_with("HTTP/1.1 401"));
    assert!(post_as(&addr, body, "k2", Some("s3cret-ops-key")).starts_with("HTTP/1.1 200"));
    let err = stop(child);
    assert!(
        err.lines()
            .any(|l| l.contains("k2") && l.contains("key=\"ops\"") && l.contains("status=200")),
        "{err}"
    );
    assert!(!err.contains("s3cret-ops-key"), "the key was logged: {err}");
    // Its variable unset, the gateway refuses to start, naming it.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("keyed.toml"))
        .env_remove("PALISADE_TEST_KEY_OPS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PALISADE_TEST_KEY_OPS is not set"), "{err}");
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_config_file_and_a_bad_one_is_refused() {
    let (child, addr) = spawn("hup.toml", CONFIG, &[]);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-s", "HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    // v2: the primary is healthy again, and a third provider comes first.
    let v2 = CONFIG
        .replace("simulated = { latency_ms = 5, down = true }", "simulated = { latency_ms = 5 }")
        .replace(
            "[palisade.router]\norder = [\"primary\", \"secondary\"]",
            "[upstreams.third]\nmodels = { \"m\" = \"t-model\" }\nsimulated = { latency_ms = 5 }\n\n[palisade.router]\norder = [\"third\", \"primary\", \"secondary\"]",
        );
    assert_ne!(v2, CONFIG);
    std::fs::write(dir.join("hup.toml"), &v2).unwrap();
    hup(child.id());
    let head = post(&addr, body, "after-hup");
    assert!(head.contains("x-palisade-provider: third"), "{head}");
    // A broken file: refused, the running config keeps serving.
    let bad = format!("[gateway]\nlisten = \"nope\"\n{v2}");
    std::fs::write(dir.join("hup.toml"), bad).unwrap();
    hup(child.id());
    let head = post(&addr, body, "after-bad-hup");
    assert!(head.contains("x-palisade-provider: third"), "{head}");
    let err = stop(child);
    assert!(err.contains("hup.toml reloaded"), "{err}");
    assert!(
        err.contains("not reloaded") && err.contains("gateway.listen"),
        "{err}"
    );
}

#[test]
fn with_json_logs_every_line_parses_and_the_access_event_carries_its_fields() {
    let (child, addr) = spawn("json.toml", CONFIG, &[("PALISADE_LOG_FORMAT", "json")]);
    let head = post(
        &addr,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "json-log-1",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let err = stop(child);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "palisade_gateway::access")
        .collect();
    assert_eq!(access.len(), 1, "{err}");
    let a = access[0];
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["fields"]["status"], 200, "{a}");
    assert_eq!(a["fields"]["provider"], "secondary", "{a}");
    assert_eq!(a["fields"]["model"], "m", "{a}");
    assert_eq!(a["fields"]["degraded"], "-", "{a}");
    assert_eq!(a["fields"]["hedged"], false, "{a}");
    // The simulated answer's usage: 16 completion tokens by default.
    assert_eq!(a["fields"]["completion_tokens"], 16, "{a}");
    assert!(a["fields"]["ms"].is_u64(), "{a}");
    assert_eq!(
        a["span"]["request_id"], "json-log-1",
        "the request's span: {a}"
    );
    // A bad format is refused at once, naming the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: text, json"));
}

#[test]
fn a_call_about_a_stored_response_is_an_access_line_of_its_own() {
    let (child, addr) = spawn("stored.toml", CONFIG, &[("PALISADE_LOG_FORMAT", "json")]);
    let made = binary::send(
        &addr,
        "POST",
        "/v1/responses",
        r#"{"model":"m","input":"hi"}"#,
        &[],
    );
    assert!(made.starts_with("HTTP/1.1 200"), "{made}");
    let body = &made[made.find("\r\n\r\n").unwrap() + 4..];
    let id = serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = binary::send(
        &addr,
        "GET",
        &format!("/v1/responses/{id}"),
        "",
        &[("x-request-id", "stored-7")],
    );
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    // primary is down: asked first, it cannot tell; secondary has none.
    let gone = binary::send(&addr, "GET", "/v1/responses/resp_nowhere_1", "", &[]);
    assert!(gone.starts_with("HTTP/1.1 503"), "{gone}");
    let err = stop(child);
    let stored: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "stored response call")
        .collect();
    assert_eq!(stored.len(), 2, "{err}");
    let f = &stored[0]["fields"];
    assert_eq!(stored[0]["target"], "palisade_gateway::access");
    assert_eq!(f["call"], "retrieve", "{f}");
    assert_eq!(f["id"], id.as_str(), "{f}");
    assert_eq!(f["status"], 200, "{f}");
    assert_eq!(f["provider"], "secondary", "{f}");
    assert_eq!(f["request_id"], "stored-7", "{f}");
    assert_eq!(f["key"], "-", "{f}");
    assert!(f["total_ms"].is_u64(), "{f}");
    // Found nowhere, and one could not tell: its failure is the answer.
    assert_eq!(stored[1]["fields"]["status"], 503, "{}", stored[1]);
    assert_eq!(stored[1]["fields"]["provider"], "primary", "{}", stored[1]);
}

#[test]
fn a_provider_whose_headers_say_it_has_no_requests_left_is_logged_at_info() {
    let config = r#"
[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, requests_per_minute = 2 }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]
"#;
    let (child, addr) = spawn("paced.toml", config, &[]);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for i in 0..3 {
        let head = post(&addr, body, &format!("paced-{i}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let err = stop(child);
    let line = err
        .lines()
        .find(|l| l.contains("the provider has no requests left"))
        .unwrap_or_else(|| panic!("not logged at info: {err}"));
    assert!(
        line.contains(" INFO ") && line.contains("provider=\"primary\""),
        "{line}"
    );
}

#[test]
fn a_provider_skipped_and_a_retry_budget_run_dry_are_logged_by_default_naming_the_provider() {
    // The primary always fails; its budget allows no retry at all, and its
    // breaker opens after two failures.
    let config = r#"
[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, down = true }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 1 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
budget_ratio = 0.001
budget_min_per_sec = 0

[palisade.defaults.breaker]
consecutive_failures = 2
"#;
    // No RUST_LOG: the default level is what is tested.
    let (child, addr) = spawn("skipped.toml", config, &[("RUST_LOG", "")]);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for i in 0..3 {
        let head = post(&addr, body, &format!("skip-{i}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let err = stop(child);
    let find = |what: &str, level: &str| {
        err.lines()
            .find(|l| l.contains(what))
            .filter(|l| {
                let named = l.contains("provider=\"primary\"") || l.contains("provider=primary ");
                l.contains(level) && named
            })
            .unwrap_or_else(|| panic!("{what:?} not logged at{level}naming primary: {err}"))
            .to_owned()
    };
    let dry = find("the retry budget is exhausted", " WARN ");
    assert!(dry.contains("skip-0"), "in the request's span: {dry}");
    let skipped = find("skipping provider", " INFO ");
    assert!(
        skipped.contains("skip-2"),
        "the third request skips it: {skipped}"
    );
}

#[test]
fn the_log_level_is_the_flag_s_then_rust_log_then_the_config_s() {
    let config = format!("[gateway]\nlog = \"warn\"\n{CONFIG}");
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    // (env, whether the access line is written, whether the fallback's
    // "falling back" is: both at info, under different targets)
    for (env, access, fallback) in [
        (&[("RUST_LOG", "")][..], false, false),
        (&[("RUST_LOG", "info")][..], true, true),
        (
            &[("RUST_LOG", "info"), ("PALISADE_LOG_LEVEL", "warn")][..],
            false,
            false,
        ),
        (
            &[
                ("RUST_LOG", "info"),
                ("PALISADE_LOG_LEVEL", "warn,palisade_gateway::access=info"),
            ][..],
            true,
            false,
        ),
        // A RUST_LOG that cannot be read is said, and the config's is used.
        (&[("RUST_LOG", "m=[")][..], false, false),
    ] {
        let (child, addr) = spawn("levels.toml", &config, env);
        assert!(post(&addr, body, "lvl").starts_with("HTTP/1.1 200"));
        let err = stop(child);
        assert_eq!(
            err.contains("palisade_gateway::access"),
            access,
            "{env:?}: {err}"
        );
        assert_eq!(err.contains("falling back"), fallback, "{env:?}: {err}");
        if env[0].1 == "m=[" {
            assert!(
                err.contains("RUST_LOG=\"m=[\" is not a log filter"),
                "{err}"
            );
        }
    }
}

#[test]
fn a_log_level_that_is_no_level_is_refused_naming_where_it_was_given() {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["serve", "--log-level", "loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-level") && err.contains("\"loud\" is not a level"),
        "{err}"
    );

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad-level.toml");
    std::fs::write(
        &cfg,
        format!("[gateway]\nlog = \"info,palisade=loud\"\n{CONFIG}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("gateway.log"), "{said}");
}

#[test]
fn a_stream_s_line_is_written_when_it_ends_with_its_usage_or_when_its_caller_goes() {
    let config = r#"
[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, tokens = 40, token_interval_ms = 5 }

[palisade.router]
order = ["primary"]
"#;
    let (child, addr) = spawn("streams.toml", config, &[]);
    let stream = |usage: bool| {
        format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":{usage}}},"messages":[{{"role":"user","content":"count to forty"}}]}}"#
        )
    };
    // Whole streams, with and without the usage chunk.
    let all = post(&addr, &stream(true), "stream-usage");
    assert!(all.contains("data: [DONE]"), "{all}");
    post(&addr, &stream(false), "stream-plain");
    // A caller that reads the first token and goes.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let body = stream(true);
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-request-id: stream-gone\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 256];
        let n = s.read(&mut first).unwrap();
        assert!(n > 0);
    }
    // Give the gateway time to see the caller gone.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = stop(child);
    let line = |id: &str| {
        err.lines()
            .find(|l| l.contains("palisade_gateway::access") && l.contains(id))
            .unwrap_or_else(|| panic!("no access line for {id}: {err}"))
            .to_owned()
    };
    let field = |l: &str, name: &str| -> u64 {
        let at = l
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("{name} in {l}"));
        l[at + name.len() + 2..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let used = line("stream-usage");
    assert!(
        used.contains("end=\"ended\"") || used.contains("end=ended"),
        "{used}"
    );
    assert_eq!(field(&used, "completion_tokens"), 40, "{used}");
    assert!(field(&used, "prompt_tokens") > 0, "{used}");
    // 40 tokens 5 ms apart: the stream lasts about 200 ms past its first.
    assert!(
        field(&used, "total_ms") >= field(&used, "ms") + 150,
        "{used}"
    );
    // The caller did not ask for the usage chunk; the gateway asked the
    // provider for it all the same, and counts it.
    let plain = line("stream-plain");
    assert_eq!(field(&plain, "completion_tokens"), 40, "{plain}");
    let gone = line("stream-gone");
    assert!(gone.contains("caller gone"), "{gone}");
}

#[test]
fn a_stream_that_stalls_after_its_first_tokens_is_logged_as_cut() {
    let config = r#"
[gateway]
idle_timeout_ms = 200

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, tokens = 40, token_interval_ms = 5, stall_after_tokens = 2 }

[palisade.router]
order = ["primary"]
"#;
    let (child, addr) = spawn("stall.toml", config, &[]);
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let got = post(&addr, body, "stream-stalls");
    assert!(
        got.contains("stream_interrupted"),
        "the SSE error event: {got}"
    );
    let err = stop(child);
    let line = err
        .lines()
        .find(|l| l.contains("palisade_gateway::access") && l.contains("stream-stalls"))
        .unwrap_or_else(|| panic!("no access line: {err}"));
    assert!(line.contains("end=\"cut\""), "{line}");
}
