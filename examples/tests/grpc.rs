//! palisade in front of a real tonic channel, reading gRPC statuses with
//! `GrpcClassifier`: failures that travel as HTTP 200 (trailers-only
//! responses) trip a breaker, a `grpc-retry-pushback-ms` opens it for
//! exactly that long, the caller's own errors are not held against the
//! server, and a retry behind `BufferBodyLayer` re-sends a gRPC request.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState};
use tonic::codegen::tokio_stream;
use tonic::transport::{Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A health service that answers every check with the status its request
/// names (`"unavailable"`, `"exhausted"`, `"invalid"`, `"flaky"`: the
/// first two calls unavailable), counting the calls that reach it and
/// keeping the service names it was asked about.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<AtomicU32>,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let service = req.into_inner().service;
        self.asked.lock().unwrap().push(service.clone());
        match service.as_str() {
            "unavailable" => Err(Status::unavailable("warming up")),
            "flaky" if n < 2 => Err(Status::unavailable("warming up")),
            "exhausted" => {
                let mut s = Status::resource_exhausted("quota");
                s.metadata_mut()
                    .insert("grpc-retry-pushback-ms", "30000".parse().unwrap());
                Err(s)
            }
            "invalid" => Err(Status::invalid_argument("no such field")),
            _ => Ok(Response::new(HealthCheckResponse { status: 1 })),
        }
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

/// Serves `Scripted` on loopback; returns it (for its counters) and a lazy
/// channel to it.
async fn serve_scripted() -> Result<(Scripted, tonic::transport::Channel), BoxError> {
    let svc = Scripted::default();
    let handle = svc.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(svc))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    Ok((handle, channel))
}

/// Serves `Scripted` on loopback; returns its call counter and a lazy
/// channel to it.
async fn serve() -> Result<(Arc<AtomicU32>, tonic::transport::Channel), BoxError> {
    let (svc, channel) = serve_scripted().await?;
    Ok((svc.calls, channel))
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn unavailable_trips_the_breaker_and_the_callers_own_errors_do_not() {
    let (calls, channel) = serve().await.unwrap();
    let breaker = CircuitBreakerLayer::grpc()
        .provider("grpc")
        .consecutive_failures(Some(2))
        .open_duration(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut client = HealthClient::new(tower::Layer::layer(&breaker, channel));

    // The caller's own mistakes (INVALID_ARGUMENT) are not the server's.
    for _ in 0..3 {
        let err = client.check(check("invalid")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    assert_eq!(handle.state(), CircuitState::Closed);

    // UNAVAILABLE arrives as HTTP 200 with grpc-status 14: two in a row trip it.
    for _ in 0..2 {
        let err = client.check(check("unavailable")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let reached = calls.load(Ordering::SeqCst);
    assert_eq!(reached, 5);

    // Open: refused without reaching the server.
    assert!(client.check(check("ok")).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), reached);
}

#[tokio::test]
async fn a_pushback_opens_the_breaker_for_exactly_that_long() {
    let (calls, channel) = serve().await.unwrap();
    let breaker = CircuitBreakerLayer::grpc()
        .provider("grpc")
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut client = HealthClient::new(tower::Layer::layer(&breaker, channel));

    let err = client.check(check("exhausted")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(handle.state(), CircuitState::Open, "one pushback is enough");
    let left = handle.open_remaining().expect("open, so a wait is known");
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(29),
        "the server's 30 s, not the default open duration: {left:?}"
    );
    assert!(client.check(check("ok")).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the server was left alone");
}

#[tokio::test]
async fn a_buffered_retry_resends_a_grpc_call_until_it_succeeds() {
    use bytes::Bytes;
    use http_body_util::Full;
    use palisade_retry::{Backoff, BufferBodyLayer, RetryLayer};
    use tower::ServiceBuilder;

    let (server, channel) = serve_scripted().await.unwrap();
    let retry = RetryLayer::grpc()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::ZERO))
        .build()
        .unwrap();
    let handle = retry.handle();
    let stack = ServiceBuilder::new()
        // tonic's request body is a stream; buffer it so the retry can re-send it
        .layer(BufferBodyLayer::new(64 * 1024).unwrap())
        .layer(retry)
        // and hand the channel tonic's own body type again
        .map_request(|req: http::Request<Full<Bytes>>| req.map(tonic::body::Body::new))
        .service(channel);
    let mut client = HealthClient::new(stack);

    let res = client.check(check("flaky")).await.unwrap();
    assert_eq!(res.into_inner().status, 1);
    assert_eq!(
        server.calls.load(Ordering::SeqCst),
        3,
        "two UNAVAILABLE, then OK"
    );
    assert_eq!(
        *server.asked.lock().unwrap(),
        ["flaky", "flaky", "flaky"],
        "the same request every time"
    );
    assert_eq!(handle.snapshot().retries, 2);

    // The caller's own error is not retried.
    let err = client.check(check("invalid")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(server.calls.load(Ordering::SeqCst), 4);
}
