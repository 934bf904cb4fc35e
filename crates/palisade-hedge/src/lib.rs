//! palisade-hedge: when an answer is late, ask again and take whichever
//! answer comes first.
//!
//! LLM latency has a heavy tail: most answers come in 300 ms, a few take
//! seconds. A hedge sends a late request again (in the palisade router,
//! to *another* provider of the same tier) and the first success wins; the
//! loser is dropped.
//!
//! - **Delay** ([`HedgeDelay`]): fixed, or a percentile of recent
//!   latencies kept in a lock-free [`LatencyWindow`], with a minimum
//!   number of samples before hedging starts.
//! - **Bounded**: at most [`HedgePolicy::max_hedges`] extra attempts; each
//!   withdraws from a retry budget (none when it is dry); only requests
//!   marked or defaulted [`Hedgeable`](palisade_core::Hedgeable).
//! - **Streams**: behind a first-frame gate an answer is ready at its
//!   first token, so the race is to the first token, and once any answer
//!   has been returned nothing more is sent.
//! - **Counted** ([`HedgeHandle`]): hedges sent, hedges that won, attempts
//!   wasted, hedges refused by the budget.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use palisade_core::BoxError;
//! use palisade_hedge::{HedgeLayer, HedgePolicy};
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let layer = HedgeLayer::new(HedgePolicy::percentile(0.95).min_samples(20).build().unwrap());
//! let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) }));
//! assert_eq!(svc.oneshot(21).await.unwrap(), 42);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod future;
mod layer;
mod policy;
#[cfg(feature = "serde")]
mod section;
mod service;
mod window;

pub use crate::future::ResponseFuture;
pub use crate::layer::HedgeLayer;
pub use crate::policy::{
    HedgeDelay, HedgeHandle, HedgePolicy, HedgePolicyBuilder, HedgeSnapshot, MAX_HEDGES,
};
#[cfg(feature = "serde")]
pub use crate::section::HedgeSection;
pub use crate::service::Hedge;
pub use crate::window::LatencyWindow;
