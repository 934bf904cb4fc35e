//! Reading an upstream's answers: error bodies are read (they are small)
//! and classified once, and the verdict travels with the response.

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full, Limited};
use palisade_core::{
    classify_error, BoxError, Classified, Classify, Failure, HttpClassifier, Outcome,
};

use super::pool::PooledBody;
use super::GatewayBody;

/// The largest upstream error body read (to classify it).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The failure the upstream's error body showed (context length, content
/// filter...), attached to the response so the classifier need not read
/// the body again.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamFailure(pub Failure);

/// Reads the gateway's responses: the kind found in the body when there
/// is one, else the status and headers (`Retry-After` and all).
#[derive(Debug, Clone, Default)]
pub struct GatewayClassifier(HttpClassifier);

impl<B> Classify<Response<B>, BoxError> for GatewayClassifier {
    fn served<'r>(&self, res: &'r mut Response<B>) -> Option<&'r mut palisade_core::Served> {
        Some(palisade_core::Served::in_response(res))
    }

    /// The provider's rate headers, and the tokens the answer used as its
    /// [`Usage`](super::Usage) says (the one record of them on the answer:
    /// no [`TokenUsage`](palisade_core::TokenUsage) beside it).
    /// A stream's usage, reported when it ends (see
    /// [`UsageLater`](palisade_core::UsageLater)).
    fn usage_later(&self, res: &Response<B>) -> Option<palisade_core::UsageLater> {
        res.extensions().get::<palisade_core::UsageLater>().cloned()
    }

    fn rate_info(&self, res: &Response<B>) -> palisade_core::RateInfo {
        let mut info =
            palisade_core::RateInfo::from_headers_with(res.headers(), std::time::SystemTime::now);
        info.used_tokens = res.extensions().get::<super::Usage>().map(|u| u.total);
        info
    }

    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => match res.extensions().get::<UpstreamFailure>() {
                Some(UpstreamFailure(f)) => Outcome::Failure(*f),
                None => Classify::<_, BoxError>::classify(&self.0, Ok(res)),
            },
            Err(e) => Outcome::Failure(classify_error(&**e)),
        }
    }
}

/// A success passes with its body as it streams; an error's (small) body
/// is read, classified, and passed on whole, the verdict attached as an
/// [`UpstreamFailure`].
pub(super) async fn read_error_body(
    res: Response<PooledBody>,
) -> Result<Response<GatewayBody>, BoxError> {
    let (parts, incoming) = res.into_parts();
    if parts.status.is_success() {
        return Ok(Response::from_parts(
            parts,
            incoming.map_err(BoxError::from).boxed_unsync(),
        ));
    }
    let bytes = crate::whole::read_whole(Limited::new(incoming, MAX_ERROR_BODY))
        .await
        .unwrap_or_default();
    let buffered = Response::from_parts(parts, bytes);
    let outcome = HttpClassifier::new().classify_buffered(&buffered);
    let (mut parts, bytes) = buffered.into_parts();
    if let Outcome::Failure(f) = outcome {
        parts.extensions.insert(UpstreamFailure(f));
    }
    Ok(Response::from_parts(parts, full_body(bytes)))
}

/// An error of the HTTP exchange, with the causes a transport error
/// hides in its chain in its message (`invalid peer certificate:
/// UnknownIssuer`), classified as its chain says. A refusal (the process
/// out of files: nothing was sent) passes as it is, for the layers above
/// to read as one.
pub(super) fn transport_error(err: BoxError) -> BoxError {
    if err.is::<palisade_core::Rejected>() {
        return err;
    }
    let failure = classify_error(&*err);
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    Classified::new(failure, msg).into()
}

/// A body already read in full.
pub(super) fn full_body(bytes: Bytes) -> GatewayBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}
