//! Provider identifiers.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// The name of an upstream provider (`"openai"`, `"anthropic"`, `"local"`).
///
/// Every palisade layer tags its events, errors and metrics with the
/// provider it protects. A `ProviderId` is a shared string: cloning it bumps
/// a reference count and never copies the name, so layers can hold one per
/// service clone and put it in every error for free.
///
/// It hashes and compares as the plain string, so a map keyed by
/// `ProviderId` can be queried with a `&str`.
///
/// ```
/// use palisade_core::ProviderId;
/// use std::collections::HashMap;
///
/// let id = ProviderId::from("openai");
/// let mut calls = HashMap::new();
/// calls.insert(id.clone(), 3);
/// assert_eq!(calls.get("openai"), Some(&3));
/// assert_eq!(id.to_string(), "openai");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(Arc<str>);

impl ProviderId {
    /// Creates a provider id from any string.
    pub fn new(name: impl AsRef<str>) -> Self {
        ProviderId(Arc::from(name.as_ref()))
    }

    /// The provider's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This name, kept for the life of the process: the same `&'static`
    /// for every call with an equal name.
    ///
    /// Layers intern the provider they are built with, so a call's future
    /// can name it in an error without cloning it (a clone bumps a
    /// reference count that every worker thread shares). Each distinct
    /// name costs one small allocation that is never freed, so intern
    /// names from configuration, not from per-request data.
    ///
    /// ```
    /// use palisade_core::ProviderId;
    ///
    /// let a = ProviderId::new("openai").interned();
    /// let b = ProviderId::from(String::from("openai")).interned();
    /// assert!(std::ptr::eq(a, b));
    /// assert_eq!(a.as_str(), "openai");
    /// ```
    pub fn interned(&self) -> &'static ProviderId {
        static NAMES: OnceLock<Mutex<HashSet<&'static ProviderId>>> = OnceLock::new();
        // Only whole entries are ever inserted, so a panic elsewhere while
        // the set was held leaves it consistent.
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(self) {
            return name;
        }
        let name: &'static ProviderId = Box::leak(Box::new(self.clone()));
        names.insert(name);
        name
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for ProviderId {
    fn from(s: &str) -> Self {
        ProviderId(Arc::from(s))
    }
}

impl From<String> for ProviderId {
    fn from(s: String) -> Self {
        ProviderId(Arc::from(s))
    }
}

impl From<&String> for ProviderId {
    fn from(s: &String) -> Self {
        ProviderId::from(s.as_str())
    }
}

impl Borrow<str> for ProviderId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ProviderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ProviderId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ProviderId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl serde::Serialize for ProviderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ProviderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ProviderId::from(&*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_name() {
        let a = ProviderId::from("anthropic");
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(a, b);
    }

    #[test]
    fn works_as_a_key_looked_up_by_str() {
        let mut set = HashSet::new();
        set.insert(ProviderId::from(String::from("local")));
        assert!(set.contains("local"));
        assert!(!set.contains("openai"));
        assert_eq!(format!("{:?}", ProviderId::new("x")), "\"x\"");
    }

    #[test]
    fn interning_keeps_one_copy_per_name() {
        let a = ProviderId::new("interned-a").interned();
        let again = ProviderId::new("interned-a").interned();
        let b = ProviderId::new("interned-b").interned();
        assert!(std::ptr::eq(a, again));
        assert!(!std::ptr::eq(a, b));
        assert_eq!((a.as_str(), b.as_str()), ("interned-a", "interned-b"));
    }
}
