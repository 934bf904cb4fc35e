//! [`KeyOf`]: which key a request is limited under.

use http::{HeaderName, HeaderValue};

/// Gives the key a request is limited under; `None` leaves the request
/// to other limits (it passes this layer unlimited).
///
/// Implemented for closures `Fn(&Req) -> Option<K>` and for
/// [`HeaderKey`].
///
/// ```
/// use palisade_ratelimit::KeyOf;
///
/// let tenant = |req: &(u32, &str)| Some(req.0);
/// assert_eq!(tenant.key(&(7, "hello")), Some(7));
/// ```
pub trait KeyOf<Req> {
    /// The key: hashed and compared on every call, and kept while its
    /// bucket is not full; cheap to clone.
    type Key;

    /// The key of `req`, if it has one.
    fn key(&self, req: &Req) -> Option<Self::Key>;
}

impl<Req, K, F> KeyOf<Req> for F
where
    F: Fn(&Req) -> Option<K>,
{
    type Key = K;

    fn key(&self, req: &Req) -> Option<K> {
        self(req)
    }
}

/// Keys HTTP requests by one header's value (an API key, a tenant id):
/// the value itself, shared, so keying a request allocates nothing. A
/// request without the header, or with it empty, passes unlimited.
///
/// ```
/// use palisade_ratelimit::{HeaderKey, KeyOf};
///
/// let by_key = HeaderKey::new(http::header::AUTHORIZATION);
/// let req = http::Request::builder().header("authorization", "Bearer sk-1").body(()).unwrap();
/// assert_eq!(by_key.key(&req).unwrap(), "Bearer sk-1");
/// assert_eq!(by_key.key(&http::Request::new(())), None);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderKey { name }
    }
}

impl<B> KeyOf<http::Request<B>> for HeaderKey {
    type Key = HeaderValue;

    fn key(&self, req: &http::Request<B>) -> Option<HeaderValue> {
        req.headers()
            .get(&self.name)
            .filter(|v| !v.is_empty())
            .cloned()
    }
}
