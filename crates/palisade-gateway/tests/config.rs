//! The gateway's config is checked with palisade's one config error type:
//! the gateway's own keys and `[palisade]`'s problems come in one list,
//! each with its full key path.

use palisade::ConfigError;
use palisade_gateway::config::GatewayConfig;

/// Why `toml` is refused, and each problem's path.
fn refused(toml: &str) -> (ConfigError, Vec<String>) {
    let err = GatewayConfig::from_toml(toml).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected a list of problems, got {err}");
    };
    let paths = problems.iter().map(|p| p.path.clone()).collect();
    (err, paths)
}

#[test]
fn gateway_and_palisade_problems_are_reported_together_with_full_paths() {
    let bad = r#"
[gateway]
listen = "nowhere"

[upstreams.openai]
base_url = "not a url"
models = { "gpt-4o" = "gpt-4o" }

[palisade.providers.openai.breaker]
failure_rate = 1.5
"#;
    let (err, paths) = refused(bad);
    assert_eq!(
        paths,
        [
            "gateway.listen",
            "upstreams.openai.base_url",
            "palisade.providers.openai.breaker.failure_rate",
        ],
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid config: gateway.listen: "),
        "{err}"
    );
}

#[test]
fn a_syntax_error_is_a_parse_error() {
    let err = GatewayConfig::from_toml("[gateway\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)), "{err}");
}

#[test]
fn the_embedded_default_is_valid() {
    let cfg = GatewayConfig::embedded();
    assert!(!cfg.upstreams.is_empty());
    // Its first tier balances two deployments, and late calls are hedged.
    let tiers = cfg.palisade.provider_tiers();
    assert_eq!(tiers[0].0, ["primary", "primary-west"]);
    assert!(cfg.palisade.router.hedge.is_some());
}

#[test]
fn upstream_headers_and_base_urls_are_checked_each_with_its_path() {
    let bad = r#"
[upstreams.azure]
base_url = "https://res.openai.azure.com/openai/deployments/x?api-version=2024-10-21"
api_key_env = "AZURE_KEY"
api_key_header = "api-key"
models = { "m" = "gpt-4o" }
headers = { "api-key" = "in clear", "content-length" = "3", "bad name" = "x", "x-ok" = "line\nbreak", "openai-organization" = "org-1" }

[upstreams.other]
base_url = "https://example.com/v1"
api_key_header = "host"
models = { "m" = "m" }

[upstreams.pasted]
base_url = "https://api.openai.com/v1/chat/completions"
models = { "m" = "m" }
"#;
    let (err, paths) = refused(bad);
    assert_eq!(
        paths,
        [
            "upstreams.azure.headers.api-key",
            "upstreams.azure.headers.bad name",
            "upstreams.azure.headers.content-length",
            "upstreams.azure.headers.x-ok",
            "upstreams.azure.base_url",
            "upstreams.other.api_key_header",
            "upstreams.pasted.base_url",
        ],
        "{err}"
    );
    let text = err.to_string();
    for part in [
        "api-key: the API key's header (api_key_env sets it)",
        "content-length: a header the gateway sets itself",
        "bad name: not a header name",
        "x-ok: not a header value",
        "takes no query",
        "\"host\" is a header the gateway sets itself",
        "ends with an endpoint's path (/chat/completions)",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    // The same headers, each where it may be: accepted.
    let good = r#"
[upstreams.azure]
base_url = "https://res.openai.azure.com/openai/v1"
api_key_env = "AZURE_KEY"
api_key_header = "api-key"
models = { "m" = "gpt-4o" }
headers = { "openai-organization" = "org-1", "x-title" = "palisade" }
"#;
    let cfg = GatewayConfig::from_toml(good).unwrap();
    assert_eq!(cfg.upstreams["azure"].headers.len(), 2);
}
