//! [`PropagateDeadlineLayer`]: tells the upstream how long it has.

use std::task::{Context, Poll};

use palisade_core::{clock, HasDeadline};
use tower_layer::Layer;
use tower_service::Service;

use crate::header::TimeoutHeader;

/// Writes the time left before the request's deadline into an outgoing
/// `http::Request`'s header (`grpc-timeout` for gRPC, or a milliseconds
/// header), so the upstream stops working on a request nobody waits for.
/// A request without a deadline is passed on untouched.
///
/// Put it below [`AttemptTimeoutLayer`](crate::AttemptTimeoutLayer): the
/// request then carries the attempt's deadline, the nearest one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_core::{BoxError, Deadline, HasDeadline};
/// use palisade_deadline::{PropagateDeadlineLayer, TimeoutHeader};
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let upstream = service_fn(|req: http::Request<()>| async move {
///     Ok::<_, BoxError>(req.headers()["grpc-timeout"].to_str().unwrap().to_owned())
/// });
/// let svc = PropagateDeadlineLayer::new(TimeoutHeader::Grpc).layer(upstream);
/// let mut req = http::Request::new(());
/// req.replace_deadline(Deadline::after(Duration::from_millis(1500)));
/// assert_eq!(svc.oneshot(req).await.unwrap(), "1500000u");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PropagateDeadlineLayer {
    header: TimeoutHeader,
}

impl PropagateDeadlineLayer {
    /// Propagates into `header`.
    pub fn new(header: TimeoutHeader) -> Self {
        PropagateDeadlineLayer { header }
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline {
            inner,
            header: self.header.clone(),
        }
    }
}

/// A service that writes each request's remaining time into a header. Made
/// by [`PropagateDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
    header: TimeoutHeader,
}

impl<S, B> Service<http::Request<B>> for PropagateDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(deadline) = req.deadline() {
            self.header
                .write(req.headers_mut(), deadline.remaining_at(clock::now()));
        }
        self.inner.call(req)
    }
}
