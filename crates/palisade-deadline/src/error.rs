//! The error the layers' constructors return for a setting they refuse.
//!
//! Timeouts themselves fail with palisade-core's shared
//! [`Elapsed`](palisade_core::Elapsed), whose scope says which level fired,
//! and calls that could not start in time with
//! [`Rejected`](palisade_core::Rejected) (`DeadlineExceeded`).

pub use palisade_core::ConfigError;

/// A refusal of one of this crate's settings.
pub(crate) fn config_error(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("timeout.{field}"), problem)
}
