//! [`Load`]: what a balancer knows about one provider (calls in flight,
//! latency), and [`InFlight`], the guard that counts one call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ewma::PeakEwma;

/// What an unmeasured provider is assumed to take.
pub const DEFAULT_INITIAL_LATENCY: Duration = Duration::from_millis(500);
/// How fast a latency estimate forgets (its time constant).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// One provider's load as its balancer sees it: calls in flight and a
/// [`PeakEwma`] of latency. Shared (`Arc`) between the balancer and the
/// calls it counts; lives as long as the provider, so a rebuilt chain
/// keeps what was learned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_balance::Load;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let load = Arc::new(Load::default());
/// let call = load.start(true);
/// assert_eq!(load.in_flight(), 1);
/// tokio::time::advance(Duration::from_secs(2)).await;
/// call.finish(true);
/// assert_eq!(load.in_flight(), 0);
/// assert_eq!(load.latency().estimate(tokio::time::Instant::now()), Duration::from_secs(2));
/// # }
/// ```
#[derive(Debug)]
// Not cache-aligned on purpose: unaligned, the count of calls in flight
// shares a line with the `Arc`'s reference count, which every call bumps
// too, so a call moves one contended line between cores instead of two.
// In the side-by-side bench (64 tasks, 3 providers) rounds fall at either
// about 120 or about 230 ns a call; unaligned, 10 of 12 rounds fell low,
// aligned to 128 bytes, 2 of 6.
pub struct Load {
    in_flight: AtomicU32,
    latency: PeakEwma,
    first_token: PeakEwma,
}

impl Default for Load {
    /// [`DEFAULT_INITIAL_LATENCY`] and [`DEFAULT_DECAY`].
    fn default() -> Self {
        Load::new(DEFAULT_INITIAL_LATENCY, DEFAULT_DECAY)
    }
}

impl Load {
    /// A provider assumed to take `initial` until measured, whose latency
    /// estimate forgets with time constant `decay`.
    pub fn new(initial: Duration, decay: Duration) -> Self {
        Load {
            in_flight: AtomicU32::new(0),
            latency: PeakEwma::new(initial, decay),
            first_token: PeakEwma::new(initial, decay),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency estimate of whole calls.
    pub fn latency(&self) -> &PeakEwma {
        &self.latency
    }

    /// The estimate of streams' time to first token (a stream's call is
    /// answered when its first frame is, behind a first-frame gate).
    pub fn first_token(&self) -> &PeakEwma {
        &self.first_token
    }

    /// [`first_token`](Self::first_token) for a stream, else
    /// [`latency`](Self::latency).
    pub fn estimate_for(&self, streaming: bool) -> &PeakEwma {
        if streaming {
            &self.first_token
        } else {
            &self.latency
        }
    }

    /// Counts a call until the guard is finished or dropped; `timed`
    /// reads the clock so [`InFlight::finish`] can record the latency.
    pub fn start(self: &Arc<Self>, timed: bool) -> InFlight {
        self.start_for(false, timed)
    }

    /// As [`start`](Self::start), for a stream when `streaming` (its time
    /// goes to [`first_token`](Self::first_token)).
    pub fn start_for(self: &Arc<Self>, streaming: bool, timed: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self.clone(),
            started: timed.then(palisade_core::clock::now),
            streaming,
        }
    }
}

/// One call counted in a [`Load`]: dropping it (a cancelled call, a hedge
/// that lost) uncounts it, and records the time it ran as a lower bound
/// of its latency; [`finish`](Self::finish) records its latency when it
/// was timed.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
    started: Option<Instant>,
    streaming: bool,
}

impl InFlight {
    /// The call answered: `ok` is whether its outcome was a success (a
    /// failure counts as slow; see [`PeakEwma::observe_failure`]).
    pub fn finish(mut self, ok: bool) {
        if let Some(at) = self.started.take() {
            let now = Instant::now();
            let took = now.saturating_duration_since(at);
            let estimate = self.load.estimate_for(self.streaming);
            if ok {
                estimate.observe(took, now);
            } else {
                estimate.observe_failure(took, now);
            }
        }
    }

    /// When the call started, if it was timed.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Whether it is a stream's call (timed to its first token).
    pub fn streaming(&self) -> bool {
        self.streaming
    }
}

impl Drop for InFlight {
    /// Uncounts the call. A timed call dropped unfinished (it lost a hedge
    /// race, or its caller gave up) took at least this long: that counts
    /// as a latency sample, so a provider whose slow calls are always
    /// raced away does not look fast.
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(at) = self.started.take() {
            let now = Instant::now();
            self.load
                .estimate_for(self.streaming)
                .observe(now.saturating_duration_since(at), now);
        }
    }
}
