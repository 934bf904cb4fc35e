//! The breaker's config section (`[..breaker]`), behind the `serde`
//! feature.

use std::time::Duration;

use palisade_core::Problems;

use crate::config::{ConfigError, HalfOpenRule};
use crate::layer::{Builder, CircuitBreakerLayer};

palisade_core::section! {
    /// `[..breaker]`: the circuit breaker.
    BreakerSection => BreakerSettings {
        /// Whether the breaker is on (default true).
        enabled: bool = true,
        /// Failures in a row that trip it; 0 turns the rule off (default 5).
        consecutive_failures: u32 = 5,
        /// Failure rate over the window that trips it, within (0, 1]; 0
        /// turns the rule off (default 0.5).
        failure_rate: f64 = 0.5,
        /// The window: the last this many calls (default 50).
        window: usize = 50,
        /// Calls the window must hold before the rate counts (default 20).
        minimum_calls: u64 = 20,
        /// First open period, in ms (default 30000).
        open_ms: u64 = 30_000,
        /// Longest open period after repeated trips (each doubles it), and
        /// longest `Retry-After` cooldown, in ms (default 300000).
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

/// The builder's names for the fields these settings name otherwise.
const KEYS: &[(&str, &str)] = &[
    ("breaker.count_window", "breaker.window"),
    ("breaker.open_duration", "breaker.open_ms"),
    ("breaker.open_backoff", "breaker.max_open_ms"),
    ("breaker.rules", "breaker.consecutive_failures"),
];

impl BreakerSettings {
    /// Builds the breaker these settings describe, on `builder` (which
    /// may already name the provider and the classifier). Every problem is
    /// refused at once, under this section's keys (`breaker.open_ms`), by
    /// the builder's own rules.
    ///
    /// `enabled` is not read here: whether to put the layer in a stack is
    /// the stack's choice.
    ///
    /// ```
    /// use palisade_breaker::{BreakerSettings, CircuitBreakerLayer};
    ///
    /// let settings = BreakerSettings { failure_rate: 1.5, open_ms: 0, ..Default::default() };
    /// let err = settings.build(CircuitBreakerLayer::builder()).unwrap_err();
    /// let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["breaker.failure_rate", "breaker.open_ms"]);
    /// assert!(BreakerSettings::default().build(CircuitBreakerLayer::builder()).is_ok());
    /// ```
    pub fn build<C>(&self, builder: Builder<C>) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let ms = Duration::from_millis;
        let mut problems = Problems::new("breaker");
        let rule = match self.half_open_rule.as_str() {
            "any_failure" => HalfOpenRule::AnyFailure,
            "rate" => HalfOpenRule::Rate,
            other => {
                problems.add(
                    "half_open_rule",
                    format!("{other:?} is not one of \"any_failure\", \"rate\""),
                );
                HalfOpenRule::AnyFailure
            }
        };
        let mut builder = builder
            .consecutive_failures(
                (self.consecutive_failures > 0).then_some(self.consecutive_failures),
            )
            .failure_rate((self.failure_rate != 0.0).then_some(self.failure_rate))
            .count_window(self.window)
            .minimum_calls(self.minimum_calls)
            .open_duration(ms(self.open_ms))
            .open_backoff(2.0, ms(self.max_open_ms))
            .half_open_probes(self.half_open_probes)
            .half_open_rule(rule)
            .retry_after_cooldown(self.retry_after_cooldown, ms(self.max_open_ms));
        if self.jitter_seed != 0 {
            builder = builder.jitter_seed(self.jitter_seed);
        }
        problems.finish_with(builder.build().map_err(|e| e.renamed(KEYS)))
    }

    /// Checks these settings by building them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.build(CircuitBreakerLayer::builder()).map(drop)
    }
}
