//! [`Served`]: what palisade did to answer one call, carried on the answer.

use crate::ProviderId;

/// The record of one answered call, on the response (an `http::Response`'s
/// extensions): which provider answered, after how many attempts there,
/// how many providers came before it, whether the answer is a degraded
/// stand-in, and whether a hedge won it. Each layer fills in what it knows: the retry layer
/// the attempts, the fallback chain (and so the umbrella's router) the
/// provider, the providers passed over and the degradation.
///
/// Layers write it through their classifier's
/// [`Classify::served`](crate::Classify::served), which the HTTP and gRPC
/// classifiers implement; a response type without extensions carries
/// none.
///
/// ```
/// use palisade_core::{BoxError, Classify, HttpClassifier, Served};
///
/// let mut res = http::Response::new(());
/// let served = Classify::<_, BoxError>::served(&HttpClassifier::new(), &mut res).unwrap();
/// served.attempts = 2;
/// assert_eq!(res.extensions().get::<Served>().unwrap().attempts, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// The provider that answered, when the layer that saw it was told its
    /// name.
    pub provider: Option<ProviderId>,
    /// Calls made to that provider for this request, the first included
    /// (1 when it was not retried).
    pub attempts: u32,
    /// Providers tried or skipped before the one that answered (0 when the
    /// first choice answered).
    pub fallbacks: u32,
    /// Whether the answer is a stand-in built after every provider failed.
    pub degraded: bool,
    /// Whether the answer came from a hedge (a second call sent because
    /// the first was late) rather than from the first call.
    pub hedged: bool,
}

impl Default for Served {
    fn default() -> Self {
        Served {
            provider: None,
            attempts: 1,
            fallbacks: 0,
            degraded: false,
            hedged: false,
        }
    }
}

impl Served {
    /// The record in `res`'s extensions, inserted (as the default: one
    /// attempt, no fallback) when there is none yet.
    pub fn in_response<B>(res: &mut http::Response<B>) -> &mut Served {
        res.extensions_mut().get_or_insert_default::<Served>()
    }
}
