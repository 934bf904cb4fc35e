//! Recording: what a finished call means (its verdict), the closed
//! state's trip rules, and the half-open probes' judgement.

use super::*;

impl Core {
    /// Turns a classified outcome into what it means to this breaker.
    #[inline]
    pub(crate) fn verdict(&self, outcome: &Outcome) -> Verdict {
        match outcome {
            Outcome::Success => Verdict::Success,
            Outcome::Failure(f) => self.failure_verdict(f),
        }
    }

    pub(super) fn failure_verdict(&self, f: &Failure) -> Verdict {
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
    pub(super) fn record_other(&self, permit: Permit, verdict: Verdict) {
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
    pub(super) fn end_streak(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Release);
        }
    }

    /// Returns whether the call moved the count window's cursor.
    pub(super) fn record_closed(
        &self,
        permit: Permit,
        verdict: Verdict,
        slow: bool,
        now: u64,
    ) -> bool {
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
                CircuitState::Open => {
                    self.extend_open(w, now + d.as_nanos() as u64);
                }
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

    pub(super) fn trip_reason(&self, consecutive: u32, now: u64) -> Option<TransitionReason> {
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
        self.rate_reason(&c)
    }

    /// The rate rule `c` breaks, if any: the failure rate, then the
    /// slow-call rate, each at or above its threshold. The closed state's
    /// window and a finished set of rated probes are both judged by it.
    fn rate_reason(&self, c: &Counts) -> Option<TransitionReason> {
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

    pub(super) fn record_probe(&self, permit: Permit, verdict: Verdict, slow: bool, now: u64) {
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
    pub(super) fn record_rated_probe(&self, permit: Permit, verdict: Verdict, slow: bool) {
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
    pub(super) fn judge_probes(
        &self,
        failures: u32,
        slows: u32,
        n: u32,
    ) -> (CircuitState, TransitionReason) {
        let probes = Counts {
            calls: u64::from(n),
            failures: u64::from(failures),
            slow: u64::from(slows),
        };
        if let Some(reason) = self.rate_reason(&probes) {
            return (CircuitState::Open, reason);
        }
        let successes = n - failures;
        (
            CircuitState::Closed,
            TransitionReason::ProbesSucceeded { successes },
        )
    }
}
