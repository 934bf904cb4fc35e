//! [`Drain`]: every connection told to finish its request in progress and
//! close, and a wait until they all have (the graceful shutdown).
//!
//! hyper-util's `GracefulShutdown` does the same with one difference that
//! costs on every request: a connection's future polls its shutdown signal
//! each time the connection's task wakes (several times a request). Here
//! the signal is polled only when it has itself woken the task
//! ([`WhenWoken`]): on the first poll and at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;

use crate::woken::WhenWoken;

/// Tells every watched connection to shut down gracefully, and waits for
/// them.
pub(crate) struct Drain {
    tx: watch::Sender<()>,
}

impl Drain {
    pub(crate) fn new() -> Self {
        Drain {
            tx: watch::channel(()).0,
        }
    }

    /// `conn`, shut down gracefully (the request in progress answered,
    /// then closed) when [`shutdown`](Self::shutdown) is called.
    pub(crate) fn watch<C: Graceful>(&self, conn: C) -> Watched<C> {
        let mut rx = self.tx.subscribe();
        Watched {
            conn,
            signal: WhenWoken::new(Box::pin(async move {
                let _ = rx.changed().await;
                rx
            })),
            told: None,
        }
    }

    /// Tells the watched connections to shut down, and waits until every
    /// one has ended.
    pub(crate) async fn shutdown(self) {
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

/// A connection that can be asked to finish and close.
pub(crate) trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

/// The signal's future: the receiver, kept until the connection ends (the
/// drain waits for every receiver to go).
type Signal = Pin<Box<dyn Future<Output = watch::Receiver<()>> + Send>>;

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    pub(crate) struct Watched<C> {
        #[pin]
        conn: C,
        #[pin]
        signal: WhenWoken<Signal>,
        told: Option<watch::Receiver<()>>,
    }
}

impl<C: Graceful> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.told.is_none() {
            if let Poll::Ready(rx) = this.signal.poll(cx) {
                *this.told = Some(rx);
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A connection that ends once asked to shut down (polled again by
    /// the drain's signal, which wakes its task).
    #[derive(Default)]
    struct Conn {
        told: Arc<AtomicBool>,
    }

    impl Future for Conn {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.told.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Graceful for Conn {
        fn graceful_shutdown(self: Pin<&mut Self>) {
            self.told.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_tells_every_connection_and_waits_for_them() {
        let drain = Drain::new();
        let mut told = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let conn = Conn::default();
            told.push(conn.told.clone());
            tasks.push(tokio::spawn(drain.watch(conn)));
        }
        tokio::task::yield_now().await;
        assert!(told.iter().all(|t| !t.load(Ordering::SeqCst)));
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("every connection ended");
        assert!(told.iter().all(|t| t.load(Ordering::SeqCst)));
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_drain_with_no_connection_left_ends_at_once() {
        let drain = Drain::new();
        let ended = drain.watch(Conn {
            told: Arc::new(AtomicBool::new(true)),
        });
        ended.await;
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("nothing to wait for");
    }
}
