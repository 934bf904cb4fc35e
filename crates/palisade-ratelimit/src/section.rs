//! The rate limit's config section (`[..rate_limit]`), behind the `serde`
//! feature.

use std::time::Duration;

use palisade_core::{ConfigError, Problems};

use crate::layer::{Builder, RateLimitLayer};
use crate::limiter::Mode;
use crate::quota::Quota;

palisade_core::section! {
    /// `[..rate_limit]`: client-side rate limits.
    RateLimitSection => RateLimitSettings {
        /// Whether the limiter is on (default true: with no quota it paces
        /// by the provider's headers alone).
        enabled: bool = true,
        /// Requests per minute; 0 sets no requests quota (default 0).
        requests_per_minute: u64 = 0,
        /// Tokens per minute; 0 sets no tokens quota (default 0).
        tokens_per_minute: u64 = 0,
        /// Requests that may go at once; 0 means a minute's worth
        /// (default 0).
        burst: u64 = 0,
        /// `"reject"` (default: refuse at once, so fallback moves on) or
        /// `"wait"` (wait for room up to `max_wait_ms`, never past the
        /// deadline).
        mode: String = "reject".to_owned(),
        /// Longest wait for room in `"wait"` mode, in ms (default 10000).
        max_wait_ms: u64 = 10_000,
        /// Pace by the provider's rate headers and `Retry-After` (default
        /// true).
        follow_headers: bool = true,
    }
}

impl RateLimitSettings {
    /// Whether the layer would do anything: a quota, or headers to follow.
    pub fn active(&self) -> bool {
        self.enabled
            && (self.requests_per_minute > 0 || self.tokens_per_minute > 0 || self.follow_headers)
    }

    /// Builds the limiter these settings describe, on `builder` (which may
    /// already name the provider, the classifier and the weigher). Every
    /// problem is refused at once, under this section's keys.
    ///
    /// ```
    /// use palisade_ratelimit::{RateLimitLayer, RateLimitSettings};
    ///
    /// let s = RateLimitSettings { requests_per_minute: 600, burst: 10, ..Default::default() };
    /// let layer = s.build(RateLimitLayer::builder()).unwrap();
    /// assert_eq!(layer.handle().snapshot().quotas[0].burst, 10);
    /// let bad = RateLimitSettings { mode: "later".into(), ..Default::default() };
    /// assert_eq!(bad.check().unwrap_err().problems()[0].path, "rate_limit.mode");
    /// ```
    pub fn build<C, W>(&self, builder: Builder<C, W>) -> Result<RateLimitLayer<C, W>, ConfigError> {
        let mut problems = Problems::new("rate_limit");
        let mode = match self.mode.as_str() {
            "reject" => Mode::Reject,
            "wait" => Mode::Wait(Duration::from_millis(self.max_wait_ms)),
            other => {
                problems.add(
                    "mode",
                    format!("{other:?} is not one of \"reject\", \"wait\""),
                );
                Mode::Reject
            }
        };
        let mut builder = builder.mode(mode).follow_headers(self.follow_headers);
        if self.requests_per_minute > 0 {
            let mut q = Quota::per_minute(self.requests_per_minute);
            if self.burst > 0 {
                q = q.burst(self.burst);
            }
            builder = builder.quota(q);
        }
        if self.tokens_per_minute > 0 {
            builder = builder.quota(Quota::tokens_per_minute(self.tokens_per_minute));
        }
        problems.finish_with(
            builder
                .build()
                .map_err(|e| e.renamed(&[("rate_limit.max_wait", "rate_limit.max_wait_ms")])),
        )
    }

    /// Checks these settings by building them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.build(RateLimitLayer::builder()).map(drop)
    }
}
