//! The gateway's HTTP/1 client: a pool of keep-alive connections per
//! upstream, on hyper's connection API.
//!
//! hyper-util's pooled client, which the gateway used before, pays on every
//! request for what a gateway with one origin per upstream never needs: a
//! lock around a hash map keyed by scheme and authority (hashed three
//! times), a connect future built and raced against the checkout, the
//! `Host` header formatted anew, and a task spawned to put the connection
//! back once the answer's body is read.
//!
//! Here each upstream has its own [`Pool`] for its one origin:
//!
//! - idle connections wait in a lock-free queue ([`ArrayQueue`]), each a
//!   [`Link`] that the task using it drives (no task per connection: a
//!   request's work does not cross to another task and back);
//! - a request takes one (or connects when none is idle), is sent in
//!   origin form with the upstream's `Host`, and its answer's body
//!   ([`PooledBody`]) drives the connection as it is read and puts it back
//!   when it has been read to the end; a body dropped before its end
//!   closes the connection;
//! - a request that was never written (the connection closed while idle)
//!   is sent again on another connection, never one that was written;
//! - a connection idle for the pool's idle timeout is closed by the pool's
//!   one sweeper task (a timer per pool, set for the oldest idle
//!   connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::Builder;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use palisade_core::BoxError;
use tokio::time::Instant;
use tower::ServiceExt;

use super::link::Link;

/// Idle connections kept per upstream; a connection put back when this
/// many are idle is closed.
pub const MAX_IDLE: usize = 1024;

/// How long the gateway keeps an idle upstream connection open.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// How upstream connections are opened (TCP with a connect timeout, TLS
/// for `https://`) and how long an idle one is kept: shared by every
/// upstream, each of which makes its own pool of connections from it.
///
/// ```
/// use std::time::Duration;
/// use palisade_gateway::upstream::{client_config, HttpClient, POOL_IDLE};
///
/// let client = HttpClient::new(Duration::from_secs(5), POOL_IDLE, client_config(None).unwrap());
/// println!("{client:?}");
/// ```
#[derive(Clone)]
pub struct HttpClient {
    connector: HttpsConnector<HttpConnector>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client that connects within `connect_timeout`, speaks TLS to
    /// `https://` upstreams with `tls` (see
    /// [`client_config`](super::client_config)), and closes connections
    /// idle for `idle_timeout` (zero: keeps none idle).
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        HttpClient {
            connector,
            idle_timeout,
        }
    }

    /// A pool of connections to `origin`'s scheme and authority.
    pub(crate) fn pool(&self, origin: &Uri) -> Result<Pool, BoxError> {
        let authority = origin
            .authority()
            .ok_or_else(|| format!("{origin}: no host"))?
            .clone();
        let scheme = origin.scheme().cloned().unwrap_or(Scheme::HTTP);
        // The Host header: the port only where it is not the scheme's.
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(p) if p != default_port => format!("{}:{p}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Ok(Pool {
            inner: Arc::new(Inner {
                idle: ArrayQueue::new(MAX_IDLE),
                connector: self.connector.clone(),
                origin: Uri::builder()
                    .scheme(scheme)
                    .authority(authority)
                    .path_and_query("/")
                    .build()?,
                host: HeaderValue::from_str(&host)?,
                idle_timeout: self.idle_timeout,
                sweeping: AtomicBool::new(false),
            }),
        })
    }
}

/// Keep-alive connections to one upstream origin (see the module's
/// documentation). Cheap to clone: clones share the connections.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: ArrayQueue<Idle>,
    connector: HttpsConnector<HttpConnector>,
    /// Scheme and authority, for the connector.
    origin: Uri,
    host: HeaderValue,
    idle_timeout: Duration,
    /// Whether the task that closes links idle too long has started.
    sweeping: AtomicBool,
}

/// A link waiting in the pool. Boxed: a connection is a few hundred bytes,
/// and a link moves from the pool to a request, its answer's body and
/// back for every request.
struct Idle {
    link: Box<Link>,
    /// When it was put back.
    since: Instant,
}

impl Inner {
    /// An idle link, if any (polled when it is taken, which finds it closed
    /// if the upstream closed it; the sweeper closes those idle too long,
    /// at the time they reach it).
    fn checkout(&self) -> Option<Box<Link>> {
        while let Some(Idle { link, .. }) = self.idle.pop() {
            if link.is_open() {
                return Some(link);
            }
        }
        None
    }

    /// Puts a link whose answer has been read back in the pool (closed
    /// instead when the pool is full).
    fn put_back(&self, link: Box<Link>) {
        // A pool that keeps nothing idle (a zero timeout) closes it now.
        if link.is_open() && !self.idle_timeout.is_zero() {
            let _ = self.idle.push(Idle {
                link,
                since: palisade_core::clock::now(),
            });
        }
    }

    /// Closes the links idle for the timeout; when the next would be.
    fn sweep(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + self.idle_timeout;
        for _ in 0..self.idle.len() {
            let Some(idle) = self.idle.pop() else { break };
            let until = idle.since + self.idle_timeout;
            if until > now && idle.link.is_open() {
                next = next.min(until);
                let _ = self.idle.push(idle);
            }
        }
        next
    }

    /// Opens a connection; the first one starts the pool's sweeper.
    async fn connect(self: &Arc<Self>) -> Result<Box<Link>, BoxError> {
        let io = match self.connector.clone().oneshot(self.origin.clone()).await {
            Ok(io) => io,
            Err(e) => return Err(super::exhausted::refuse_if_exhausted(e, &self.origin)),
        };
        let (tx, conn) = Builder::new().handshake(io).await?;
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweeper(Arc::downgrade(self)));
        }
        Ok(Box::new(Link::new(tx, conn)))
    }

    /// [`connect`](Self::connect)'s future, boxed by a function of its
    /// own so that no request's frame holds it.
    #[inline(never)]
    fn connecting(
        self: &Arc<Self>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Box<Link>, BoxError>> + Send + '_>> {
        Box::pin(self.connect())
    }

    /// Sends `req` (its URI the path to call) on an idle connection or a
    /// new one, driving the connection itself until the answer's head has
    /// come; the answer's body drives it on.
    async fn send(
        self: Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, BoxError> {
        if req.uri().scheme().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
        req.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut link, reused) = match self.checkout() {
                Some(link) => (link, true),
                // Boxed, and made out of line: connecting is rare, and its
                // future (over a KiB) would otherwise make every request's
                // future, and `send`'s stack frame, that large.
                None => (self.connecting().await?, false),
            };
            // A link put back as its answer's last byte was read may not
            // have taken up the next request yet; one the upstream closed
            // while idle says so here.
            if let Err(e) = std::future::poll_fn(|cx| link.poll_ready(cx)).await {
                if reused {
                    continue;
                }
                return Err(e);
            }
            let mut answer = std::pin::pin!(link.tx.try_send_request(req));
            let answered = std::future::poll_fn(|cx| {
                link.drive(cx);
                // Only the connection, driven just now, answers: the
                // answer need not wake the task (which would poll it all
                // again for nothing).
                answer
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
            })
            .await;
            match answered {
                Ok(res) => {
                    let (parts, body) = res.into_parts();
                    let back = Some(Back { link, pool: self });
                    return Ok(Response::from_parts(parts, PooledBody { body, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection had closed while idle.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

/// The least time between two sweeps of a pool.
const SWEEP_GAP: Duration = Duration::from_millis(10);

/// Closes a pool's links once idle for its timeout, waking when the
/// oldest would be (or a timeout from now, when none is idle: a link put
/// back later is idle no sooner than that); ends with the pool.
async fn sweeper(pool: std::sync::Weak<Inner>) {
    let mut wake = match pool.upgrade() {
        Some(p) => Instant::now() + p.idle_timeout,
        None => return,
    };
    loop {
        tokio::time::sleep_until(wake).await;
        match pool.upgrade() {
            // Never sooner than `SWEEP_GAP` again: a tiny timeout does not
            // make the sweeper spin.
            Some(p) => wake = p.sweep().max(Instant::now() + SWEEP_GAP),
            None => return,
        }
    }
}

impl Pool {
    /// Sends `req` to the pool's origin; its URI's path and query are
    /// what is called.
    pub(crate) fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, BoxError>> + Send + 'static
    {
        self.inner.clone().send(req)
    }

    /// How many connections are idle in the pool.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.inner.idle.len()
    }
}

impl tower::Service<Request<Full<Bytes>>> for Pool {
    type Response = Response<PooledBody>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<PooledBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        Box::pin(self.send(req))
    }
}

/// What a body puts back in the pool when it has been read to the end.
struct Back {
    link: Box<Link>,
    pool: Arc<Inner>,
}

pin_project_lite::pin_project! {
    /// An upstream answer's body: hyper's, read through the link it came
    /// on (the body drives the connection as it is read), which goes back
    /// to the pool once the body has been read to the end. Dropped before
    /// that, the connection is closed.
    pub(crate) struct PooledBody {
        #[pin]
        body: Incoming,
        back: Option<Back>,
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.back.is_some())
            .finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        // What the connection has read already, else the connection moved
        // on (reading more) and looked at again.
        let frame = match this.body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some(back) = this.back.as_mut() {
                    back.link.drive(cx);
                }
                ready!(this.body.as_mut().poll_frame(cx))
            }
        };
        let done = match &frame {
            None => true,
            Some(Ok(_)) => this.body.is_end_stream(),
            // A broken answer: its connection is not used again.
            Some(Err(_)) => {
                *this.back = None;
                false
            }
        };
        if done {
            if let Some(Back { link, pool }) = this.back.take() {
                pool.put_back(link);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback HTTP/1 server answering every request with `body`,
    /// keeping connections alive; counts the connections it accepted and
    /// those still open.
    struct Server {
        url: Uri,
        accepted: Arc<AtomicUsize>,
        open: Arc<AtomicUsize>,
    }

    async fn server(body: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            assert_eq!(req.uri().scheme(), None, "origin form");
                            assert!(req.headers().contains_key(HOST));
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(body.as_bytes()),
                            )))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            url,
            accepted,
            open,
        }
    }

    fn client(idle: Duration) -> HttpClient {
        HttpClient::new(
            Duration::from_secs(5),
            idle,
            super::super::client_config(None).unwrap(),
        )
    }

    fn post(url: &Uri) -> Request<Full<Bytes>> {
        Request::post(format!("{url}v1/chat/completions"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    async fn read(res: Response<PooledBody>) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    /// A loopback server speaking bytes: `serve` runs on each connection
    /// it accepts; its URL and how many it accepted.
    async fn raw_server<F, Fut>(serve: F) -> (Uri, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (url, accepted)
    }

    /// Waits (5 s at most, else fails saying `what`) until `s` has at most
    /// `n` connections open.
    async fn open_at_most(s: &Server, n: usize, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while s.open.load(Ordering::SeqCst) > n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect(what);
    }

    /// Reads a request's head (each fits one read here); `false` when the
    /// client closed the connection instead.
    async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        true
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_is_used_again() {
        let s = server("answer").await;
        let pool = client(Duration::from_secs(30)).pool(&s.url).unwrap();
        for _ in 0..20 {
            let res = pool.send(post(&s.url)).await.unwrap();
            assert_eq!(read(res).await, "answer");
        }
        assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(), 1);
    }

    /// The task that reads an answer's body drives its connection, even
    /// when another task sent the request (the body comes after the head,
    /// so only reading it can fetch it); the connection then serves the
    /// next request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_read_on_another_task_drives_its_connection() {
        let (url, accepted) = raw_server(|mut stream| async move {
            while read_head(&mut stream).await {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                stream.write_all(b"later").await.unwrap();
            }
        })
        .await;
        let pool = client(Duration::from_secs(30)).pool(&url).unwrap();
        for _ in 0..3 {
            let res = pool.send(post(&url)).await.unwrap();
            let reader = tokio::spawn(read(res));
            let body = tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("the body arrived (its reader drove the connection)")
                .unwrap();
            assert_eq!(body, "later");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_no_more_connections_than_they_need() {
        let s = server("answer").await;
        let pool = client(Duration::from_secs(30)).pool(&s.url).unwrap();
        for _ in 0..3 {
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    let call = pool.send(post(&s.url));
                    tokio::spawn(async move { read(call.await.unwrap()).await })
                })
                .collect();
            for c in calls {
                assert_eq!(c.await.unwrap(), "answer");
            }
        }
        // The first wave opened at most 16; the next two reused them.
        assert!(s.accepted.load(Ordering::SeqCst) <= 16);
        assert_eq!(pool.idle(), s.accepted.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let s = server("a longer answer").await;
        let pool = client(Duration::from_secs(30)).pool(&s.url).unwrap();
        let res = pool.send(post(&s.url)).await.unwrap();
        drop(res);
        assert_eq!(pool.idle(), 0);
        let res = pool.send(post(&s.url)).await.unwrap();
        assert_eq!(read(res).await, "a longer answer");
        assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
        // The first connection is closed, not left open.
        open_at_most(&s, 1, "the dropped answer's connection closed").await;
    }

    /// A server that closes each connection after one answer, without
    /// saying so: the pool finds the idle connection closed (or its
    /// request unsent) and uses a new one, never failing the request.
    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_a_failure() {
        let (url, accepted) = raw_server(|mut stream| async move {
            if read_head(&mut stream).await {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            // Closed without `connection: close`.
        })
        .await;
        let pool = client(Duration::from_secs(30)).pool(&url).unwrap();
        for _ in 0..10 {
            let res = pool.send(post(&url)).await.unwrap();
            assert_eq!(read(res).await, "ok");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_timeout_is_closed() {
        let s = server("answer").await;
        let pool = client(Duration::from_secs(30)).pool(&s.url).unwrap();
        let res = pool.send(post(&s.url)).await.unwrap();
        assert_eq!(read(res).await, "answer");
        assert_eq!(s.open.load(Ordering::SeqCst), 1);
        // Used again at 20 s: still open at 49 s (idle 29 s).
        tokio::time::sleep(Duration::from_secs(20)).await;
        let res = pool.send(post(&s.url)).await.unwrap();
        assert_eq!(read(res).await, "answer");
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(s.open.load(Ordering::SeqCst), 1);
        assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
        // Idle 30 s at 50 s: closed, and the next request opens a new one.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        for _ in 0..100 {
            if s.open.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(s.open.load(Ordering::SeqCst), 0);
        let res = pool.send(post(&s.url)).await.unwrap();
        assert_eq!(read(res).await, "answer");
        assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_pool_with_no_idle_time_keeps_no_connection() {
        let s = server("answer").await;
        let pool = client(Duration::ZERO).pool(&s.url).unwrap();
        for _ in 0..3 {
            let res = pool.send(post(&s.url)).await.unwrap();
            assert_eq!(read(res).await, "answer");
            assert_eq!(pool.idle(), 0);
        }
        assert_eq!(s.accepted.load(Ordering::SeqCst), 3);
        open_at_most(&s, 0, "each closed after its answer").await;
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let pool = client(Duration::from_secs(30)).pool(&url).unwrap();
        let err = pool.send(post(&url)).await.unwrap_err();
        assert_eq!(
            palisade_core::classify_error(&*err).kind,
            palisade_core::FailureKind::Connect
        );
    }
}
