//! [`Chaos`]: the service a [`ChaosLayer`](crate::ChaosLayer) wraps around
//! another.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, Classified, FailureKind};
use tower_service::Service;

use crate::body::{NoStreams, StreamFault, Streams};
use crate::future::ResponseFuture;
use crate::handle::Shared;
use crate::layer::Select;

/// Injects its layer's faults into `S`'s calls (see
/// [`ChaosLayer`](crate::ChaosLayer)).
#[derive(Debug, Clone)]
pub struct Chaos<S, P, St = NoStreams> {
    inner: S,
    shared: Arc<Shared>,
    select: P,
    streams: St,
}

impl<S, P, St> Chaos<S, P, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, select: P, streams: St) -> Self {
        Chaos {
            inner,
            shared,
            select,
            streams,
        }
    }
}

/// The failure an injected error of `status` stands for.
fn kind_of(status: u16, retry_after: Option<std::time::Duration>) -> FailureKind {
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
    match status {
        429 => FailureKind::RateLimited { retry_after },
        503 | 529 => FailureKind::Overloaded { retry_after },
        400..=499 => FailureKind::Client(code),
        _ => FailureKind::Server(code),
    }
}

impl<S, P, St, Req> Service<Req> for Chaos<S, P, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    P: Select<Req>,
    St: Streams<S::Response> + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let s = &self.shared;
        if !s.enabled.load(Ordering::Relaxed) || !self.select.select(&req) {
            return ResponseFuture::pass(self.inner.call(req));
        }
        self.inject(req)
    }
}

impl<S, P, St> Chaos<S, P, St> {
    /// The enabled path: draws, counts, and maybe a fault.
    #[inline(never)]
    fn inject<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, S::Response>
    where
        S: Service<Req>,
        S::Response: 'static,
        St: Streams<S::Response> + Send + 'static,
    {
        let s = &self.shared;
        let plan = s.plan.load();
        let c = &s.counts;
        c.calls.fetch_add(1, Ordering::Relaxed);
        let hit = |rate: f64| rate > 0.0 && s.draws.next() < rate;
        if hit(plan.reset_rate) {
            c.resets.fetch_add(1, Ordering::Relaxed);
            return ResponseFuture::fail(
                Classified::new(FailureKind::Connect, "chaos: connection reset (injected)").into(),
            );
        }
        if hit(plan.hang_rate) {
            c.hangs.fetch_add(1, Ordering::Relaxed);
            return ResponseFuture::hang();
        }
        if hit(plan.error_rate) {
            c.errors.fetch_add(1, Ordering::Relaxed);
            let status = plan.error_status.unwrap_or(503);
            let msg = format!("chaos: HTTP {status} (injected)");
            return ResponseFuture::fail(
                Classified::new(kind_of(status, plan.retry_after), msg).into(),
            );
        }
        if self.streams.enabled() {
            let fault = if hit(plan.stall_rate) {
                plan.stall_after.map(StreamFault::Stall)
            } else if hit(plan.cut_rate) {
                plan.cut_after.map(StreamFault::Cut)
            } else {
                None
            };
            if let Some(fault) = fault {
                c.streams.fetch_add(1, Ordering::Relaxed);
                let streams = self.streams.clone();
                let fut = self.inner.call(req);
                return ResponseFuture::interrupt(
                    fut,
                    Box::new(move |res| streams.interrupt(res, fault)),
                );
            }
        }
        let fut = self.inner.call(req);
        match plan.delay {
            Some(delay) if hit(plan.latency_rate) => {
                c.delays.fetch_add(1, Ordering::Relaxed);
                ResponseFuture::late(fut, delay.at(s.draws.next()))
            }
            _ => ResponseFuture::pass(fut),
        }
    }
}
