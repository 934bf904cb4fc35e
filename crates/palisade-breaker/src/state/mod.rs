//! The breaker's state machine, shared by every clone of the service.
//!
//! The state lives in one `AtomicU64` word: the state (3 bits), the
//! half-open probes in flight (16 bits), the half-open successes so far
//! (16 bits) and a generation (29 bits) that changes on every transition,
//! so an outcome of a call admitted under an older state cannot feed the
//! rules of the current one.
//!
//! Hot path (Closed): admission is one atomic load; recording a success is
//! a load of the word, a load of the failure streak and one step of the
//! count window, whose cursor doubles as the success counter (so the
//! snapshot's successes are the cursor's steps minus those that were not
//! successes, plus the successes counted elsewhere). Failures, probes and
//! clock-reading rules take the out-of-line path. Transitions (trips,
//! closes, operator actions) are rare and are serialised by a small mutex,
//! which also guards the jitter RNG, so that the open deadline and the
//! state change appear together.
//!
//! [`Core`] and its small accessors live here; the rest by concern:
//! `word` (the bit packing and the rated-probe tally), `layout` (the hot
//! cache line), `admit` (letting calls through or refusing them), `record`
//! (what a finished call means, trip rules, probe judgement), `transition`
//! (state changes, open periods, operator actions).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use palisade_core::{CircuitState, Failure, FailureKind, Outcome, StripedCounter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, HalfOpenRule, ReadinessMode, WindowKind};
use crate::error::{Detail, Refusal};
use crate::handle::{StateChange, TransitionReason};
use crate::kind::Kinds;
use crate::window::{CountWindow, Counts, TimeWindow, Window};

mod admit;
mod layout;
mod record;
mod transition;
mod word;

use self::layout::{Hot, Line, NEXT_ID};
use self::word::*;
pub(crate) use self::word::{st_code, st_of};

/// A call the breaker let through; handed back when the call ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    /// The generation, truncated to the word's 29 bits.
    gen: u32,
    probe: bool,
    /// Nanos since base when the call started; only read when a rule needs
    /// the clock (slow calls, time window).
    start: u64,
}

/// What one finished call means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    Success,
    Failure(FailureKind),
    /// Neither success nor failure (a 4xx, our own rejection...).
    Ignored,
    /// The provider asked us to stay away this long.
    Cooldown(Duration),
}

/// Running totals for the handle's snapshot.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// Successes the count window's cursor did not count (see
    /// [`Core::successes`]).
    pub(crate) successes: StripedCounter,
    /// Steps of the count window's cursor that were not successes.
    pub(crate) cursor_not_success: StripedCounter,
    pub(crate) failures: StripedCounter,
    pub(crate) ignored: StripedCounter,
    pub(crate) slow: StripedCounter,
    pub(crate) rejected: StripedCounter,
    pub(crate) abandoned: StripedCounter,
    pub(crate) opened: AtomicU64,
}

/// What `poll_ready` in load-balancer mode should do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Readiness {
    Go,
    WaitUntil(Instant),
    Refuse,
}

#[derive(Debug)]
struct Guarded {
    rng: SmallRng,
}

/// The state shared by all clones of one breaker.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) cfg: Config,
    /// Read on every call, written on transitions and half-open probes.
    hot: Hot,
    /// Nanos since base when HalfOpen began.
    half_open_at: AtomicU64,
    /// Under [`HalfOpenRule::Rate`]: the probes of the current half-open
    /// period that failed and that were slow (see [`Tally`]).
    tally: AtomicU64,
    /// Written on every failure, read on every success.
    consecutive: Line<AtomicU32>,
    /// Trips since the last close: the exponent of the open duration.
    streak: AtomicU32,
    window: Option<Window>,
    pub(crate) totals: Totals,
    guarded: Mutex<Guarded>,
    pub(crate) changes: watch::Sender<StateChange>,
}

impl Core {
    pub(crate) fn new(cfg: Config, seed: Option<u64>) -> Self {
        let window = if cfg.failure_rate.is_some() || cfg.slow_call_rate.is_some() {
            Some(match cfg.window {
                WindowKind::Count(n) => Window::Count(CountWindow::new(n)),
                WindowKind::Time { span, buckets } => Window::Time(TimeWindow::new(span, buckets)),
            })
        } else {
            None
        };
        let needs_clock =
            cfg.slow_call_rate.is_some() || window.as_ref().is_some_and(Window::needs_clock);
        let base = Instant::now();
        let mode = cfg.mode;
        let kinds = Kinds::of(cfg.provider.as_ref());
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        let (changes, _) = watch::channel(StateChange {
            from: CircuitState::Closed,
            to: CircuitState::Closed,
            reason: TransitionReason::Created,
            at: base,
        });
        Core {
            cfg,
            hot: Hot {
                word: AtomicU64::new(pack(CircuitState::Closed, 0, 0, 0)),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                open_until: AtomicU64::new(0),
                base,
                kinds,
                needs_clock,
                mode,
            },
            half_open_at: AtomicU64::new(0),
            tally: AtomicU64::new(0),
            consecutive: Line(AtomicU32::new(0)),
            streak: AtomicU32::new(0),
            window,
            totals: Totals::default(),
            guarded: Mutex::new(Guarded { rng }),
            changes,
        }
    }

    #[inline]
    fn nanos(&self, at: Instant) -> u64 {
        // u64 arithmetic rather than `as_nanos` (u128): 584 years of
        // nanoseconds fit.
        let d = at.saturating_duration_since(self.hot.base);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(d.subsec_nanos() as u64)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.hot.base + Duration::from_nanos(nanos)
    }

    /// The readiness mode, from the hot line.
    #[inline]
    pub(crate) fn mode(&self) -> ReadinessMode {
        self.hot.mode
    }

    pub(crate) fn state(&self) -> CircuitState {
        st_of(self.hot.word.load(Ordering::Acquire))
    }

    /// The state word as it is now.
    #[inline]
    pub(crate) fn word(&self) -> u64 {
        self.hot.word.load(Ordering::Acquire)
    }

    /// Nanos since the breaker's base instant.
    #[inline]
    fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }

    pub(crate) fn window_counts(&self) -> Option<Counts> {
        let now = self.now();
        self.window.as_ref().map(|w| w.counts(now))
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Acquire)
    }

    pub(crate) fn half_open_probes(&self) -> (u32, u32) {
        let w = self.hot.word.load(Ordering::Acquire);
        (probes_of(w), succ_of(w))
    }

    /// Successes so far: those the count window's cursor counted, plus the
    /// rest.
    pub(crate) fn successes(&self) -> u64 {
        let by_cursor = match &self.window {
            Some(Window::Count(cw)) => cw
                .cursor()
                .saturating_sub(self.totals.cursor_not_success.get()),
            _ => 0,
        };
        self.totals.successes.get() + by_cursor
    }
}
