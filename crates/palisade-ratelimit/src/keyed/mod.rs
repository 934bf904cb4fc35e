//! Limits per key (API key, tenant, user): [`KeyedRateLimitLayer`].

mod handle;
mod key;
mod layer;
mod service;
mod shared;

pub use self::handle::{KeyedRateLimitHandle, KeyedSnapshot};
pub use self::key::{HeaderKey, KeyOf};
pub use self::layer::{KeyedBuilder, KeyedRateLimitLayer, MAX_KEYED_QUOTAS};
pub use self::service::{KeyedFuture, KeyedRateLimit};
