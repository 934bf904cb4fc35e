//! Hierarchical timeouts for tower services, built for LLM calls: long,
//! streamed, and nested (gateway → retry → attempt), where one flat
//! timeout is wrong at every level.
//!
//! - [`DeadlineLayer`] (outermost) stamps the request's deadline,
//!   `min(existing, now + total)`, optionally adopting the caller's own
//!   from `grpc-timeout` or a milliseconds header, and enforces it over
//!   everything inside: attempts, backoff, queueing.
//! - [`AttemptTimeoutLayer`] (innermost) gives each attempt
//!   `min(per_attempt, remaining)`, and passes the attempt's deadline on.
//! - [`PropagateDeadlineLayer`] writes the time left into an outgoing
//!   header (`grpc-timeout` for tonic, or milliseconds), so upstreams stop
//!   working on requests nobody waits for.
//! - [`StreamTimeoutLayer`] / [`TimeoutBody`] hold a streamed response body
//!   (SSE tokens) to a time-to-first-frame timeout, an idle timeout between
//!   frames, and the request's deadline.
//!
//! Deadlines only ever shorten inward ([`HasDeadline::tighten_deadline`](palisade_core::HasDeadline::tighten_deadline)).
//! Every timeout fails with palisade-core's [`Elapsed`](palisade_core::Elapsed),
//! whose scope says which level fired (`Request`, `Attempt`, `FirstFrame`,
//! `Idle`) and after how long, and which every classifier reads as
//! `Timeout`.
//!
//! **Timers.** Stamping a deadline costs a clock read and no timer, and the
//! attempt timeouts its `call` reaches synchronously (the first attempt,
//! past a free bulkhead slot and a closed breaker) reuse that reading
//! instead of reading the clock again; attempts started later (queued,
//! retried) read it themselves. The request and attempt layers arm their
//! timer only when the inner future is still pending on its first poll.
//! With [`DeadlineLayer::stamp_only`] the whole stack arms one timer per
//! attempt: palisade's attempt timeout, retry and fallback all honour the
//! stamped deadline themselves.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use palisade_core::{BoxError, WithDeadline};
//! use palisade_deadline::{AttemptTimeoutLayer, DeadlineLayer};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(60)).unwrap())
//!     // retry, breaker... would sit here
//!     .layer(AttemptTimeoutLayer::new(Duration::from_secs(20)).unwrap())
//!     .service(service_fn(|_: WithDeadline<&str>| async { Ok::<_, BoxError>("hi") }));
//! assert_eq!(svc.oneshot(WithDeadline::new("prompt")).await.unwrap(), "hi");
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod armed;
mod attempt;
mod error;
mod first_frame;
mod header;
mod propagate;
mod request;
#[cfg(feature = "serde")]
mod section;
mod stream;

pub use crate::attempt::{AttemptTimeout, AttemptTimeoutLayer};
pub use crate::error::ConfigError;
pub use crate::first_frame::{FirstFrame, FirstFrameBody, FirstFrameFuture, FirstFrameLayer};
pub use crate::header::{
    format_grpc_timeout, parse_grpc_timeout, Adopt, NoAdopt, TimeoutHeader, GRPC_TIMEOUT,
};
pub use crate::propagate::{PropagateDeadline, PropagateDeadlineLayer};
pub use crate::request::{DeadlineLayer, DeadlineService, ResponseFuture, MAX_TIMEOUT};
#[cfg(feature = "serde")]
pub use crate::section::{TimeoutSection, TimeoutSettings};
pub use crate::stream::{
    StreamTimeout, StreamTimeoutFuture, StreamTimeoutLayer, StreamTimeouts, TimeoutBody,
};
