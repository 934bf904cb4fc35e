//! `[..health_check]`: active health checks, as a config file holds them.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};

palisade_core::section! {
    /// `[..health_check]`: a background check of the provider (off by
    /// default).
    HealthCheckSection => HealthCheckSettings {
        /// Whether the provider is checked (default false).
        enabled: bool = false,
        /// Time between checks, in ms (default 5000).
        interval_ms: u64 = 5_000,
        /// Longest a check may take, in ms (default 2000); later is a
        /// failure.
        timeout_ms: u64 = 2_000,
        /// Each wait is the interval times a random factor within
        /// [1 − jitter, 1 + jitter], so replicas do not check in step
        /// (default 0.1).
        jitter: f64 = 0.1,
        /// Checks passed in a row that move an open breaker to half-open at
        /// once (default 1).
        healthy_threshold: u32 = 1,
        /// Checks failed in a row that open a closed breaker (default 3).
        unhealthy_threshold: u32 = 3,
    }
}

impl HealthCheckSettings {
    /// Every bad value, each named (`health_check.interval_ms`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("health_check");
        if self.interval_ms < 10 || self.interval_ms > 3_600_000 {
            p.add(
                "interval_ms",
                format!("{} is not within [10, 3600000]", self.interval_ms),
            );
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            p.add(
                "timeout_ms",
                format!("{} is not within [1, 600000]", self.timeout_ms),
            );
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            p.add("jitter", format!("{} is not within [0, 0.5]", self.jitter));
        }
        if self.healthy_threshold == 0 || self.healthy_threshold > 100 {
            p.add(
                "healthy_threshold",
                format!("{} is not within [1, 100]", self.healthy_threshold),
            );
        }
        if self.unhealthy_threshold == 0 || self.unhealthy_threshold > 100 {
            p.add(
                "unhealthy_threshold",
                format!("{} is not within [1, 100]", self.unhealthy_threshold),
            );
        }
        p.finish()
    }

    /// Time between checks.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Longest a check may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
