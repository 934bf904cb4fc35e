//! A bulkhead for tower services: one slow provider must not eat every
//! connection and task of the application.
//!
//! [`BulkheadLayer`] caps the calls in flight to a provider at
//! `max_concurrent`. Calls beyond it wait in a FIFO queue of at most
//! `max_waiting` places, for at most `max_wait`; past that they fail fast
//! with palisade-core's [`Rejected`](palisade_core::Rejected) (reason
//! `BulkheadFull` naming the in-flight and queue numbers, or
//! `BulkheadTimeout` naming the wait), which a fallback chain treats as
//! "try the next provider".
//!
//! - **Slots are taken in `call`, not `poll_ready`**, so idle readied
//!   clones hold nothing, and are given back when the response future
//!   completes or is dropped. For streamed responses,
//!   [`BulkheadLayer::hold_until_body_end`] keeps the slot on the response
//!   body ([`PermitBody`]) until the last frame.
//! - **Shared** by every clone of the wrapped service; **resizable** at
//!   runtime through a [`BulkheadHandle`] without disturbing calls in
//!   flight; the handle also reports in-flight, waiting, peak, rejected,
//!   timed-out and mean wait.
//! - **Adaptive** (optional): [`AdaptiveLimit::vegas`] lets the limit
//!   follow the provider's latency within bounds.
//! - **Cost**: admitting a call when a slot is free is one load and one
//!   compare-and-swap; giving it back with nobody queued is one `fetch_add`.
//!   No lock, no allocation, no clock read on that path.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), palisade_core::BoxError> {
//! use palisade_bulkhead::BulkheadLayer;
//! use palisade_core::BoxError;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let layer = BulkheadLayer::builder()
//!     .provider("anthropic")
//!     .max_concurrent(32)
//!     .max_waiting(64)
//!     .max_wait(Some(Duration::from_secs(2)))
//!     .build()?;
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|prompt: &'static str| async move { Ok::<_, BoxError>(prompt.len()) }));
//! assert_eq!(svc.oneshot("hello").await?, 5);
//! assert_eq!(handle.snapshot().in_flight, 0);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod adaptive;
mod error;
mod future;
mod handle;
mod inspect;
mod layer;
mod permit;
#[cfg(feature = "serde")]
mod section;
mod semaphore;
mod service;
mod unguarded;

pub use crate::adaptive::AdaptiveLimit;
pub use crate::error::ConfigError;
pub use crate::future::ResponseFuture;
pub use crate::handle::{BulkheadHandle, BulkheadSnapshot};
pub use crate::inspect::WARN_BULKHEAD_USE;
pub use crate::layer::{Builder, BulkheadLayer};
pub use crate::permit::{BulkheadPermit, OnBodyEnd, OnResponse, PermitBody, ReleaseMode};
#[cfg(feature = "serde")]
pub use crate::section::{BulkheadSection, BulkheadSettings};
pub use crate::service::Bulkhead;
pub use crate::unguarded::{Unguarded, UnguardedFuture};
