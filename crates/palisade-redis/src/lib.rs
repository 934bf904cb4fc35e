//! palisade-redis: many replicas of a palisade gateway (or of any service
//! built on palisade's layers) acting as one towards each provider, through
//! the Redis they already run.
//!
//! - **Fleet rate limits**: a provider's quotas, the same [`Quota`]s as
//!   palisade-ratelimit, hold for the whole fleet. Redis keeps each quota's
//!   GCRA cell and grants small leases in one atomic script; each replica
//!   spends its leases on atomics, so no call waits on Redis. The fleet
//!   exceeds a quota by at most what replicas hold unspent: with the
//!   default `overshoot` of 0.01, 1% of its amount (see [`lease`]'s bound).
//!   A provider's rate headers that say "nothing left", seen by one
//!   replica, stop every replica until the reset.
//! - **Fleet cooldowns**: a breaker that opens (a trip, or a 429/503 with
//!   `Retry-After`) opens every replica's breaker for that provider until
//!   the same instant, by pub/sub (milliseconds, not a poll); half-open
//!   probing is one replica's at a time (a lock with expiry), and its
//!   verdict closes or re-opens the provider for everyone.
//! - **A shared retry budget**: a ratio budget given to the fleet
//!   ([`Fleet::share_budget`]) holds for the fleet's retries against the
//!   fleet's requests: replicas report their requests every 100 ms and take
//!   retries from the fleet's window in small leases.
//! - **Notes**: short texts one replica writes and the others read
//!   ([`Fleet::notes`]), each kept for a time: the gateway's record of
//!   which provider stored which response. Written in the background,
//!   read within the fleet's timeout, a hint rather than a record.
//! - **Redis is a dependency that fails**: every command has a short
//!   timeout; when Redis is slow or gone each replica carries on alone (on
//!   1/N of each quota for N replicas last counted, with its own breakers),
//!   logs the switch once, shows it in its inspection view, and rejoins by
//!   itself when Redis answers. Leases and locks expire: a replica that
//!   dies holds nothing for long.
//!
//! The client is redis-rs (the `redis` crate): the most used Redis client
//! for Rust, with a tokio `ConnectionManager` that reconnects by itself
//! and times out each response, scripts sent by hash (`EVALSHA`, loaded
//! again when Redis forgets them), and pub/sub on a connection of its own.
//! Every step that must be atomic is one Lua script run on Redis's clock
//! (`TIME`), so replicas' clocks never disagree about a quota.
//!
//! [`Quota`]: palisade_ratelimit::Quota
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use palisade_breaker::CircuitBreakerLayer;
//! use palisade_ratelimit::{Quota, RateLimitLayer};
//! use palisade_redis::{Fleet, FleetSettings};
//!
//! let breaker = CircuitBreakerLayer::http().provider("openai").build().unwrap();
//! let limit = RateLimitLayer::http()
//!     .provider("openai")
//!     .quota(Quota::per_minute(600).burst(10))
//!     .build()
//!     .unwrap();
//! let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
//! fleet.join("openai", Some(&breaker.handle()), Some(&limit.handle()));
//! assert_eq!(fleet.snapshot().providers.len(), 1);
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod budget;
mod fleet;
mod follow;
pub mod lease;
mod link;
mod notes;
mod scripts;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::fleet::{Fleet, FleetSnapshot, SharedBudget, SharedProvider};
pub use crate::lease::HeldSnapshot;
pub use crate::notes::{Notes, NotesSnapshot};
pub use crate::settings::FleetSettings;
