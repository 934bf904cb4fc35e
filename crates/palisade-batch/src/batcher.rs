//! [`Batcher`]: which requests may share a call, how many inputs each
//! holds, how they are merged into one request and how its answer is split.

use std::hash::Hash;

use futures_util::future::BoxFuture;
use palisade_core::BoxError;

/// What a request brings to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Its inputs (texts to embed).
    pub items: usize,
    /// Its estimated tokens.
    pub tokens: u64,
}

/// Knows one API's requests well enough to batch them.
///
/// ```
/// use palisade_batch::{Batcher, Size};
/// use palisade_core::BoxError;
/// use futures_util::future::BoxFuture;
///
/// /// Requests are lists of numbers; an answer doubles each.
/// #[derive(Clone)]
/// struct Doubles;
///
/// impl Batcher<Vec<u32>, Vec<u32>> for Doubles {
///     type Key = ();
///     fn key(&self, _: &Vec<u32>) -> Option<()> { Some(()) }
///     fn size(&self, req: &Vec<u32>) -> Size { Size { items: req.len(), tokens: req.len() as u64 } }
///     fn merge(&self, reqs: Vec<Vec<u32>>) -> Vec<u32> { reqs.concat() }
///     fn split(&self, res: Vec<u32>, sizes: Vec<usize>) -> BoxFuture<'static, Result<Vec<Vec<u32>>, BoxError>> {
///         Box::pin(async move {
///             let mut rest = &res[..];
///             let mut out = Vec::new();
///             for n in sizes {
///                 let (mine, tail) = rest.split_at(n);
///                 out.push(mine.to_vec());
///                 rest = tail;
///             }
///             Ok(out)
///         })
///     }
/// }
/// ```
pub trait Batcher<Req, Res>: Clone + Send + Sync + 'static {
    /// What requests must share to be batched together (the model, the
    /// answer's format...).
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The request's batch, or `None` to send it on its own.
    fn key(&self, req: &Req) -> Option<Self::Key>;

    /// Its inputs and tokens.
    fn size(&self, req: &Req) -> Size;

    /// One request holding every input of `reqs`, in order (all of one
    /// key).
    fn merge(&self, reqs: Vec<Req>) -> Req;

    /// The merged request's answer split into one answer per request, in
    /// order, the `i`-th holding `sizes[i]` inputs' results.
    fn split(&self, res: Res, sizes: Vec<usize>) -> BoxFuture<'static, Result<Vec<Res>, BoxError>>;
}
