//! [`KeyedRateLimit`]: the service a
//! [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer) makes, and its
//! future.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::keyed::key::KeyOf;
use crate::keyed::shared::KeyedShared;
use crate::weigh::Weigh;

/// A service whose calls pass a limit per key. Made by
/// [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer).
pub struct KeyedRateLimit<S, X, K, W> {
    inner: S,
    shared: Arc<KeyedShared<K>>,
    key: X,
    weigh: W,
}

impl<S, X, K, W> KeyedRateLimit<S, X, K, W> {
    pub(crate) fn new(inner: S, shared: Arc<KeyedShared<K>>, key: X, weigh: W) -> Self {
        KeyedRateLimit {
            inner,
            shared,
            key,
            weigh,
        }
    }
}

impl<S: Clone, X: Clone, K, W: Clone> Clone for KeyedRateLimit<S, X, K, W> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
            weigh: self.weigh.clone(),
        }
    }
}

impl<S, X, K, W> fmt::Debug for KeyedRateLimit<S, X, K, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl<S, X, K, W, Req> Service<Req> for KeyedRateLimit<S, X, K, W>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyOf<Req, Key = K>,
    K: Hash + Eq + Clone,
    W: Weigh<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(key) = self.key.key(&req) {
            let tokens = self.weigh.tokens(&req);
            if let Err(wait) = self.shared.admit(&key, tokens) {
                let mut e = Rejected::new(RejectReason::RateLimited)
                    .with_retry_after(Duration::from_nanos(wait));
                if let Some(p) = &self.shared.provider {
                    e = e.with_provider(p.clone());
                }
                return KeyedFuture {
                    state: State::Refused { error: Some(e) },
                };
            }
        }
        KeyedFuture {
            state: State::Called {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`KeyedRateLimit`]: the inner call, or the
    /// refusal.
    #[derive(Debug)]
    pub struct KeyedFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = KeyedProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F },
        Refused { error: Option<Rejected> },
    }
}

impl<F, T, E> Future for KeyedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            KeyedProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            KeyedProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("keyed rate limit future polled after completion")
                .into())),
        }
    }
}
