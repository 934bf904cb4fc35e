//! Which provider stored which response (OpenAI's Responses API), so that
//! a request continuing one (`previous_response_id`) goes to the provider
//! that has it: another has no such response and would answer 404.
//!
//! Each answer of `/v1/responses` is remembered by its `id` (a whole
//! answer's, or a stream's `response.created` event's) with the provider
//! that gave it, in a bounded concurrent cache: the least used ids are
//! forgotten past [`REMEMBERED`]. A continuation whose response is known
//! is pinned to that provider ([`palisade_core::Pinned`]): the router
//! calls it alone, no fallback, no hedge.
//!
//! In a fleet (`[palisade.fleet]`), each id is also written to Redis as a
//! note (`palisade_redis::Notes`, kept `response_ids_ttl_ms`), and an id
//! this gateway does not remember is looked up there: a response made
//! through one replica is continued and read through any. One unknown to
//! both (forgotten, or Redis down) is routed as any request, and if the
//! provider it reaches has no such response the others are asked in turn
//! (`routes.rs`).
//!
//! With client keys, each id is remembered with the key that made it too:
//! a continuation or a call about it (`stored.rs`) from another key is
//! answered as for a response that does not exist, since the providers,
//! called with the gateway's own key, would serve anyone.

use std::sync::Arc;

use palisade::redis::Notes;
use palisade_core::ProviderId;

/// How many response ids are remembered at most.
pub(crate) const REMEMBERED: usize = 100_000;

/// Response ids and the providers that stored them.
pub(crate) struct Affinity {
    ids: quick_cache::sync::Cache<Arc<str>, Holder>,
    /// The fleet's record of the same, when the gateway is in one.
    fleet: Option<Notes>,
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
            .field("fleet", &self.fleet.is_some())
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
            fleet: None,
        }
    }

    /// Shares what is remembered with a fleet, through its `notes`.
    pub(crate) fn shared(self, notes: Notes) -> Self {
        Affinity {
            fleet: Some(notes),
            ..self
        }
    }

    /// How many ids are remembered here.
    pub(crate) fn remembered(&self) -> usize {
        self.ids.len()
    }

    /// What the fleet's notes have done, when the gateway is in a fleet.
    pub(crate) fn fleet_notes(&self) -> Option<palisade::redis::NotesSnapshot> {
        self.fleet.as_ref().map(Notes::snapshot)
    }

    /// Remembers that `provider` stored response `id` for the client key
    /// `owner` (`None` without client keys), here and for the fleet.
    pub(crate) fn stored(&self, id: &str, provider: &ProviderId, owner: Option<Arc<str>>) {
        if id.is_empty() {
            return;
        }
        let holder = Holder {
            provider: provider.clone(),
            owner,
        };
        if let Some(notes) = &self.fleet {
            notes.put(id, &holder.note());
        }
        self.ids.insert(id.into(), holder);
    }

    /// What this gateway remembers of response `id` for the client key
    /// `caller`.
    pub(crate) fn known_here(&self, id: &str, caller: Option<&str>) -> Known {
        match self.ids.get(id) {
            None => Known::Unknown,
            Some(h) => h.known_by(caller),
        }
    }

    /// What is known of response `id` for the client key `caller`: here,
    /// else in the fleet's notes (then remembered here too).
    pub(crate) async fn known(&self, id: &str, caller: Option<&str>) -> Known {
        let here = self.known_here(id, caller);
        let Some(notes) = self.fleet.as_ref().filter(|_| here == Known::Unknown) else {
            return here;
        };
        match notes.get(id).await.as_deref().and_then(Holder::from_note) {
            Some(holder) => {
                let known = holder.known_by(caller);
                self.ids.insert(id.into(), holder);
                known
            }
            None => Known::Unknown,
        }
    }

    /// Forgets response `id` (deleted at its provider), here and for the
    /// fleet.
    pub(crate) fn forget(&self, id: &str) {
        self.ids.remove(id);
        if let Some(notes) = &self.fleet {
            notes.remove(id);
        }
    }

    /// The response a Responses API request body continues (its
    /// `previous_response_id`) and what is known of it for `caller`;
    /// `None` when it continues none. A body that never names the key is
    /// not parsed.
    pub(crate) async fn pin_for(
        &self,
        raw: &[u8],
        body: impl FnOnce() -> Option<String>,
        caller: Option<&str>,
    ) -> Option<(String, Known)> {
        memchr::memmem::find(raw, b"previous_response_id")?;
        let id = body()?;
        let known = self.known(&id, caller).await;
        Some((id, known))
    }
}

impl Holder {
    fn known_by(&self, caller: Option<&str>) -> Known {
        if self.owner.as_deref() == caller {
            Known::At(self.provider.clone())
        } else {
            Known::Others
        }
    }

    /// As the fleet's note holds it: `["east", "key-id"]` (`null` for no
    /// owner).
    fn note(&self) -> String {
        serde_json::to_string(&(self.provider.as_str(), self.owner.as_deref())).unwrap_or_default()
    }

    fn from_note(note: &str) -> Option<Holder> {
        let (provider, owner) = serde_json::from_str::<(String, Option<String>)>(note).ok()?;
        Some(Holder {
            provider: ProviderId::new(provider),
            owner: owner.map(Arc::from),
        })
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

    #[tokio::test]
    async fn a_stored_response_pins_its_continuations_and_the_oldest_are_forgotten() {
        let a = Affinity::new(2);
        let east = ProviderId::new("east");
        a.stored("resp_1", &east, None);
        let body = br#"{"model":"m","previous_response_id":"resp_1","input":"more"}"#;
        assert_eq!(
            a.pin_for(body, || Some("resp_1".into()), None).await,
            Some(("resp_1".into(), Known::At(east.clone())))
        );
        // Not a continuation: the body is not parsed.
        assert_eq!(
            a.pin_for(br#"{"input":"x"}"#, || panic!("parsed"), None)
                .await,
            None
        );
        assert_eq!(
            a.pin_for(body, || Some("resp_unknown".into()), None).await,
            Some(("resp_unknown".into(), Known::Unknown))
        );
        a.forget("resp_1");
        assert_eq!(a.known("resp_1", None).await, Known::Unknown);
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

    #[tokio::test]
    async fn a_response_made_with_a_key_is_that_keys_alone() {
        let a = Affinity::new(10);
        let east = ProviderId::new("east");
        a.stored("resp_a", &east, Some("alice".into()));
        assert_eq!(a.known_here("resp_a", Some("alice")), Known::At(east));
        assert_eq!(a.known_here("resp_a", Some("bob")), Known::Others);
        assert_eq!(a.known_here("resp_a", None), Known::Others);
        let body = br#"{"previous_response_id":"resp_a"}"#;
        assert_eq!(
            a.pin_for(body, || Some("resp_a".into()), Some("bob")).await,
            Some(("resp_a".into(), Known::Others))
        );
    }

    #[test]
    fn a_holder_is_noted_for_the_fleet_and_read_back() {
        for owner in [None, Some(Arc::<str>::from("key \"a\"\t1"))] {
            let h = Holder {
                provider: ProviderId::new("east-1"),
                owner,
            };
            assert_eq!(Holder::from_note(&h.note()), Some(h.clone()));
        }
        assert_eq!(
            Holder {
                provider: ProviderId::new("east"),
                owner: None
            }
            .note(),
            r#"["east",null]"#
        );
        for garbage in ["", "east", "[1,2]", r#"["east"]"#, "{}"] {
            assert_eq!(Holder::from_note(garbage), None, "{garbage}");
        }
    }
}
