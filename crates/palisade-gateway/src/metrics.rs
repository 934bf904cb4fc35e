//! `/metrics`: palisade's numbers per provider (from the layers'
//! inspection views), the gateway's own counters, and its requests by
//! model, provider and status with their latency, time to first token and
//! tokens ([`RequestMetrics`], on `prometheus-client`), as Prometheus text.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;

use palisade::MetricFamily;
use palisade_core::{MetricKind, ProviderId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::AppState;

pub(crate) async fn metrics(
    State(s): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(refused) = s.admin(&headers) {
        return refused.into_response();
    }
    let mut families = s.registry.health().metric_families();
    let c = &s.counters;
    for (name, help, v) in [
        (
            "palisade_gateway_requests_total",
            "Chat completion requests received.",
            c.requests.get(),
        ),
        (
            "palisade_gateway_ok_total",
            "Requests answered by a provider.",
            c.ok.get(),
        ),
        (
            "palisade_gateway_client_errors_total",
            "Requests refused as the caller's fault (400/404/413).",
            c.client_errors.get(),
        ),
        (
            "palisade_gateway_upstream_errors_total",
            "Requests no provider could answer (502/503/504).",
            c.upstream_errors.get(),
        ),
        (
            "palisade_gateway_stream_errors_total",
            "Streams cut by a timeout after they started.",
            c.stream_errors.load(Ordering::Relaxed),
        ),
    ] {
        families.push(flat(name, help, MetricKind::Counter, v as f64));
    }
    if let Some(fleet) = &s.fleet {
        use palisade_core::Inspect;
        for sample in fleet.inspect().samples {
            families.push(flat(sample.name, sample.help, sample.kind, sample.value));
        }
    }
    families.push(flat(
        "palisade_gateway_response_ids",
        "Responses API response ids this gateway remembers with the provider that stored them.",
        MetricKind::Gauge,
        s.affinity.remembered() as f64,
    ));
    if let Some(n) = s.affinity.fleet_notes() {
        for (name, help, v) in [
            (
                "palisade_fleet_response_notes_written_total",
                "Response ids written to the fleet's notes (or removed from them).",
                n.written,
            ),
            (
                "palisade_fleet_response_notes_dropped_total",
                "Response id notes not written: Redis down or the queue full.",
                n.dropped,
            ),
            (
                "palisade_fleet_response_notes_found_total",
                "Response ids this gateway did not remember, found in the fleet's notes.",
                n.found,
            ),
            (
                "palisade_fleet_response_notes_missed_total",
                "Response ids looked up in the fleet's notes and not found (or Redis down).",
                n.missed,
            ),
        ] {
            families.push(flat(name, help, MetricKind::Counter, v as f64));
        }
    }
    if let Some(cache) = &s.cache {
        let c = cache.snapshot();
        for (name, kind, help, v) in [
            (
                "palisade_cache_hits_total",
                MetricKind::Counter,
                "Requests answered by a fresh cached answer, with no call.",
                c.hits,
            ),
            (
                "palisade_cache_stale_total",
                MetricKind::Counter,
                "Failed calls answered by a stale cached answer (degraded).",
                c.stale,
            ),
            (
                "palisade_cache_calls_total",
                MetricKind::Counter,
                "Calls made through the cache (one per coalesced group).",
                c.calls,
            ),
            (
                "palisade_cache_coalesced_total",
                MetricKind::Counter,
                "Requests that shared an identical call in flight.",
                c.coalesced,
            ),
            (
                "palisade_cache_bypassed_total",
                MetricKind::Counter,
                "Requests kept out of the cache (cache-control: no-store).",
                c.bypassed,
            ),
            (
                "palisade_cache_stored_total",
                MetricKind::Counter,
                "Answers stored.",
                c.stored,
            ),
            (
                "palisade_cache_too_large_total",
                MetricKind::Counter,
                "Answers not stored for being over max_entry_bytes.",
                c.too_large,
            ),
            (
                "palisade_cache_entries",
                MetricKind::Gauge,
                "Answers held.",
                c.entries,
            ),
            (
                "palisade_cache_bytes",
                MetricKind::Gauge,
                "Bytes of answers held.",
                c.bytes,
            ),
        ] {
            families.push(flat(name, help, kind, v as f64));
        }
    }
    if let Some(batch) = &s.batch {
        let b = batch.snapshot();
        for (name, kind, help, v) in [
            (
                "palisade_batch_calls_total",
                MetricKind::Counter,
                "Upstream calls made for batched requests.",
                b.batches,
            ),
            (
                "palisade_batch_requests_total",
                MetricKind::Counter,
                "Requests sent in those calls.",
                b.requests,
            ),
            (
                "palisade_batch_largest",
                MetricKind::Gauge,
                "The most requests one call carried.",
                b.largest,
            ),
            (
                "palisade_batch_gone_total",
                MetricKind::Counter,
                "Requests left out of their batch: the caller went away.",
                b.gone,
            ),
            (
                "palisade_batch_failed_total",
                MetricKind::Counter,
                "Batches whose call failed.",
                b.failed,
            ),
        ] {
            families.push(flat(name, help, kind, v as f64));
        }
    }
    let text = s.requests.render(families);
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// A family of one unlabelled sample.
fn flat(name: &'static str, help: &'static str, kind: MetricKind, value: f64) -> MetricFamily {
    MetricFamily {
        name,
        help,
        kind,
        samples: vec![(None, value)],
    }
}

/// The families of a scrape (palisade's inspection views and the
/// gateway's own figures), encoded by `prometheus-client` beside the
/// request metrics.
#[derive(Debug)]
struct Scraped(Vec<MetricFamily>);

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        for f in &self.0 {
            // prometheus-client adds a counter's `_total` itself.
            let (name, ty) = match f.kind {
                MetricKind::Counter => (
                    f.name.strip_suffix("_total").unwrap_or(f.name),
                    MetricType::Counter,
                ),
                _ => (f.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, f.help, None, ty)?;
            if let [(None, v)] = f.samples[..] {
                value(metric, f.kind, v)?;
                continue;
            }
            for (id, v) in &f.samples {
                let Some(id) = id else { continue };
                let labels = [("provider", id.as_str())];
                value(metric.encode_family(&labels)?, f.kind, *v)?;
            }
        }
        Ok(())
    }
}

fn value(encoder: MetricEncoder<'_>, kind: MetricKind, v: f64) -> std::fmt::Result {
    match kind {
        MetricKind::Counter => ConstCounter::new(v).encode(encoder),
        _ => ConstGauge::new(v).encode(encoder),
    }
}

/// A request's answer, for the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    /// The model asked (the gateway's name), `-` if none was read.
    model: Name,
    /// The provider that answered, `-` if none did.
    provider: Name,
    /// `2xx`, `4xx`, `5xx`.
    status: &'static str,
}

/// A call about a stored response, for its counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoredCall {
    /// The provider that answered, `-` if none did.
    provider: Name,
    /// `retrieve`, `delete`, `input_items` or `cancel`.
    call: &'static str,
    /// `2xx`, `4xx`, `5xx`.
    status: &'static str,
}

/// One provider's figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByProvider {
    provider: Name,
}

/// Tokens, by provider, model and kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tokens {
    provider: Name,
    model: Name,
    /// `prompt` or `completion`.
    kind: &'static str,
}

/// A label's text, shared with the request it came from: a label set is
/// made for every request, and its names are not copied for it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Name {
    Provider(ProviderId),
    Model(Arc<str>),
    /// `-`: none read, or none answered.
    Missing,
}

/// The status classes, as the counters' `status` label names them.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A status's class, as an index into [`CLASSES`].
fn class(status: http::StatusCode) -> usize {
    match status.as_u16() / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

impl Name {
    fn as_str(&self) -> &str {
        match self {
            Name::Provider(p) => p.as_str(),
            Name::Model(m) => m,
            Name::Missing => "-",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for Name {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

type Histograms = Family<ByProvider, Histogram, fn() -> Histogram>;

/// Buckets for LLM calls, in seconds: tens of milliseconds to minutes.
const BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn llm_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The gateway's per-request figures:
///
/// | name | type | labels | what |
/// |---|---|---|---|
/// | `palisade_gateway_answers_total` | counter | `model`, `provider`, `status` (`2xx`...) | requests answered |
/// | `palisade_gateway_request_duration_seconds` | histogram | `provider` | time to a whole answer (not streamed) |
/// | `palisade_gateway_time_to_first_token_seconds` | histogram | `provider` | time to a stream's first token |
/// | `palisade_gateway_failovers_total` | counter | `provider` | requests answered by a provider after an earlier one failed |
/// | `palisade_gateway_tokens_total` | counter | `provider`, `model`, `kind` (`prompt`, `completion`) | tokens the providers' answers say they used (a stream's usage chunk counted when it ends) |
/// | `palisade_gateway_stored_calls_total` | counter | `provider`, `call` (`retrieve`, `delete`, `input_items`, `cancel`), `status` | calls about a stored response (Responses API) answered |
#[derive(Clone)]
pub(crate) struct RequestMetrics {
    answers: Family<Answered, Counter>,
    stored: Family<StoredCall, Counter>,
    duration: Histograms,
    first_token: Histograms,
    tokens: Family<Tokens, Counter>,
    failovers: Family<ByProvider, Counter>,
    /// Each (model, provider)'s series, found with one lookup (shared by
    /// clones, as the families are).
    series: Arc<SeriesMap>,
}

/// Each (model, provider)'s series.
type SeriesMap = DashMap<(Name, Name), Arc<Series>, foldhash::fast::RandomState>;

/// A (model, provider) and its series.
type Found = ((Name, Name), Arc<Series>);

/// A [`Name`] as the request holds it, borrowed.
#[derive(Debug, Clone, Copy)]
enum Label<'a> {
    Provider(&'a ProviderId),
    Model(&'a Arc<str>),
    Missing,
}

impl Label<'_> {
    /// Whether `name` names the same (the pointers compared first).
    fn is(self, name: &Name) -> bool {
        match (self, name) {
            (Label::Provider(a), Name::Provider(b)) => a == b,
            (Label::Model(a), Name::Model(b)) => a == b,
            (Label::Missing, Name::Missing) => true,
            _ => false,
        }
    }

    /// The name, sharing the request's text.
    fn owned(self) -> Name {
        match self {
            Label::Provider(p) => Name::Provider(p.clone()),
            Label::Model(m) => Name::Model(m.clone()),
            Label::Missing => Name::Missing,
        }
    }
}

/// The series this thread found last, with its key and the map it is in
/// (held, so that no other map takes its address while it is kept here).
struct Last {
    map: Arc<SeriesMap>,
    found: Found,
}

thread_local! {
    /// Most of a thread's requests count in the series the one before
    /// counted in: comparing the names (their pointers first) spares
    /// hashing them and a shard's read lock.
    static LAST: std::cell::RefCell<Option<Last>> = const { std::cell::RefCell::new(None) };
}

/// One (model, provider)'s series, made in their families the first time
/// a request needs each and kept here: a request then finds all it counts
/// with one lookup (foldhash, one shard's read lock), where asking each
/// family costs a SipHash of the label set and a lock per family. A
/// family shows only the series made, so these are made when first used.
#[derive(Default)]
struct Series {
    /// By status class, 1xx to 5xx.
    answers: [OnceLock<Counter>; 5],
    duration: OnceLock<Histogram>,
    first_token: OnceLock<Histogram>,
    failovers: OnceLock<Counter>,
    prompt: OnceLock<Counter>,
    completion: OnceLock<Counter>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            answers: Family::default(),
            stored: Family::default(),
            duration: Family::new_with_constructor(llm_histogram),
            first_token: Family::new_with_constructor(llm_histogram),
            tokens: Family::default(),
            failovers: Family::default(),
            series: Arc::default(),
        }
    }
}

impl RequestMetrics {
    /// Counts one call about a stored response (`call`, see
    /// [`StoredCall`]), answered `status` by `provider` (`None`: by the
    /// gateway itself).
    pub(crate) fn record_stored(
        &self,
        provider: Option<&ProviderId>,
        call: &'static str,
        status: http::StatusCode,
    ) {
        self.stored
            .get_or_create(&StoredCall {
                provider: provider.map_or(Name::Missing, |p| Name::Provider(p.clone())),
                call,
                status: CLASSES[class(status)],
            })
            .inc();
    }

    /// Counts the tokens a stream's usage chunk reported, when it ended.
    pub(crate) fn record_tokens(
        &self,
        provider: &ProviderId,
        model: Option<&Arc<str>>,
        used: crate::upstream::Usage,
    ) {
        let model = model.map_or(Label::Missing, Label::Model);
        self.with_series((model, Label::Provider(provider)), |names, series| {
            self.count_tokens(names, series, used)
        });
    }

    /// Runs `f` on the series of (model, provider), made on first use.
    /// The names are borrowed: the series this thread found last is
    /// compared with them in place, and only a new one takes a share of
    /// them (no reference count moves on the way, each an atomic
    /// read-modify-write).
    fn with_series<R>(
        &self,
        (model, by): (Label<'_>, Label<'_>),
        f: impl FnOnce(&(Name, Name), &Series) -> R,
    ) -> R {
        LAST.with_borrow_mut(|last| {
            if let Some(Last { map, found }) = last {
                if Arc::ptr_eq(map, &self.series) && model.is(&found.0 .0) && by.is(&found.0 .1) {
                    return f(&found.0, &found.1);
                }
            }
            let key = (model.owned(), by.owned());
            let series = match self.series.get(&key) {
                Some(series) => series.clone(),
                None => self.series.entry(key.clone()).or_default().clone(),
            };
            let kept = last.insert(Last {
                map: self.series.clone(),
                found: (key, series),
            });
            f(&kept.found.0, &kept.found.1)
        })
    }

    /// Counts the prompt and completion tokens `used` reported.
    fn count_tokens(
        &self,
        (model, by): &(Name, Name),
        series: &Series,
        used: crate::upstream::Usage,
    ) {
        for (cell, kind, n) in [
            (&series.prompt, "prompt", used.prompt_tokens),
            (&series.completion, "completion", used.completion_tokens),
        ] {
            if n > 0 {
                cell.get_or_init(|| {
                    self.tokens
                        .get_or_create(&Tokens {
                            provider: by.clone(),
                            model: model.clone(),
                            kind,
                        })
                        .clone()
                })
                .inc_by(n);
            }
        }
    }

    /// Counts one answered request.
    pub(crate) fn record(
        &self,
        res: &axum::response::Response,
        model: Option<&Arc<str>>,
        stream: bool,
        took: std::time::Duration,
    ) {
        let provider = res
            .extensions()
            .get::<palisade_core::Served>()
            .and_then(|served| served.provider.as_ref());
        let labels = (
            model.map_or(Label::Missing, Label::Model),
            provider.map_or(Label::Missing, Label::Provider),
        );
        let class = class(res.status());
        self.with_series(labels, |names, series| {
            let (model, by) = names;
            series.answers[class]
                .get_or_init(|| {
                    self.answers
                        .get_or_create(&Answered {
                            model: model.clone(),
                            provider: by.clone(),
                            status: CLASSES[class],
                        })
                        .clone()
                })
                .inc();
            if provider.is_none() {
                return;
            }
            let by_provider = || ByProvider {
                provider: by.clone(),
            };
            if crate::routes::failed_over(res) {
                series
                    .failovers
                    .get_or_init(|| self.failovers.get_or_create(&by_provider()).clone())
                    .inc();
            }
            let seconds = took.as_secs_f64();
            let (cell, family) = if stream {
                (&series.first_token, &self.first_token)
            } else {
                (&series.duration, &self.duration)
            };
            cell.get_or_init(|| family.get_or_create(&by_provider()).clone())
                .observe(seconds);
            if let Some(used) = res.extensions().get::<crate::upstream::Usage>() {
                self.count_tokens(names, series, *used);
            }
        });
    }

    /// The page: `families` (scraped now), then the request figures, in
    /// the Prometheus text format, encoded by `prometheus-client`.
    pub(crate) fn render(&self, families: Vec<MetricFamily>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scraped(families)));
        registry.register(
            "palisade_gateway_answers",
            "Requests answered, by model, provider and status class",
            self.answers.clone(),
        );
        registry.register(
            "palisade_gateway_request_duration_seconds",
            "Time to a whole (not streamed) answer, by provider",
            self.duration.clone(),
        );
        registry.register(
            "palisade_gateway_time_to_first_token_seconds",
            "Time to a stream's first token, by provider",
            self.first_token.clone(),
        );
        registry.register(
            "palisade_gateway_failovers",
            "Requests answered by a provider after an earlier one failed, by the provider that answered",
            self.failovers.clone(),
        );
        registry.register(
            "palisade_gateway_stored_calls",
            "Calls about a stored response (Responses API) answered, by provider, call and status class",
            self.stored.clone(),
        );
        registry.register(
            "palisade_gateway_tokens",
            "Tokens the providers' answers used, by provider, model and kind",
            self.tokens.clone(),
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer from `provider`, as the router leaves it.
    fn answer(provider: &ProviderId) -> Response {
        let mut res = Response::new(axum::body::Body::empty());
        let mut served = palisade_core::Served::default();
        served.provider = Some(provider.clone());
        res.extensions_mut().insert(served);
        res
    }

    /// The page's line for `n` 2xx answers of `model` by `provider`.
    fn line(model: &str, provider: &str, n: u32) -> String {
        format!(
            "palisade_gateway_answers_total{{model=\"{model}\",provider=\"{provider}\",status=\"2xx\"}} {n}"
        )
    }

    /// The `palisade_gateway_answers` lines of `m`'s page.
    fn answers(m: &RequestMetrics) -> Vec<String> {
        m.render(Vec::new())
            .lines()
            .filter(|l| l.starts_with("palisade_gateway_answers_total"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn each_gateways_answers_count_in_its_own_series_whatever_this_thread_found_last() {
        let (a, b) = (RequestMetrics::default(), RequestMetrics::default());
        let (east, west) = (ProviderId::new("east"), ProviderId::new("west"));
        let (m1, m2): (Arc<str>, Arc<str>) = ("m1".into(), "m2".into());
        let took = std::time::Duration::from_millis(5);
        // Interleaved: the last series found changes from one to the next.
        for _ in 0..3 {
            a.record(&answer(&east), Some(&m1), false, took);
            b.record(&answer(&east), Some(&m1), false, took);
            a.record(&answer(&west), Some(&m1), false, took);
            a.record(&answer(&east), Some(&m2), false, took);
            // The same names in another allocation find the same series.
            a.record(
                &answer(&ProviderId::new("east")),
                Some(&"m1".into()),
                false,
                took,
            );
        }
        let mut want = vec![
            line("m1", "east", 6),
            line("m1", "west", 3),
            line("m2", "east", 3),
        ];
        let mut got = answers(&a);
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(answers(&b), [line("m1", "east", 3)]);
    }

    /// Many tasks on both worker threads, two gateways' metrics, names
    /// picked at random (some shared, some made anew each time): every
    /// answer is counted once, in its own gateway's series for its names.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_many_tasks_every_answer_counts_once_in_its_own_series() {
        use rand::Rng;
        let gateways = Arc::new([RequestMetrics::default(), RequestMetrics::default()]);
        let providers = ["east", "west", "north"].map(ProviderId::new);
        let models: [Arc<str>; 2] = ["m1".into(), "m2".into()];
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (gateways, providers, models) =
                (gateways.clone(), providers.clone(), models.clone());
            tasks.push(tokio::spawn(async move {
                // [gateway][model][provider] answers recorded here.
                let mut sent = [[[0u32; 3]; 2]; 2];
                for _ in 0..200 {
                    let (g, m, p, fresh) = {
                        let mut r = rand::rng();
                        (
                            r.random_range(0..2),
                            r.random_range(0..2),
                            r.random_range(0..3),
                            r.random_bool(0.3),
                        )
                    };
                    let (model, provider) = if fresh {
                        (
                            Arc::from(&*models[m]),
                            ProviderId::new(providers[p].as_str()),
                        )
                    } else {
                        (models[m].clone(), providers[p].clone())
                    };
                    gateways[g].record(
                        &answer(&provider),
                        Some(&model),
                        false,
                        std::time::Duration::from_millis(1),
                    );
                    sent[g][m][p] += 1;
                    tokio::task::yield_now().await;
                }
                sent
            }));
        }
        let mut want = [[[0u32; 3]; 2]; 2];
        for t in tasks {
            let sent = t.await.unwrap();
            for g in 0..2 {
                for m in 0..2 {
                    for p in 0..3 {
                        want[g][m][p] += sent[g][m][p];
                    }
                }
            }
        }
        for (g, metrics) in gateways.iter().enumerate() {
            let got = answers(metrics);
            for (m, model) in models.iter().enumerate() {
                for (p, provider) in providers.iter().enumerate() {
                    let n = want[g][m][p];
                    let line = line(model, provider.as_str(), n);
                    assert!(
                        n == 0 || got.contains(&line),
                        "gateway {g}: {line} not in {got:?}"
                    );
                }
            }
            let total: u32 = want[g].iter().flatten().sum();
            let counted: u32 = got
                .iter()
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
                .sum();
            assert_eq!(counted, total, "gateway {g}");
        }
    }
}
