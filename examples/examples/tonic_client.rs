//! A tonic client with palisade's stack: a gRPC channel wrapped in a
//! request deadline, a retry, a circuit breaker, an attempt timeout and
//! `grpc-timeout` propagation, calling the standard gRPC health service
//! (tonic-health) served on loopback.
//!
//! The breaker reads gRPC statuses with `GrpcClassifier`: a gRPC failure
//! usually travels as HTTP 200 with `grpc-status` in its headers, which an
//! HTTP classifier would count as a success. `UNAVAILABLE` and
//! `RESOURCE_EXHAUSTED` count against the server (a
//! `grpc-retry-pushback-ms` opens the breaker for exactly that long);
//! the caller's own errors, such as the `NOT_FOUND` below, do not.
//!
//! A tonic request body is a stream, which a retry cannot send twice:
//! `BufferBodyLayer` reads it into memory first (unary calls are small),
//! and a `map_request` inside the retry turns it back into tonic's body.
//!
//! Run with `cargo run -p examples --example tonic_client`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use palisade::prelude::*;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A gRPC server with the standard health service, on a free port.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("llm.Chat", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(health_service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    let breaker = CircuitBreakerLayer::grpc().provider("grpc-llm").build()?;
    let handle = breaker.handle();
    let retry = RetryLayer::grpc().build()?;
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(5))?)
        .layer(BufferBodyLayer::new(64 * 1024)?)
        .layer(retry)
        .layer(breaker)
        .layer(AttemptTimeoutLayer::new(Duration::from_secs(2))?)
        .layer(PropagateDeadlineLayer::new(TimeoutHeader::Grpc))
        .map_request(|req: http::Request<Full<Bytes>>| req.map(tonic::body::Body::new))
        .service(channel);
    let mut client = HealthClient::new(stack);

    for _ in 0..3 {
        let res = client
            .check(HealthCheckRequest {
                service: "llm.Chat".into(),
            })
            .await?;
        let status =
            ServingStatus::try_from(res.into_inner().status).unwrap_or(ServingStatus::Unknown);
        println!("llm.Chat is {status:?}; breaker {}", handle.state());
    }
    // Asking about a service the server does not know is our mistake
    // (NOT_FOUND), not the server's failure: the breaker stays closed.
    for _ in 0..10 {
        let err = client
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    println!("10 NOT_FOUND answers later, breaker {}", handle.state());
    assert_eq!(handle.state(), CircuitState::Closed);
    Ok(())
}
