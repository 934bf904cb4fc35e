//! The attempt timeout's config section (`[..timeout]`), behind the
//! `serde` feature.

use std::time::Duration;

use crate::attempt::AttemptTimeoutLayer;
use crate::error::ConfigError;

palisade_core::section! {
    /// `[..timeout]`: the per-attempt timeout.
    TimeoutSection => TimeoutSettings {
        /// Whether the attempt timeout is on (default true).
        enabled: bool = true,
        /// Each attempt's timeout, in ms (default 30000), never beyond the
        /// request's deadline.
        attempt_ms: u64 = 30_000,
    }
}

/// The layer's names for the fields these settings name otherwise.
const KEYS: &[(&str, &str)] = &[("timeout.per_attempt", "timeout.attempt_ms")];

impl TimeoutSettings {
    /// Builds the attempt timeout these settings describe; a refusal names
    /// this section's key (`timeout.attempt_ms`).
    ///
    /// `enabled` is not read here: whether to put the layer in a stack is
    /// the stack's choice.
    ///
    /// ```
    /// use palisade_deadline::TimeoutSettings;
    ///
    /// let err = TimeoutSettings { attempt_ms: 0, ..Default::default() }.build().unwrap_err();
    /// assert_eq!(err.problems()[0].path, "timeout.attempt_ms");
    /// assert!(TimeoutSettings::default().build().is_ok());
    /// ```
    pub fn build(&self) -> Result<AttemptTimeoutLayer, ConfigError> {
        AttemptTimeoutLayer::new(Duration::from_millis(self.attempt_ms))
            .map_err(|e| e.renamed(KEYS))
    }

    /// Checks these settings by building them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.build().map(drop)
    }
}
