//! [`Link`]: one upstream connection, driven by whoever holds it.
//!
//! hyper's client connection is two halves: the handle requests are sent
//! through ([`SendRequest`]) and the connection itself, a future that
//! writes the requests, reads the answers and feeds their bodies. The usual
//! way runs that future as a task of its own, so every request and every
//! answer crosses from one task to the other: a wake, a schedule and a poll
//! of a second task each way.
//!
//! A link keeps both halves together and polls the connection from the
//! task that uses it: the request's while it is sent and answered, then
//! the task reading the answer's body (the body holds the link). An idle
//! link, in its pool, is polled by nobody; it is polled again when it is
//! taken (a link the upstream closed meanwhile is found closed then).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use palisade_core::BoxError;
use tokio::net::TcpStream;

/// The byte stream under an upstream connection: TCP, with TLS for
/// `https://`.
pub(super) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An upstream connection and its request handle, polled by its holder.
pub(super) struct Link {
    pub(super) tx: SendRequest<Full<Bytes>>,
    conn: Connection<Io, Full<Bytes>>,
    /// The connection's future has ended (closed, or failed): it is not
    /// polled again, and the link is not used again.
    ended: bool,
}

impl Link {
    /// Both halves of a connection hyper just made.
    pub(super) fn new(tx: SendRequest<Full<Bytes>>, conn: Connection<Io, Full<Bytes>>) -> Self {
        Link {
            tx,
            conn,
            ended: false,
        }
    }

    /// Moves the connection on as far as it can go now (writes what was
    /// sent, reads what came, feeds the answer's body), registering `cx`'s
    /// waker for what it waits on.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.ended && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.ended = true;
        }
    }

    /// Whether the link may carry another request: its connection has
    /// not ended, and hyper still has a way to send on it.
    pub(super) fn is_open(&self) -> bool {
        !self.ended && !self.tx.is_closed()
    }

    /// Ready for a request: driven until hyper takes one, or `Err` when the
    /// connection has ended (closed by the upstream while idle, say).
    pub(super) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.drive(cx);
        if self.ended {
            return Poll::Ready(Err("the upstream connection has closed".into()));
        }
        // Only the connection, driven just now, makes hyper ready: no
        // wake is needed from it.
        self.tx
            .poll_ready(&mut Context::from_waker(Waker::noop()))
            .map_err(Into::into)
    }
}
