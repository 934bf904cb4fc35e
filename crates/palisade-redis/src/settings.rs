//! `[fleet]`: where the fleet's Redis is and how the replicas use it.

use palisade_core::{ConfigError, Problems};
use serde::{Deserialize, Serialize};

/// `[fleet]` (`[palisade.fleet]` in the gateway's file): share limits,
/// cooldowns and probes with every replica that names the same Redis and
/// key prefix. Only `redis_url` is required.
///
/// ```
/// use palisade_redis::FleetSettings;
///
/// let s: FleetSettings = serde_json::from_str(r#"{ "redis_url": "redis://127.0.0.1:6379" }"#).unwrap();
/// assert_eq!(s.key_prefix, "palisade");
/// assert_eq!(s.overshoot, 0.01);
/// s.check().unwrap();
///
/// let bad: FleetSettings = serde_json::from_str(r#"{ "redis_url": "http://x", "overshoot": 2.0 }"#).unwrap();
/// let err = bad.check().unwrap_err().to_string();
/// assert!(err.contains("fleet.redis_url") && err.contains("fleet.overshoot"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// The Redis every replica shares, `redis://host:port[/db]` (or
    /// `rediss://` for TLS, `redis+unix://` for a socket).
    pub redis_url: String,
    /// Prefix of every key and channel (default `palisade`): fleets
    /// sharing one Redis keep apart by it.
    #[serde(default = "FleetSettings::default_prefix")]
    pub key_prefix: String,
    /// How much the fleet may exceed a quota by, as a share of it (default
    /// 0.01): it sizes the leases each replica takes, so that what every
    /// replica holds unspent is at most this share.
    #[serde(default = "FleetSettings::default_overshoot")]
    pub overshoot: f64,
    /// Longest wait for any Redis command, in ms (default 50). A command
    /// later than this counts as Redis failing; no request ever waits on
    /// one longer.
    #[serde(default = "FleetSettings::default_timeout")]
    pub timeout_ms: u64,
    /// While Redis is unreachable, how often to try it again, in ms
    /// (default 1000).
    #[serde(default = "FleetSettings::default_retry")]
    pub retry_ms: u64,
    /// How often each replica says it is alive, in ms (default 1000); a
    /// replica silent for three times this is no longer counted.
    #[serde(default = "FleetSettings::default_heartbeat")]
    pub heartbeat_ms: u64,
    /// How long one replica may hold a provider's half-open probing to
    /// itself before another may take it, in ms (default 2000).
    #[serde(default = "FleetSettings::default_probe_lock")]
    pub probe_lock_ms: u64,
    /// How many replicas to assume before Redis has ever answered (default
    /// 1): a replica alone takes 1/N of each quota, N being the fleet size
    /// it last saw, or this.
    #[serde(default = "FleetSettings::default_replicas")]
    pub replicas: u32,
    /// This replica's name in the fleet (default: host name, process id
    /// and a random suffix).
    #[serde(default)]
    pub replica_id: Option<String>,
}

impl FleetSettings {
    /// Settings for `redis_url`, everything else at its default.
    pub fn new(redis_url: impl Into<String>) -> Self {
        FleetSettings {
            redis_url: redis_url.into(),
            key_prefix: Self::default_prefix(),
            overshoot: Self::default_overshoot(),
            timeout_ms: Self::default_timeout(),
            retry_ms: Self::default_retry(),
            heartbeat_ms: Self::default_heartbeat(),
            probe_lock_ms: Self::default_probe_lock(),
            replicas: Self::default_replicas(),
            replica_id: None,
        }
    }

    fn default_prefix() -> String {
        "palisade".into()
    }
    fn default_overshoot() -> f64 {
        0.01
    }
    fn default_timeout() -> u64 {
        50
    }
    fn default_retry() -> u64 {
        1_000
    }
    fn default_heartbeat() -> u64 {
        1_000
    }
    fn default_probe_lock() -> u64 {
        2_000
    }
    fn default_replicas() -> u32 {
        1
    }

    /// Every bad value, each named (`fleet.timeout_ms`).
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new("fleet");
        if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
            p.add(
                "redis_url",
                format!(
                    "{:?} is not a Redis URL ({e}); use redis://host:port",
                    self.redis_url
                ),
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            p.add("key_prefix", "must be a non-empty word without spaces");
        }
        if !(self.overshoot > 0.0 && self.overshoot <= 0.5) {
            p.add(
                "overshoot",
                format!("{} is not within (0, 0.5]", self.overshoot),
            );
        }
        for (field, v, max) in [
            ("timeout_ms", self.timeout_ms, 10_000),
            ("retry_ms", self.retry_ms, 600_000),
            ("heartbeat_ms", self.heartbeat_ms, 60_000),
            ("probe_lock_ms", self.probe_lock_ms, 600_000),
        ] {
            if v == 0 || v > max {
                p.add(field, format!("{v} is not within [1, {max}]"));
            }
        }
        if self.replicas == 0 {
            p.add(
                "replicas",
                "0 replicas cannot share anything; use at least 1",
            );
        }
        if self.replica_id.as_deref().is_some_and(|id| {
            id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == '\t')
        }) {
            p.add("replica_id", "must be a non-empty word without spaces");
        }
        p.finish()
    }
}
