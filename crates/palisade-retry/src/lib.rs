//! Retries for tower services, built so that they cannot turn a provider's
//! brownout into an outage.
//!
//! [`RetryLayer`] re-sends a request whose attempt failed in a retryable
//! way, as palisade-core's classification and [`Policy`](palisade_core::Policy)
//! say (timeouts, connection errors, 408/409/429/5xx; never 400/401/403/404/422;
//! the provider's `x-should-retry` wins), or as your
//! [`RetryPredicate`] says.
//!
//! - **Backoff** ([`Backoff`]): exponential, linear, Fibonacci, constant or
//!   your own; **jitter** ([`Jitter`]): none, full, equal, decorrelated.
//!   Seedable for tests.
//! - **Retry-After**: a `RateLimited` / `Overloaded` failure carrying a
//!   wait is retried after exactly that wait (capped), not the backoff.
//! - **Deadline-aware**: if the wait plus `min_attempt_time` does not fit
//!   in what is left of the request's deadline, retrying stops at once
//!   with a [`RetryStopped`] error, so a fallback outside can use the time.
//!   Nothing ever sleeps past the deadline.
//! - **Budget** ([`RetryBudget`]): a ratio of traffic (tower/Finagle) or a
//!   gRPC token bucket, shared by every clone and, if you wish, by several
//!   providers. A refused retry returns the last error wrapped in
//!   [`RetryStopped`], saying the budget stopped it after N attempts.
//! - **Readiness** is re-acquired before every re-send; requests are copied
//!   with `Clone` or your [`Replay`] hook. Streamed HTTP bodies (hyper,
//!   tonic) cannot be copied: put a `BufferBodyLayer` (feature `http`, on
//!   by default) outside the retry to read them into memory first.
//! - **Cost**: a request that succeeds first time costs a copy of the
//!   request, a clone of the service handle, one striped counter add and
//!   one budget deposit (a `fetch_add`); no clock read, no lock, no
//!   allocation.
//!
//! A `tracing` event marks every retry (attempt, delay, reason); a
//! [`RetryHandle`] reads the counters (requests, attempts, retries, budget
//! refusals, deadline stops) and the budget.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_core::WithDeadline;
//! use palisade_retry::{RetryBudget, RetryLayer};
//! use std::time::Duration;
//!
//! let layer = RetryLayer::http()
//!     .provider("anthropic")
//!     .budget(RetryBudget::token_bucket(100, 0.1).unwrap())
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
mod budget;
#[cfg(feature = "http")]
mod buffer;
mod error;
mod future;
mod handle;
mod hooks;
mod inspect;
mod layer;
#[cfg(feature = "serde")]
mod section;
mod service;
mod shared;

pub use crate::backoff::{Backoff, Jitter};
pub use crate::budget::{BudgetPool, BudgetSnapshot, RatioShape, RetryBudget};
#[cfg(feature = "http")]
pub use crate::buffer::{BufferBody, BufferBodyLayer, BufferFuture};
pub use crate::error::{ConfigError, FailedAnswer, RetryStopped, StopReason};
pub use crate::future::ResponseFuture;
pub use crate::handle::{RetryHandle, RetrySnapshot};
pub use crate::hooks::{CloneRequest, Replay, RetryPredicate, UsePolicy};
pub use crate::layer::{Builder, RetryLayer, MAX_ATTEMPTS};
#[cfg(feature = "serde")]
pub use crate::section::{RetrySection, RetrySettings};
pub use crate::service::Retry;
