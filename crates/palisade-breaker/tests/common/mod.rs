//! Helpers shared by the breaker's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use palisade_core::BoxError;
use tower::Service;

/// What the fake provider should answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Call {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay: Duration,
}

pub const OK: Call = Call {
    status: 200,
    retry_after: None,
    delay: Duration::ZERO,
};
pub const FAIL: Call = Call {
    status: 500,
    retry_after: None,
    delay: Duration::ZERO,
};
pub const BAD_REQUEST: Call = Call {
    status: 400,
    retry_after: None,
    delay: Duration::ZERO,
};

pub fn rate_limited(secs: u64) -> Call {
    Call {
        status: 429,
        retry_after: Some(secs),
        delay: Duration::ZERO,
    }
}

pub fn slow(status: u16, delay: Duration) -> Call {
    Call {
        status,
        retry_after: None,
        delay,
    }
}

/// A fake provider that answers as told after the given delay, counting the
/// calls it receives.
#[derive(Debug, Clone, Default)]
pub struct Provider {
    pub calls: Arc<AtomicUsize>,
    pub ready_polls: Arc<AtomicUsize>,
}

impl Provider {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Call> for Provider {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready_polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, c: Call) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if !c.delay.is_zero() {
                tokio::time::sleep(c.delay).await;
            }
            let mut b = Response::builder().status(c.status);
            if let Some(s) = c.retry_after {
                b = b.header("retry-after", s.to_string());
            }
            Ok(b.body(()).unwrap())
        })
    }
}
