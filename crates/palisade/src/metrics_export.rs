//! Exporting the health numbers through the `metrics` facade.

use crate::registry::Registry;

impl<S, C, M> Registry<S, C, M> {
    /// Records the current numbers of every provider through the `metrics`
    /// facade (names in the crate docs). Call it from a periodic task or
    /// before each scrape.
    pub fn export_metrics(&self) {
        let report = self.health();
        for f in report.metric_families() {
            for (id, v) in f.samples {
                let labels: Vec<(&'static str, String)> = id
                    .map(|id| ("provider", id.to_string()))
                    .into_iter()
                    .collect();
                if f.kind == palisade_core::MetricKind::Counter {
                    metrics::counter!(f.name, &labels).absolute(v as u64);
                } else {
                    metrics::gauge!(f.name, &labels).set(v);
                }
            }
        }
    }
}
