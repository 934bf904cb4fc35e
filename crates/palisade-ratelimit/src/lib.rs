//! palisade-ratelimit: client-side rate limits for LLM providers, as a
//! tower `Layer`.
//!
//! - **Quotas on requests and tokens, checked together**: a call goes only
//!   if every [`Quota`] has room; a refused call spends nothing. GCRA on
//!   atomics: lock-free, allocation-free, no background task.
//! - **Weights and reconciliation**: a [`Weigh`] hook estimates a call's
//!   tokens ([`estimate_openai_tokens`] for OpenAI-style bodies); the usage
//!   its response reports ([`TokenUsage`](palisade_core::TokenUsage))
//!   corrects the estimate up or down.
//! - **Pacing by the provider's own headers**: OpenAI's `x-ratelimit-*`,
//!   Anthropic's `anthropic-ratelimit-*` and `Retry-After`, read through the
//!   classifier ([`Classify::rate_info`](palisade_core::Classify::rate_info)):
//!   when the provider says nothing is left until T, nothing is sent before
//!   T, with no quota configured.
//! - **Reject or wait** ([`Mode`]): refuse with a
//!   [`Rejected`](palisade_core::Rejected) (`RateLimited`, with when there
//!   will be room), or wait in arrival order, never past the deadline.
//! - **Limits per key** ([`KeyedRateLimitLayer`]): per API key, tenant or
//!   user ([`KeyOf`], [`HeaderKey`]); keys whose buckets are full again are
//!   forgotten, so memory stays bounded under millions of keys.
//! - **Views**: the handle answers core's admission view (a fallback chain
//!   skips a provider with no room) and inspection view (health, metrics).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use palisade_core::BoxError;
//! use palisade_ratelimit::{Quota, RateLimitLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let layer = RateLimitLayer::http()
//!     .provider("openai")
//!     .quota(Quota::per_minute(500).burst(20))
//!     .quota(Quota::tokens_per_minute(200_000))
//!     .weigh(|req: &http::Request<String>| req.body().len() as u64 / 4)
//!     .build()
//!     .unwrap();
//! let provider = service_fn(|_: http::Request<String>| async {
//!     Ok::<_, BoxError>(http::Response::new(String::from("hi")))
//! });
//! let svc = layer.layer(provider);
//! let res = svc.oneshot(http::Request::new("hello".repeat(100))).await.unwrap();
//! assert_eq!(res.body(), "hi");
//! assert_eq!(layer.handle().snapshot().admitted, 1);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod epoch;
mod flight;
mod future;
mod gcra;
mod handle;
mod keyed;
mod layer;
mod limiter;
mod pacing;
mod pool;
mod prepaid;
mod quota;
#[cfg(feature = "serde")]
mod section;
mod service;
mod weigh;

pub use crate::future::ResponseFuture;
pub use crate::handle::{QuotaSnapshot, RateLimitHandle, RateLimitSnapshot, WindowSnapshot};
pub use crate::keyed::{
    HeaderKey, KeyOf, KeyedBuilder, KeyedFuture, KeyedRateLimit, KeyedRateLimitHandle,
    KeyedRateLimitLayer, KeyedSnapshot, MAX_KEYED_QUOTAS,
};
pub use crate::layer::{Builder, RateLimitLayer, MAX_QUOTAS};
pub use crate::limiter::Mode;
pub use crate::pool::{Draw, Pool};
pub use crate::quota::{Quota, Unit};
#[cfg(feature = "serde")]
pub use crate::section::{RateLimitSection, RateLimitSettings};
pub use crate::service::RateLimit;
pub use crate::weigh::{estimate_openai_tokens, estimate_openai_tokens_in, Unweighted, Weigh};
