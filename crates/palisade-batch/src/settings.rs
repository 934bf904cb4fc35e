//! [`BatchSettings`]: how long, and how much, a batch gathers.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};
use serde::{Deserialize, Serialize};

/// A batcher's settings (a `[batch]` config section), each with its
/// default.
///
/// ```
/// use palisade_batch::BatchSettings;
///
/// let s = BatchSettings::default();
/// assert_eq!((s.max_delay_ms, s.max_items), (10, 64));
/// let e = BatchSettings { max_items: 0, ..s }.check().unwrap_err();
/// assert_eq!(e.problems()[0].path, "batch.max_items");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// The longest a request waits for others to join its batch, in ms
    /// (default 10): a request alone is sent after this long.
    pub max_delay_ms: u64,
    /// Inputs in one upstream call, at most (default 64; OpenAI takes up to
    /// 2048 per embeddings call).
    pub max_items: usize,
    /// Estimated tokens in one upstream call, at most (default 100 000).
    pub max_tokens: u64,
    /// A batch is sent early so that every request in it has at least this
    /// much of its deadline left for the call, in ms (default 500).
    pub deadline_margin_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_delay_ms: 10,
            max_items: 64,
            max_tokens: 100_000,
            deadline_margin_ms: 500,
        }
    }
}

impl BatchSettings {
    /// Every bad value, each named (`batch.max_items`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("batch");
        if self.max_delay_ms > 60_000 {
            p.add(
                "max_delay_ms",
                format!("{} is not within [0, 60000]", self.max_delay_ms),
            );
        }
        if !(1..=100_000).contains(&self.max_items) {
            p.add(
                "max_items",
                format!("{} is not within [1, 100000]", self.max_items),
            );
        }
        if self.max_tokens == 0 {
            p.add("max_tokens", "0 would send nothing; use at least 1");
        }
        if self.deadline_margin_ms > 600_000 {
            p.add(
                "deadline_margin_ms",
                format!("{} is not within [0, 600000]", self.deadline_margin_ms),
            );
        }
        p.finish()
    }

    /// [`max_delay_ms`](Self::max_delay_ms) as a duration.
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    /// [`deadline_margin_ms`](Self::deadline_margin_ms) as a duration.
    pub fn deadline_margin(&self) -> Duration {
        Duration::from_millis(self.deadline_margin_ms)
    }
}
