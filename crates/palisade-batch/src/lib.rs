//! palisade-batch: request batching as a tower `Layer`.
//!
//! Concurrent small requests of one key (for OpenAI-style embeddings: one
//! model and format) are gathered into one upstream call for at most
//! `max_delay`, `max_items` inputs or `max_tokens` tokens, sent early when
//! a request's deadline calls for it, and the answer is split back to each
//! caller in order ([`BatchLayer`]). What a request holds and how requests
//! merge is an API's business ([`Batcher`]); embeddings come with it
//! ([`OpenAiEmbeddings`], and the JSON functions under it).
//!
//! A failed call's error reaches every caller of its batch (as a
//! [`SharedError`](palisade_core::SharedError));
//! a caller that goes away is left out of its batch; a request alone is
//! sent as it is.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod batcher;
mod future;
mod layer;
mod openai;
mod service;
mod settings;
mod worker;

pub use crate::batcher::{Batcher, Size};
pub use crate::future::ResponseFuture;
pub use crate::layer::{BatchHandle, BatchLayer, BatchSnapshot};
pub use crate::openai::{
    embeddings_key, embeddings_size, merge_embeddings, split_embeddings, OpenAiEmbeddings,
};
pub use crate::service::Batch;
pub use crate::settings::BatchSettings;
