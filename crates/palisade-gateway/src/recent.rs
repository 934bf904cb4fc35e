//! What the gateway did over the last minute: request rates by outcome and
//! latency percentiles, for a `/health` that tells the truth under load
//! (since-start totals hide a storm that began a minute ago).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::hedge::LatencyWindow;
use tokio::time::Instant;

/// Seconds of history a [`RateWindow`] keeps.
pub(crate) const WINDOW_SECS: u64 = 60;

/// The share of requests shed (refused with 429 or 503) over the window
/// above which the gateway reports itself `degraded`.
pub const SHED_DEGRADED: f64 = 0.1;

/// Requests needed in the window before shedding can make the gateway
/// `degraded` (a handful of refusals at start-up says little).
pub const SHED_MIN_REQUESTS: u64 = 20;

/// Counts per second over the last [`WINDOW_SECS`] seconds, on atomics:
/// each slot holds the second it counts for (high 32 bits) and its count
/// (low 32 bits); a slot from an older second is restarted by the first
/// add that finds it.
pub(crate) struct RateWindow {
    slots: [AtomicU64; WINDOW_SECS as usize],
}

impl RateWindow {
    pub(crate) fn new() -> Self {
        RateWindow {
            slots: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
        }
    }

    /// Counts one event in second `sec`.
    pub(crate) fn add(&self, sec: u32) {
        let slot = &self.slots[sec as usize % WINDOW_SECS as usize];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            if (word >> 32) as u32 == sec && word != u64::MAX {
                slot.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let fresh = (u64::from(sec) << 32) | 1;
            match slot.compare_exchange_weak(word, fresh, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => word = seen,
            }
        }
    }

    /// Events in the window ending with second `sec` (that second
    /// included).
    pub(crate) fn sum(&self, sec: u32) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&w| w != u64::MAX && sec.wrapping_sub((w >> 32) as u32) < WINDOW_SECS as u32)
            .map(|w| w & 0xffff_ffff)
            .sum()
    }
}

/// How a request ended, as the window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered (2xx).
    Ok,
    /// The caller's own mistake (4xx other than 429).
    ClientError,
    /// Refused by palisade or every provider's quota (429, 503).
    Shed,
    /// Every provider failed, or the deadline passed (other 5xx).
    Failed,
}

impl Outcome {
    pub(crate) fn of(status: u16) -> Self {
        match status {
            200..=399 => Outcome::Ok,
            429 | 503 => Outcome::Shed,
            400..=499 => Outcome::ClientError,
            _ => Outcome::Failed,
        }
    }
}

/// The gateway's last minute.
pub(crate) struct Recent {
    epoch: Instant,
    requests: RateWindow,
    ok: RateWindow,
    shed: RateWindow,
    failed: RateWindow,
    client_errors: RateWindow,
    failovers: RateWindow,
    latency: LatencyWindow,
    first_token: LatencyWindow,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Recent {
            epoch: Instant::now(),
            requests: RateWindow::new(),
            ok: RateWindow::new(),
            shed: RateWindow::new(),
            failed: RateWindow::new(),
            client_errors: RateWindow::new(),
            failovers: RateWindow::new(),
            // Rotating every 30 s, a window holds the last 30 to 60 s.
            latency: LatencyWindow::new(Duration::from_secs(WINDOW_SECS / 2)),
            first_token: LatencyWindow::new(Duration::from_secs(WINDOW_SECS / 2)),
        }
    }

    fn sec(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_secs() as u32
    }

    /// Counts one answered request, answered `now`: its status, whether
    /// another provider than the first answered it, and how long it took
    /// (for a stream, to its first token).
    pub(crate) fn record(
        &self,
        now: Instant,
        status: u16,
        failover: bool,
        took: Duration,
        stream: bool,
    ) {
        let sec = self.sec(now);
        self.requests.add(sec);
        let outcome = Outcome::of(status);
        match outcome {
            Outcome::Ok => self.ok.add(sec),
            Outcome::Shed => self.shed.add(sec),
            Outcome::Failed => self.failed.add(sec),
            Outcome::ClientError => self.client_errors.add(sec),
        }
        if failover {
            self.failovers.add(sec);
        }
        if outcome == Outcome::Ok {
            if stream {
                self.first_token.record_at(took, now);
            } else {
                self.latency.record_at(took, now);
            }
        }
    }

    /// The window as JSON (rates per second, shares, percentiles in ms),
    /// and whether it is shedding enough to be `degraded`.
    pub(crate) fn report(&self) -> (serde_json::Value, bool) {
        let sec = self.sec(Instant::now());
        let n = |w: &RateWindow| w.sum(sec);
        let requests = n(&self.requests);
        let shed = n(&self.shed);
        let share = if requests == 0 {
            0.0
        } else {
            shed as f64 / requests as f64
        };
        let per_s = |c: u64| c as f64 / WINDOW_SECS as f64;
        let pct = |w: &LatencyWindow, p: f64| w.percentile(p, 1).map(|d| d.as_millis() as u64);
        let shedding = requests >= SHED_MIN_REQUESTS && share > SHED_DEGRADED;
        let json = serde_json::json!({
            "window_s": WINDOW_SECS,
            "requests": requests,
            "requests_per_s": per_s(requests),
            "ok_per_s": per_s(n(&self.ok)),
            "shed_per_s": per_s(shed),
            "failed_per_s": per_s(n(&self.failed)),
            "client_errors_per_s": per_s(n(&self.client_errors)),
            "failovers_per_s": per_s(n(&self.failovers)),
            "shed_share": share,
            "shedding": shedding,
            "latency_ms": {"p50": pct(&self.latency, 0.5), "p99": pct(&self.latency, 0.99)},
            "first_token_ms": {"p50": pct(&self.first_token, 0.5), "p99": pct(&self.first_token, 0.99)},
        });
        (json, shedding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_window_forgets_what_is_older_than_a_minute() {
        let w = RateWindow::new();
        for _ in 0..5 {
            w.add(10);
        }
        w.add(11);
        assert_eq!(w.sum(11), 6);
        assert_eq!(
            w.sum(69),
            6,
            "second 10 is still in the minute ending at 69"
        );
        assert_eq!(w.sum(70), 1, "second 10 has left it");
        // Second 70 reuses second 10's slot and starts it over.
        w.add(70);
        assert_eq!(w.sum(70), 2);
        assert_eq!(w.sum(200), 0);
    }

    #[test]
    fn many_threads_adding_at_once_lose_nothing() {
        let w = std::sync::Arc::new(RateWindow::new());
        std::thread::scope(|s| {
            for _ in 0..8 {
                let w = w.clone();
                s.spawn(move || (0..10_000).for_each(|_| w.add(3)));
            }
        });
        assert_eq!(w.sum(3), 80_000);
    }

    #[tokio::test(start_paused = true)]
    async fn shedding_a_tenth_of_enough_requests_is_degraded_and_passes_with_time() {
        let r = Recent::new();
        for i in 0..30 {
            let status = if i % 5 == 0 { 503 } else { 200 };
            r.record(
                Instant::now(),
                status,
                i % 3 == 0,
                Duration::from_millis(40),
                false,
            );
        }
        let (json, shedding) = r.report();
        assert!(shedding, "{json}");
        assert_eq!(json["requests"], 30);
        assert!((json["shed_share"].as_f64().unwrap() - 0.2).abs() < 1e-9);
        assert!(json["latency_ms"]["p50"].as_u64().unwrap() >= 40);
        assert!(json["first_token_ms"]["p50"].is_null(), "no stream yet");
        // A minute later the storm has left the window.
        tokio::time::advance(Duration::from_secs(61)).await;
        let (json, shedding) = r.report();
        assert!(!shedding, "{json}");
        assert_eq!(json["requests"], 0);
        // Below the minimum of requests, refusals alone are not degraded.
        for _ in 0..5 {
            r.record(Instant::now(), 429, false, Duration::ZERO, false);
        }
        assert!(!r.report().1);
    }
}
