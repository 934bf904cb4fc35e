//! `[router.hedge]`: the hedging policy as a config file holds it.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};
use palisade_retry::RetryBudget;
use serde::{Deserialize, Serialize};

use crate::policy::HedgePolicy;

/// `[router.hedge]`: hedge late calls to another provider of their tier.
/// Give exactly one of `delay_ms` or `percentile`.
///
/// ```
/// use palisade_hedge::HedgeSection;
///
/// let s: HedgeSection = serde_json::from_str(r#"{ "percentile": 0.95, "max_hedges": 1 }"#).unwrap();
/// let policy = s.policy().unwrap();
/// assert_eq!(policy.max_hedges(), 1);
/// let both: HedgeSection = serde_json::from_str(r#"{ "percentile": 0.95, "delay_ms": 300 }"#).unwrap();
/// assert!(both.policy().unwrap_err().to_string().contains("hedge.delay_ms"));
/// let wild: HedgeSection = serde_json::from_str(r#"{ "delay_ms": 300, "budget_ratio": -1 }"#).unwrap();
/// assert!(wild.policy().unwrap_err().to_string().contains("hedge.budget_ratio"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeSection {
    /// Hedge after this many ms.
    pub delay_ms: Option<u64>,
    /// Hedge after this percentile (0 to 1) of the provider's recent
    /// latencies.
    pub percentile: Option<f64>,
    /// Samples needed before percentile hedging starts (default 20).
    pub min_samples: u64,
    /// Most hedges per request (default 1).
    pub max_hedges: u32,
    /// Whether requests not marked either way are hedged (default true).
    pub by_default: bool,
    /// Hedges may add at most this share of requests (default 0.1); with
    /// `router.share_retry_budget` on, hedges withdraw from the shared retry
    /// budget instead.
    pub budget_ratio: f64,
    /// How long latency windows hold samples, in ms (default 30000).
    pub period_ms: u64,
}

impl Default for HedgeSection {
    fn default() -> Self {
        HedgeSection {
            delay_ms: None,
            percentile: None,
            min_samples: 20,
            max_hedges: 1,
            by_default: true,
            budget_ratio: 0.1,
            period_ms: 30_000,
        }
    }
}

impl HedgeSection {
    /// Builds the policy (with its own budget of `budget_ratio`), or every
    /// problem with its key.
    pub fn policy(&self) -> Result<HedgePolicy, ConfigError> {
        self.policy_sharing(None)
    }

    /// As [`policy`](Self::policy); with `shared`, hedges withdraw from that
    /// budget (the retries' own, so hedges and retries together stay
    /// within it) instead of one of `budget_ratio`.
    pub fn policy_sharing(&self, shared: Option<RetryBudget>) -> Result<HedgePolicy, ConfigError> {
        let mut problems = Problems::new("hedge");
        let builder = match (self.delay_ms, self.percentile) {
            (Some(ms), None) => Some(HedgePolicy::fixed(Duration::from_millis(ms))),
            (None, Some(p)) => Some(HedgePolicy::percentile(p).min_samples(self.min_samples)),
            (Some(_), Some(_)) => {
                problems.add("delay_ms", "give delay_ms or percentile, not both");
                None
            }
            (None, None) => {
                problems.add("delay_ms", "give delay_ms or percentile");
                None
            }
        };
        let budget = RetryBudget::ratio(self.budget_ratio, Duration::from_secs(10), 1)
            .map_err(|e| e.renamed(&[("retry.budget.ratio", "hedge.budget_ratio")]));
        let budget = match budget {
            Ok(b) => Some(b),
            Err(e) => {
                problems.extend(e);
                None
            }
        };
        let (Some(builder), Some(budget)) = (builder, budget) else {
            return Err(problems
                .finish()
                .err()
                .unwrap_or_else(|| ConfigError::invalid("hedge", "not built")));
        };
        let builder = builder
            .max_hedges(self.max_hedges)
            .by_default(self.by_default)
            .period(Duration::from_millis(self.period_ms));
        let built = match shared {
            Some(shared) => builder.shared_budget(shared),
            None => builder.budget(budget),
        }
        .build();
        problems.finish_with(built)
    }
}
