//! [`CacheSettings`]: what a cache keeps, for how long, and when it
//! answers from it.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};
use serde::{Deserialize, Serialize};

use crate::openai::FreshWhen;

/// A cache's settings (a `[cache]` config section), each with its default.
///
/// ```
/// use palisade_cache::CacheSettings;
///
/// let s = CacheSettings::default();
/// assert!(s.stale_if_error && s.coalesce && !s.fresh);
/// let bad = CacheSettings { max_stale_ms: 0, max_bytes: 10, max_entry_bytes: 20, ..s };
/// let e = bad.check().unwrap_err();
/// let paths: Vec<&str> = e.problems().iter().map(|p| p.path.as_str()).collect();
/// assert_eq!(paths, ["cache.max_stale_ms", "cache.max_entry_bytes"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Answer from the cache, with no call, while an entry is younger than
    /// [`ttl_ms`](Self::ttl_ms), for requests whose key allows it (an
    /// LLM's answer repeats only at temperature 0; see
    /// [`FreshWhen`](crate::FreshWhen)). Default false.
    pub fresh: bool,
    /// How long an answer is fresh, in ms (default 60 000).
    pub ttl_ms: u64,
    /// When the call fails (every provider, for a router), answer with the
    /// newest cached answer younger than [`max_stale_ms`](Self::max_stale_ms),
    /// marked degraded. A caller's own mistake (a 4xx-class failure) is
    /// never answered this way. Default true.
    pub stale_if_error: bool,
    /// The oldest answer served when the call failed, in ms (default
    /// 3 600 000: an hour).
    pub max_stale_ms: u64,
    /// Identical requests in flight at once share one call (streams
    /// excepted). Default true.
    pub coalesce: bool,
    /// The cache's size bound, in bytes of stored answers (default 64 MiB).
    pub max_bytes: u64,
    /// Answers larger than this are passed through but not stored, in
    /// bytes (default 1 MiB).
    pub max_entry_bytes: u64,
    /// For keyers that decide per request ([`OpenAiKey::from_settings`](crate::OpenAiKey::from_settings)):
    /// when a fresh answer may be reused (default: at temperature 0).
    pub fresh_when: FreshWhen,
    /// For the same keyers: whether the request's `user` is part of the
    /// key, so different end users never share an answer (default false).
    pub vary_user: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            fresh: false,
            ttl_ms: 60_000,
            stale_if_error: true,
            max_stale_ms: 3_600_000,
            coalesce: true,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            fresh_when: FreshWhen::TemperatureZero,
            vary_user: false,
        }
    }
}

/// The longest an entry may be kept or served: a week.
const MAX_AGE_MS: u64 = 7 * 24 * 3_600_000;

impl CacheSettings {
    /// Every bad value, each named (`cache.ttl_ms`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("cache");
        for (name, ms, used) in [
            ("ttl_ms", self.ttl_ms, self.fresh),
            ("max_stale_ms", self.max_stale_ms, self.stale_if_error),
        ] {
            if used && ms == 0 {
                p.add(name, "0 keeps nothing; use at least 1");
            }
            if ms > MAX_AGE_MS {
                p.add(name, format!("{ms} is more than a week ({MAX_AGE_MS})"));
            }
        }
        if self.max_bytes == 0 {
            p.add("max_bytes", "0 stores nothing; use at least 1");
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_bytes {
            p.add(
                "max_entry_bytes",
                format!(
                    "{} is not within 1..=max_bytes ({})",
                    self.max_entry_bytes, self.max_bytes
                ),
            );
        }
        p.finish()
    }

    /// [`ttl_ms`](Self::ttl_ms) as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// [`max_stale_ms`](Self::max_stale_ms) as a duration.
    pub fn max_stale(&self) -> Duration {
        Duration::from_millis(self.max_stale_ms)
    }

    /// How long an entry is of any use: the longer of the two ages.
    pub(crate) fn keep_for(&self) -> Duration {
        let fresh = if self.fresh { self.ttl_ms } else { 0 };
        let stale = if self.stale_if_error {
            self.max_stale_ms
        } else {
            0
        };
        Duration::from_millis(fresh.max(stale))
    }
}
