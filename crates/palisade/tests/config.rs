//! Configuration: TOML and JSON, defaults, merging, validation.

use palisade::config::{BreakerSection, LayerSettings};
use palisade::{Config, ConfigError};

const TOML: &str = r#"
[router]
request_timeout_ms = 45000
order = ["openai", "anthropic"]

[defaults.breaker]
failure_rate = 0.3

[defaults.retry]
max_attempts = 4

[providers.openai.breaker]
consecutive_failures = 3

[providers.anthropic]
large_context = true

[providers.anthropic.retry]
enabled = false

[providers.local]
"#;

const JSON: &str = r#"{
  "router": { "request_timeout_ms": 45000, "order": ["openai", "anthropic"] },
  "defaults": { "breaker": { "failure_rate": 0.3 }, "retry": { "max_attempts": 4 } },
  "providers": {
    "openai": { "breaker": { "consecutive_failures": 3 } },
    "anthropic": { "large_context": true, "retry": { "enabled": false } },
    "local": {}
  }
}"#;

#[test]
fn toml_and_json_give_the_same_config() {
    let a = Config::from_toml(TOML).unwrap();
    let b = Config::from_json(JSON).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.router.request_timeout_ms, 45_000);
    assert_eq!(a.provider_order(), ["openai", "anthropic", "local"]);
}

#[test]
fn missing_sections_take_the_documented_defaults() {
    let cfg = Config::from_toml("[providers.p]\n").unwrap();
    assert_eq!(cfg.router.request_timeout_ms, 60_000);
    let p = cfg.provider("p").unwrap();
    assert_eq!(p.layers, LayerSettings::default());
    let b = &p.layers.breaker;
    assert_eq!(
        (b.consecutive_failures, b.failure_rate, b.window, b.open_ms),
        (5, 0.5, 50, 30_000)
    );
    assert_eq!(p.layers.bulkhead.max_concurrent, 64);
    assert_eq!(p.layers.timeout.attempt_ms, 30_000);
    // An empty document is a valid config with no providers.
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn provider_overrides_merge_over_defaults_field_by_field() {
    let cfg = Config::from_toml(TOML).unwrap();
    let openai = cfg.provider("openai").unwrap();
    assert_eq!(openai.layers.breaker.consecutive_failures, 3, "its own");
    assert_eq!(openai.layers.breaker.failure_rate, 0.3, "from [defaults]");
    assert_eq!(openai.layers.breaker.window, 50, "built in");
    assert_eq!(openai.layers.retry.max_attempts, 4);
    let anthropic = cfg.provider("anthropic").unwrap();
    assert!(anthropic.large_context);
    assert!(!anthropic.layers.retry.enabled);
    assert_eq!(anthropic.layers.retry.max_attempts, 4);
    let local = cfg.provider("local").unwrap();
    assert_eq!(local.layers.breaker.consecutive_failures, 5);
    assert!(cfg.provider("nope").is_none());
    // The merge itself: set fields win, unset fall through.
    let base = BreakerSection {
        window: Some(10),
        open_ms: Some(5),
        ..Default::default()
    };
    let over = BreakerSection {
        open_ms: Some(7),
        ..Default::default()
    };
    let m = base.merged(&over);
    assert_eq!((m.window, m.open_ms), (Some(10), Some(7)));
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let bad = r#"
[router]
request_timeout_ms = 0
order = ["openai", "ghost"]

[defaults.retry]
jitter = "wobbly"

[providers.openai.breaker]
failure_rate = 1.5
half_open_probes = 0

[providers.local.bulkhead]
max_concurrent = 0

[providers.local.retry]
backoff_base_ms = 5000
backoff_max_ms = 100
"#;
    let err = Config::from_toml(bad).unwrap_err();
    let got: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        got,
        [
            "router.request_timeout_ms: 0 would refuse every request; use at least 1",
            "router.order[1]: \"ghost\" is not a configured provider",
            "defaults.retry.jitter: \"wobbly\" is not one of \"none\", \"full\", \"equal\", \"decorrelated\"",
            "providers.local.bulkhead.max_concurrent: 0 is not within 1..=1073741824",
            "providers.local.retry.backoff_base_ms: base 5s is above max 100ms",
            "providers.openai.breaker.failure_rate: 1.5 is not within (0, 1]",
            "providers.openai.breaker.half_open_probes: 0 is not within 1..=65534",
        ]
    );
    assert!(err
        .to_string()
        .starts_with("invalid config: router.request_timeout_ms"));
}

#[test]
fn unknown_keys_and_wrong_types_are_refused() {
    let err = Config::from_toml("[providers.openai.breaker]\nfailure_rat = 0.5\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)));
    assert!(
        err.to_string().contains("unknown field `failure_rat`"),
        "{err}"
    );
    let err = Config::from_toml("[rooter]\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `rooter`"), "{err}");
    let err =
        Config::from_json(r#"{"providers":{"a":{"retry":{"max_attempts":"three"}}}}"#).unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)), "{err}");
    let err = Config::from_toml("[providers.a\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)));
}

#[test]
fn files_are_read_by_extension() {
    let dir = std::env::temp_dir().join(format!("palisade-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.toml"), TOML).unwrap();
    std::fs::write(dir.join("c.json"), JSON).unwrap();
    assert_eq!(
        Config::from_path(dir.join("c.toml")).unwrap(),
        Config::from_path(dir.join("c.json")).unwrap()
    );
    let err = Config::from_path(dir.join("missing.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `half_open_rule` selects Resilience4j's half-open rule from the config;
/// an unknown name is refused with its key path.
#[tokio::test(start_paused = true)]
async fn the_half_open_rule_is_configurable() {
    let err = Config::from_toml("[providers.a.breaker]\nhalf_open_rule = \"vote\"\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("providers.a.breaker.half_open_rule: \"vote\" is not one of"),
        "{err}"
    );
    let toml = "[providers.a.retry]\nenabled = false\n[providers.a.breaker]\nconsecutive_failures = 1\nopen_ms = 1000\nhalf_open_probes = 2\nhalf_open_rule = \"rate\"\n";
    let cfg = Config::from_toml(toml).unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    // Fails the first two calls, then succeeds.
    let provider = tower::service_fn(move |_: http::Request<()>| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let status = if n < 2 { 500 } else { 200 };
            Ok::<_, palisade_core::BoxError>(
                http::Response::builder().status(status).body(()).unwrap(),
            )
        }
    });
    let stack = palisade::ProviderStack::build(
        &cfg.provider("a").unwrap(),
        provider,
        palisade_core::HttpClassifier::new(),
        None,
    )
    .unwrap();
    let breaker = stack.handles.breaker.clone().unwrap();
    use tower::ServiceExt;
    let _ = stack.service.clone().oneshot(http::Request::new(())).await;
    assert_eq!(breaker.state(), palisade_core::CircuitState::Open);
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    // One failed probe of two: 50% ≥ the default failure_rate of 0.5, but
    // only judged once both probes are in; the default rule would re-open
    // at the first.
    let _ = stack.service.clone().oneshot(http::Request::new(())).await;
    assert_eq!(breaker.state(), palisade_core::CircuitState::HalfOpen);
    let _ = stack.service.clone().oneshot(http::Request::new(())).await;
    assert_eq!(breaker.state(), palisade_core::CircuitState::Open);
}

#[test]
fn values_are_checked_by_the_layers_own_builders() {
    // A rule only the breaker's builder knows (the rate needs more calls
    // than the window holds) is refused when the file is read, at its key.
    let err =
        Config::from_toml("[providers.p.breaker]\nwindow = 10\nminimum_calls = 20\n").unwrap_err();
    let got: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(got, ["providers.p.breaker.minimum_calls"], "{err}");
    // 0 switches a trip rule off: accepted, as documented.
    Config::from_toml("[providers.p.breaker]\nfailure_rate = 0.0\n").unwrap();
    // A bad value in [defaults] is reported once, not again under every
    // provider that inherits it; a provider's own bad value still is.
    let err = Config::from_toml(
        "[defaults.retry]\njitter = \"wobbly\"\n[providers.a]\n[providers.b.retry]\njitter = \"odd\"\n",
    )
    .unwrap_err();
    let got: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        got,
        ["defaults.retry.jitter", "providers.b.retry.jitter"],
        "{err}"
    );
    // The builders' own names are mapped to the file's keys.
    let err = Config::from_toml("[providers.p.bulkhead]\nmax_wait_ms = 0\n").unwrap_err();
    assert_eq!(err.problems()[0].path, "providers.p.bulkhead.max_wait_ms");
    let err = Config::from_toml("[providers.p.timeout]\nattempt_ms = 0\n").unwrap_err();
    assert_eq!(err.problems()[0].path, "providers.p.timeout.attempt_ms");
    let err = Config::from_toml("[defaults.retry]\nbudget_ttl_secs = 0\n").unwrap_err();
    assert_eq!(err.problems()[0].path, "defaults.retry.budget_ttl_secs");
}
