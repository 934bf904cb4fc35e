//! Configuration: serde, from TOML or JSON, with defaults for every section,
//! per-provider overrides merged over them, and validation that reports
//! every problem at once with its key path.
//!
//! ```toml
//! [router]
//! request_timeout_ms = 60000
//! order = ["openai", "anthropic", "local"]
//!
//! [defaults.breaker]            # applies to every provider...
//! failure_rate = 0.5
//!
//! [providers.openai]
//! [providers.openai.breaker]    # ...unless a provider says otherwise
//! consecutive_failures = 3
//!
//! [providers.anthropic]
//! large_context = true
//!
//! [providers.local.retry]
//! enabled = false
//! ```
//!
//! Precedence, field by field: the provider's section, then `[defaults]`,
//! then the built-in default (documented on each field). Unknown keys are
//! refused.
//!
//! Each layer's section (its fields, defaults and checks) lives in the
//! layer's crate ([`BreakerSection`] in palisade-breaker, ...); a value is
//! checked by building the layer, so the builder's rule is the only one.
//! This module assembles the sections and puts each refusal at its key
//! path.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::check::{HealthCheckSection, HealthCheckSettings};
pub use palisade_balance::Strategy;
pub use palisade_breaker::{BreakerSection, BreakerSettings};
pub use palisade_bulkhead::{BulkheadSection, BulkheadSettings};
pub use palisade_core::{ConfigError, Problem};
pub use palisade_deadline::{TimeoutSection, TimeoutSettings};
pub use palisade_hedge::HedgeSection;
pub use palisade_ratelimit::{RateLimitSection, RateLimitSettings};
pub use palisade_retry::{RetrySection, RetrySettings};

/// `[router]`: how requests are spread over providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The whole request's deadline, in ms, covering every provider, retry
    /// and backoff (default 60000).
    pub request_timeout_ms: u64,
    /// Preference order; providers not listed come after, by name. Empty
    /// means every provider, by name. Each is a tier of its own; use
    /// `tiers` instead to balance equivalent providers.
    pub order: Vec<String>,
    /// Preference order as tiers of equivalent providers, e.g.
    /// `[["azure-east", "azure-west"], ["openai"], ["local"]]`: a call goes
    /// to one provider of the first tier (chosen by its strategy), then the
    /// others of that tier, then the next tier. Providers in no tier come
    /// after, each alone, by name. Give `order` or `tiers`, not both.
    pub tiers: Vec<Vec<String>>,
    /// How a tier chooses among its providers (default `peak_ewma`; also
    /// `round_robin`, `random`, `least_in_flight`, `most_headroom`).
    pub strategy: Strategy,
    /// A strategy per tier, in the order of `tiers`, overriding
    /// `strategy` for the tiers it covers.
    pub strategies: Vec<Strategy>,
    /// Hedge late calls to another provider of their tier (off unless
    /// this section is given).
    pub hedge: Option<HedgeSection>,
    /// Eject, for a while, a provider that does much worse than its tier
    /// mates (off unless this section is given; see
    /// [`eject`](crate::eject)).
    pub outlier: Option<crate::eject::OutlierSection>,
    /// Fixes the balancers' random draws, for reproducible tests and
    /// simulations (default: seeded from the clock).
    pub seed: Option<u64>,
    /// One retry budget for all providers (built from
    /// `[defaults.retry]`'s `budget_*` settings) instead of one each, so
    /// that a brownout of several providers cannot add up their retries
    /// (default false). Hedges (`[router.hedge]`) then withdraw from it
    /// too, instead of from a budget of their own.
    pub share_retry_budget: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            request_timeout_ms: 60_000,
            order: Vec::new(),
            tiers: Vec::new(),
            strategy: Strategy::default(),
            strategies: Vec::new(),
            hedge: None,
            outlier: None,
            seed: None,
            share_retry_budget: false,
        }
    }
}

/// Declares the per-provider layers' sections, once: `[defaults]` and each
/// `[providers.<id>]` hold one section per layer, and a provider's
/// settings hold one decided settings value per layer. Adding a layer to
/// the config is one line here.
macro_rules! layers {
    ( $( $(#[$doc:meta])* $name:ident : $section:ident => $settings:ident, )* ) => {
        /// `[defaults]`: a section per layer, every field optional.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Sections {
            $( $(#[$doc])* pub $name: $section, )*
        }

        impl Sections {
            /// `over`'s fields where it sets them, ours elsewhere.
            pub fn merged(&self, over: &Sections) -> Sections {
                Sections { $( $name: self.$name.merged(&over.$name), )* }
            }
        }

        /// `[providers.<id>]`: one provider's marks and its overrides of
        /// each layer's section.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct ProviderConfig {
            /// Takes prompts too long for the others (default false).
            pub large_context: bool,
            /// Takes requests another provider's content filter refused
            /// (default false).
            pub content_filter: bool,
            /// Its share of its tier's traffic relative to the others (1
            /// to 1000; default 1).
            pub weight: Option<u32>,
            $( $(#[$doc])* pub $name: $section, )*
        }

        impl ProviderConfig {
            /// The provider's overrides, as sections.
            pub fn sections(&self) -> Sections {
                Sections { $( $name: self.$name.clone(), )* }
            }
        }

        /// Every layer's settings with every field decided; `Default` is
        /// the built-in defaults.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct LayerSettings {
            $( $(#[$doc])* pub $name: $settings, )*
        }

        impl LayerSettings {
            /// These settings with `over`'s fields where it sets them.
            pub fn merged(&self, over: &Sections) -> LayerSettings {
                LayerSettings { $( $name: self.$name.merged(&over.$name), )* }
            }

            /// Checks every layer's settings by building it; every problem
            /// at once, each at its section's key (`breaker.open_ms`).
            pub fn check(&self) -> Result<(), ConfigError> {
                let mut problems = Vec::new();
                $(
                    if let Err(e) = self.$name.check() {
                        problems.extend(e.problems().iter().cloned());
                    }
                )*
                if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
            }
        }
    };
}

layers! {
    /// `[..bulkhead]`: concurrency isolation.
    bulkhead: BulkheadSection => BulkheadSettings,
    /// `[..retry]`: retries with backoff and a budget.
    retry: RetrySection => RetrySettings,
    /// `[..rate_limit]`: client-side rate limits.
    rate_limit: RateLimitSection => RateLimitSettings,
    /// `[..breaker]`: the circuit breaker.
    breaker: BreakerSection => BreakerSettings,
    /// `[..timeout]`: the per-attempt timeout.
    timeout: TimeoutSection => TimeoutSettings,
    /// `[..health_check]`: active health checks (off by default).
    health_check: HealthCheckSection => HealthCheckSettings,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Routing across providers.
    pub router: RouterConfig,
    /// Settings every provider starts from.
    pub defaults: Sections,
    /// The providers, by id.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[fleet]`: share limits, cooldowns and probes with the other
    /// replicas through Redis (feature `redis`); without it everything
    /// stays in this process.
    #[cfg(feature = "redis")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<palisade_redis::FleetSettings>,
}

/// A provider's settings with every field decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// The provider's id.
    pub id: String,
    /// Takes prompts too long for the others.
    pub large_context: bool,
    /// Takes requests another provider's content filter refused.
    pub content_filter: bool,
    /// Its share of its tier's traffic (default 1).
    pub weight: u32,
    /// Every layer's settings, merged: built-in ← `[defaults]` ← the
    /// provider's.
    pub layers: LayerSettings,
}

impl Config {
    /// Parses and validates TOML.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates JSON.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a `.toml` or `.json` file (by extension; TOML otherwise).
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Config::from_json(&text),
            _ => Config::from_toml(&text),
        }
    }

    /// The providers in preference order: `router.order` first, then the
    /// rest by name.
    pub fn provider_order(&self) -> Vec<String> {
        let mut order: Vec<String> = self
            .router
            .order
            .iter()
            .filter(|id| self.providers.contains_key(*id))
            .cloned()
            .collect();
        for id in self.providers.keys() {
            if !order.contains(id) {
                order.push(id.clone());
            }
        }
        order
    }

    /// The preference order as tiers, each with its strategy: `tiers`
    /// (or each of `order` alone), then the providers in neither, each
    /// alone, by name.
    pub fn provider_tiers(&self) -> Vec<(Vec<String>, Strategy)> {
        let strategy_of = |i: usize| {
            self.router
                .strategies
                .get(i)
                .copied()
                .unwrap_or(self.router.strategy)
        };
        let mut out: Vec<(Vec<String>, Strategy)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, tier) in self.router.tiers.iter().enumerate() {
            let ids: Vec<String> = tier
                .iter()
                .filter(|id| self.providers.contains_key(*id) && seen.insert((*id).clone()))
                .cloned()
                .collect();
            if !ids.is_empty() {
                out.push((ids, strategy_of(i)));
            }
        }
        for id in self.provider_order() {
            if seen.insert(id.clone()) {
                out.push((vec![id], self.router.strategy));
            }
        }
        out
    }

    /// The shared retry budget, when `router.share_retry_budget` is on.
    pub fn shared_budget(&self) -> Result<Option<palisade_retry::RetryBudget>, ConfigError> {
        if !self.router.share_retry_budget {
            return Ok(None);
        }
        self.defaults_settings()
            .retry
            .budget()
            .map(Some)
            .map_err(|e| e.at("defaults"))
    }

    /// The built-in defaults with `[defaults]` over them.
    pub fn defaults_settings(&self) -> LayerSettings {
        LayerSettings::default().merged(&self.defaults)
    }

    /// A provider's settings, merged; `None` for an unknown id.
    pub fn provider(&self, id: &str) -> Option<ProviderSettings> {
        let p = self.providers.get(id)?;
        Some(ProviderSettings {
            id: id.to_owned(),
            large_context: p.large_context,
            content_filter: p.content_filter,
            weight: p.weight.unwrap_or(1),
            layers: self.defaults_settings().merged(&p.sections()),
        })
    }

    /// Checks every value; returns all problems at once. A section's
    /// values are checked by building its layer: `[defaults]` over the
    /// built-in defaults, then each provider's settings, where a problem
    /// `[defaults]` already has is not repeated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut add = |path: String, message: String| problems.push(Problem { path, message });
        if self.router.request_timeout_ms == 0 {
            add(
                "router.request_timeout_ms".into(),
                "0 would refuse every request; use at least 1".into(),
            );
        }
        for (i, id) in self.router.order.iter().enumerate() {
            if !self.providers.contains_key(id) {
                add(
                    format!("router.order[{i}]"),
                    format!("{id:?} is not a configured provider"),
                );
            }
        }
        if !self.router.order.is_empty() && !self.router.tiers.is_empty() {
            add(
                "router.tiers".into(),
                "give order or tiers, not both (a tier of one is an order entry)".into(),
            );
        }
        let mut placed = BTreeSet::new();
        for (i, tier) in self.router.tiers.iter().enumerate() {
            if tier.is_empty() {
                add(format!("router.tiers[{i}]"), "an empty tier".into());
            }
            if tier.len() > palisade_balance::MAX_TIER {
                add(
                    format!("router.tiers[{i}]"),
                    format!(
                        "{} providers; at most {}",
                        tier.len(),
                        palisade_balance::MAX_TIER
                    ),
                );
            }
            for (j, id) in tier.iter().enumerate() {
                if !self.providers.contains_key(id) {
                    add(
                        format!("router.tiers[{i}][{j}]"),
                        format!("{id:?} is not a configured provider"),
                    );
                } else if !placed.insert(id.as_str()) {
                    add(
                        format!("router.tiers[{i}][{j}]"),
                        format!("{id:?} is in more than one tier"),
                    );
                }
            }
        }
        if self.router.strategies.len() > self.router.tiers.len() {
            add(
                "router.strategies".into(),
                format!(
                    "{} strategies for {} tiers",
                    self.router.strategies.len(),
                    self.router.tiers.len()
                ),
            );
        }
        #[cfg(feature = "redis")]
        if let Some(Err(e)) = self.fleet.as_ref().map(|f| f.check()) {
            for p in e.problems() {
                add(p.path.clone(), p.message.clone());
            }
        }
        if let Some(Err(e)) = self.router.outlier.as_ref().map(|o| o.check()) {
            for p in e.problems() {
                add(format!("router.{}", p.path), p.message.clone());
            }
        }
        if let Some(hedge) = &self.router.hedge {
            if let Err(e) = hedge.policy() {
                for p in e.problems() {
                    add(format!("router.{}", p.path), p.message.clone());
                }
            }
        }
        for (id, p) in &self.providers {
            if let Some(w) = p.weight {
                if w == 0 || w > palisade_balance::MAX_WEIGHT {
                    add(
                        format!("providers.{id}.weight"),
                        format!("{w}; use 1 to {}", palisade_balance::MAX_WEIGHT),
                    );
                }
            }
        }
        let refused = |settings: &LayerSettings| match settings.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().to_vec(),
        };
        let in_defaults = refused(&self.defaults_settings());
        let known: BTreeSet<(&str, &str)> = in_defaults
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        for p in &in_defaults {
            add(format!("defaults.{}", p.path), p.message.clone());
        }
        for id in self.providers.keys() {
            if id.is_empty() {
                add("providers".into(), "a provider id is empty".into());
            }
            let Some(settings) = self.provider(id) else {
                continue;
            };
            for p in refused(&settings.layers) {
                if !known.contains(&(p.path.as_str(), p.message.as_str())) {
                    add(format!("providers.{id}.{}", p.path), p.message);
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}
