//! Provider chains and graceful degradation for tower services.
//!
//! [`Fallback`] calls providers in order until one answers. It moves on
//! only when the failure's classification says so (timeouts, connection
//! errors, 429/5xx, our own rejections), and returns the caller's own
//! faults (4xx) at once. It skips providers that a layer of their
//! stack refuses (an open breaker, a full bulkhead: any
//! [`Admission`](palisade_core::Admission) view) without calling them, sends context-length failures to large-context
//! providers and content-filter refusals to providers marked for them,
//! never starts a provider after the request's deadline, rewrites the
//! request per provider (model name, URL, auth), and, when every provider
//! failed, either lists each one's own error ([`AllFailed`]) or answers
//! with a degraded response marked as such ([`Builder::degrade`]).
//!
//! Every fallback taken is a `tracing` event naming from, to and why.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod degrade;
mod error;
mod future;
mod service;
mod target;
mod tier;

pub use crate::degrade::{
    Degrade, DegradeWith, Degraded, MarkDegraded, NoDegrade, DEGRADED_HEADER,
};
pub use crate::error::{AllFailed, AttemptOutcome, ConfigError, ProviderAttempt};
pub use crate::future::ResponseFuture;
pub use crate::service::{Builder, Fallback, FallbackLayer};
pub use crate::target::Target;
