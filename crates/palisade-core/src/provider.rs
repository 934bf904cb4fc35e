//! Provider identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

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
    use std::collections::HashSet;

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
}
