//! Retry's config section (`[..retry]`), behind the `serde` feature.

use std::time::Duration;

use palisade_core::Problems;

use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::error::ConfigError;
use crate::layer::{Builder, RetryLayer};

palisade_core::section! {
    /// `[..retry]`: retries with backoff and a budget.
    RetrySection => RetrySettings {
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

/// The builder's names for the fields these settings name otherwise.
const KEYS: &[(&str, &str)] = &[
    ("retry.backoff", "retry.backoff_base_ms"),
    ("retry.backoff.multiplier", "retry.backoff_multiplier"),
    ("retry.min_attempt_time", "retry.min_attempt_time_ms"),
    ("retry.budget.ratio", "retry.budget_ratio"),
    ("retry.budget.ttl", "retry.budget_ttl_secs"),
];

impl RetrySettings {
    /// Builds the retry layer these settings describe, on `builder` (which
    /// may already name the provider and classifier, and may carry a
    /// budget shared with other layers: then the `budget_*` settings are
    /// not used). Every problem is refused at once, under this section's
    /// keys (`retry.backoff_base_ms`), by the builder's own rules.
    ///
    /// `enabled` is not read here: whether to put the layer in a stack is
    /// the stack's choice.
    ///
    /// ```
    /// use palisade_retry::{RetryLayer, RetrySettings};
    ///
    /// let settings = RetrySettings { max_attempts: 0, jitter: "wobbly".into(), ..Default::default() };
    /// let err = settings.build(RetryLayer::builder()).unwrap_err();
    /// let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["retry.jitter", "retry.max_attempts"]);
    /// assert!(RetrySettings::default().build(RetryLayer::builder()).is_ok());
    /// ```
    pub fn build<C, P, R>(
        &self,
        builder: Builder<C, P, R>,
    ) -> Result<RetryLayer<C, P, R>, ConfigError> {
        let ms = Duration::from_millis;
        let mut problems = Problems::new("retry");
        let jitter = match self.jitter.as_str() {
            "none" => Jitter::None,
            "full" => Jitter::Full,
            "equal" => Jitter::Equal,
            "decorrelated" => Jitter::Decorrelated,
            other => {
                problems.add(
                    "jitter",
                    format!(
                        "{other:?} is not one of \"none\", \"full\", \"equal\", \"decorrelated\""
                    ),
                );
                Jitter::Full
            }
        };
        let mut builder = builder
            .max_attempts(self.max_attempts)
            .backoff(Backoff::exponential(
                ms(self.backoff_base_ms),
                self.backoff_multiplier,
                ms(self.backoff_max_ms),
            ))
            .jitter(jitter)
            .retry_after(true, ms(self.max_retry_after_ms))
            .min_attempt_time(ms(self.min_attempt_time_ms));
        if self.jitter_seed != 0 {
            builder = builder.jitter_seed(self.jitter_seed);
        }
        if !builder.has_budget() {
            match self.budget() {
                Ok(budget) => builder = builder.budget(budget),
                Err(e) => problems.extend(e),
            }
        }
        problems.finish_with(builder.build().map_err(|e| e.renamed(KEYS)))
    }

    /// The ratio budget the `budget_*` settings describe.
    pub fn budget(&self) -> Result<RetryBudget, ConfigError> {
        RetryBudget::ratio(
            self.budget_ratio,
            Duration::from_secs(self.budget_ttl_secs),
            self.budget_min_per_sec,
        )
        .map_err(|e| e.renamed(KEYS))
    }

    /// Checks these settings by building them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.build(RetryLayer::builder()).map(drop)
    }
}
