//! The bulkhead's config section (`[..bulkhead]`), behind the `serde`
//! feature.

use std::time::Duration;

use crate::error::ConfigError;
use crate::layer::{Builder, BulkheadLayer};

palisade_core::section! {
    /// `[..bulkhead]`: concurrency isolation per provider.
    BulkheadSection => BulkheadSettings {
        /// Whether the bulkhead is on (default true).
        enabled: bool = true,
        /// Calls in flight at once (default 64).
        max_concurrent: usize = 64,
        /// Calls that may wait for a slot (default 64).
        max_waiting: usize = 64,
        /// How long a call waits for a slot, in ms (default 5000); not
        /// read when `max_waiting` is 0.
        max_wait_ms: u64 = 5_000,
    }
}

/// The builder's names for the fields these settings name otherwise.
const KEYS: &[(&str, &str)] = &[("bulkhead.max_wait", "bulkhead.max_wait_ms")];

impl BulkheadSettings {
    /// Builds the bulkhead these settings describe, on `builder` (which
    /// may already name the provider). Every problem is refused at once,
    /// under this section's keys (`bulkhead.max_wait_ms`), by the builder's
    /// own rules.
    ///
    /// `enabled` is not read here: whether to put the layer in a stack is
    /// the stack's choice.
    ///
    /// ```
    /// use palisade_bulkhead::{BulkheadLayer, BulkheadSettings};
    ///
    /// let settings = BulkheadSettings { max_concurrent: 0, max_wait_ms: 0, ..Default::default() };
    /// let err = settings.build(BulkheadLayer::builder()).unwrap_err();
    /// let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["bulkhead.max_concurrent", "bulkhead.max_wait_ms"]);
    /// let layer = BulkheadSettings::default().build(BulkheadLayer::builder()).unwrap();
    /// assert_eq!(layer.handle().snapshot().max_concurrent, 64);
    /// ```
    pub fn build(&self, builder: Builder) -> Result<BulkheadLayer, ConfigError> {
        builder
            .max_concurrent(self.max_concurrent)
            .max_waiting(self.max_waiting)
            .max_wait((self.max_waiting > 0).then(|| Duration::from_millis(self.max_wait_ms)))
            .build()
            .map_err(|e| e.renamed(KEYS))
    }

    /// Checks these settings by building them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.build(BulkheadLayer::builder()).map(drop)
    }
}
