//! The error the builder returns for a configuration it refuses.
//!
//! Calls the bulkhead refuses fail with palisade-core's shared
//! [`Rejected`](palisade_core::Rejected), with reason
//! [`BulkheadFull`](palisade_core::RejectReason::BulkheadFull) or
//! [`BulkheadTimeout`](palisade_core::RejectReason::BulkheadTimeout), so that
//! every classifier recognises them as our own fast-fails.

/// A configuration the builder refused, naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bulkhead config: {field}: {problem}")]
pub struct ConfigError {
    /// The builder method / field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}
