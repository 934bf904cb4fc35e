//! [`RequestMarks`]: what a request says about how it may be handled,
//! beyond its deadline.

use crate::deadline::WithDeadline;

/// Marks a request as safe (`true`) or unsafe (`false`) to send more than
/// once at the same time (a hedge). A chat completion is; a call with side
/// effects (a tool that books a flight) is not. Put it in an
/// `http::Request`'s extensions; a request without it gets the hedging
/// layer's configured default.
///
/// ```
/// use palisade_core::{Hedgeable, RequestMarks};
///
/// let mut req = http::Request::new(());
/// assert_eq!(req.hedgeable(), None);
/// req.extensions_mut().insert(Hedgeable(false));
/// assert_eq!(req.hedgeable(), Some(false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hedgeable(pub bool);

/// Marks a request whose answer is a stream (server-sent events): its
/// latency that matters is the time to the first token, not to the end,
/// so the layers that track latency (the balancer's peak EWMA, the hedge
/// delay's percentiles) keep a separate estimate for streams. Put it in an
/// `http::Request`'s extensions; a request without it is not a stream.
///
/// ```
/// use palisade_core::{RequestMarks, Streaming};
///
/// let mut req = http::Request::new(());
/// assert!(!req.streaming());
/// req.extensions_mut().insert(Streaming(true));
/// assert!(req.streaming());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streaming(pub bool);

/// Pins a request to one provider: a fallback chain calls that provider
/// alone (no other tier, no tier mate, no hedge), because only it can
/// answer. An OpenAI Responses API request that continues a response a
/// provider stored (`previous_response_id`) is one: another provider has
/// no such response. A pin naming no provider of the chain is ignored.
/// Put it in an `http::Request`'s extensions.
///
/// ```
/// use palisade_core::{Pinned, ProviderId, RequestMarks};
///
/// let mut req = http::Request::new(());
/// assert_eq!(req.pinned(), None);
/// req.extensions_mut().insert(Pinned(ProviderId::new("openai-east")));
/// assert_eq!(req.pinned().map(|p| p.as_str()), Some("openai-east"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned(pub crate::ProviderId);

/// What a request says about how the layers may handle it, beyond its
/// deadline ([`HasDeadline`](crate::HasDeadline)). Every method has a
/// default ("nothing said"), so a request type of your own needs only
/// `impl RequestMarks for MyRequest {}`.
pub trait RequestMarks {
    /// Whether the request may be hedged (see [`Hedgeable`]); `None`: not
    /// said, the layer's default applies.
    fn hedgeable(&self) -> Option<bool> {
        None
    }

    /// Whether the answer is a stream, timed to its first token (see
    /// [`Streaming`]); `false` unless said.
    fn streaming(&self) -> bool {
        false
    }

    /// The one provider that may answer it (see [`Pinned`]); `None`
    /// unless said.
    fn pinned(&self) -> Option<&crate::ProviderId> {
        None
    }
}

impl<B> RequestMarks for http::Request<B> {
    fn hedgeable(&self) -> Option<bool> {
        self.extensions().get::<Hedgeable>().map(|h| h.0)
    }

    fn streaming(&self) -> bool {
        self.extensions().get::<Streaming>().is_some_and(|s| s.0)
    }

    fn pinned(&self) -> Option<&crate::ProviderId> {
        self.extensions().get::<Pinned>().map(|p| &p.0)
    }
}

/// A plain value under a deadline says nothing: the layers' defaults apply.
impl<T> RequestMarks for WithDeadline<T> {}

macro_rules! unmarked {
    ($($t:ty),* $(,)?) => { $(
        /// A plain value says nothing: the layers' defaults apply.
        impl RequestMarks for $t {}
    )* };
}

unmarked!((), bool, u32, u64, usize, i32, i64, String, &'static str);

/// A plain value says nothing: the layers' defaults apply.
impl<T> RequestMarks for Vec<T> {}
