//! The fallback chain's response future: the walk along the chain.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use palisade_core::{BoxError, Classify, FailureKind, HasDeadline, Outcome};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::degrade::Degrade;
use crate::error::{AllFailed, AttemptOutcome, ProviderAttempt};
use crate::service::Chain;

/// Which providers the next failure may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Any,
    LargeContext,
    ContentFilter,
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Req>, Req> {
        Pick,
        Readying { svc: S, req: Option<Req>, idx: usize },
        Calling { #[pin] fut: S::Future, idx: usize, span: tracing::Span },
    }
}

pin_project! {
    /// The response future of [`Fallback`](crate::Fallback): picks the next
    /// eligible provider, readies it, calls it, and moves on when the
    /// failure says so.
    pub struct ResponseFuture<S: Service<Req>, Req, C, D> {
        chain: Arc<Chain<S, Req, C, D>>,
        req: Req,
        next: usize,
        route: Route,
        // The failure that sent us on, for the event naming from, to, why.
        moving_on: Option<(usize, FailureKind)>,
        attempts: Vec<ProviderAttempt>,
        #[pin]
        state: State<S, Req>,
    }
}

impl<S: Service<Req>, Req, C, D> ResponseFuture<S, Req, C, D> {
    pub(crate) fn new(chain: Arc<Chain<S, Req, C, D>>, req: Req) -> Self {
        ResponseFuture {
            chain,
            req,
            next: 0,
            route: Route::Any,
            moving_on: None,
            attempts: Vec::new(),
            state: State::Pick,
        }
    }
}

impl<S: Service<Req>, Req, C, D> fmt::Debug for ResponseFuture<S, Req, C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("next", &self.next)
            .field("attempts", &self.attempts)
            .finish()
    }
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
                    let Some(idx) = pick(chain, this.req, this.next, *this.route, this.attempts)
                    else {
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
                    let mut req = this.req.clone();
                    if let Some(rewrite) = &target.rewrite {
                        rewrite(&mut req);
                    }
                    this.state.set(State::Readying {
                        svc: target.svc.clone(),
                        req: Some(req),
                        idx,
                    });
                }
                StateProj::Readying { svc, req, idx } => {
                    let idx = *idx;
                    match ready!(svc.poll_ready(cx)) {
                        Ok(()) => {
                            let req = req.take().expect("readied once");
                            // Events of the layers below carry the provider.
                            let span =
                                tracing::info_span!("provider", provider = %chain.targets[idx].id);
                            let fut = {
                                let _in = span.enter();
                                svc.call(req)
                            };
                            this.state.set(State::Calling { fut, idx, span });
                        }
                        Err(e) => {
                            let e: BoxError = e.into();
                            this.attempts.push(ProviderAttempt {
                                provider: chain.targets[idx].id.clone(),
                                outcome: AttemptOutcome::Error(e),
                            });
                            *this.moving_on = Some((idx, FailureKind::Other));
                            this.state.set(State::Pick);
                        }
                    }
                }
                StateProj::Calling { fut, idx, span } => {
                    let idx = *idx;
                    let polled = {
                        let _in = span.enter();
                        fut.poll(cx)
                    };
                    let mut result = ready!(polled).map_err(Into::into);
                    let failure = match chain.classifier.classify(result.as_ref()) {
                        Outcome::Success => {
                            record(chain, idx, this.attempts.len(), &mut result);
                            return Poll::Ready(result);
                        }
                        Outcome::Failure(f) => f,
                    };
                    if !chain.policy.falls_back(&failure) {
                        // The caller's own fault: another provider would
                        // refuse it too.
                        record(chain, idx, this.attempts.len(), &mut result);
                        return Poll::Ready(result);
                    }
                    match failure.kind {
                        FailureKind::ContextLengthExceeded => *this.route = Route::LargeContext,
                        FailureKind::ContentFiltered => *this.route = Route::ContentFilter,
                        _ => {}
                    }
                    let outcome = match result {
                        Ok(_) => AttemptOutcome::Failed(failure.kind),
                        Err(e) => AttemptOutcome::Error(e),
                    };
                    this.attempts.push(ProviderAttempt {
                        provider: chain.targets[idx].id.clone(),
                        outcome,
                    });
                    *this.moving_on = Some((idx, failure.kind));
                    this.state.set(State::Pick);
                }
            }
        }
    }
}

/// Writes who answered, after how many providers, on the answer's
/// [`Served`](palisade_core::Served) record (when its type carries one).
fn record<S, Req, C, D, Res>(
    chain: &Chain<S, Req, C, D>,
    idx: usize,
    before: usize,
    result: &mut Result<Res, BoxError>,
) where
    C: Classify<Res, BoxError>,
{
    if let Ok(res) = result {
        if let Some(served) = chain.classifier.served(res) {
            served.provider = Some(chain.targets[idx].id.clone());
            served.fallbacks = u32::try_from(before).unwrap_or(u32::MAX);
        }
    }
}

/// The next provider to call, recording the ones passed over; `None` when
/// the chain is exhausted or the deadline has passed.
fn pick<S, Req: HasDeadline, C, D>(
    chain: &Chain<S, Req, C, D>,
    req: &Req,
    next: &mut usize,
    route: Route,
    attempts: &mut Vec<ProviderAttempt>,
) -> Option<usize> {
    while *next < chain.targets.len() {
        let idx = *next;
        *next += 1;
        let t = &chain.targets[idx];
        let suited = match route {
            Route::Any => true,
            Route::LargeContext => t.large_context,
            Route::ContentFilter => t.content_filter,
        };
        if !suited {
            attempts.push(ProviderAttempt {
                provider: t.id.clone(),
                outcome: AttemptOutcome::SkippedUnsuited,
            });
            continue;
        }
        if let Some(refusing) = t.refusing() {
            tracing::debug!(provider = %t.id, %refusing, "skipping provider");
            attempts.push(ProviderAttempt {
                provider: t.id.clone(),
                outcome: AttemptOutcome::Skipped(refusing),
            });
            continue;
        }
        // The first call follows `call` at once; every later one checks
        // that the deadline has not passed while the others were tried.
        if !attempts.is_empty() && req.deadline().is_some_and(|d| d.is_expired()) {
            attempts.push(ProviderAttempt {
                provider: t.id.clone(),
                outcome: AttemptOutcome::DeadlineExceeded,
            });
            *next = chain.targets.len();
            return None;
        }
        return Some(idx);
    }
    None
}
