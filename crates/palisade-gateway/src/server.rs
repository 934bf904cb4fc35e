//! The HTTP server: accepts connections up to a cap and serves each with
//! hyper's HTTP/1 under the configured limits (head size, time to send a
//! head, idle keep-alive, requests per connection), draining them on
//! shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use crate::rewake::Rewake;

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
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
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
        let svc = PerConnection {
            app: app.clone(),
            served: Arc::new(AtomicU64::new(0)),
            max: limits.max_requests_per_connection,
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        // Rewake: reading a request's body wakes this very task (see
        // rewake.rs); polling it again at once spares a trip through the
        // runtime's queue and an idle worker's unparking.
        tokio::spawn(Rewake::new(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
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

/// The app for one connection: counts its requests and, at the limit,
/// marks the answer `connection: close` so hyper closes the connection
/// after it.
#[derive(Clone)]
struct PerConnection {
    app: axum::Router,
    served: Arc<AtomicU64>,
    max: u64,
}

impl<B> Service<Request<B>> for PerConnection
where
    axum::Router: Service<
        Request<B>,
        Response = Response<axum::body::Body>,
        Error = std::convert::Infallible,
    >,
    <axum::Router as Service<Request<B>>>::Future: Send + 'static,
{
    type Response = Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.max > 0 && n >= self.max;
        let fut = self.app.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            if last {
                res.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    HeaderValue::from_static("close"),
                );
            }
            Ok(res)
        })
    }
}
