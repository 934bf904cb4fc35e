//! palisade-cache: a cache as a tower `Layer` for LLM calls.
//!
//! - **An answer when every provider is down** (stale-if-error, on by
//!   default): a failed call is answered by the newest stored answer
//!   younger than `max_stale`, marked degraded.
//! - **Fewer calls**: identical requests in flight share one call
//!   (coalescing, on by default); a fresh answer answers with no call
//!   where answers repeat (`fresh`, off by default; for LLMs only at
//!   temperature 0, [`FreshWhen`]).
//! - **LLM-aware keys and answers** ([`OpenAiKey`], [`HttpRecord::openai`]):
//!   a request is keyed by what decides its answer (not key order,
//!   whitespace, `user` or `stream`); a streamed answer is recorded as it
//!   passes and replayed as JSON or SSE, whichever is asked for.
//! - **Bounded**: quick_cache's concurrent store, bounded by bytes; a
//!   lookup takes a shard's shared read lock, never a `Mutex`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_cache::{CacheLayer, CacheSettings, CloneRecord, Lookup};
//! use palisade_core::BoxError;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let cache = CacheLayer::builder(CloneRecord::<u64>::new())
//!     .settings(CacheSettings { fresh: true, ..CacheSettings::default() })
//!     .build(|n: &u64| Some(Lookup::new(u128::from(*n))))
//!     .unwrap();
//! let square = cache.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n * n) }));
//! assert_eq!(square.clone().oneshot(12).await.unwrap(), 144);
//! assert_eq!(square.oneshot(12).await.unwrap(), 144);
//! let seen = cache.handle().snapshot();
//! assert_eq!((seen.calls, seen.hits), (1, 1));
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod flight;
mod future;
mod http;
mod key;
mod layer;
mod openai;
mod record;
mod service;
mod settings;
mod store;

pub use crate::future::ResponseFuture;
pub use crate::http::{HttpEntry, HttpRecord, RecordBody, CACHE_HEADER, STALE_CACHE};
pub use crate::key::{hash_bytes, Keyer, Lookup};
pub use crate::layer::{Builder, CacheHandle, CacheLayer, CacheSnapshot};
pub use crate::openai::{answer_to_stream, stream_to_answer, FreshWhen, OpenAiKey};
pub use crate::record::{CloneRecord, Keep, Record, Replay};
pub use crate::service::Cache;
pub use crate::settings::CacheSettings;
