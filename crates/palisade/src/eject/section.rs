//! `[router.outlier]`: outlier ejection within tiers, as a config file
//! holds it.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};
use serde::{Deserialize, Serialize};

/// `[router.outlier]`: eject, for a while, a provider that does much worse
/// than the others of its tier (Envoy's outlier detection, per tier).
///
/// ```
/// use palisade::eject::OutlierSection;
///
/// let s: OutlierSection = serde_json::from_str(r#"{ "interval_ms": 1000, "max_ejection_percent": 25 }"#).unwrap();
/// assert_eq!(s.success_rate_gap, 0.1);
/// s.check().unwrap();
/// let bad: OutlierSection = serde_json::from_str(r#"{ "max_ejection_percent": 101, "min_requests": 0 }"#).unwrap();
/// let err = bad.check().unwrap_err().to_string();
/// assert!(err.contains("outlier.max_ejection_percent") && err.contains("outlier.min_requests"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// How often each tier is judged, in ms (default 10000); each judgement
    /// looks at the calls since the last.
    pub interval_ms: u64,
    /// Calls a provider must have had since the last judgement to be judged
    /// (default 20).
    pub min_requests: u64,
    /// Ejected when its success rate is below the mean of its tier mates'
    /// by more than this (default 0.1: 10 points).
    pub success_rate_gap: f64,
    /// Ejected when its latency estimate is above this many times the
    /// median of its tier mates' (default 3; 0 turns the rule off).
    pub latency_factor: f64,
    /// The first ejection's length, in ms (default 30000); the n-th is n
    /// times as long.
    pub base_ejection_ms: u64,
    /// The longest ejection, in ms (default 300000).
    pub max_ejection_ms: u64,
    /// At most this share of a tier is ejected at once, in percent (default
    /// 50; always at least one provider).
    pub max_ejection_percent: u32,
    /// When fewer than this share of a tier's providers are not ejected, in
    /// percent, ejection is ignored for that tier and traffic spreads over
    /// all of them (panic mode; default 50).
    pub panic_threshold: u32,
}

impl Default for OutlierSection {
    fn default() -> Self {
        OutlierSection {
            interval_ms: 10_000,
            min_requests: 20,
            success_rate_gap: 0.1,
            latency_factor: 3.0,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            panic_threshold: 50,
        }
    }
}

impl OutlierSection {
    /// Every bad value, each named (`outlier.interval_ms`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("outlier");
        if self.interval_ms < 10 || self.interval_ms > 3_600_000 {
            p.add(
                "interval_ms",
                format!("{} is not within [10, 3600000]", self.interval_ms),
            );
        }
        if self.min_requests == 0 {
            p.add(
                "min_requests",
                "0 would judge a provider on no calls; use at least 1",
            );
        }
        if !(self.success_rate_gap > 0.0 && self.success_rate_gap <= 1.0) {
            p.add(
                "success_rate_gap",
                format!("{} is not within (0, 1]", self.success_rate_gap),
            );
        }
        if !(self.latency_factor == 0.0 || (1.0..=1000.0).contains(&self.latency_factor)) {
            p.add(
                "latency_factor",
                format!(
                    "{} is neither 0 (off) nor within [1, 1000]",
                    self.latency_factor
                ),
            );
        }
        if self.base_ejection_ms == 0 {
            p.add("base_ejection_ms", "0 would eject nothing; use at least 1");
        }
        if self.max_ejection_ms < self.base_ejection_ms {
            p.add(
                "max_ejection_ms",
                format!(
                    "{} is below base_ejection_ms ({})",
                    self.max_ejection_ms, self.base_ejection_ms
                ),
            );
        }
        if self.max_ejection_percent > 100 {
            p.add(
                "max_ejection_percent",
                format!("{} is not within [0, 100]", self.max_ejection_percent),
            );
        }
        if self.panic_threshold > 100 {
            p.add(
                "panic_threshold",
                format!("{} is not within [0, 100]", self.panic_threshold),
            );
        }
        p.finish()
    }

    /// How often tiers are judged.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}
