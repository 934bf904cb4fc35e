//! The fallback chain's response future: the walk along the tiers, and
//! the race when a call is hedged.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_balance::InFlight;
use palisade_core::{BoxError, Classify, FailureKind, HasDeadline, Outcome, RequestMarks};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::degrade::Degrade;
use crate::error::{AllFailed, AttemptOutcome, ProviderAttempt};
use crate::service::Chain;
use crate::tier::{Pickable, Tier};

/// Which providers the next failure may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Any,
    LargeContext,
    ContentFilter,
}

/// A hedge in flight: its future (boxed: hedges are the rare path), its
/// provider, its span and its count in the provider's load.
struct Racer<F> {
    fut: Pin<Box<F>>,
    idx: usize,
    span: tracing::Span,
    call: Option<InFlight>,
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Pick,
        Readying { svc: S, req: Option<Req>, idx: usize },
        Calling {
            #[pin]
            fut: Option<S::Future>,
            idx: usize,
            span: tracing::Span,
            call: Option<InFlight>,
        },
    }
}

/// A refusal kept to answer with: the provider, the attempts before it,
/// the answer.
type Kept<Res> = Option<Box<(usize, usize, Res)>>;

pin_project! {
    /// The response future of [`Fallback`](crate::Fallback): picks the next
    /// eligible provider (balanced within its tier), readies it, calls it,
    /// hedges it to another provider of the tier when it is late, and
    /// moves on when a failure says so.
    pub struct ResponseFuture<S: Service<Req>, Req, C, D> {
        chain: Arc<Chain<S, Req, C, D>>,
        // The caller's request, copied for each call; given whole to the
        // call when the chain has one provider (no other call can follow
        // it: a copy, and its reference counts, would be for nothing).
        req: Option<Req>,
        tier: usize,
        tried: u64,
        route: Route,
        // The failure that sent us on, for the event naming from, to, why.
        moving_on: Option<(usize, FailureKind)>,
        attempts: Vec<ProviderAttempt>,
        // A provider's answer refusing the request for its context length
        // or content (the provider, the attempts before it, the answer):
        // returned as it is if no provider marked for that failure is left
        // to call.
        // Boxed, as the hedge's parts below: rare, and the future is moved
        // whole several times on its way to being polled.
        kept: Kept<S::Response>,
        hedgeable: bool,
        // A stream's call is timed to its first token.
        streaming: bool,
        // The one target the request may go to (`RequestMarks::pinned`).
        pinned: Option<usize>,
        sent: u32,
        delay: Duration,
        racers: Vec<Racer<S::Future>>,
        hedging: Option<Box<(S, Option<Req>, usize)>>,
        timer: Option<Pin<Box<Sleep>>>,
        #[pin]
        state: State<S, Req>,
    }
}

impl<S: Service<Req>, Req: RequestMarks, C, D> ResponseFuture<S, Req, C, D> {
    pub(crate) fn new(chain: Arc<Chain<S, Req, C, D>>, req: Req) -> Self {
        // A pinned request has one provider: nothing to hedge it to.
        let pinned = req
            .pinned()
            .and_then(|p| chain.targets.iter().position(|t| &t.id == p));
        let hedgeable = pinned.is_none() && chain.hedge.as_ref().is_some_and(|h| h.admits(&req));
        let streaming = req.streaming();
        ResponseFuture {
            chain,
            req: Some(req),
            tier: 0,
            tried: 0,
            route: Route::Any,
            moving_on: None,
            attempts: Vec::new(),
            kept: None,
            hedgeable,
            streaming,
            pinned,
            sent: 0,
            delay: Duration::ZERO,
            racers: Vec::new(),
            hedging: None,
            timer: None,
            state: State::Pick,
        }
    }
}

impl<S: Service<Req>, Req, C, D> fmt::Debug for ResponseFuture<S, Req, C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tier", &self.tier)
            .field("attempts", &self.attempts)
            .field("hedges", &self.sent)
            .finish()
    }
}

/// What one answer means for the walk.
enum Next<T> {
    Done(T),
    MoveOn,
}

impl<S, Req, C, D> Future for ResponseFuture<S, Req, C, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    D: Degrade<S::Response>,
    Req: Clone + HasDeadline,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let chain = &**this.chain;
        loop {
            match this.state.as_mut().project() {
                StateProj::Pick => {
                    let picked = pick(
                        chain,
                        this.req.as_ref(),
                        this.tier,
                        this.tried,
                        (*this.route, *this.streaming, *this.pinned),
                        this.attempts,
                    );
                    // (A request given whole went to the only provider,
                    // which is never picked twice.)
                    let picked = picked
                        .and_then(|idx| request_for(chain, this.req, idx).map(|req| (idx, req)));
                    let Some((idx, req)) = picked else {
                        if let Some(kept) = this.kept.take() {
                            let (idx, before, res) = *kept;
                            // No provider marked for it was left to call:
                            // the provider's own refusal is the answer (the
                            // caller's prompt is too long, say).
                            let mut result = Ok(res);
                            record(chain, (idx, false), before, &mut result);
                            return Poll::Ready(result);
                        }
                        let all = AllFailed {
                            attempts: std::mem::take(this.attempts),
                        };
                        tracing::warn!(error = %all, "no provider answered");
                        return Poll::Ready(match chain.degrade.degrade(&all) {
                            Some(res) => Ok(res),
                            None => Err(all.into()),
                        });
                    };
                    let target = &chain.targets[idx];
                    if let Some((from, why)) = this.moving_on.take() {
                        tracing::info!(
                            from = %chain.targets[from].id,
                            to = %target.id,
                            why = %why,
                            "falling back"
                        );
                    }
                    this.state.set(State::Readying {
                        svc: target.svc.clone(),
                        req: Some(req),
                        idx,
                    });
                }
                StateProj::Readying { svc, req, idx } => {
                    let idx = *idx;
                    match svc.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {
                            let req = req.take().expect("readied once");
                            let tier = &chain.tiers[*this.tier];
                            let (fut, span, call) =
                                start(chain, tier, svc, req, idx, *this.streaming);
                            if *this.hedgeable && this.timer.is_none() {
                                arm(
                                    chain,
                                    tier,
                                    (idx, *this.streaming),
                                    *this.sent,
                                    this.delay,
                                    this.timer,
                                );
                            }
                            this.state.set(State::Calling {
                                fut: Some(fut),
                                idx,
                                span,
                                call,
                            });
                        }
                        Poll::Ready(Err(e)) => {
                            this.attempts.push(ProviderAttempt {
                                provider: chain.targets[idx].id.clone(),
                                outcome: AttemptOutcome::Error(e.into()),
                            });
                            *this.moving_on = Some((idx, FailureKind::Other));
                            this.state.set(State::Pick);
                        }
                    }
                }
                StateProj::Calling {
                    mut fut,
                    idx,
                    span,
                    call,
                } => {
                    // The call the walk made.
                    if let Some(f) = fut.as_mut().as_pin_mut() {
                        let polled = {
                            let _in = span.enter();
                            f.poll(cx)
                        };
                        if let Poll::Ready(result) = polled {
                            fut.set(None);
                            let left = this.racers.len();
                            match answer(
                                chain,
                                (*idx, false),
                                call.take(),
                                result,
                                (this.route, this.kept),
                                this.attempts,
                                this.moving_on,
                            ) {
                                Next::Done(result) => {
                                    if *this.sent > 0 {
                                        chain
                                            .hedge
                                            .as_ref()
                                            .expect("hedged")
                                            .settled(false, left as u32);
                                    }
                                    return Poll::Ready(result);
                                }
                                Next::MoveOn => {}
                            }
                        }
                    }
                    // The hedges.
                    let mut i = 0;
                    while i < this.racers.len() {
                        let r = &mut this.racers[i];
                        let polled = {
                            let _in = r.span.enter();
                            r.fut.as_mut().poll(cx)
                        };
                        let Poll::Ready(result) = polled else {
                            i += 1;
                            continue;
                        };
                        let r = this.racers.swap_remove(i);
                        match answer(
                            chain,
                            (r.idx, true),
                            r.call,
                            result,
                            (this.route, this.kept),
                            this.attempts,
                            this.moving_on,
                        ) {
                            Next::Done(result) => {
                                let left = this.racers.len() + usize::from(fut.is_some());
                                let won = result.is_ok();
                                chain
                                    .hedge
                                    .as_ref()
                                    .expect("hedged")
                                    .settled(won, left as u32);
                                if won {
                                    tracing::debug!(provider = %chain.targets[r.idx].id, "a hedge answered first");
                                }
                                return Poll::Ready(result);
                            }
                            Next::MoveOn => {}
                        }
                    }
                    // Time for a hedge?
                    let mut started = false;
                    if let Some(timer) = this.timer.as_mut() {
                        if timer.as_mut().poll(cx).is_ready() {
                            *this.timer = None;
                            let policy = chain.hedge.as_ref().expect("armed only when hedging");
                            let tier = &chain.tiers[*this.tier];
                            // A hedge needs two providers: the request was
                            // kept.
                            let expired = this
                                .req
                                .as_ref()
                                .is_none_or(|r| r.deadline().is_some_and(|d| d.is_expired()));
                            if !expired && this.hedging.is_none() && policy.try_spend() {
                                if let Some(j) = pick_in_tier(
                                    chain,
                                    tier,
                                    this.tried,
                                    (*this.route, *this.streaming, *this.pinned),
                                ) {
                                    *this.sent += 1;
                                    policy.sent();
                                    tracing::debug!(
                                        from = %chain.targets[*idx].id,
                                        to = %chain.targets[j].id,
                                        after_ms = this.delay.as_millis() as u64,
                                        "hedging"
                                    );
                                    *this.hedging = Some(Box::new((
                                        chain.targets[j].svc.clone(),
                                        request_for(chain, this.req, j),
                                        j,
                                    )));
                                    arm(
                                        chain,
                                        tier,
                                        (*idx, *this.streaming),
                                        *this.sent,
                                        this.delay,
                                        this.timer,
                                    );
                                }
                            }
                        }
                    }
                    if let Some(hedging) = this.hedging.as_mut() {
                        let (svc, req, j) = &mut **hedging;
                        let j = *j;
                        match svc.poll_ready(cx) {
                            Poll::Pending => {}
                            Poll::Ready(Ok(())) => {
                                let req = req.take().expect("readied once");
                                let tier = &chain.tiers[*this.tier];
                                let (f, span, call) =
                                    start(chain, tier, svc, req, j, *this.streaming);
                                this.racers.push(Racer {
                                    fut: Box::pin(f),
                                    idx: j,
                                    span,
                                    call,
                                });
                                *this.hedging = None;
                                started = true;
                            }
                            Poll::Ready(Err(e)) => {
                                this.attempts.push(ProviderAttempt {
                                    provider: chain.targets[j].id.clone(),
                                    outcome: AttemptOutcome::Error(e.into()),
                                });
                                *this.hedging = None;
                            }
                        }
                    }
                    if started {
                        continue;
                    }
                    if fut.is_none() && this.racers.is_empty() && this.hedging.is_none() {
                        // Every call in flight failed: on with the walk.
                        *this.timer = None;
                        this.state.set(State::Pick);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The request as provider `idx` gets it: a copy, or with one provider in
/// the chain the request itself (`None` once given).
fn request_for<S, Req: Clone, C, D>(
    chain: &Chain<S, Req, C, D>,
    req: &mut Option<Req>,
    idx: usize,
) -> Option<Req> {
    let mut req = if chain.targets.len() == 1 {
        req.take()?
    } else {
        req.as_ref()?.clone()
    };
    if let Some(rewrite) = &chain.targets[idx].rewrite {
        rewrite(&mut req);
    }
    Some(req)
}

/// Calls provider `idx` of `tier` (readied) in its span, counted in its
/// load when the tier is balanced.
fn start<S: Service<Req>, Req, C, D>(
    chain: &Chain<S, Req, C, D>,
    tier: &Tier,
    svc: &mut S,
    req: Req,
    idx: usize,
    streaming: bool,
) -> (S::Future, tracing::Span, Option<InFlight>) {
    // One clock read for the call and every layer it reaches
    // synchronously (a retry budget's deposit, an attempt's timer, the
    // time left told upstream): see `palisade_core::clock`.
    let (_, _reading) = palisade_core::clock::SharedReading::enter();
    let target = &chain.targets[idx];
    let call = tier
        .counted
        .then(|| target.load.start_for(streaming, tier.timed));
    // Events of the layers below carry the provider.
    let span = tracing::info_span!("provider", provider = %target.id);
    let fut = {
        let _in = span.enter();
        svc.call(req)
    };
    (fut, span, call)
}

/// Arms the hedge timer for a call to `idx` of `tier` (a stream's when
/// `streaming`), if the tier has another provider, hedges are left, and the
/// delay is known.
fn arm<S, Req, C, D>(
    chain: &Chain<S, Req, C, D>,
    tier: &Tier,
    (idx, streaming): (usize, bool),
    sent: u32,
    delay: &mut Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
) {
    let Some(policy) = &chain.hedge else { return };
    if sent >= policy.max_hedges() || tier.len() < 2 {
        return;
    }
    let window = chain.targets[idx].window_for(streaming);
    let Some(d) = window.and_then(|w| policy.delay().for_window(w)) else {
        return;
    };
    *delay = d;
    let at = Instant::now() + d;
    match timer {
        Some(t) => t.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// Classifies provider `idx`'s answer: the caller's (a success, or a
/// failure no other provider would fix) or a reason to move on.
fn answer<S, Req, C, D, Res, E>(
    chain: &Chain<S, Req, C, D>,
    (idx, hedged): (usize, bool),
    call: Option<InFlight>,
    result: Result<Res, E>,
    (route, kept): (&mut Route, &mut Kept<Res>),
    attempts: &mut Vec<ProviderAttempt>,
    moving_on: &mut Option<(usize, FailureKind)>,
) -> Next<Result<Res, BoxError>>
where
    C: Classify<Res, BoxError>,
    E: Into<BoxError>,
{
    let mut result = result.map_err(Into::into);
    // A provider was called after the kept refusal: its answer supersedes.
    *kept = None;
    let outcome = chain.classifier.classify(result.as_ref());
    if let Some(call) = call {
        if outcome.is_success() {
            let window = chain.targets[idx].window_for(call.streaming());
            if let (Some(w), Some(at)) = (window, call.started()) {
                w.record(at.elapsed());
            }
        }
        call.finish(outcome.is_success());
    }
    let failure = match outcome {
        Outcome::Success => {
            record(chain, (idx, hedged), attempts.len(), &mut result);
            return Next::Done(result);
        }
        Outcome::Failure(f) => f,
    };
    if !chain.policy.falls_back(&failure) {
        // The caller's own fault: another provider would refuse it too.
        record(chain, (idx, hedged), attempts.len(), &mut result);
        return Next::Done(result);
    }
    match failure.kind {
        FailureKind::ContextLengthExceeded => *route = Route::LargeContext,
        FailureKind::ContentFiltered => *route = Route::ContentFilter,
        _ => {}
    }
    let outcome = match result {
        Ok(res) => {
            if matches!(
                failure.kind,
                FailureKind::ContextLengthExceeded | FailureKind::ContentFiltered
            ) {
                *kept = Some(Box::new((idx, attempts.len(), res)));
            }
            AttemptOutcome::Failed(failure.kind)
        }
        Err(e) => AttemptOutcome::Error(e),
    };
    attempts.push(ProviderAttempt {
        provider: chain.targets[idx].id.clone(),
        outcome,
    });
    *moving_on = Some((idx, failure.kind));
    Next::MoveOn
}

/// Writes who answered, after how many providers, on the answer's
/// [`Served`](palisade_core::Served) record (when its type carries one).
fn record<S, Req, C, D, Res>(
    chain: &Chain<S, Req, C, D>,
    (idx, hedged): (usize, bool),
    before: usize,
    result: &mut Result<Res, BoxError>,
) where
    C: Classify<Res, BoxError>,
{
    if let Ok(res) = result {
        if let Some(served) = chain.classifier.served(res) {
            served.provider = Some(chain.targets[idx].id.clone());
            served.fallbacks = u32::try_from(before).unwrap_or(u32::MAX);
            served.hedged = hedged;
        }
    }
}

fn suited<S, Req>(t: &crate::Target<S, Req>, route: Route) -> bool {
    match route {
        Route::Any => true,
        Route::LargeContext => t.large_context,
        Route::ContentFilter => t.content_filter,
    }
}

/// A provider of `tier` not yet tried, suited to the route, not refusing
/// and, when the request is pinned, the one it is pinned to, chosen by
/// the tier's balancer; marked tried.
fn pick_in_tier<S, Req, C, D>(
    chain: &Chain<S, Req, C, D>,
    tier: &Tier,
    tried: &mut u64,
    (route, streaming, pinned): (Route, bool, Option<usize>),
) -> Option<usize> {
    let targets = &chain.targets[tier.start..tier.end];
    let done = *tried;
    let eligible = |i: usize| {
        done & (1 << i) == 0
            && pinned.is_none_or(|p| p == tier.start + i)
            && suited(&targets[i], route)
            && targets[i].refusing().is_none()
    };
    let i = match &tier.balancer {
        None => eligible(0).then_some(0),
        Some(b) => b.pick(&Pickable {
            targets,
            eligible,
            streaming,
        }),
    }?;
    *tried |= 1 << i;
    Some(tier.start + i)
}

/// The next provider to call, recording the ones passed over; `None` when
/// the chain is exhausted or the deadline has passed.
fn pick<S, Req: HasDeadline, C, D>(
    chain: &Chain<S, Req, C, D>,
    req: Option<&Req>,
    tier: &mut usize,
    tried: &mut u64,
    (route, streaming, pinned): (Route, bool, Option<usize>),
    attempts: &mut Vec<ProviderAttempt>,
) -> Option<usize> {
    while let Some(t) = chain.tiers.get(*tier) {
        if let Some(idx) = pick_in_tier(chain, t, tried, (route, streaming, pinned)) {
            // The first call follows `call` at once; every later one checks
            // that the deadline has not passed while the others were tried.
            let expired = |r: &Req| r.deadline().is_some_and(|d| d.is_expired());
            if !attempts.is_empty() && req.is_some_and(expired) {
                attempts.push(ProviderAttempt {
                    provider: chain.targets[idx].id.clone(),
                    outcome: AttemptOutcome::DeadlineExceeded,
                });
                *tier = chain.tiers.len();
                return None;
            }
            return Some(idx);
        }
        // The tier is spent: say why each provider not called was passed.
        for i in 0..t.len() {
            // Pinned elsewhere: never a candidate, so not listed.
            if *tried & (1 << i) != 0 || pinned.is_some_and(|p| p != t.start + i) {
                continue;
            }
            let target = &chain.targets[t.start + i];
            let outcome = if !suited(target, route) {
                AttemptOutcome::SkippedUnsuited
            } else if let Some(refusing) = target.refusing() {
                tracing::info!(provider = %target.id, %refusing, "skipping provider");
                AttemptOutcome::Skipped(refusing)
            } else {
                continue;
            };
            attempts.push(ProviderAttempt {
                provider: target.id.clone(),
                outcome,
            });
        }
        *tier += 1;
        *tried = 0;
    }
    None
}
