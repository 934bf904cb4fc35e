//! palisade-balance: spread calls over equivalent LLM deployments (regions,
//! keys, OpenAI and Azure serving one model), as a tower service and as the
//! picking rule the palisade router uses within each tier.
//!
//! - **Strategies** ([`Strategy`]): weighted round robin (smooth,
//!   interleaved), weighted random, least in flight, power of two choices
//!   over peak-EWMA latency, most rate-limit headroom.
//! - **Refusers are stepped around**: a provider whose layers say "not
//!   now" (an open breaker, no rate-limit room, a full bulkhead: core's
//!   admission view) is not picked while another can take the call.
//! - **Lock-free picks** ([`Balancer`]): atomics only, no allocation; per
//!   provider [`Load`] (calls in flight, [`PeakEwma`] latency) shared with
//!   whatever else counts its calls.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_balance::{Balance, Member, Strategy};
//! use palisade_core::BoxError;
//! use tower::{service_fn, ServiceExt};
//!
//! let region = |name: &'static str| service_fn(move |prompt: String| async move {
//!     Ok::<_, BoxError>(format!("{name}: {prompt}"))
//! });
//! let tier = Balance::builder()
//!     .strategy(Strategy::LeastInFlight)
//!     .member(Member::new("azure-east", region("east")))
//!     .member(Member::new("azure-west", region("west")))
//!     .build()
//!     .unwrap();
//! let answer = tier.oneshot("hi".to_string()).await.unwrap();
//! assert!(answer.ends_with(": hi"));
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod balancer;
mod ewma;
mod future;
mod load;
mod member;
mod service;
mod strategy;
mod tier;

pub use crate::balancer::{Balancer, Candidates, MAX_TIER, MAX_WEIGHT};
pub use crate::ewma::PeakEwma;
pub use crate::future::ResponseFuture;
pub use crate::load::{InFlight, Load, DEFAULT_DECAY, DEFAULT_INITIAL_LATENCY};
pub use crate::member::Member;
pub use crate::service::{Balance, Builder};
pub use crate::strategy::Strategy;
