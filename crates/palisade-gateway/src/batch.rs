//! The embeddings batcher (`[batch]`): concurrent `/v1/embeddings`
//! requests of one model and format are sent as one upstream call and the
//! answer is split back to each caller.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use palisade_batch::{
    embeddings_key, embeddings_size, merge_embeddings, split_embeddings, Batcher, Size,
};
use palisade_core::{BoxError, Served};

use crate::upstream::{ChatRequest, Endpoint, GatewayBody};

/// Batches the gateway's embeddings requests (other requests pass).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatewayBatcher;

type Answer = http::Response<GatewayBody>;

/// An answer with `body`, the status, headers and record of `parts`.
fn answer(parts: &http::response::Parts, body: Bytes) -> Answer {
    let body = http_body_util::Full::new(body)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync();
    let mut res = http::Response::new(body);
    *res.status_mut() = parts.status;
    *res.headers_mut() = parts.headers.clone();
    res.headers_mut().remove(http::header::CONTENT_LENGTH);
    if let Some(served) = parts.extensions.get::<Served>() {
        res.extensions_mut().insert(served.clone());
    }
    res
}

impl Batcher<ChatRequest, Answer> for GatewayBatcher {
    type Key = String;

    fn key(&self, req: &ChatRequest) -> Option<String> {
        if req.endpoint != Endpoint::Embeddings {
            return None;
        }
        embeddings_key(req.body())
    }

    fn size(&self, req: &ChatRequest) -> Size {
        embeddings_size(req.body())
    }

    fn merge(&self, reqs: Vec<ChatRequest>) -> ChatRequest {
        let first = reqs.first().cloned();
        let bodies = reqs.into_iter().map(ChatRequest::into_body).collect();
        let merged = merge_embeddings(bodies);
        match first {
            Some(first) => {
                let mut req = first;
                req.set_body(merged);
                req
            }
            None => {
                let mut req = ChatRequest::new("", merged, false);
                req.endpoint = Endpoint::Embeddings;
                req
            }
        }
    }

    fn split(
        &self,
        res: Answer,
        sizes: Vec<usize>,
    ) -> BoxFuture<'static, Result<Vec<Answer>, BoxError>> {
        Box::pin(async move {
            let (parts, body) = res.into_parts();
            let bytes = crate::whole::read_whole(body).await?;
            if !parts.status.is_success() {
                // The provider refused the batch: each caller gets its
                // refusal.
                return Ok(sizes
                    .iter()
                    .map(|_| answer(&parts, bytes.clone()))
                    .collect());
            }
            let whole: serde_json::Value = serde_json::from_slice(&bytes)?;
            split_embeddings(&whole, &sizes)?
                .into_iter()
                .map(|part| Ok(answer(&parts, Bytes::from(serde_json::to_vec(&part)?))))
                .collect()
        })
    }
}
