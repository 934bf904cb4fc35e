//! The HTTP server: accepts connections up to a cap and serves each with
//! hyper's HTTP/1 under the configured limits (head size, time to send a
//! head, idle keep-alive, requests per connection), draining them on
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Request, Response};
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;
use tracing::Instrument;

use crate::head_timeout::{watchdog, Marked, Waiting};
use crate::rewake::Rewake;
use crate::state::AppState;
use crate::woken::WhenWoken;

/// What the server enforces on client connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_requests_per_connection: u64,
    pub(crate) grace: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and
/// gives the connections in flight `limits.grace` to finish.
pub(crate) async fn run(
    listener: TcpListener,
    app: axum::Router,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = crate::drain::Drain::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let waiting = Arc::new(Waiting::new());
        let svc = PerConnection {
            app: app.clone(),
            state: state.clone(),
            waiting: waiting.clone(),
            served: AtomicU64::new(0),
            max: limits.max_requests_per_connection,
        };
        // No timer for hyper: the head timeout is the watchdog's (see
        // head_timeout.rs), which does not arm one per request.
        let mut http = hyper::server::conn::http1::Builder::new();
        http.max_buf_size(limits.max_header_bytes).keep_alive(true);
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        let header_timeout = limits.header_timeout;
        // Rewake: reading a request's body wakes this very task (see
        // rewake.rs); polling it again at once spares a trip through the
        // runtime's queue and an idle worker's unparking.
        tokio::spawn(Rewake::new(async move {
            tokio::select! {
                biased;
                ended = conn => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                () = WhenWoken::new(watchdog(waiting, header_timeout)) => {
                    tracing::debug!(%peer, "connection closed: no request head within header_timeout_ms");
                }
            }
            drop(slot);
        }));
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.grace) => {
            tracing::warn!("shutdown grace period over; dropping requests still in flight");
        }
    }
    Ok(())
}

/// The app for one connection: marks the connection busy while a
/// request is in progress (for the head timeout), counts its requests
/// and, at the limit, marks the answer `connection: close` so hyper
/// closes the connection after it. A `POST` to a model endpoint goes to
/// [`routes::serve`](crate::routes::serve) directly, the rest through the
/// axum app.
struct PerConnection {
    app: axum::Router,
    state: Arc<AppState>,
    waiting: Arc<Waiting>,
    served: AtomicU64,
    max: u64,
}

impl hyper::service::Service<Request<Incoming>> for PerConnection {
    type Response = Response<Marked<axum::body::Body>>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.waiting.busy();
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let route = match crate::routes::model_endpoint(&req) {
            Some(endpoint) => {
                let req = req.map(axum::body::Body::new);
                let started = crate::routes::start(&self.state, &req, endpoint);
                let span = started.span.clone();
                let state = self.state.clone();
                Route::Direct {
                    serve: boxed_in_place(|| {
                        crate::routes::serve_started(state, req, endpoint, started)
                    })
                    .instrument(span),
                }
            }
            // The router is always ready.
            None => Route::App {
                route: self.app.clone().call(req),
            },
        };
        Answer {
            route,
            last: self.max > 0 && n >= self.max,
            waiting: Some(self.waiting.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's answer to one request. Dropped unanswered, it marks
    /// the connection waiting again (answered, its body does).
    struct Answer {
        #[pin]
        route: Route,
        last: bool,
        waiting: Option<Arc<Waiting>>,
    }

    impl PinnedDrop for Answer {
        fn drop(this: Pin<&mut Self>) {
            if let Some(waiting) = this.project().waiting.take() {
                waiting.waiting();
            }
        }
    }
}

/// The future `make` makes, made in its box: the box is allocated first,
/// so the future (several KiB) can be written into it where it is made
/// rather than made on the stack and copied in, as `Box::pin(make())`
/// does.
#[inline(always)]
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> Serve
where
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    let made: Pin<Box<F>> = Box::into_pin(Box::write(Box::new_uninit(), make()));
    made
}

/// A model endpoint's answer (boxed once, as axum boxes its handlers'),
/// or the axum app's.
type Serve = Pin<Box<dyn Future<Output = axum::response::Response> + Send>>;

pin_project_lite::pin_project! {
    /// Who answers a request: [`routes::serve`](crate::routes::serve)
    /// itself, or the axum app.
    #[project = RouteProj]
    enum Route {
        Direct { #[pin] serve: tracing::instrument::Instrumented<Serve> },
        App { #[pin] route: RouteFuture<Infallible> },
    }
}

impl Future for Route {
    type Output = axum::response::Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteProj::Direct { serve } => serve.poll(cx),
            RouteProj::App { route } => route.poll(cx).map(|Ok(res)| res),
        }
    }
}

impl Future for Answer {
    type Output = Result<Response<Marked<axum::body::Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.route.poll(cx));
        if *this.last {
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        let waiting = this.waiting.take().expect("polled after completion");
        Poll::Ready(Ok(res.map(|body| Marked::new(body, waiting))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of `router` to an empty request, on a connection marked
    /// by `waiting`.
    fn answer_of(mut router: axum::Router, waiting: &Arc<Waiting>) -> Answer {
        Answer {
            route: Route::App {
                route: router.call(Request::new(axum::body::Body::empty())),
            },
            last: false,
            waiting: Some(waiting.clone()),
        }
    }

    /// An answer dropped before it was ready (hyper gave up on the
    /// request) leaves its connection waiting, so the head timeout still
    /// applies to it; an answer that completes leaves that to its body.
    #[tokio::test]
    async fn an_answer_dropped_unanswered_marks_its_connection_waiting() {
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        );
        let waiting = Arc::new(Waiting::new());
        waiting.busy();
        let mut answer = Box::pin(answer_of(router, &waiting));
        let polled = futures_util::poll!(answer.as_mut());
        assert!(polled.is_pending());
        assert!(waiting.is_busy());
        drop(answer);
        assert!(!waiting.is_busy());

        // Answered: busy until the body goes.
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "now" }));
        waiting.busy();
        let res = answer_of(router, &waiting).await.unwrap();
        assert!(waiting.is_busy());
        drop(res);
        assert!(!waiting.is_busy());
    }
}
