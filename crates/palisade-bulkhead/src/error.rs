//! The error the builder returns for a configuration it refuses.
//!
//! Calls the bulkhead refuses fail with palisade-core's shared
//! [`Rejected`](palisade_core::Rejected), with reason
//! [`BulkheadFull`](palisade_core::RejectReason::BulkheadFull) or
//! [`BulkheadTimeout`](palisade_core::RejectReason::BulkheadTimeout), so that
//! every classifier recognises them as our own fast-fails.

pub use palisade_core::ConfigError;

/// A refusal of one of this crate's settings.
pub(crate) fn config_error(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("bulkhead.{field}"), problem)
}
