//! `palisade-gateway check`: a config checked without starting anything.

#[path = "common/binary.rs"]
mod binary;

use std::process::Command;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .arg("check")
        .args(args)
        .env_remove("PALISADE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_embedded_config_checks_clean_with_a_summary() {
    let (code, out, err) = check(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the embedded config is valid: 4 upstreams, models fast, gpt-4o-mini, text-embedding-3-small;"), "{out}");
    assert!(
        out.contains("[primary, primary-west] (peak_ewma) > secondary > local"),
        "{out}"
    );
    assert!(!out.contains("cache:"), "off in the default: {out}");
}

#[test]
fn the_summary_says_when_the_cache_and_the_batcher_are_on() {
    let text = palisade_gateway::config::DEFAULT_CONFIG
        .replace("# [cache]", "[cache]")
        .replace("# max_stale_ms", "max_stale_ms")
        .replace("# [batch]", "[batch]")
        .replace("# max_delay_ms", "max_delay_ms");
    let path = file("cache-batch.toml", &text);
    let (code, out, err) = check(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "cache: stale answers up to 3600 s old, fresh hits off, coalescing on, 64 MiB"
        ),
        "{out}"
    );
    assert!(
        out.contains("batching (/v1/embeddings): up to 64 inputs, 10 ms"),
        "{out}"
    );
}

#[test]
fn one_upstream_is_one_upstream() {
    let path = file(
        "one.toml",
        "[upstreams.a]\nmodels = { \"m\" = \"m\" }\nsimulated = {}\n",
    );
    let (code, out, err) = check(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("is valid: 1 upstream, models m; tried in order a"),
        "{out}"
    );
}

#[test]
fn every_problem_is_listed_with_its_key_path_and_the_exit_code_is_1() {
    let path = file(
        "bad.toml",
        r#"
        [gateway]
        listen = "nowhere"
        [upstreams.a]
        models = {}
        base_url = "http://127.0.0.1:9"
        [palisade.defaults.breaker]
        failure_rate = 3
        "#,
    );
    let (code, out, err) = check(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("3 problem(s)"), "{err}");
    for key in [
        "gateway.listen",
        "upstreams.a.models",
        "palisade.defaults.breaker.failure_rate",
    ] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(key)),
            "{key} missing: {err}"
        );
    }
    let (code, _, err) = check(&["--config", "/no/such/file.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn a_key_variable_missing_here_is_a_warning_not_a_failure() {
    let path = file(
        "keys.toml",
        r#"
        [upstreams.openai]
        models = { "m" = "gpt-4o-mini" }
        base_url = "https://api.openai.com"
        api_key_env = "PALISADE_TEST_SURELY_UNSET_KEY"
        "#,
    );
    let (code, out, err) = check(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "warning: upstreams.openai.api_key_env: PALISADE_TEST_SURELY_UNSET_KEY is not set"
        ),
        "{out}"
    );
}

#[test]
fn the_summary_says_what_else_runs_and_those_sections_are_checked_too() {
    let path = file(
        "extras.toml",
        r#"
        [gateway]
        chaos_endpoint = true
        [upstreams.a]
        models = { "m" = "x" }
        simulated = {}
        [upstreams.b]
        models = { "m" = "y" }
        simulated = {}
        [palisade.router]
        tiers = [["a", "b"]]
        [palisade.router.outlier]
        interval_ms = 1000
        [palisade.providers.a.health_check]
        enabled = true
        [palisade.fleet]
        redis_url = "redis://127.0.0.1:6379"
        "#,
    );
    let (code, out, err) = check(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "health checks: a\n",
        "outlier ejection: on",
        "fleet: shared through redis://127.0.0.1:6379",
        "chaos endpoint: on",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let bad = file(
        "bad_extras.toml",
        r#"
        [upstreams.a]
        models = { "m" = "x" }
        simulated = {}
        [palisade.router.outlier]
        max_ejection_percent = 200
        [palisade.defaults.health_check]
        jitter = 3
        [palisade.fleet]
        redis_url = "http://nope"
        "#,
    );
    let (code, _, err) = check(&["--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    for key in [
        "palisade.router.outlier.max_ejection_percent",
        "palisade.defaults.health_check.jitter",
        "palisade.fleet.redis_url",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
}

#[test]
fn the_command_line_has_help_a_version_and_names_a_bad_flag() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
            .args(args)
            .env_remove("PALISADE_CONFIG")
            .env_remove("PALISADE_LISTEN")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in [
        "serve",
        "check",
        "demo",
        "--listen",
        "PALISADE_LISTEN",
        "--log-format",
    ] {
        assert!(out.contains(word), "{word} in {out}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("palisade-gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, _, err) = run(&["--listen", "nowhere"]);
    assert_eq!(code, 2);
    assert!(err.contains("--listen"), "{err}");
    let (code, _, err) = run(&["demo", "--seconds", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--seconds"), "{err}");
}

#[test]
fn an_open_file_limit_too_low_for_max_connections_is_a_warning_not_a_failure() {
    let path = file(
        "limit.toml",
        r#"
        [gateway]
        max_connections = 1000
        [upstreams.openai]
        models = { "m" = "gpt-4o-mini" }
        base_url = "https://api.openai.com"
        "#,
    );
    // Under a shell's `ulimit -n` (soft and hard): 1 999 files cannot hold
    // 1 000 connections and their upstreams; 2 000 can.
    let under = |limit: u32| {
        let out = binary::under_ulimit(&format!("-n {limit}"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = under(1_999);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: gateway.max_connections = 1000 needs about 2000 open files")
            && out.contains("at most 1999")
            && out.contains("is valid"),
        "{out}"
    );
    let (code, out) = under(2_000);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
}
