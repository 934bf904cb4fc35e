//! The registry's health report: per provider, the numbers that matter; an
//! overall status by documented rules; and recommendations a person can
//! act on.
//!
//! **Per provider**, the first rule that matches:
//!
//! | status | when |
//! |---|---|
//! | Critical | its breaker refuses calls (open, forced open, or no probe slot free) |
//! | Degraded | its breaker is half-open (probing) |
//! | Warning | failure rate in the window ≥ 25%; or bulkhead ≥ 80% of its slots in flight, or anyone queued; or the retry budget has refused retries and has less than one retry left |
//! | Healthy | otherwise |
//!
//! **Overall**, the first rule that matches:
//!
//! | status | when |
//! |---|---|
//! | Critical | no provider registered, or every provider Critical |
//! | Degraded | the first provider in preference order is Critical or Degraded (traffic is failing over), or at least half the providers are Critical |
//! | Warning | any provider is not Healthy |
//! | Healthy | otherwise |

use std::fmt::Write as _;

use palisade_bulkhead::BulkheadSnapshot;
use palisade_core::{CircuitState, ProviderId};
use palisade_retry::{BudgetSnapshot, RetrySnapshot};
use serde::Serialize;

use crate::registry::Registry;

/// Failure rate at or above which a provider is in Warning.
pub const WARN_FAILURE_RATE: f64 = 0.25;
/// Share of bulkhead slots in flight at or above which a provider is in
/// Warning.
pub const WARN_BULKHEAD_USE: f64 = 0.8;

/// How well things are going, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything answers normally.
    Healthy,
    /// Something is under strain; callers do not notice yet.
    Warning,
    /// Callers are being served, but not as configured (failing over,
    /// probing).
    Degraded,
    /// Calls are failing.
    Critical,
}

/// A breaker's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerHealth {
    /// Its state.
    pub state: CircuitState,
    /// Failure rate in the window, 0..=1.
    pub failure_rate: f64,
    /// Slow-call rate in the window, 0..=1.
    pub slow_call_rate: f64,
    /// Calls in the window.
    pub window_calls: u64,
    /// Times it opened.
    pub times_opened: u64,
    /// Milliseconds until it probes again, when open.
    pub open_remaining_ms: Option<u64>,
    /// The last transition, e.g. `closed -> open (5 consecutive failures)`.
    pub last_transition: String,
}

/// One provider's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderHealth {
    /// The provider.
    pub id: ProviderId,
    /// Its status by the per-provider rules.
    pub status: HealthStatus,
    /// Its breaker, when on.
    pub breaker: Option<BreakerHealth>,
    /// Its bulkhead, when on.
    pub bulkhead: Option<BulkheadSnapshot>,
    /// Its retry layer and budget, when on.
    pub retry: Option<RetrySnapshot>,
}

/// The registry's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The overall status.
    pub status: HealthStatus,
    /// Each provider, in preference order.
    pub providers: Vec<ProviderHealth>,
    /// What a person could do about it.
    pub recommendations: Vec<String>,
}

impl<S, C, M> Registry<S, C, M> {
    /// The health report: per provider, its numbers and status; overall,
    /// the status by the rules in [this module's docs](crate::health) and
    /// recommendations.
    pub fn health(&self) -> HealthReport {
        let providers: Vec<ProviderHealth> = self
            .in_order()
            .iter()
            .map(|p| {
                let breaker = p.handles.breaker.as_ref().map(|h| {
                    let m = h.snapshot();
                    BreakerHealth {
                        state: m.state,
                        failure_rate: m.failure_rate,
                        slow_call_rate: m.slow_call_rate,
                        window_calls: m.window_calls,
                        times_opened: m.times_opened,
                        open_remaining_ms: m.open_remaining.map(|d| d.as_millis() as u64),
                        last_transition: format!(
                            "{} -> {} ({:?})",
                            m.last_transition.from, m.last_transition.to, m.last_transition.reason
                        ),
                    }
                });
                let refusing = p.handles.breaker.as_ref().is_some_and(|h| h.is_refusing());
                let bulkhead = p.handles.bulkhead.as_ref().map(|h| h.snapshot());
                let retry = p.handles.retry.as_ref().map(|h| h.snapshot());
                let status = provider_status(
                    refusing,
                    breaker.as_ref(),
                    bulkhead.as_ref(),
                    retry.as_ref(),
                );
                ProviderHealth {
                    id: p.id.clone(),
                    status,
                    breaker,
                    bulkhead,
                    retry,
                }
            })
            .collect();
        let status = overall_status(&providers);
        let recommendations = recommend(&providers, status);
        HealthReport {
            status,
            providers,
            recommendations,
        }
    }
}

/// The breaker has seen enough failures to warn about.
fn failing(b: &BreakerHealth) -> bool {
    b.window_calls > 0 && b.failure_rate >= WARN_FAILURE_RATE
}

/// The bulkhead is near its limit, or calls are queueing.
fn crowded(b: &BulkheadSnapshot) -> bool {
    b.waiting > 0 || b.in_flight as f64 >= WARN_BULKHEAD_USE * b.max_concurrent as f64
}

/// The retry budget has refused retries and has less than one left.
fn budget_spent(r: &RetrySnapshot) -> bool {
    r.budget_refusals > 0
        && matches!(r.budget, BudgetSnapshot::Ratio { available, .. } if available < 1.0)
}

/// The per-provider rules.
pub fn provider_status(
    refusing: bool,
    breaker: Option<&BreakerHealth>,
    bulkhead: Option<&BulkheadSnapshot>,
    retry: Option<&RetrySnapshot>,
) -> HealthStatus {
    if refusing {
        return HealthStatus::Critical;
    }
    if breaker.is_some_and(|b| b.state == CircuitState::HalfOpen) {
        return HealthStatus::Degraded;
    }
    if breaker.is_some_and(failing)
        || bulkhead.is_some_and(crowded)
        || retry.is_some_and(budget_spent)
    {
        HealthStatus::Warning
    } else {
        HealthStatus::Healthy
    }
}

/// The overall rules.
pub fn overall_status(providers: &[ProviderHealth]) -> HealthStatus {
    let critical = providers
        .iter()
        .filter(|p| p.status == HealthStatus::Critical)
        .count();
    if providers.is_empty() || critical == providers.len() {
        return HealthStatus::Critical;
    }
    let first_down = providers[0].status >= HealthStatus::Degraded;
    if first_down || critical * 2 >= providers.len() {
        return HealthStatus::Degraded;
    }
    if providers.iter().any(|p| p.status != HealthStatus::Healthy) {
        return HealthStatus::Warning;
    }
    HealthStatus::Healthy
}

fn recommend(providers: &[ProviderHealth], overall: HealthStatus) -> Vec<String> {
    let mut out = Vec::new();
    if providers.is_empty() {
        out.push("no provider is registered: add one to the config".to_owned());
        return out;
    }
    if overall == HealthStatus::Critical {
        out.push(
            "no provider can take calls: check upstream status, network and API keys".to_owned(),
        );
    }
    let serving = providers
        .iter()
        .find(|p| p.status < HealthStatus::Critical)
        .map(|p| p.id.to_string());
    for p in providers {
        if let Some(b) = &p.breaker {
            match b.state {
                CircuitState::Open | CircuitState::ForcedOpen => {
                    let mut s =
                        format!("{}: circuit {} after {}", p.id, b.state, b.last_transition);
                    if let Some(ms) = b.open_remaining_ms {
                        let _ = write!(s, ", probing again in {:.1}s", ms as f64 / 1000.0);
                    }
                    if let Some(to) = serving.as_deref().filter(|to| *to != p.id.as_str()) {
                        let _ = write!(s, "; traffic goes to {to}");
                    }
                    out.push(s);
                }
                CircuitState::HalfOpen => out.push(format!(
                    "{}: recovering, probe calls in flight; no action needed unless it re-opens",
                    p.id
                )),
                _ if failing(b) => out.push(format!(
                    "{}: {:.0}% of recent calls failed; check the provider's status page",
                    p.id,
                    b.failure_rate * 100.0
                )),
                _ => {}
            }
        }
        if let Some(b) = p.bulkhead.as_ref().filter(|b| crowded(b)) {
            out.push(format!(
                "{}: bulkhead {}/{} in flight, {} waiting; raise max_concurrent if the provider has headroom, or add a provider",
                p.id, b.in_flight, b.max_concurrent, b.waiting
            ));
        }
        if let Some(r) = p.retry.as_ref().filter(|r| budget_spent(r)) {
            out.push(format!(
                "{}: retry budget spent ({} retries refused); the provider is failing and retries are being shed, as intended",
                p.id, r.budget_refusals
            ));
        }
    }
    out
}

/// One metric and its samples, for the Prometheus text and the `metrics`
/// export alike.
pub(crate) struct Family<'a> {
    pub(crate) name: &'static str,
    pub(crate) counter: bool,
    help: &'static str,
    /// `(provider label, value)`; `None` for a sample with no label.
    pub(crate) samples: Vec<(Option<&'a ProviderId>, f64)>,
}

impl HealthReport {
    /// Every metric the report yields (names in the crate docs).
    pub(crate) fn families(&self) -> Vec<Family<'_>> {
        let family = |name, counter, help, samples| Family {
            name,
            counter,
            help,
            samples,
        };
        let per = |f: &dyn Fn(&ProviderHealth) -> Option<f64>| -> Vec<(Option<&ProviderId>, f64)> {
            self.providers
                .iter()
                .filter_map(|p| f(p).map(|v| (Some(&p.id), v)))
                .collect()
        };
        vec![
            family(
                "palisade_health_status",
                false,
                "Overall health: 0 healthy, 1 warning, 2 degraded, 3 critical.",
                vec![(None, self.status as u8 as f64)],
            ),
            family(
                "palisade_provider_status",
                false,
                "Provider health: 0 healthy, 1 warning, 2 degraded, 3 critical.",
                per(&|p| Some(p.status as u8 as f64)),
            ),
            family(
                "palisade_breaker_state",
                false,
                "Breaker state: 0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled.",
                per(&|p| p.breaker.as_ref().map(|b| state_number(b.state))),
            ),
            family(
                "palisade_breaker_failure_rate",
                false,
                "Failure rate in the breaker's window.",
                per(&|p| p.breaker.as_ref().map(|b| b.failure_rate)),
            ),
            family(
                "palisade_breaker_opened_total",
                true,
                "Times the breaker opened.",
                per(&|p| p.breaker.as_ref().map(|b| b.times_opened as f64)),
            ),
            family(
                "palisade_bulkhead_in_flight",
                false,
                "Calls holding a bulkhead slot.",
                per(&|p| p.bulkhead.as_ref().map(|b| b.in_flight as f64)),
            ),
            family(
                "palisade_bulkhead_waiting",
                false,
                "Calls queued for a bulkhead slot.",
                per(&|p| p.bulkhead.as_ref().map(|b| b.waiting as f64)),
            ),
            family(
                "palisade_bulkhead_rejected_total",
                true,
                "Calls the bulkhead refused (full or timed out).",
                per(&|p| {
                    p.bulkhead
                        .as_ref()
                        .map(|b| (b.rejected + b.timed_out) as f64)
                }),
            ),
            family(
                "palisade_retry_attempts_total",
                true,
                "Attempts made (requests plus retries).",
                per(&|p| p.retry.as_ref().map(|r| r.attempts as f64)),
            ),
            family(
                "palisade_retry_retries_total",
                true,
                "Retries made.",
                per(&|p| p.retry.as_ref().map(|r| r.retries as f64)),
            ),
            family(
                "palisade_retry_budget_refusals_total",
                true,
                "Retries the budget refused.",
                per(&|p| p.retry.as_ref().map(|r| r.budget_refusals as f64)),
            ),
        ]
    }

    /// The report as Prometheus text exposition (gauges and counters per
    /// provider), for a `/metrics` endpoint without a metrics exporter. The
    /// names are those of the `metrics` feature (see the crate docs).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        for f in self.families() {
            let kind = if f.counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (id, v) in f.samples {
                match id {
                    Some(id) => {
                        let _ = writeln!(
                            out,
                            "{}{{provider=\"{}\"}} {v}",
                            f.name,
                            escape(id.as_str())
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{} {v}", f.name);
                    }
                }
            }
        }
        out
    }
}

fn state_number(s: CircuitState) -> f64 {
    match s {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
        CircuitState::ForcedOpen => 3.0,
        CircuitState::Disabled => 4.0,
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
