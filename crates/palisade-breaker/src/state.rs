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

const ST_MASK: u64 = 0b111;
const PROBE_SHIFT: u32 = 3;
const SUCC_SHIFT: u32 = 19;
const GEN_SHIFT: u32 = 35;
const FIELD16: u64 = 0xFFFF;

pub(crate) fn st_code(s: CircuitState) -> u64 {
    match s {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::Disabled => 4,
    }
}

pub(crate) fn st_of(w: u64) -> CircuitState {
    match w & ST_MASK {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        3 => CircuitState::ForcedOpen,
        _ => CircuitState::Disabled,
    }
}

fn probes_of(w: u64) -> u32 {
    ((w >> PROBE_SHIFT) & FIELD16) as u32
}

fn succ_of(w: u64) -> u32 {
    ((w >> SUCC_SHIFT) & FIELD16) as u32
}

fn gen_of(w: u64) -> u64 {
    w >> GEN_SHIFT
}

fn pack(s: CircuitState, probes: u32, succ: u32, gen: u64) -> u64 {
    st_code(s)
        | (probes as u64 & FIELD16) << PROBE_SHIFT
        | (succ as u64 & FIELD16) << SUCC_SHIFT
        | (gen & ((1 << (64 - GEN_SHIFT)) - 1)) << GEN_SHIFT
}

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

/// Keeps a hot atomic on a cache line of its own.
#[derive(Debug)]
#[repr(align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What every call reads, on one cache line: the state word, the end of
/// the open period, and the settings the hot paths branch on. Written only
/// on transitions and half-open probes.
#[derive(Debug)]
#[repr(C, align(64))]
struct Hot {
    word: AtomicU64,
    /// Unique per breaker for the life of the process (the key of the
    /// per-thread open-deadline cache; an address could be reused).
    id: u64,
    /// Nanos since base when the open period ends (valid in Open).
    open_until: AtomicU64,
    base: Instant,
    /// What refusals name (provider, state, detail), interned.
    kinds: &'static Kinds,
    needs_clock: bool,
    mode: ReadinessMode,
}

/// Source of [`Hot::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The open deadline this thread last refused a call for: (breaker id,
    /// the deadline in nanoseconds since the breaker's base, the same as an
    /// instant). See [`Core::open_until_instant`].
    static OPEN_UNTIL: Cell<(u64, u64, Option<Instant>)> = const { Cell::new((u64::MAX, 0, None)) };
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

    /// Lets a call through when the word `w` says Closed (or Disabled).
    /// Says `None` for every other state, which [`acquire`](Self::acquire)
    /// handles.
    #[inline(always)]
    pub(crate) fn admit_closed(&self, w: u64) -> Option<Permit> {
        matches!(st_of(w), CircuitState::Closed | CircuitState::Disabled)
            .then(|| self.closed_permit(w))
    }

    /// The permit of a call admitted in Closed or Disabled under word `w`.
    #[inline(always)]
    fn closed_permit(&self, w: u64) -> Permit {
        Permit {
            gen: gen_of(w) as u32,
            probe: false,
            start: if self.hot.needs_clock { self.now() } else { 0 },
        }
    }

    /// The refusal for a call made while the word `w` says Open and time is
    /// left: one clock read. `None` in every other case (including an open
    /// period that has ended), which [`acquire`](Self::acquire) handles.
    #[inline(always)]
    pub(crate) fn refuse_if_open(&self, w: u64) -> Option<Refusal> {
        if st_of(w) != CircuitState::Open {
            return None;
        }
        // Instants compared as they are: turning one into nanoseconds is a
        // call into std's time arithmetic, which costs as much again as
        // the clock read itself.
        let until = self.open_until_instant();
        (Instant::now() < until).then(|| self.refuse(CircuitState::Open, Some(until), Detail::None))
    }

    /// The end of the current open period as an instant. Converting the
    /// stored nanoseconds costs as much as a clock read, so each thread
    /// keeps the last conversion, keyed by this breaker's id and the exact
    /// nanoseconds converted: a burst of refusals converts once, and an
    /// open period extended in place (a later Retry-After) is simply
    /// converted again.
    #[inline]
    fn open_until_instant(&self) -> Instant {
        let until = self.hot.open_until.load(Ordering::Acquire);
        OPEN_UNTIL.with(|cache| {
            let (id, nanos, at) = cache.get();
            if id == self.hot.id && nanos == until {
                if let Some(at) = at {
                    return at;
                }
            }
            let at = self.instant(until);
            cache.set((self.hot.id, until, Some(at)));
            at
        })
    }

    /// Lets a call through or refuses it, in any state, moving Open to
    /// HalfOpen when the open period has ended. The two paths a burst
    /// takes, [`admit_closed`](Self::admit_closed) and
    /// [`refuse_if_open`](Self::refuse_if_open), are also called on their
    /// own, inline, before this.
    #[inline(never)]
    pub(crate) fn acquire(&self) -> Result<Permit, Refusal> {
        let mut w = self.word();
        loop {
            match st_of(w) {
                CircuitState::Closed | CircuitState::Disabled => {
                    return Ok(self.closed_permit(w));
                }
                CircuitState::ForcedOpen => {
                    return Err(self.refuse(CircuitState::ForcedOpen, None, Detail::None))
                }
                CircuitState::Open => {
                    if let Some(refusal) = self.refuse_if_open(w) {
                        return Err(refusal);
                    }
                    self.transition(w, CircuitState::HalfOpen, TransitionReason::OpenElapsed);
                }
                CircuitState::HalfOpen => {
                    let now_needed = self.cfg.half_open_max_wait.is_some() || self.hot.needs_clock;
                    let now = if now_needed { self.now() } else { 0 };
                    if let Some(max) = self.cfg.half_open_max_wait {
                        let since = self.half_open_at.load(Ordering::Acquire);
                        if now.saturating_sub(since) >= max.as_nanos() as u64 {
                            self.transition(
                                w,
                                CircuitState::Open,
                                TransitionReason::HalfOpenTimeout { waited: max },
                            );
                            w = self.hot.word.load(Ordering::Acquire);
                            continue;
                        }
                    }
                    if probes_of(w) >= self.cfg.half_open_permitted {
                        return Err(self.refuse(
                            CircuitState::HalfOpen,
                            None,
                            Detail::ProbeSlotsTaken,
                        ));
                    }
                    let next = w + (1 << PROBE_SHIFT);
                    match self.swap_word(w, next) {
                        Ok(()) => {
                            return Ok(Permit {
                                gen: gen_of(w) as u32,
                                probe: true,
                                start: now,
                            })
                        }
                        Err(actual) => {
                            w = actual;
                            continue;
                        }
                    }
                }
            }
            w = self.hot.word.load(Ordering::Acquire);
        }
    }

    /// Nanos since the breaker's base instant.
    #[inline]
    fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }

    #[inline]
    fn refuse(&self, state: CircuitState, until: Option<Instant>, detail: Detail) -> Refusal {
        self.totals.rejected.add(1);
        Refusal::new(self.hot.kinds.get(state, detail), until)
    }

    /// The refusal a caller gets for the breaker's current state, for a
    /// call the breaker cannot send (its inner service was never readied).
    pub(crate) fn refuse_now(&self) -> Refusal {
        let w = self.hot.word.load(Ordering::Acquire);
        let state = st_of(w);
        let until = (state == CircuitState::Open)
            .then(|| self.instant(self.hot.open_until.load(Ordering::Acquire)));
        self.refuse(state, until, Detail::OpenAtReadiness)
    }

    /// Whether a call made now would be refused without a state change:
    /// forced open, or open with time left.
    pub(crate) fn refusing(&self) -> bool {
        let w = self.hot.word.load(Ordering::Acquire);
        match st_of(w) {
            CircuitState::ForcedOpen => true,
            CircuitState::Open => self.now() < self.hot.open_until.load(Ordering::Acquire),
            _ => false,
        }
    }

    /// Whether the breaker is open or forced open, without reading the
    /// clock (so an open period that has just ended still says yes).
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            st_of(self.hot.word.load(Ordering::Acquire)),
            CircuitState::Open | CircuitState::ForcedOpen
        )
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let w = self.hot.word.load(Ordering::Acquire);
        match st_of(w) {
            CircuitState::ForcedOpen => Readiness::Refuse,
            CircuitState::Open => {
                let until = self.hot.open_until.load(Ordering::Acquire);
                if self.now() < until {
                    Readiness::WaitUntil(self.instant(until))
                } else {
                    Readiness::Go
                }
            }
            _ => Readiness::Go,
        }
    }

    /// How long until the open period ends, when open.
    pub(crate) fn open_remaining(&self) -> Option<Duration> {
        let w = self.hot.word.load(Ordering::Acquire);
        (st_of(w) == CircuitState::Open).then(|| {
            let now = self.now();
            Duration::from_nanos(
                self.hot
                    .open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(now),
            )
        })
    }

    /// Turns a classified outcome into what it means to this breaker.
    #[inline]
    pub(crate) fn verdict(&self, outcome: &Outcome) -> Verdict {
        match outcome {
            Outcome::Success => Verdict::Success,
            Outcome::Failure(f) => self.failure_verdict(f),
        }
    }

    fn failure_verdict(&self, f: &Failure) -> Verdict {
        if self.cfg.cooldown {
            if let FailureKind::RateLimited {
                retry_after: Some(d),
            }
            | FailureKind::Overloaded {
                retry_after: Some(d),
            } = f.kind
            {
                if !d.is_zero() {
                    return Verdict::Cooldown(d.min(self.cfg.max_cooldown));
                }
            }
        }
        if self.cfg.policy.counts_for_breaker(f) {
            Verdict::Failure(f.kind)
        } else {
            Verdict::Ignored
        }
    }

    /// Records how a call ended. The common case (a success in Closed, no
    /// rule that needs the clock) is a load of the state word, a load of
    /// the failure streak and one step of the count window, whose cursor
    /// doubles as the success counter; everything else goes the long way.
    #[inline]
    pub(crate) fn record(&self, permit: Permit, verdict: Verdict) {
        if matches!(verdict, Verdict::Success) && !permit.probe && !self.hot.needs_clock {
            let w = self.hot.word.load(Ordering::Acquire);
            if gen_of(w) == permit.gen as u64
                && matches!(st_of(w), CircuitState::Closed | CircuitState::Disabled)
            {
                self.end_streak();
                // Without the clock there is no time window: a count window
                // or none.
                match &self.window {
                    Some(Window::Count(cw)) => cw.record(false, false),
                    _ => self.totals.successes.add(1),
                }
                return;
            }
        }
        self.record_other(permit, verdict);
    }

    #[inline(never)]
    fn record_other(&self, permit: Permit, verdict: Verdict) {
        let now = if self.hot.needs_clock || matches!(verdict, Verdict::Cooldown(_)) {
            self.now()
        } else {
            0
        };
        // An ignored outcome (the caller's own 4xx, our own refusal) says
        // nothing about the provider, however long it took.
        let slow = self.cfg.slow_call_rate.is_some()
            && !matches!(verdict, Verdict::Ignored)
            && now.saturating_sub(permit.start) >= self.cfg.slow_call_threshold.as_nanos() as u64;
        let by_cursor = if permit.probe {
            self.record_probe(permit, verdict, slow, now);
            false
        } else {
            self.record_closed(permit, verdict, slow, now)
        };
        match verdict {
            Verdict::Success if by_cursor => {}
            Verdict::Success => self.totals.successes.add(1),
            Verdict::Failure(_) | Verdict::Cooldown(_) => self.totals.failures.add(1),
            Verdict::Ignored => self.totals.ignored.add(1),
        };
        if by_cursor && !matches!(verdict, Verdict::Success) {
            self.totals.cursor_not_success.add(1);
        }
        if slow {
            self.totals.slow.add(1);
        }
    }

    /// A success ends the failure streak. Written only when there is one,
    /// so a run of successes leaves the streak's cache line shared.
    #[inline]
    fn end_streak(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Release);
        }
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

    /// Returns whether the call moved the count window's cursor.
    fn record_closed(&self, permit: Permit, verdict: Verdict, slow: bool, now: u64) -> bool {
        let w = self.hot.word.load(Ordering::Acquire);
        let state = st_of(w);
        if let Verdict::Cooldown(d) = verdict {
            match state {
                CircuitState::Closed | CircuitState::HalfOpen => {
                    self.transition(
                        w,
                        CircuitState::Open,
                        TransitionReason::Cooldown { retry_after: d },
                    );
                }
                CircuitState::Open => self.extend_open(w, now + d.as_nanos() as u64),
                _ => {}
            }
            return false;
        }
        if gen_of(w) != permit.gen as u64
            || !matches!(state, CircuitState::Closed | CircuitState::Disabled)
        {
            // Admitted under an earlier state: it says nothing about this one.
            return false;
        }
        let failed = matches!(verdict, Verdict::Failure(_));
        if matches!(verdict, Verdict::Ignored) {
            return false;
        }
        let consecutive = if failed {
            self.consecutive
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1)
        } else {
            self.end_streak();
            0
        };
        let by_cursor = match &self.window {
            Some(window) => {
                window.record(now, failed, slow);
                matches!(window, Window::Count(_))
            }
            None => false,
        };
        if state == CircuitState::Disabled || !(failed || slow) {
            // A success never trips the breaker; a disabled one never trips.
            return by_cursor;
        }
        if let Some(reason) = self.trip_reason(consecutive, now) {
            self.transition(w, CircuitState::Open, reason);
        }
        by_cursor
    }

    fn trip_reason(&self, consecutive: u32, now: u64) -> Option<TransitionReason> {
        if let Some(n) = self.cfg.consecutive_failures {
            if consecutive >= n {
                return Some(TransitionReason::ConsecutiveFailures {
                    count: consecutive,
                    threshold: n,
                });
            }
        }
        let window = self.window.as_ref()?;
        let c: Counts = window.counts(now);
        if c.calls < self.cfg.minimum_calls {
            return None;
        }
        if let Some(t) = self.cfg.failure_rate {
            if c.failure_rate() >= t {
                return Some(TransitionReason::FailureRate {
                    rate: c.failure_rate(),
                    threshold: t,
                    calls: c.calls,
                });
            }
        }
        if let Some(t) = self.cfg.slow_call_rate {
            if c.slow_rate() >= t {
                return Some(TransitionReason::SlowCallRate {
                    rate: c.slow_rate(),
                    threshold: t,
                    calls: c.calls,
                });
            }
        }
        None
    }

    fn record_probe(&self, permit: Permit, verdict: Verdict, slow: bool, now: u64) {
        if self.cfg.half_open_rule == HalfOpenRule::Rate {
            if let Verdict::Success | Verdict::Failure(_) = verdict {
                return self.record_rated_probe(permit, verdict, slow);
            }
        }
        let mut w = self.hot.word.load(Ordering::Acquire);
        loop {
            if gen_of(w) != permit.gen as u64 || st_of(w) != CircuitState::HalfOpen {
                // The half-open period this probe belonged to is over.
                if let (Verdict::Cooldown(d), CircuitState::Open) = (verdict, st_of(w)) {
                    self.extend_open(w, now + d.as_nanos() as u64);
                }
                return;
            }
            // A slow probe is a failed probe when the slow-call rule is on.
            let verdict = match verdict {
                Verdict::Success if slow => Verdict::Failure(FailureKind::Timeout),
                v => v,
            };
            match verdict {
                Verdict::Ignored => {
                    let next = w - (1 << PROBE_SHIFT);
                    match self.swap_word(w, next) {
                        Ok(()) => return,
                        Err(a) => w = a,
                    }
                }
                Verdict::Success => {
                    let succ = succ_of(w) + 1;
                    if succ >= self.cfg.half_open_successes {
                        if self.transition(
                            w,
                            CircuitState::Closed,
                            TransitionReason::ProbesSucceeded { successes: succ },
                        ) {
                            return;
                        }
                        w = self.hot.word.load(Ordering::Acquire);
                    } else {
                        let next = pack(CircuitState::HalfOpen, probes_of(w) - 1, succ, gen_of(w));
                        match self.swap_word(w, next) {
                            Ok(()) => return,
                            Err(a) => w = a,
                        }
                    }
                }
                Verdict::Failure(kind) => {
                    if self.transition(
                        w,
                        CircuitState::Open,
                        TransitionReason::ProbeFailed { kind },
                    ) {
                        return;
                    }
                    w = self.hot.word.load(Ordering::Acquire);
                }
                Verdict::Cooldown(d) => {
                    if self.transition(
                        w,
                        CircuitState::Open,
                        TransitionReason::Cooldown { retry_after: d },
                    ) {
                        return;
                    }
                    w = self.hot.word.load(Ordering::Acquire);
                }
            }
        }
    }

    /// A probe under [`HalfOpenRule::Rate`]: the word's success field counts
    /// finished probes (its probe field, admitted ones, is not given back),
    /// the tally counts failed and slow ones; the probe that finishes the
    /// set holds their rates against the thresholds.
    fn record_rated_probe(&self, permit: Permit, verdict: Verdict, slow: bool) {
        let failed = matches!(verdict, Verdict::Failure(_));
        if failed || slow {
            Tally::add(&self.tally, permit.gen, failed, slow);
        }
        let n = self.cfg.half_open_permitted;
        let mut w = self.hot.word.load(Ordering::Acquire);
        loop {
            if gen_of(w) != permit.gen as u64 || st_of(w) != CircuitState::HalfOpen {
                return;
            }
            let done = succ_of(w) + 1;
            if done < n {
                let next = pack(CircuitState::HalfOpen, probes_of(w), done, gen_of(w));
                match self.swap_word(w, next) {
                    Ok(()) => return,
                    Err(a) => w = a,
                }
                continue;
            }
            let (failures, slows) = Tally::counts(self.tally.load(Ordering::Acquire), permit.gen);
            let (to, reason) = self.judge_probes(failures, slows, n);
            if self.transition(w, to, reason) {
                return;
            }
            w = self.hot.word.load(Ordering::Acquire);
        }
    }

    /// The verdict on a finished set of `n` rated probes.
    fn judge_probes(&self, failures: u32, slows: u32, n: u32) -> (CircuitState, TransitionReason) {
        let calls = u64::from(n);
        let failure_rate = f64::from(failures) / f64::from(n);
        let slow_rate = f64::from(slows) / f64::from(n);
        if let Some(threshold) = self.cfg.failure_rate.filter(|t| failure_rate >= *t) {
            let reason = TransitionReason::FailureRate {
                rate: failure_rate,
                threshold,
                calls,
            };
            return (CircuitState::Open, reason);
        }
        if let Some(threshold) = self.cfg.slow_call_rate.filter(|t| slow_rate >= *t) {
            let reason = TransitionReason::SlowCallRate {
                rate: slow_rate,
                threshold,
                calls,
            };
            return (CircuitState::Open, reason);
        }
        let successes = n - failures;
        (
            CircuitState::Closed,
            TransitionReason::ProbesSucceeded { successes },
        )
    }

    /// Makes the transitions that are due by time alone and are otherwise
    /// left to the next call: half-open past its maximum wait re-opens. The
    /// handle calls this before it reports, so a breaker without traffic
    /// does not report a state it has already left.
    pub(crate) fn settle(&self) {
        let w = self.hot.word.load(Ordering::Acquire);
        let Some(max) = self.cfg.half_open_max_wait else {
            return;
        };
        if st_of(w) != CircuitState::HalfOpen {
            return;
        }
        let since = self.half_open_at.load(Ordering::Acquire);
        if self.now().saturating_sub(since) >= max.as_nanos() as u64 {
            self.transition(
                w,
                CircuitState::Open,
                TransitionReason::HalfOpenTimeout { waited: max },
            );
        }
    }

    /// A call's future was dropped before it finished: free its probe slot,
    /// count it as neither success nor failure.
    #[cold]
    #[inline(never)]
    pub(crate) fn abandon(&self, permit: Permit) {
        self.totals.abandoned.add(1);
        if !permit.probe {
            return;
        }
        let mut w = self.hot.word.load(Ordering::Acquire);
        while gen_of(w) == permit.gen as u64
            && st_of(w) == CircuitState::HalfOpen
            && probes_of(w) > 0
        {
            let next = w - (1 << PROBE_SHIFT);
            match self.swap_word(w, next) {
                Ok(()) => return,
                Err(a) => w = a,
            }
        }
    }

    /// Replaces the state word if it still is `current`; otherwise hands
    /// back what it is now. Used for the lock-free probe-count updates.
    fn swap_word(&self, current: u64, next: u64) -> Result<(), u64> {
        self.hot
            .word
            .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    fn extend_open(&self, w: u64, until: u64) {
        let _g = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        if self.hot.word.load(Ordering::Acquire) == w {
            self.hot.open_until.fetch_max(until, Ordering::AcqRel);
        }
    }

    /// The open period for the next trip: base × multiplier^streak, capped,
    /// then shortened by a random fraction of up to `open_jitter`.
    fn open_period(&self, rng: &mut SmallRng) -> Duration {
        let streak = self.streak.load(Ordering::Acquire);
        let cfg = &self.cfg;
        let grown =
            cfg.open_duration.as_secs_f64() * cfg.open_multiplier.powi(streak.min(1024) as i32);
        let capped = if grown.is_finite() {
            grown.min(cfg.max_open_duration.as_secs_f64())
        } else {
            cfg.max_open_duration.as_secs_f64()
        };
        let jitter = if cfg.open_jitter > 0.0 {
            1.0 - cfg.open_jitter * rng.random::<f64>()
        } else {
            1.0
        };
        Duration::from_secs_f64(capped * jitter)
    }

    /// Moves from the state in word `from` to `to`, if the word has not
    /// changed state or generation meanwhile. Returns whether it did.
    fn transition(&self, from: u64, to: CircuitState, reason: TransitionReason) -> bool {
        let mut g = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now();
        let mut w = self.hot.word.load(Ordering::Acquire);
        if gen_of(w) != gen_of(from) || st_of(w) != st_of(from) {
            return false;
        }
        let from_state = st_of(w);
        match to {
            CircuitState::Open => {
                let period = match reason {
                    TransitionReason::Cooldown { retry_after } => retry_after,
                    _ => {
                        let p = self.open_period(&mut g.rng);
                        self.streak.fetch_add(1, Ordering::AcqRel);
                        p
                    }
                };
                self.hot
                    .open_until
                    .store(now + period.as_nanos() as u64, Ordering::Release);
                self.totals.opened.fetch_add(1, Ordering::Relaxed);
            }
            CircuitState::HalfOpen => {
                self.half_open_at.store(now, Ordering::Release);
                self.tally
                    .store(Tally::start(gen_of(w) + 1), Ordering::Release);
            }
            // Disabled starts a clean record, as Resilience4j's
            // metrics-only state does: what it counts is its own.
            CircuitState::Closed | CircuitState::Disabled => self.clear_rules(),
            _ => {}
        }
        // Probe counts only live within one HalfOpen period; a new one
        // starts with none taken (the caller that moved it there takes a
        // slot like everyone else).
        let next = pack(to, 0, 0, gen_of(w) + 1);
        loop {
            match self.swap_word(w, next) {
                Ok(()) => break,
                // Only probe counts change without the lock; keep trying.
                Err(a) if gen_of(a) == gen_of(w) && st_of(a) == st_of(w) => w = a,
                Err(_) => return false,
            }
        }
        let at = self.instant(now);
        self.announce(StateChange {
            from: from_state,
            to,
            reason,
            at,
        });
        true
    }

    fn clear_rules(&self) {
        self.consecutive.store(0, Ordering::Release);
        self.streak.store(0, Ordering::Release);
        if let Some(w) = &self.window {
            w.reset();
        }
    }

    fn announce(&self, change: StateChange) {
        let provider = self
            .cfg
            .provider
            .as_ref()
            .map(|p| p.as_str())
            .unwrap_or("-");
        match change.to {
            CircuitState::Open | CircuitState::ForcedOpen => tracing::warn!(
                provider,
                from = %change.from,
                to = %change.to,
                reason = %change.reason,
                open_for = ?self.open_remaining(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                provider,
                from = %change.from,
                to = %change.to,
                reason = %change.reason,
                "circuit breaker state change"
            ),
        }
        self.changes.send_replace(change);
    }

    /// Operator action: move to `to` from whatever state, with `reason`.
    pub(crate) fn force(&self, to: CircuitState, reason: TransitionReason) {
        loop {
            let w = self.hot.word.load(Ordering::Acquire);
            if self.transition(w, to, reason) {
                return;
            }
        }
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
}

/// The failed and slow probes of one half-open period under
/// [`HalfOpenRule::Rate`], in one word: the period's generation (high 32
/// bits), failures (16 bits), slow calls (16 bits). A probe of another
/// generation adds nothing.
struct Tally;

impl Tally {
    const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;

    /// An empty tally for generation `gen`.
    fn start(gen: u64) -> u64 {
        (gen & Self::GEN_MASK) << 32
    }

    fn add(cell: &AtomicU64, gen: u32, failed: bool, slow: bool) {
        let delta = (u64::from(failed) << 16) | u64::from(slow);
        let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            ((t >> 32) == u64::from(gen)).then_some(t + delta)
        });
    }

    /// (failures, slow calls) if the tally is generation `gen`'s.
    fn counts(t: u64, gen: u32) -> (u32, u32) {
        if (t >> 32) != u64::from(gen) {
            return (0, 0);
        }
        (((t >> 16) & FIELD16) as u32, (t & FIELD16) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_packing_round_trips() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
            CircuitState::Disabled,
        ] {
            let w = pack(s, 65_000, 3, (1 << 29) - 1);
            assert_eq!(st_of(w), s);
            assert_eq!(probes_of(w), 65_000);
            assert_eq!(succ_of(w), 3);
            assert_eq!(gen_of(w), (1 << 29) - 1);
        }
        // the generation wraps instead of spilling
        assert_eq!(gen_of(pack(CircuitState::Closed, 0, 0, 1 << 29)), 0);
    }
}
