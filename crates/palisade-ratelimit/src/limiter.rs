//! The shared state of one limiter: its quotas, what the provider said,
//! and its counters; admission is all-or-nothing across them.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use palisade_core::{ProviderId, RateInfo, StripedCounter};
use tokio::time::Instant;

use crate::epoch::Epoch;
use crate::flight::Flight;
use crate::gcra::{PaddedCell, Quotas};
use crate::pacing::Window;
use crate::pool::{Draw, Pool};
use crate::quota::Quota;

/// How a request with no room is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Refuse at once with [`Rejected`](palisade_core::Rejected)
    /// (`RateLimited`, with the time until there will be room). The
    /// default.
    #[default]
    Reject,
    /// Wait for room, in arrival order, up to this long and never past
    /// the request's deadline: a request whose room comes later is
    /// refused at once instead of sleeping. Under a bulkhead, put the
    /// limiter's [`pacer`](crate::RateLimitLayer::pacer) outside it, so a
    /// waiting request holds no slot.
    Wait(Duration),
    /// Not ready while there is no room: `poll_ready` is pending until a
    /// request would have room, and wakes the task then. For balancers,
    /// which call a ready service and skip the others. A call that finds
    /// no room anyway (another clone took it after `poll_ready`) is
    /// refused as in [`Reject`](Mode::Reject).
    Ready,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) provider: Option<ProviderId>,
    pub(crate) quotas: Quotas,
    /// One GCRA cell per quota.
    pub(crate) tats: Box<[PaddedCell]>,
    pub(crate) requests: Window,
    pub(crate) tokens: Window,
    pub(crate) follow_headers: bool,
    pub(crate) mode: Mode,
    /// Whether threads have raced for the cells (see `Rate::take`): read
    /// on every admission, beside the other fields it reads, written once.
    contended: AtomicBool,
    /// Quota shared with other processes, once given (see [`Pool`]).
    pub(crate) pool: OnceLock<Arc<dyn Pool>>,
    /// Whether responses have anything to tell (see `reads_responses`).
    reads: bool,
    epoch: Epoch,
    pub(crate) admitted: StripedCounter,
    pub(crate) refused: StripedCounter,
    pub(crate) waited: StripedCounter,
    /// Calls sent and answered, while responses are read.
    flight: Flight,
}

/// What to do with a call, given what [`Shared::acquire`] answered. Two
/// words: returned in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send it now; its room was taken at this share (see [`Taken`]).
    Now(u32),
    /// Its quota is reserved at this share: send it after this many
    /// nanoseconds.
    Reserved(u64, u32),
    /// The provider's window is closed for this many nanoseconds, within
    /// the call's wait: ask again then (a window holds no reservation).
    Retry(u64),
    /// Refuse it: room comes only after this many nanoseconds, later than
    /// the call may wait.
    Refused(u64),
}

/// What one admission took, to give back if the call is never sent, and to
/// correct once its usage is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    pub(crate) tokens: u64,
    /// Where it was taken: 0 from the pool, otherwise from this limiter's
    /// own cells at this share (1: the whole quota).
    pub(crate) share: u32,
    /// When following headers: the calls and tokens sent up to and
    /// including this one, so that what was sent after it (which its
    /// response's headers may not count) is known when it settles.
    pub(crate) mark: (u64, u64),
}

impl Taken {
    /// Room for `tokens` taken at `share`, not yet marked among the calls
    /// sent.
    #[inline(always)]
    pub(crate) fn new(tokens: u64, share: u32) -> Self {
        Taken {
            tokens,
            share,
            mark: (0, 0),
        }
    }
}

impl Shared {
    pub(crate) fn new(
        provider: Option<ProviderId>,
        quotas: Vec<Quota>,
        follow_headers: bool,
        mode: Mode,
    ) -> Arc<Self> {
        let tats = quotas.iter().map(|_| PaddedCell::default()).collect();
        let quotas = Quotas::new(quotas);
        let reads = follow_headers || quotas.counts_tokens();
        Arc::new(Shared {
            provider,
            tats,
            quotas,
            requests: Window::default(),
            tokens: Window::default(),
            follow_headers,
            mode,
            contended: AtomicBool::new(false),
            pool: OnceLock::new(),
            reads,
            epoch: Epoch::new(),
            admitted: StripedCounter::default(),
            refused: StripedCounter::default(),
            waited: StripedCounter::default(),
            flight: Flight::default(),
        })
    }

    /// Nanoseconds since the limiter was built, on tokio's clock.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.epoch.now()
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch.instant(nanos)
    }

    /// Admits a request of `tokens` at `now` if every quota has room
    /// within `max_wait` (a reservation: the call may go after `wait`) and
    /// the provider's windows have room now: `Ok((wait, share))` with
    /// everything taken, or `Err(wait)` (how long until there would be
    /// room) with nothing taken. With a pool, the quotas are the pool's
    /// (which holds no reservations: share 0), or this limiter's own cut to
    /// its share while the pool is alone (see [`Taken::share`]). Inlined
    /// into [`decide`](Self::decide), its only caller.
    #[inline(always)]
    pub(crate) fn acquire(&self, tokens: u64, now: u64, max_wait: u64) -> Result<(u64, u32), u64> {
        let share = match self.pool.get().map(|p| p.take(tokens)) {
            None => 1,
            Some(Draw::Taken) => 0,
            Some(Draw::Empty(w)) => return Err(nanos(w)),
            Some(Draw::Alone { share }) => share.max(1),
        };
        let wait = if share == 0 {
            0
        } else {
            self.quotas.take(
                &self.tats,
                Some(&self.contended),
                tokens,
                u64::from(share),
                now,
                max_wait,
            )?
        };
        if self.follow_headers {
            let windows = self.requests.take(1, now).and_then(|()| {
                self.tokens.take(tokens, now).inspect_err(|_| {
                    self.requests.give_back(1, now);
                })
            });
            if let Err(w) = windows {
                // The provider's window holds no reservations: the caller
                // may wait for its reset and ask again.
                self.give_back_quotas(Taken::new(tokens, share));
                return Err(w);
            }
        }
        Ok((wait, share))
    }

    /// Decides a call of `tokens` at `now` that may wait `limit`
    /// nanoseconds, taking what a send or a reservation needs, and
    /// counting a refusal. Inlined into its few callers (the layer's
    /// admission, the direct check, the waiting paths).
    #[inline(always)]
    pub(crate) fn decide(&self, tokens: u64, now: u64, limit: u64) -> Decision {
        match self.acquire(tokens, now, limit) {
            Ok((0, share)) => Decision::Now(share),
            Ok((wait, share)) => Decision::Reserved(wait, share),
            Err(wait) if wait <= limit => Decision::Retry(wait),
            Err(wait) => {
                self.refused.add(1);
                Decision::Refused(wait)
            }
        }
    }

    /// Decides a call of `tokens` now that may not wait (the layer's
    /// common path). Out of line, its answer in two registers.
    #[inline(never)]
    pub(crate) fn admit(&self, tokens: u64) -> Decision {
        self.decide(tokens, self.now(), 0)
    }

    /// The direct check ([`RateLimitHandle::try_acquire`]): `Err` holds
    /// the nanoseconds until there would be room. Out of line, its answer
    /// in two registers: a caller's code stays small around it.
    ///
    /// [`RateLimitHandle::try_acquire`]: crate::RateLimitHandle::try_acquire
    #[inline(never)]
    pub(crate) fn try_acquire(&self, tokens: u64) -> Result<(), u64> {
        let now = self.now();
        match self.decide(tokens, now, 0) {
            Decision::Now(share) => {
                let mut taken = Taken::new(tokens, share);
                self.sent(&mut taken);
                if self.reads_responses() {
                    self.settle(taken, None, None);
                }
                Ok(())
            }
            Decision::Refused(wait) | Decision::Retry(wait) => Err(wait),
            // Not with no wait allowed; were it so, nothing is kept.
            Decision::Reserved(wait, share) => {
                let taken = Taken::new(tokens, share);
                self.release(taken, now);
                Err(wait)
            }
        }
    }

    fn give_back_quotas(&self, taken: Taken) {
        match (taken.share, self.pool.get()) {
            (0, Some(pool)) => pool.give_back(taken.tokens),
            (0, None) => {}
            (share, _) => self
                .quotas
                .give_back(&self.tats, taken.tokens, u64::from(share)),
        }
    }

    /// Gives back an admission whose call was never sent.
    pub(crate) fn release(&self, taken: Taken, now: u64) {
        self.give_back_quotas(taken);
        if self.follow_headers {
            self.requests.give_back(1, now);
            self.tokens.give_back(taken.tokens, now);
        }
    }

    /// How long a request of `tokens` would wait now, taking nothing.
    pub(crate) fn wait(&self, tokens: u64, now: u64) -> u64 {
        let mut wait = match self.pool.get().map(|p| p.peek(tokens)) {
            None => self.quotas.wait(&self.tats, tokens, 1, now),
            Some(Draw::Taken) => 0,
            Some(Draw::Empty(w)) => nanos(w),
            Some(Draw::Alone { share }) => {
                self.quotas
                    .wait(&self.tats, tokens, u64::from(share.max(1)), now)
            }
        };
        if self.follow_headers {
            wait = wait
                .max(self.requests.wait(1, now))
                .max(self.tokens.wait(tokens, now));
        }
        wait
    }

    /// Whether responses have anything to tell: the provider's headers, or
    /// usage to correct token quotas by. When they have not, a sent call
    /// owes the limiter nothing and its future holds no reference to it.
    #[inline]
    pub(crate) fn reads_responses(&self) -> bool {
        self.reads
    }

    /// Counts a call of `taken` as sent (in flight until settled, while
    /// responses are read), and marks where it stands among the calls
    /// sent.
    #[inline(always)]
    pub(crate) fn sent(&self, taken: &mut Taken) {
        self.admitted.add(1);
        if self.reads {
            taken.mark = self.flight.send(taken.tokens);
        }
    }

    /// Calls (and tokens) sent and not yet answered (counted only while
    /// responses are read).
    pub(crate) fn in_flight(&self) -> (u64, u64) {
        self.flight.in_flight()
    }

    /// A response arrived for a call that took `taken`: correct the token
    /// estimate by the usage it reports, and learn the provider's windows.
    pub(crate) fn settle(&self, taken: Taken, info: Option<&RateInfo>, cooldown: Option<Duration>) {
        self.flight.done(taken.tokens);
        let info = info.filter(|i| !i.is_empty());
        if info.is_none() && cooldown.is_none() {
            // Nothing to learn: no clock read, no shared write.
            return;
        }
        let now = self.now();
        if let Some(used) = info.and_then(|i| i.used_tokens) {
            self.correct_at(taken, used, now);
        }
        if !self.follow_headers {
            return;
        }
        // What the provider's count may not include yet: every call still
        // in flight, and every call sent after this one (answered or not:
        // its answer may have overtaken this one). Counting some twice
        // errs on the side of sending less.
        let sent = self.flight.sent();
        let (calls_sent, tokens_sent) = sent;
        let (calls_out, tokens_out) = crate::flight::out(sent, self.flight.answered());
        let calls = calls_out.saturating_add(calls_sent.saturating_sub(taken.mark.0));
        let tokens = tokens_out.saturating_add(tokens_sent.saturating_sub(taken.mark.1));
        if let Some(info) = info {
            if let Some(w) = &info.requests {
                self.requests.learn(w, now, calls);
                if w.remaining <= calls {
                    if let Some(pool) = self.pool.get() {
                        pool.exhausted(w.reset);
                    }
                    // At info, as every resilience event: a storm of them
                    // (every answer while the window is spent) is the log's
                    // to summarise.
                    tracing::info!(
                        provider = self.provider.as_ref().map(|p| p.as_str()),
                        remaining = w.remaining,
                        reset_ms = w.reset.as_millis() as u64,
                        "rate limit: the provider has no requests left; pacing to its reset"
                    );
                }
            }
            if let Some(w) = &info.tokens {
                self.tokens.learn(w, now, tokens);
            }
        }
        if let Some(d) = cooldown {
            tracing::info!(
                provider = self.provider.as_ref().map(|p| p.as_str()),
                wait_ms = d.as_millis() as u64,
                "rate limit: the provider refused with Retry-After; nothing is sent before then"
            );
            if let Some(pool) = self.pool.get() {
                pool.exhausted(d);
            }
            self.requests.block(nanos(d), now);
        }
    }
}

impl Shared {
    /// Corrects what `taken` charged for tokens by the `used` the answer
    /// reported: the difference charged, or given back. For a stream, when
    /// it ends ([`UsageLater`](palisade_core::UsageLater)).
    pub(crate) fn correct(&self, taken: Taken, used: u64) {
        self.correct_at(taken, used, self.now());
    }

    fn correct_at(&self, taken: Taken, used: u64, now: u64) {
        if let (0, Some(pool)) = (taken.share, self.pool.get()) {
            pool.correct(taken.tokens, used);
        } else {
            let share = u64::from(taken.share.max(1));
            self.quotas
                .correct(&self.tats, taken.tokens, used, share, now);
        }
    }
}

/// A duration in nanoseconds, saturating.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}
