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
//!
//! With client keys, each id is remembered with the key that made it too:
//! a continuation or a call about it (`stored.rs`) from another key is
//! answered as for a response that does not exist, since the providers,
//! called with the gateway's own key, would serve anyone.

use std::sync::Arc;

use palisade_core::ProviderId;

/// How many response ids are remembered at most.
pub(crate) const REMEMBERED: usize = 100_000;

/// Response ids and the providers that stored them.
pub(crate) struct Affinity {
    ids: quick_cache::sync::Cache<Arc<str>, Holder>,
}

/// Who holds a stored response: the provider, and the client key that
/// made it (`None` when the gateway has no client keys).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    provider: ProviderId,
    owner: Option<Arc<str>>,
}

/// What the gateway knows of a response id, for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// Stored by this provider, for this caller.
    At(ProviderId),
    /// Not remembered (never seen here, or forgotten).
    Unknown,
    /// Stored for another client key: not this caller's to use.
    Others,
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

    /// Remembers that `provider` stored response `id` for the client key
    /// `owner` (`None` without client keys).
    pub(crate) fn stored(&self, id: &str, provider: &ProviderId, owner: Option<Arc<str>>) {
        if !id.is_empty() {
            let provider = provider.clone();
            self.ids.insert(id.into(), Holder { provider, owner });
        }
    }

    /// What is known of response `id` for the client key `caller`.
    pub(crate) fn known(&self, id: &str, caller: Option<&str>) -> Known {
        match self.ids.get(id) {
            None => Known::Unknown,
            Some(h) if h.owner.as_deref() == caller => Known::At(h.provider),
            Some(_) => Known::Others,
        }
    }

    /// Forgets response `id` (deleted at its provider).
    pub(crate) fn forget(&self, id: &str) {
        self.ids.remove(id);
    }

    /// What is known of the response a Responses API request body
    /// continues (its `previous_response_id`), for `caller`; `Unknown`
    /// when it continues none. A body that never names the key is not
    /// parsed.
    pub(crate) fn pin_for(
        &self,
        raw: &[u8],
        body: impl FnOnce() -> Option<String>,
        caller: Option<&str>,
    ) -> Known {
        if memchr::memmem::find(raw, b"previous_response_id").is_none() {
            return Known::Unknown;
        }
        match body() {
            Some(id) => self.known(&id, caller),
            None => Known::Unknown,
        }
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
        a.stored("resp_1", &east, None);
        let body = br#"{"model":"m","previous_response_id":"resp_1","input":"more"}"#;
        assert_eq!(
            a.pin_for(body, || Some("resp_1".into()), None),
            Known::At(east.clone())
        );
        // Not a continuation: the body is not parsed.
        assert_eq!(
            a.pin_for(br#"{"input":"x"}"#, || panic!("parsed"), None),
            Known::Unknown
        );
        assert_eq!(
            a.pin_for(body, || Some("resp_unknown".into()), None),
            Known::Unknown
        );
        a.forget("resp_1");
        assert_eq!(a.known("resp_1", None), Known::Unknown);
        // Bounded: more ids than room, some are forgotten.
        for i in 2..50 {
            a.stored(&format!("resp_{i}"), &east, None);
        }
        assert!(a.ids.len() <= 2, "{}", a.ids.len());
        assert_eq!(
            answer_id(br#"{"object":"response","id":"resp_9","output":[]}"#).as_deref(),
            Some("resp_9")
        );
        assert_eq!(answer_id(b"not json"), None);
    }

    #[test]
    fn a_response_made_with_a_key_is_that_keys_alone() {
        let a = Affinity::new(10);
        let east = ProviderId::new("east");
        a.stored("resp_a", &east, Some("alice".into()));
        assert_eq!(a.known("resp_a", Some("alice")), Known::At(east));
        assert_eq!(a.known("resp_a", Some("bob")), Known::Others);
        assert_eq!(a.known("resp_a", None), Known::Others);
        let body = br#"{"previous_response_id":"resp_a"}"#;
        assert_eq!(
            a.pin_for(body, || Some("resp_a".into()), Some("bob")),
            Known::Others
        );
    }
}
