//! palisade-gateway: an OpenAI-compatible gateway that stays up when
//! providers fail. It runs palisade's router (deadline, fallback across
//! providers, and per provider: bulkhead, retry with budget, circuit
//! breaker, attempt timeout) over real HTTP, against real upstreams from a
//! config file or, by default, simulated providers started in-process.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod openai;
pub mod server;
pub mod sim;
pub mod upstream;

pub use config::GatewayConfig;
pub use server::Gateway;
