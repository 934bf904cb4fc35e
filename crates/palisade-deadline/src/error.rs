//! The error the layers' constructors return for a setting they refuse.
//!
//! Timeouts themselves fail with palisade-core's shared
//! [`Elapsed`](palisade_core::Elapsed), whose scope says which level fired,
//! and calls that could not start in time with
//! [`Rejected`](palisade_core::Rejected) (`DeadlineExceeded`).

/// A setting a constructor refused, naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timeout config: {field}: {problem}")]
pub struct ConfigError {
    /// The setting at fault.
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
