//! A circuit breaker for tower services, built for LLM providers.
//!
//! [`CircuitBreakerLayer`] stops sending calls to a provider that is
//! failing, fails those calls fast (with the provider, the state and how
//! long until it probes again), and lets a few probes through once the open
//! period ends. It is shared by every clone of the service it wraps: build
//! one per provider.
//!
//! **Trip rules** (any one trips; each optional): failures in a row; failure
//! rate over a sliding window (the last N calls, or the last T seconds in
//! time buckets) once `minimum_calls` were seen; slow-call rate, where slow
//! means taking at least a threshold (LLM providers slow down before they
//! fail). Rates are evaluated when a failure or a slow call is recorded, so
//! a success never trips the breaker.
//!
//! **Provider-directed cooldown**: a 429 / 503 / 529 carrying `Retry-After`
//! opens the breaker for exactly that long (capped): the provider told us
//! when to come back.
//!
//! **Open and half-open**: the open period grows by a factor on each re-trip
//! without a close in between, up to a cap, shortened by random jitter; it
//! ends lazily on the first call after it (no background task). Half-open
//! lets at most `half_open_probes` calls through at once, closes after
//! `half_open_successes` successes, and re-opens on any probe failure. A
//! probe whose future is dropped frees its slot and counts as neither.
//!
//! **Admin**: a [`BreakerHandle`] reads the state and metrics, forces the
//! breaker open, disables it (calls pass, metrics still recorded) or resets
//! it, and subscribes to state changes. Every transition is a `tracing`
//! event naming the rule that fired and its numbers.
//!
//! **Cost**: the success path in Closed is one atomic load to admit and,
//! to record, a load of the state word, a load of the failure streak and
//! one step of the count window (whose cursor doubles as the success
//! counter): no lock, no allocation, and no clock read unless a rule needs
//! one (slow calls, a time window). Failing fast while open reads the clock
//! once and allocates nothing: the refusal is an inline [`Refusal`] inside
//! [`BreakerError`], which turns into the shared
//! [`Rejected`](palisade_core::Rejected) when converted to a `BoxError`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_breaker::CircuitBreakerLayer;
//! use palisade_core::BoxError;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let breaker = CircuitBreakerLayer::http()
//!     .provider("anthropic")
//!     .failure_rate(Some(0.5))
//!     .count_window(20)
//!     .minimum_calls(10)
//!     .slow_calls(0.8, Duration::from_secs(20))
//!     .open_duration(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new().layer(breaker).service(service_fn(|_req: ()| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let res = svc.oneshot(()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod error;
mod future;
mod handle;
mod inspect;
mod kind;
mod layer;
#[cfg(feature = "serde")]
mod section;
mod service;
mod state;
mod window;

pub use crate::config::{ConfigError, HalfOpenRule, ReadinessMode, WindowKind};
pub use crate::error::{BreakerError, Refusal};
pub use crate::future::ResponseFuture;
pub use crate::handle::{
    BreakerHandle, BreakerSnapshot, StateChange, TransitionReason, WeakBreakerHandle,
};
pub use crate::inspect::WARN_FAILURE_RATE;
pub use crate::layer::{Builder, CircuitBreakerLayer};
#[cfg(feature = "serde")]
pub use crate::section::{BreakerSection, BreakerSettings};
pub use crate::service::CircuitBreaker;
