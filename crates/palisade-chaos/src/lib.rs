//! palisade-chaos: fault injection as a tower `Layer`, for tests, staging
//! and game days.
//!
//! - **Faults** ([`Plan`]): errors of a given status (with or without a
//!   `Retry-After`), latency (fixed or uniform), hangs, connection resets,
//!   and for streamed HTTP answers ([`HttpStreams`]) a stall or a cut after
//!   some frames, each at its own rate; injected errors are classified as
//!   the real thing.
//! - **Which requests** ([`Builder::only`]): all, or those a predicate
//!   picks.
//! - **Repeatable** ([`Builder::seed`]): the same seed, plan and call order
//!   give the same faults.
//! - **At run time** ([`ChaosHandle`]): on, off, a new plan, counts.
//! - **Free when off**: one atomic load per call, the call passed through.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use palisade_chaos::{ChaosLayer, Delay, Plan};
//! use palisade_core::BoxError;
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let chaos = ChaosLayer::builder()
//!     .plan(Plan::default().latency(1.0, Delay::Fixed(Duration::from_millis(250))))
//!     .enabled(true)
//!     .build()
//!     .unwrap();
//! let svc = chaos.layer(service_fn(|_: ()| async { Ok::<_, BoxError>("answer") }));
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.oneshot(()).await.unwrap(), "answer");
//! assert_eq!(start.elapsed(), Duration::from_millis(250));
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod draw;
mod future;
mod handle;
mod layer;
mod plan;
mod service;

pub use crate::body::{ChaosBody, HttpStreams, NoStreams, StreamFault, Streams};
pub use crate::future::ResponseFuture;
pub use crate::handle::{ChaosHandle, ChaosSnapshot};
pub use crate::layer::{Builder, ChaosLayer, Every, Select};
pub use crate::plan::{Delay, Plan};
pub use crate::service::Chaos;
