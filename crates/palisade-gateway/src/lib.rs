//! palisade-gateway: an OpenAI-compatible gateway that stays up when
//! providers fail. It runs palisade's router (deadline, fallback across
//! providers, and per provider: bulkhead, retry with budget, circuit
//! breaker, attempt timeout) over real HTTP, against real upstreams from a
//! config file or, with the `sim` feature (on by default), simulated
//! providers started in-process.
#![deny(missing_docs)]
// Unsafe code only where an allocator must have it (`alloc`).
#![deny(unsafe_code)]

mod affinity;
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
mod alloc;
mod app;
pub mod auth;
mod batch;
mod cache;
mod chaos;
pub mod config;
#[cfg(feature = "sim")]
pub mod demo;
mod drain;
mod errors;
mod front;
mod head_timeout;
mod idle;
pub mod logs;
mod metrics;
mod open_files;
pub mod openai;
mod recent;
mod reload;
mod rewake;
mod routes;
mod server;
mod sse;
mod state;
mod stored;
mod tail;
pub mod traces;
pub mod upstream;
mod whole;
mod woken;

#[cfg(feature = "mimalloc")]
pub use alloc::Allocator;
pub use app::Gateway;
pub use config::GatewayConfig;
pub use errors::{RETRY_AFTER_MS, SHOULD_RETRY};
pub use open_files::{open_files_limit, raise_open_files_limit, OpenFilesLimit};
pub use recent::{SHED_DEGRADED, SHED_MIN_REQUESTS};
pub use reload::Reloader;
pub use routes::{
    ATTEMPTS_HEADER, FALLBACKS_HEADER, HEDGED_HEADER, HEDGE_HEADER, PROVIDER_HEADER,
    REQUEST_ID_HEADER, UPSTREAM_REQUEST_ID_HEADER,
};
pub use state::{Counters, GatewayRegistry, GatewayRouter};
