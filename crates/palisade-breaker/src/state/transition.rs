//! Transitions: moving the state word under the transition lock, the open
//! period, operator actions, announcements, and transitions due by time.

use super::*;

impl Core {
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

    /// Replaces the state word if it still is `current`; otherwise hands
    /// back what it is now. Used for the lock-free probe-count updates.
    pub(super) fn swap_word(&self, current: u64, next: u64) -> Result<(), u64> {
        self.hot
            .word
            .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    /// Moves the end of the open period in word `w` to `until` if that is
    /// later and the word is still `w`; returns whether the word was.
    pub(super) fn extend_open(&self, w: u64, until: u64) -> bool {
        let _g = self.guarded.lock().unwrap_or_else(|e| e.into_inner());
        if self.hot.word.load(Ordering::Acquire) == w {
            self.hot.open_until.fetch_max(until, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Another breaker for the same provider opened for `d`: open until
    /// then (at least), unless forced open or disabled.
    pub(crate) fn follow_open(&self, d: Duration) -> bool {
        let nanos = d.as_nanos().min(u64::MAX as u128 / 2) as u64;
        loop {
            let w = self.hot.word.load(Ordering::Acquire);
            let moved = match st_of(w) {
                CircuitState::ForcedOpen | CircuitState::Disabled => return false,
                CircuitState::Open => self.extend_open(w, self.now().saturating_add(nanos)),
                CircuitState::Closed | CircuitState::HalfOpen => self.transition(
                    w,
                    CircuitState::Open,
                    TransitionReason::Peer { retry_after: d },
                ),
            };
            if moved {
                return true;
            }
        }
    }

    /// Health checks passed `successes` times in a row: from open, probe now.
    pub(crate) fn checks_passed(&self, successes: u32) -> bool {
        self.move_from(
            CircuitState::Open,
            CircuitState::HalfOpen,
            TransitionReason::ChecksPassed { successes },
        )
    }

    /// Health checks failed `failures` times in a row: from closed, trip.
    pub(crate) fn checks_failed(&self, failures: u32) -> bool {
        self.move_from(
            CircuitState::Closed,
            CircuitState::Open,
            TransitionReason::ChecksFailed { failures },
        )
    }

    /// Moves from `from` to `to` if the breaker is in `from`.
    fn move_from(&self, from: CircuitState, to: CircuitState, reason: TransitionReason) -> bool {
        loop {
            let w = self.hot.word.load(Ordering::Acquire);
            if st_of(w) != from {
                return false;
            }
            if self.transition(w, to, reason) {
                return true;
            }
        }
    }

    /// Another breaker for the same provider closed after its probes: close
    /// too, from open or half-open.
    pub(crate) fn follow_close(&self) -> bool {
        loop {
            let w = self.hot.word.load(Ordering::Acquire);
            if !matches!(st_of(w), CircuitState::Open | CircuitState::HalfOpen) {
                return false;
            }
            if self.transition(w, CircuitState::Closed, TransitionReason::PeerClosed) {
                return true;
            }
        }
    }

    /// The open period for the next trip: base × multiplier^streak, capped,
    /// then shortened by a random fraction of up to `open_jitter`.
    pub(super) fn open_period(&self, rng: &mut SmallRng) -> Duration {
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
    pub(super) fn transition(&self, from: u64, to: CircuitState, reason: TransitionReason) -> bool {
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
                    TransitionReason::Cooldown { retry_after }
                    | TransitionReason::Peer { retry_after } => retry_after,
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

    pub(super) fn clear_rules(&self) {
        self.consecutive.store(0, Ordering::Release);
        self.streak.store(0, Ordering::Release);
        if let Some(w) = &self.window {
            w.reset();
        }
    }

    pub(super) fn announce(&self, change: StateChange) {
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
}
