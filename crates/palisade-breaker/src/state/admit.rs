//! Admission: letting a call through, refusing it, and what the breaker
//! tells a caller before it calls (readiness, refusing, time left).

use super::*;

thread_local! {
    /// The open deadline this thread last refused a call for: (breaker id,
    /// the deadline in nanoseconds since the breaker's base, the same as an
    /// instant). See [`Core::open_until_instant`].
    static OPEN_UNTIL: Cell<(u64, u64, Option<Instant>)> = const { Cell::new((u64::MAX, 0, None)) };
}

impl Core {
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
    pub(super) fn closed_permit(&self, w: u64) -> Permit {
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
    pub(super) fn open_until_instant(&self) -> Instant {
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

    #[inline]
    pub(super) fn refuse(
        &self,
        state: CircuitState,
        until: Option<Instant>,
        detail: Detail,
    ) -> Refusal {
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
}
