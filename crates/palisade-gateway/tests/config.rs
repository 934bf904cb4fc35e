//! The gateway's config is checked with palisade's one config error type:
//! the gateway's own keys and `[palisade]`'s problems come in one list,
//! each with its full key path.

use palisade::ConfigError;
use palisade_gateway::config::GatewayConfig;

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
    let err = GatewayConfig::from_toml(bad).unwrap_err();
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected a list of problems, got {err}");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
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
