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

use palisade_core::{BoxError, Classify, ErrorClassifier, RejectReason, Rejected};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::keyed::key::KeyOf;
use crate::keyed::shared::KeyedShared;
use crate::weigh::Weigh;

/// A service whose calls pass a limit per key. Made by
/// [`KeyedRateLimitLayer`](crate::KeyedRateLimitLayer).
pub struct KeyedRateLimit<S, X, K, W, C = ErrorClassifier> {
    inner: S,
    shared: Arc<KeyedShared<K>>,
    key: X,
    weigh: W,
    classifier: C,
}

impl<S, X, K, W, C> KeyedRateLimit<S, X, K, W, C> {
    pub(crate) fn new(
        inner: S,
        shared: Arc<KeyedShared<K>>,
        key: X,
        weigh: W,
        classifier: C,
    ) -> Self {
        KeyedRateLimit {
            inner,
            shared,
            key,
            weigh,
            classifier,
        }
    }
}

impl<S: Clone, X: Clone, K, W: Clone, C: Clone> Clone for KeyedRateLimit<S, X, K, W, C> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
            weigh: self.weigh.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, X, K, W, C> fmt::Debug for KeyedRateLimit<S, X, K, W, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl<S, X, K, W, C, Req> Service<Req> for KeyedRateLimit<S, X, K, W, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyOf<Req, Key = K>,
    // Sent with a stream's settlement to wherever the stream ends.
    K: Hash + Eq + Clone + Send + Sync + 'static,
    W: Weigh<Req>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = KeyedFuture<S::Future, K, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let mut settle = None;
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
            if self.shared.counts_tokens() {
                settle = Some(Settle {
                    shared: self.shared.clone(),
                    key,
                    tokens,
                    classifier: self.classifier.clone(),
                });
            }
        }
        KeyedFuture {
            state: State::Called {
                fut: self.inner.call(req),
                settle,
            },
        }
    }
}

/// A call's tokens, to correct by its answer's usage.
struct Settle<K, C> {
    shared: Arc<KeyedShared<K>>,
    key: K,
    tokens: u64,
    classifier: C,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static, C> Settle<K, C> {
    /// Corrects the call by what `res` used, now (a whole answer) or when
    /// its stream ends ([`UsageLater`](palisade_core::UsageLater)).
    fn with<T>(self, res: &T)
    where
        C: Classify<T, BoxError>,
    {
        if let Some(used) = self.classifier.rate_info(res).used_tokens {
            self.shared.correct(&self.key, self.tokens, used);
        } else if let Some(later) = self.classifier.usage_later(res) {
            let Settle {
                shared,
                key,
                tokens,
                ..
            } = self;
            later.push(move |used| {
                if let Some(used) = used {
                    shared.correct(&key, tokens, used);
                }
            });
        }
    }
}

impl<K, C> fmt::Debug for Settle<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settle")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`KeyedRateLimit`]: the inner call, or the
    /// refusal.
    #[derive(Debug)]
    pub struct KeyedFuture<F, K, C> {
        #[pin]
        state: State<F, K, C>,
    }
}

pin_project! {
    #[project = KeyedProj]
    #[derive(Debug)]
    enum State<F, K, C> {
        Called { #[pin] fut: F, settle: Option<Settle<K, C>> },
        Refused { error: Option<Rejected> },
    }
}

impl<F, T, E, K, C> Future for KeyedFuture<F, K, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            KeyedProj::Called { fut, settle } => {
                let result = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                if let (Ok(res), Some(s)) = (&result, settle.take()) {
                    s.with(res);
                }
                Poll::Ready(result)
            }
            KeyedProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("keyed rate limit future polled after completion")
                .into())),
        }
    }
}
