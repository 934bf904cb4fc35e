//! The shared vocabulary of the palisade resilience layers.
//!
//! Every palisade layer (breaker, retry, bulkhead, deadline, fallback) speaks
//! in these terms, so a user configures them once:
//!
//! - **Classification**: a [`Classify`] turns a call's result into an
//!   [`Outcome`] (success, or a [`Failure`] of some [`FailureKind`]); a
//!   [`Policy`] says which kinds are retried, counted by the breaker, or sent
//!   to the next provider. [`HttpClassifier`] reads HTTP statuses and
//!   `Retry-After` / `retry-after-ms` / `x-should-retry` the way LLM
//!   providers mean them; [`GrpcClassifier`] reads `grpc-status` and
//!   `grpc-retry-pushback-ms` for gRPC channels.
//! - **Deadlines**: a request carries at most one [`Deadline`]
//!   ([`HasDeadline`]); inner layers may shorten it, never extend it.
//! - **Errors**: layers return [`BoxError`]; our own fast-fails are a
//!   [`Rejected`] and our timeouts an [`Elapsed`], which every classifier
//!   recognises.
//! - **Provider ids**: [`ProviderId`], a cheap shared name.
//!
//! ```
//! use palisade_core::{BoxError, Classify, FailureKind, HttpClassifier, Outcome, Policy};
//! use http::Response;
//!
//! let classifier = HttpClassifier::new();
//! let policy = Policy::default();
//! let res = Response::builder().status(502).body(()).unwrap();
//! let outcome = Classify::<_, BoxError>::classify(&classifier, Ok(&res));
//! let failure = outcome.as_failure().unwrap();
//! assert_eq!(failure.kind, FailureKind::Server(http::StatusCode::BAD_GATEWAY));
//! assert!(policy.retries(failure) && policy.counts_for_breaker(failure));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admission;
mod classify;
pub mod clock;
mod counter;
mod deadline;
mod degraded;
mod error;
mod grpc;
mod http;
mod inspect;
mod marks;
mod mix;
mod policy;
mod provider;
mod rate;
mod section;
mod served;
mod shared_error;
mod usage_later;

pub use crate::admission::{Admission, Admissions, Refusing};
pub use crate::classify::{
    classify_error, Classified, Classify, ErrorClassifier, Failure, FailureClass, FailureKind,
    Outcome,
};
pub use crate::counter::{stripe, StripedCounter, STRIPES};
pub use crate::deadline::{Deadline, HasDeadline, WithDeadline};
pub use crate::degraded::{Degraded, MarkDegraded, DEGRADED_HEADER};
pub use crate::error::{
    BoxError, CircuitState, ConfigError, Elapsed, Problem, Problems, RejectReason, Rejected,
    TimeoutScope,
};
pub use crate::grpc::{GrpcClassifier, GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS};
pub use crate::http::{
    classify_error_body, parse_retry_after, parse_retry_after_ms, HttpClassifier,
    DEFAULT_MAX_RETRY_AFTER, RETRY_AFTER_MS, X_SHOULD_RETRY,
};
pub use crate::inspect::{HealthStatus, Inspect, Inspection, Inspectors, MetricKind, Sample};
pub use crate::marks::{Hedgeable, Pinned, RequestMarks, Streaming};
pub use crate::mix::{splitmix64, SPLITMIX_GAMMA};
pub use crate::policy::{Action, Policy};
pub use crate::provider::ProviderId;
pub use crate::rate::{parse_reset_duration, RateInfo, RateWindow, TokenUsage, MAX_RESET};
pub use crate::served::Served;
pub use crate::shared_error::SharedError;
pub use crate::usage_later::UsageLater;
