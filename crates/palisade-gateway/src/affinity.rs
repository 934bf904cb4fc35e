//! Which provider stored which response (OpenAI's Responses API), so that
//! a request continuing one (`previous_response_id`) goes to the provider
//! that has it: another has no such response and would answer 404.
//!
//! Each answer of `/v1/responses` is remembered by its `id` (a whole
//! answer's, or a stream's `response.created` event's) with the provider
//! that gave it, in a bounded concurrent cache: the least used ids are
//! forgotten past [`REMEMBERED`]. A continuation whose response is known
//! is pinned to that provider ([`palisade_core::Pinned`]): the router
//! calls it alone, no fallback, no hedge. One unknown (forgotten, or
//! stored through another gateway of a fleet) is routed as any request.

use std::sync::Arc;

use palisade_core::ProviderId;

/// How many response ids are remembered at most.
pub(crate) const REMEMBERED: usize = 100_000;

/// Response ids and the providers that stored them.
pub(crate) struct Affinity {
    ids: quick_cache::sync::Cache<Arc<str>, ProviderId>,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity")
            .field("remembered", &self.ids.len())
            .finish()
    }
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity::new(REMEMBERED)
    }
}

impl Affinity {
    pub(crate) fn new(capacity: usize) -> Self {
        Affinity {
            ids: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Remembers that `provider` stored response `id`.
    pub(crate) fn stored(&self, id: &str, provider: &ProviderId) {
        if !id.is_empty() {
            self.ids.insert(id.into(), provider.clone());
        }
    }

    /// The provider that stored response `id`, if remembered.
    pub(crate) fn provider_of(&self, id: &str) -> Option<ProviderId> {
        self.ids.get(id)
    }

    /// The provider a Responses API request body must go to: the one that
    /// stored its `previous_response_id`, if remembered. A body that never
    /// names the key is not parsed.
    pub(crate) fn pin_for(
        &self,
        raw: &[u8],
        body: impl FnOnce() -> Option<String>,
    ) -> Option<ProviderId> {
        memchr::memmem::find(raw, b"previous_response_id")?;
        self.provider_of(&body()?)
    }
}

/// The `id` of a whole Responses API answer (its top level).
pub(crate) fn answer_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_response_pins_its_continuations_and_the_oldest_are_forgotten() {
        let a = Affinity::new(2);
        let east = ProviderId::new("east");
        a.stored("resp_1", &east);
        let body = br#"{"model":"m","previous_response_id":"resp_1","input":"more"}"#;
        assert_eq!(
            a.pin_for(body, || Some("resp_1".into())),
            Some(east.clone())
        );
        // Not a continuation: the body is not parsed.
        assert_eq!(a.pin_for(br#"{"input":"x"}"#, || panic!("parsed")), None);
        assert_eq!(a.pin_for(body, || Some("resp_unknown".into())), None);
        // Bounded: more ids than room, some are forgotten.
        for i in 2..50 {
            a.stored(&format!("resp_{i}"), &east);
        }
        assert!(a.ids.len() <= 2, "{}", a.ids.len());
        assert_eq!(
            answer_id(br#"{"object":"response","id":"resp_9","output":[]}"#).as_deref(),
            Some("resp_9")
        );
        assert_eq!(answer_id(b"not json"), None);
    }
}
