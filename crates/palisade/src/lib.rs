//! palisade: resilience for calls to LLM providers, as tower layers.
//!
//! This is the crate most users add. It re-exports the layer crates (see
//! [`prelude`]) and adds what ties them together:
//!
//! - [`ProviderStack`]: the default per-provider stack, bulkhead > retry
//!   with budget > circuit breaker > attempt timeout, each part switchable,
//!   built from [`Config`].
//! - [`Registry`]: providers keyed by id on a concurrent map, added,
//!   replaced and removed at runtime without disturbing calls in flight.
//! - [`Router`]: the registry as one service: the whole-request deadline,
//!   then fallback across providers in preference order (settable at
//!   runtime), skipping open breakers.
//! - [`Config`]: serde, TOML or JSON, defaults for every section, overrides
//!   per provider, every problem reported at once with its key path.
//! - [`Registry::health`]: a serializable report with an overall status by
//!   [documented rules](health) and recommendations.
//!
//! **Metrics** (feature `metrics`): `Registry::export_metrics` records,
//! through the `metrics` facade, with label `provider`:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `palisade_health_status` | gauge | overall: 0 healthy, 1 warning, 2 degraded, 3 critical (no label) |
//! | `palisade_provider_status` | gauge | the provider's status, same scale |
//! | `palisade_breaker_state` | gauge | 0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled |
//! | `palisade_breaker_failure_rate` | gauge | failure rate in the window |
//! | `palisade_breaker_opened_total` | counter | times opened |
//! | `palisade_bulkhead_in_flight` | gauge | calls holding a slot |
//! | `palisade_bulkhead_waiting` | gauge | calls queued |
//! | `palisade_bulkhead_rejected_total` | counter | refused, full or timed out |
//! | `palisade_retry_attempts_total` | counter | requests plus retries |
//! | `palisade_retry_refused_total` | counter | attempts refused without a call by a palisade layer inside (provider calls = attempts − refused) |
//! | `palisade_retry_retries_total` | counter | retries |
//! | `palisade_retry_budget_refusals_total` | counter | retries the budget refused |
//! | `palisade_balance_in_flight` | gauge | calls in flight, as the tier's balancer counts them (providers sharing a tier) |
//! | `palisade_balance_latency_seconds` | gauge | peak-EWMA latency estimate of whole answers |
//! | `palisade_balance_first_token_seconds` | gauge | peak-EWMA estimate of a stream's time to first token |
//! | `palisade_hedge_hedgeable_total` | counter | requests that could have been hedged (no label; when the router hedges) |
//! | `palisade_hedge_sent_total` | counter | hedges sent |
//! | `palisade_hedge_won_total` | counter | answers that came from a hedge |
//! | `palisade_hedge_wasted_total` | counter | calls started whose answers went unused |
//! | `palisade_hedge_no_budget_total` | counter | hedges not sent because the budget was dry |
//!
//! [`HealthReport::prometheus_text`] renders the same names as Prometheus
//! text without any exporter. Every layer's `tracing` events carry the
//! provider id as a field.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod eject;
#[cfg(feature = "redis")]
mod fleet;
pub mod health;
#[cfg(feature = "metrics")]
mod metrics_export;
mod registry;
mod router;
mod stack;
mod status;

pub use crate::config::{Config, ConfigError, Problem, ProviderSettings};
pub use crate::health::{HealthReport, HealthStatus, MetricFamily, ProviderHealth};
pub use crate::registry::{Provider, Reconciled, Registry, RegistryBuilder};
pub use crate::router::{BoxRouter, Router, RouterFuture};
pub use crate::stack::{
    ProviderFuture, ProviderHandles, ProviderService, ProviderStack, StackBuilder,
};
pub use crate::status::http_status;

pub use palisade_balance as balance;
pub use palisade_batch as batch;
pub use palisade_breaker as breaker;
pub use palisade_bulkhead as bulkhead;
pub use palisade_cache as cache;
pub use palisade_core as core;
pub use palisade_deadline as deadline;
pub use palisade_fallback as fallback;
pub use palisade_hedge as hedge;
pub use palisade_ratelimit as ratelimit;
/// Fleet state on Redis (feature `redis`).
#[cfg(feature = "redis")]
pub use palisade_redis as redis;
pub use palisade_retry as retry;

// The README's Rust snippets are complete programs, run as doc tests here so
// that what a newcomer copies is what is tested. One of them shares a
// registry through Redis, so they run with the `redis` feature (the README's
// test command turns every feature on).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// Everything a typical user needs, in one import.
pub mod prelude {
    pub use crate::{Config, HealthReport, HealthStatus, ProviderStack, Registry, Router};
    pub use palisade_balance::{Balance, Member, Strategy};
    pub use palisade_batch::{BatchLayer, BatchSettings, OpenAiEmbeddings};
    pub use palisade_breaker::{BreakerHandle, CircuitBreakerLayer};
    pub use palisade_bulkhead::{BulkheadHandle, BulkheadLayer};
    pub use palisade_cache::{
        CacheLayer, CacheSettings, CloneRecord, HttpRecord, Lookup, OpenAiKey,
    };
    pub use palisade_core::{
        BoxError, CircuitState, Classify, Deadline, Elapsed, FailureKind, GrpcClassifier,
        HasDeadline, HttpClassifier, Outcome, Policy, ProviderId, RejectReason, Rejected, Served,
        WithDeadline,
    };
    pub use palisade_deadline::{
        AttemptTimeoutLayer, DeadlineLayer, PropagateDeadlineLayer, StreamTimeoutLayer,
        StreamTimeouts, TimeoutHeader,
    };
    pub use palisade_fallback::{AllFailed, Fallback, Target};
    pub use palisade_hedge::{HedgeLayer, HedgePolicy};
    pub use palisade_ratelimit::{Quota, RateLimitLayer};
    pub use palisade_retry::{Backoff, BufferBodyLayer, Jitter, RetryBudget, RetryLayer};
}
