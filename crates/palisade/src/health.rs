//! The registry's health report: per provider, the numbers that matter; an
//! overall status by documented rules; and recommendations a person can
//! act on.
//!
//! **Per provider**: the worst verdict of its layers, each of which
//! implements [`palisade_core::Inspect`] on its handle (so a new layer's
//! verdict, notes and metrics appear here with no change to this module).
//! Today's layers give:
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
//!
//! **As JSON** (the gateway's `/health`; field names are part of the API
//! and only ever added to): `status` (`healthy`, `warning`, `degraded`,
//! `critical`), `providers` in preference order, `recommendations` (sentences),
//! and `hedge` when a router hedges over the registry (`hedgeable`, `sent`,
//! `won`, `wasted`, `no_budget`: counts since start).
//! Each provider has `id`, `status`, and one object per layer that is on,
//! under the layer's name. Every duration is a number of milliseconds in a
//! field ending in `_ms`; states and reasons are words, not Rust debug text.
//!
//! | layer | fields |
//! |---|---|
//! | `breaker` | `state` (`closed`, `open`, `half_open`, `forced_open`, `disabled`), `failure_rate`, `slow_call_rate` (0..1 over the window), `window_calls`, `times_opened`, `open_remaining_ms` (null unless refusing), `last_transition` (`"closed -> open (5 consecutive failures (threshold 5))"`) |
//! | `bulkhead` | `provider`, `max_concurrent`, `max_waiting`, `in_flight`, `waiting`, `peak_in_flight`, `rejected`, `timed_out`, `queued`, `mean_wait_ms` |
//! | `retry` | `provider`, `requests`, `attempts` (requests + retries), `provider_calls` (attempts that reached the provider), `refused` (attempts refused by a palisade layer inside), `retries`, `budget_refusals`, `deadline_stops`, `exhausted`, `budget` (`kind`: `ratio` with `ratio`, `available`; `token_bucket` with `tokens`, `max_tokens`; `unlimited`) |
//! | `health_check` (providers checked) | `provider`, `interval_ms`, `sent`, `passed`, `failed`, `skipped` (traffic had just shown the provider healthy, or the breaker was half-open, forced open or disabled), `last` (`passed`, `failed`, `none`) |
//! | `outlier` (providers ever ejected from their tier) | `provider`, `ejected`, `remaining_ms`, `multiplier` (of the next ejection's length), `times_ejected`, `tier_panicking` |
//! | `balance` (providers sharing a tier) | `weight`, `in_flight`, `latency_ms` (peak-EWMA estimate of whole answers), `first_token_ms` (of streams' first tokens); each null until measured |
//! | `rate_limit` | `provider`, `quotas` (each `unit`, `amount`, `period_ms`, `burst`, `available`), `provider_requests` / `provider_tokens` (what the provider's headers said: `remaining`, `reset_ms`; null until seen), `wait_ms` (until a request would have room), `admitted`, `refused`, `waited`, `in_flight`, `shared` (whether a fleet decides: then `wait_ms` is the fleet's) |

use std::fmt::Write as _;

pub use palisade_breaker::WARN_FAILURE_RATE;
pub use palisade_bulkhead::WARN_BULKHEAD_USE;
use std::collections::HashSet;

use palisade_core::ProviderId;
pub use palisade_core::{HealthStatus, Inspection, MetricKind, Sample};
use palisade_hedge::HedgeSnapshot;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::registry::{Provider, Registry};

/// One provider's part of the report: its status (the worst of its
/// layers' verdicts) and each layer's view.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderHealth {
    /// The provider.
    pub id: ProviderId,
    /// Its status: the worst of its layers' verdicts.
    pub status: HealthStatus,
    /// Each layer that is on, outer to inner.
    pub layers: Vec<Inspection>,
}

impl ProviderHealth {
    /// The view of the layer named `layer` (`breaker`, `bulkhead`,
    /// `retry`), when it is on.
    pub fn layer(&self, layer: &str) -> Option<&Inspection> {
        self.layers.iter().find(|i| i.layer == layer)
    }
}

/// As JSON: `id`, `status`, then each layer's numbers under its name
/// (`"breaker": {"state": "open", ...}`).
impl Serialize for ProviderHealth {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let mut map = serializer.serialize_map(Some(2 + self.layers.len()))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("status", &self.status)?;
        for i in &self.layers {
            map.serialize_entry(i.layer, &i.detail)?;
        }
        map.end()
    }
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
    /// What hedging did, when a router hedges over the registry (absent
    /// from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedge: Option<HedgeSnapshot>,
}

impl<S, C, M> Registry<S, C, M> {
    /// The health report: per provider, each layer's view and the worst of
    /// their verdicts; overall, the status by the rules in [this module's
    /// docs](crate::health) and recommendations.
    pub fn health(&self) -> HealthReport {
        // Providers sharing a tier with another: their balancer's view.
        let balanced: HashSet<ProviderId> = self
            .tiers()
            .into_iter()
            .filter(|(ids, _)| ids.len() > 1)
            .flat_map(|(ids, _)| ids)
            .collect();
        let providers: Vec<ProviderHealth> = self
            .in_order()
            .iter()
            .map(|p| {
                let mut layers = p.handles.inspectors().inspect();
                if let Some(check) = self.checks.get(&p.id) {
                    layers.push(palisade_core::Inspect::inspect(&check.1));
                }
                if p.ejection.snapshot().times_ejected > 0 {
                    layers.push(palisade_core::Inspect::inspect(&p.ejection));
                }
                if balanced.contains(&p.id) {
                    layers.push(balance(p));
                }
                let status = layers.iter().map(|i| i.status).max().unwrap_or_default();
                ProviderHealth {
                    id: p.id.clone(),
                    status,
                    layers,
                }
            })
            .collect();
        let status = overall_status(&providers);
        let recommendations = recommend(&providers, status);
        HealthReport {
            status,
            providers,
            recommendations,
            hedge: self.hedge().map(|h| h.snapshot()),
        }
    }
}

/// A balanced provider's load, as its tier's balancer sees it.
fn balance<S, C, M>(p: &Provider<S, C, M>) -> Inspection {
    let now = tokio::time::Instant::now();
    let in_flight = p.load.in_flight();
    let latency = p.load.latency().estimate(now);
    let first_token = p.load.first_token().estimate(now);
    Inspection {
        layer: "balance",
        status: HealthStatus::Healthy,
        notes: Vec::new(),
        samples: vec![
            Sample::gauge(
                "palisade_balance_in_flight",
                "Calls in flight to the provider, as its tier's balancer counts them.",
                f64::from(in_flight),
            ),
            Sample::gauge(
                "palisade_balance_latency_seconds",
                "The provider's peak-EWMA latency estimate for whole answers.",
                latency.as_secs_f64(),
            ),
            Sample::gauge(
                "palisade_balance_first_token_seconds",
                "The provider's peak-EWMA estimate of a stream's time to first token.",
                first_token.as_secs_f64(),
            ),
        ],
        // An estimate with no sample yet is a guess: null.
        detail: serde_json::json!({
            "weight": p.weight,
            "in_flight": in_flight,
            "latency_ms": p.load.latency().observed().then_some(latency.as_millis() as u64),
            "first_token_ms": p.load.first_token().observed().then_some(first_token.as_millis() as u64),
        }),
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
        for i in &p.layers {
            for (n, note) in i.notes.iter().enumerate() {
                let mut s = format!("{}: {note}", p.id);
                // A refusing layer's first note says where traffic goes.
                if n == 0 && i.status == HealthStatus::Critical {
                    if let Some(to) = serving.as_deref().filter(|to| *to != p.id.as_str()) {
                        let _ = write!(s, "; traffic goes to {to}");
                    }
                }
                out.push(s);
            }
        }
    }
    out
}

/// One metric and its samples, as [`HealthReport::metric_families`]
/// yields them: what [`prometheus_text`](HealthReport::prometheus_text),
/// the `metrics` export and any other exporter render (the gateway's
/// `/metrics` encodes them with `prometheus-client`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// Its name, after Prometheus' conventions (`_total` ends a counter's).
    pub name: &'static str,
    /// What it measures, one sentence.
    pub help: &'static str,
    /// A counter or a gauge.
    pub kind: MetricKind,
    /// `(provider label, value)`; `None` for a sample with no label.
    pub samples: Vec<(Option<ProviderId>, f64)>,
}

impl HealthReport {
    /// Every metric the report yields (names in the crate docs): the
    /// overall and per-provider status, then each layer's samples, one
    /// family per name in the order first seen.
    ///
    /// ```
    /// use palisade::Registry;
    /// use palisade_core::MetricKind;
    ///
    /// let registry = Registry::<(), ()>::default();
    /// let families = registry.health().metric_families();
    /// let overall = &families[0];
    /// assert_eq!(overall.name, "palisade_health_status");
    /// assert_eq!(overall.kind, MetricKind::Gauge);
    /// // Critical (3): no provider to serve; the overall status has no label.
    /// assert_eq!(overall.samples, [(None, 3.0)]);
    /// ```
    pub fn metric_families(&self) -> Vec<MetricFamily> {
        let mut families = vec![
            MetricFamily {
                name: "palisade_health_status",
                kind: MetricKind::Gauge,
                help: "Overall health: 0 healthy, 1 warning, 2 degraded, 3 critical.",
                samples: vec![(None, self.status as u8 as f64)],
            },
            MetricFamily {
                name: "palisade_provider_status",
                kind: MetricKind::Gauge,
                help: "Provider health: 0 healthy, 1 warning, 2 degraded, 3 critical.",
                samples: self
                    .providers
                    .iter()
                    .map(|p| (Some(p.id.clone()), p.status as u8 as f64))
                    .collect(),
            },
        ];
        for p in &self.providers {
            for sample in p.layers.iter().flat_map(|i| &i.samples) {
                let at = match families.iter().position(|f| f.name == sample.name) {
                    Some(at) => at,
                    None => {
                        families.push(MetricFamily {
                            name: sample.name,
                            kind: sample.kind,
                            help: sample.help,
                            samples: Vec::new(),
                        });
                        families.len() - 1
                    }
                };
                families[at]
                    .samples
                    .push((Some(p.id.clone()), sample.value));
            }
        }
        if let Some(h) = &self.hedge {
            for (name, help, value) in [
                (
                    "palisade_hedge_hedgeable_total",
                    "Requests that could have been hedged.",
                    h.hedgeable,
                ),
                ("palisade_hedge_sent_total", "Hedges sent.", h.sent),
                (
                    "palisade_hedge_won_total",
                    "Answers that came from a hedge rather than the first call.",
                    h.won,
                ),
                (
                    "palisade_hedge_wasted_total",
                    "Calls started whose answers went unused (the extra load hedging cost).",
                    h.wasted,
                ),
                (
                    "palisade_hedge_no_budget_total",
                    "Hedges not sent because the budget was dry.",
                    h.no_budget,
                ),
            ] {
                families.push(MetricFamily {
                    name,
                    kind: MetricKind::Counter,
                    help,
                    samples: vec![(None, value as f64)],
                });
            }
        }
        families
    }

    /// The report as Prometheus text exposition (gauges and counters per
    /// provider), for a `/metrics` endpoint without a metrics exporter. The
    /// names are those of the `metrics` feature (see the crate docs).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        for f in self.metric_families() {
            let kind = match f.kind {
                MetricKind::Counter => "counter",
                _ => "gauge",
            };
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

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
