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

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Declares a config section whose fields are all optional (absent = take
/// it from the next level down), with its built-in defaults and a merge.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The built-in defaults, every field set.
            pub fn builtin() -> Self {
                $name { $( $field: Some($default), )* }
            }

            /// `over`'s fields where it sets them, ours elsewhere.
            pub fn merged(&self, over: &Self) -> Self {
                $name { $( $field: over.$field.clone().or_else(|| self.$field.clone()), )* }
            }
        }
    };
}

section! {
    /// `[..bulkhead]`: concurrency isolation per provider.
    BulkheadSection {
        /// Whether the bulkhead is on (default true).
        enabled: bool = true,
        /// Calls in flight at once (default 64).
        max_concurrent: usize = 64,
        /// Calls that may wait for a slot (default 64).
        max_waiting: usize = 64,
        /// How long a call waits for a slot, in ms (default 5000).
        max_wait_ms: u64 = 5_000,
    }
}

section! {
    /// `[..retry]`: retries with backoff and a budget.
    RetrySection {
        /// Whether retrying is on (default true).
        enabled: bool = true,
        /// Attempts per request, the first included (default 3).
        max_attempts: u32 = 3,
        /// First backoff delay, in ms (default 200).
        backoff_base_ms: u64 = 200,
        /// Backoff growth per retry (default 2.0).
        backoff_multiplier: f64 = 2.0,
        /// Largest backoff delay, in ms (default 10000).
        backoff_max_ms: u64 = 10_000,
        /// Jitter: "none", "full", "equal" or "decorrelated" (default "full").
        jitter: String = "full".to_owned(),
        /// Longest `Retry-After` honoured, in ms (default 60000).
        max_retry_after_ms: u64 = 60_000,
        /// Least deadline left to start an attempt, in ms (default 100).
        min_attempt_time_ms: u64 = 100,
        /// Retries as a share of requests (default 0.2).
        budget_ratio: f64 = 0.2,
        /// Retries always allowed per second (default 10).
        budget_min_per_sec: u32 = 10,
        /// The budget's window, in seconds (default 10).
        budget_ttl_secs: u64 = 10,
        /// Seeds the jitter, for reproducible runs; 0 (the default) seeds
        /// from the OS.
        jitter_seed: u64 = 0,
    }
}

section! {
    /// `[..breaker]`: the circuit breaker.
    BreakerSection {
        /// Whether the breaker is on (default true). Off means calls pass
        /// and outcomes are still recorded.
        enabled: bool = true,
        /// Failures in a row that trip it; 0 turns the rule off (default 5).
        consecutive_failures: u32 = 5,
        /// Failure rate over the window that trips it, 0..=1; 0 turns the
        /// rule off (default 0.5).
        failure_rate: f64 = 0.5,
        /// The window: the last this many calls (default 50).
        window: usize = 50,
        /// Calls the window must hold before the rate counts (default 20).
        minimum_calls: u64 = 20,
        /// First open period, in ms (default 30000).
        open_ms: u64 = 30_000,
        /// Longest open period after repeated trips, in ms (default 300000).
        max_open_ms: u64 = 300_000,
        /// Concurrent half-open probes (default 2).
        half_open_probes: u32 = 2,
        /// How probes are judged: `"any_failure"` (default: one failed
        /// probe re-opens, `half_open_probes` successes close) or `"rate"`
        /// (Resilience4j's rule: exactly `half_open_probes` probes, their
        /// failure rate held against `failure_rate`).
        half_open_rule: String = "any_failure".to_owned(),
        /// Whether a 429/503 with `Retry-After` opens it for that long
        /// (default true).
        retry_after_cooldown: bool = true,
        /// Seeds the open-period jitter, for reproducible runs; 0 (the
        /// default) seeds from the OS.
        jitter_seed: u64 = 0,
    }
}

section! {
    /// `[..timeout]`: the per-attempt timeout.
    TimeoutSection {
        /// Whether the attempt timeout is on (default true).
        enabled: bool = true,
        /// Each attempt's timeout, in ms (default 30000), never beyond the
        /// request's deadline.
        attempt_ms: u64 = 30_000,
    }
}

/// `[router]`: how requests are spread over providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The whole request's deadline, in ms, covering every provider, retry
    /// and backoff (default 60000).
    pub request_timeout_ms: u64,
    /// Preference order; providers not listed come after, by name. Empty
    /// means every provider, by name.
    pub order: Vec<String>,
    /// One retry budget for all providers (built from
    /// `[defaults.retry]`'s `budget_*` settings) instead of one each, so
    /// that a brownout of several providers cannot add up their retries
    /// (default false).
    pub share_retry_budget: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            request_timeout_ms: 60_000,
            order: Vec::new(),
            share_retry_budget: false,
        }
    }
}

/// `[defaults]`, or a provider's overrides: the four pattern sections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sections {
    /// Bulkhead settings.
    pub bulkhead: BulkheadSection,
    /// Retry settings.
    pub retry: RetrySection,
    /// Breaker settings.
    pub breaker: BreakerSection,
    /// Timeout settings.
    pub timeout: TimeoutSection,
}

impl Sections {
    /// Every field at its built-in default.
    pub fn builtin() -> Self {
        Sections {
            bulkhead: BulkheadSection::builtin(),
            retry: RetrySection::builtin(),
            breaker: BreakerSection::builtin(),
            timeout: TimeoutSection::builtin(),
        }
    }

    /// `over`'s fields where it sets them, ours elsewhere.
    pub fn merged(&self, over: &Sections) -> Sections {
        Sections {
            bulkhead: self.bulkhead.merged(&over.bulkhead),
            retry: self.retry.merged(&over.retry),
            breaker: self.breaker.merged(&over.breaker),
            timeout: self.timeout.merged(&over.timeout),
        }
    }
}

/// `[providers.<id>]`: one provider's marks and overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Takes prompts too long for the others (default false).
    pub large_context: bool,
    /// Takes requests another provider's content filter refused (default
    /// false).
    pub content_filter: bool,
    /// Bulkhead overrides.
    pub bulkhead: BulkheadSection,
    /// Retry overrides.
    pub retry: RetrySection,
    /// Breaker overrides.
    pub breaker: BreakerSection,
    /// Timeout overrides.
    pub timeout: TimeoutSection,
}

impl ProviderConfig {
    fn sections(&self) -> Sections {
        Sections {
            bulkhead: self.bulkhead.clone(),
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            timeout: self.timeout.clone(),
        }
    }
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
}

/// One problem found in a configuration, with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `providers.openai.breaker.failure_rate`.
    pub path: String,
    /// What is wrong, e.g. `1.5 is not within 0..=1`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML / JSON for this schema (a syntax error,
    /// a wrong type, or an unknown key).
    #[error("cannot parse the config: {0}")]
    Parse(String),
    /// The values do not make sense; every problem is listed.
    #[error("invalid config: {}", list(.0))]
    Invalid(Vec<Problem>),
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The problems, when the values were refused.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
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
    /// Every section, merged: built-in ← `[defaults]` ← the provider's.
    pub sections: Sections,
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

    /// The shared retry budget, when `router.share_retry_budget` is on.
    pub fn shared_budget(&self) -> Result<Option<palisade_retry::RetryBudget>, ConfigError> {
        if !self.router.share_retry_budget {
            return Ok(None);
        }
        let s = Sections::builtin().merged(&self.defaults);
        retry_budget(&s, "defaults.retry").map(Some)
    }

    /// A provider's settings, merged; `None` for an unknown id.
    pub fn provider(&self, id: &str) -> Option<ProviderSettings> {
        let p = self.providers.get(id)?;
        Some(ProviderSettings {
            id: id.to_owned(),
            large_context: p.large_context,
            content_filter: p.content_filter,
            sections: Sections::builtin()
                .merged(&self.defaults)
                .merged(&p.sections()),
        })
    }

    /// Checks every value; returns all problems at once.
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
        check_sections("defaults", &self.defaults, &mut add);
        for (id, p) in &self.providers {
            if id.is_empty() {
                add("providers".into(), "a provider id is empty".into());
            }
            check_sections(&format!("providers.{id}"), &p.sections(), &mut add);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

fn check_sections(prefix: &str, s: &Sections, add: &mut impl FnMut(String, String)) {
    let mut at =
        |section: &str, field: &str, msg: String| add(format!("{prefix}.{section}.{field}"), msg);
    let b = &s.bulkhead;
    if b.max_concurrent == Some(0) {
        at(
            "bulkhead",
            "max_concurrent",
            "0 admits nothing; use at least 1".into(),
        );
    }
    if b.max_wait_ms == Some(0) && b.max_waiting.is_some_and(|w| w > 0) {
        at(
            "bulkhead",
            "max_wait_ms",
            "0 lets nobody wait; set max_waiting = 0 instead".into(),
        );
    }
    let r = &s.retry;
    if let Some(n) = r.max_attempts {
        if n == 0 || n > palisade_retry::MAX_ATTEMPTS {
            at(
                "retry",
                "max_attempts",
                format!("{n} is not within 1..={}", palisade_retry::MAX_ATTEMPTS),
            );
        }
    }
    if let Some(m) = r.backoff_multiplier {
        if !(m.is_finite() && m >= 1.0) {
            at(
                "retry",
                "backoff_multiplier",
                format!("{m} must be at least 1"),
            );
        }
    }
    if let (Some(base), Some(max)) = (r.backoff_base_ms, r.backoff_max_ms) {
        if base > max {
            at(
                "retry",
                "backoff_base_ms",
                format!("{base} is above backoff_max_ms ({max})"),
            );
        }
    }
    if let Some(j) = &r.jitter {
        if parse_jitter(j).is_none() {
            at(
                "retry",
                "jitter",
                format!("{j:?} is not one of \"none\", \"full\", \"equal\", \"decorrelated\""),
            );
        }
    }
    if let Some(ratio) = r.budget_ratio {
        if !(ratio > 0.0 && ratio <= 1000.0) {
            at(
                "retry",
                "budget_ratio",
                format!("{ratio} is not within (0, 1000]"),
            );
        }
    }
    if let Some(ttl) = r.budget_ttl_secs {
        if !(1..=60).contains(&ttl) {
            at(
                "retry",
                "budget_ttl_secs",
                format!("{ttl} is not within 1..=60"),
            );
        }
    }
    let c = &s.breaker;
    if let Some(rate) = c.failure_rate {
        if !(0.0..=1.0).contains(&rate) {
            at(
                "breaker",
                "failure_rate",
                format!("{rate} is not within 0..=1"),
            );
        }
    }
    if let Some(w) = c.window {
        if w == 0 || w > 1 << 20 {
            at(
                "breaker",
                "window",
                format!("{w} is not within 1..=1048576"),
            );
        }
    }
    if c.open_ms == Some(0) {
        at(
            "breaker",
            "open_ms",
            "0 would never stay open; use at least 1".into(),
        );
    }
    if let (Some(open), Some(max)) = (c.open_ms, c.max_open_ms) {
        if open > max {
            at(
                "breaker",
                "open_ms",
                format!("{open} is above max_open_ms ({max})"),
            );
        }
    }
    if let Some(rule) = &c.half_open_rule {
        if parse_half_open_rule(rule).is_none() {
            at(
                "breaker",
                "half_open_rule",
                format!("{rule:?} is not one of \"any_failure\", \"rate\""),
            );
        }
    }
    if c.half_open_probes == Some(0) {
        at(
            "breaker",
            "half_open_probes",
            "0 would never close again; use at least 1".into(),
        );
    }
    if s.timeout.attempt_ms == Some(0) {
        at(
            "timeout",
            "attempt_ms",
            "0 would time out every attempt; use at least 1".into(),
        );
    }
}

/// Reads a merged field; the built-in defaults set every one, so a gap
/// left by a hand-made `Sections` falls back to them.
macro_rules! get {
    ($s:ident . $section:ident . $field:ident) => {
        $s.$section
            .$field
            .clone()
            .or_else(|| $crate::config::Sections::builtin().$section.$field)
            .expect("the built-in defaults set every field")
    };
}
pub(crate) use get;

/// The ratio retry budget `s` describes; a refusal names `path`.
pub(crate) fn retry_budget(
    s: &Sections,
    path: &str,
) -> Result<palisade_retry::RetryBudget, ConfigError> {
    palisade_retry::RetryBudget::ratio(
        get!(s.retry.budget_ratio),
        Duration::from_secs(get!(s.retry.budget_ttl_secs)),
        get!(s.retry.budget_min_per_sec),
    )
    .map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            path: path.to_owned(),
            message: e.to_string(),
        }])
    })
}

pub(crate) fn parse_jitter(s: &str) -> Option<palisade_retry::Jitter> {
    use palisade_retry::Jitter;
    Some(match s {
        "none" => Jitter::None,
        "full" => Jitter::Full,
        "equal" => Jitter::Equal,
        "decorrelated" => Jitter::Decorrelated,
        _ => return None,
    })
}

pub(crate) fn parse_half_open_rule(s: &str) -> Option<palisade_breaker::HalfOpenRule> {
    use palisade_breaker::HalfOpenRule;
    Some(match s {
        "any_failure" => HalfOpenRule::AnyFailure,
        "rate" => HalfOpenRule::Rate,
        _ => return None,
    })
}

pub(crate) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}
