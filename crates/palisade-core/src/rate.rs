//! What a provider says about its rate limits: OpenAI's and Anthropic's
//! `*ratelimit*` headers, `Retry-After`, and the tokens a call used, read
//! into one [`RateInfo`] that a rate limiter paces itself by.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The longest reset a header may announce (a day: providers' daily
/// limits); longer is capped, so a garbage value cannot stop a provider
/// for longer.
pub const MAX_RESET: Duration = Duration::from_secs(24 * 3600);

/// One limit as a provider reports it: what is left of it, and when it is
/// whole again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// The limit, when given.
    pub limit: Option<u64>,
    /// What is left.
    pub remaining: u64,
    /// When it is whole again, from now (at most [`MAX_RESET`]).
    pub reset: Duration,
}

/// The tokens a call used, as the provider counted them (`usage.total_tokens`),
/// put in a response's extensions by whoever read its body, so a rate
/// limiter can correct its estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage(pub u64);

/// What one response says about the provider's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateInfo {
    /// The requests limit.
    pub requests: Option<RateWindow>,
    /// The tokens limit (Anthropic's input-tokens limit when it gives no
    /// overall one).
    pub tokens: Option<RateWindow>,
    /// `Retry-After` (or `retry-after-ms`), on any response that has one.
    pub retry_after: Option<Duration>,
    /// The tokens the call used ([`TokenUsage`]).
    pub used_tokens: Option<u64>,
}

impl RateInfo {
    /// Whether the response said nothing about limits.
    pub fn is_empty(&self) -> bool {
        *self == RateInfo::default()
    }

    /// Reads the headers of `res` and the [`TokenUsage`] in its extensions.
    pub fn from_response<B>(res: &http::Response<B>, now: SystemTime) -> RateInfo {
        RateInfo::from_response_with(res, || now)
    }

    /// [`from_response`](Self::from_response), the clock read only if a
    /// value needs it (see [`from_headers_with`](Self::from_headers_with)).
    pub(crate) fn from_response_with<B>(
        res: &http::Response<B>,
        clock: impl Fn() -> SystemTime,
    ) -> RateInfo {
        let mut info = RateInfo::from_headers_with(res.headers(), clock);
        info.used_tokens = res.extensions().get::<TokenUsage>().map(|u| u.0);
        info
    }

    /// Reads OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
    /// (reset as `1s`, `6m0s`, `20ms`, `1h30m`), Anthropic's
    /// `anthropic-ratelimit-{requests,tokens,input-tokens}-{limit,remaining,reset}`
    /// (reset as an RFC 3339 instant) and `retry-after` / `retry-after-ms`.
    /// A value that does not parse is ignored; resets are capped at
    /// [`MAX_RESET`].
    ///
    /// ```
    /// use http::HeaderMap;
    /// use palisade_core::RateInfo;
    /// use std::time::{Duration, SystemTime};
    ///
    /// let mut h = HeaderMap::new();
    /// h.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
    /// h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
    /// h.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
    /// h.insert("x-ratelimit-remaining-tokens", "lots".parse().unwrap()); // ignored
    /// let info = RateInfo::from_headers(&h, SystemTime::now());
    /// let r = info.requests.unwrap();
    /// assert_eq!((r.limit, r.remaining, r.reset), (Some(60), 0, Duration::from_secs(90)));
    /// assert!(info.tokens.is_none());
    /// ```
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> RateInfo {
        RateInfo::from_headers_with(headers, || now)
    }

    /// [`from_headers`](Self::from_headers), reading `clock` only if a
    /// value is an instant (an Anthropic reset, an HTTP-date `Retry-After`),
    /// and then once: most answers carry none, and a classifier reading
    /// every answer pays no clock read for them.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use palisade_core::RateInfo;
    /// use std::time::{Duration, SystemTime};
    ///
    /// let mut h = HeaderMap::new();
    /// h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
    /// h.insert("x-ratelimit-reset-requests", "2s".parse().unwrap());
    /// let info = RateInfo::from_headers_with(&h, || unreachable!("no instant to read"));
    /// assert_eq!(info.requests.unwrap().reset, Duration::from_secs(2));
    /// h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
    /// let info = RateInfo::from_headers_with(&h, SystemTime::now);
    /// assert_eq!(info.retry_after, Some(Duration::ZERO), "a date in the past");
    /// ```
    pub fn from_headers_with(headers: &HeaderMap, clock: impl Fn() -> SystemTime) -> RateInfo {
        let read = std::cell::OnceCell::new();
        let now = || *read.get_or_init(&clock);
        // One pass over the headers, each known name to its slot (the
        // first value wins, as `HeaderMap::get` answers): a response
        // without any costs a byte compare per header, not a hashed
        // lookup per name.
        let mut found: [Option<&str>; SLOTS] = [None; SLOTS];
        let mut any = false;
        for (name, value) in headers {
            let Some(slot) = slot(name.as_str()) else {
                continue;
            };
            if found[slot].is_none() {
                found[slot] = Some(value.to_str().unwrap_or(""));
                any = true;
            }
        }
        if !any {
            return RateInfo::default();
        }
        let get = |slot: usize| found[slot].filter(|v| !v.is_empty());
        let number = |slot: usize| get(slot).and_then(|v| v.trim().parse::<u64>().ok());
        // [limit, remaining, reset] slots.
        let openai = |[limit, remaining, reset]: [usize; 3]| {
            Some(RateWindow {
                limit: number(limit),
                remaining: number(remaining)?,
                reset: parse_reset_duration(get(reset)?)?,
            })
        };
        let anthropic = |[limit, remaining, reset]: [usize; 3]| {
            let at = humantime::parse_rfc3339_weak(get(reset)?.trim()).ok()?;
            Some(RateWindow {
                limit: number(limit),
                remaining: number(remaining)?,
                reset: at
                    .duration_since(now())
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_RESET),
            })
        };
        let retry_after = get(RETRY_AFTER_MS_SLOT)
            .and_then(crate::parse_retry_after_ms)
            .or_else(|| {
                get(RETRY_AFTER_SLOT).and_then(|v| crate::http::parse_retry_after_with(v, now))
            })
            .map(|d| d.min(MAX_RESET));
        RateInfo {
            requests: openai(OPENAI_REQUESTS).or_else(|| anthropic(ANTHROPIC_REQUESTS)),
            tokens: openai(OPENAI_TOKENS)
                .or_else(|| anthropic(ANTHROPIC_TOKENS))
                .or_else(|| anthropic(ANTHROPIC_INPUT_TOKENS)),
            retry_after,
            used_tokens: None,
        }
    }
}

/// Parses OpenAI's reset durations: numbers with units `h`, `m`, `s`,
/// `ms` (fractions allowed), run together: `1s`, `6m0s`, `20ms`, `1h30m`,
/// `0.5s`. Capped at [`MAX_RESET`]; `None` for anything else.
///
/// ```
/// use palisade_core::parse_reset_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_reset_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_reset_duration("1h30m"), Some(Duration::from_secs(5400)));
/// assert_eq!(parse_reset_duration("0.5s"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_reset_duration("soon"), None);
/// assert_eq!(parse_reset_duration("99999h"), Some(palisade_core::MAX_RESET));
/// assert_eq!(palisade_core::MAX_RESET, Duration::from_secs(86_400));
/// ```
pub fn parse_reset_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += n * unit;
    }
    if !total.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(total.min(MAX_RESET.as_secs_f64())))
}

/// How many header slots [`RateInfo::from_headers`] fills.
const SLOTS: usize = 17;
/// OpenAI's request window: limit, remaining, reset.
const OPENAI_REQUESTS: [usize; 3] = [0, 1, 2];
/// OpenAI's token window.
const OPENAI_TOKENS: [usize; 3] = [3, 4, 5];
/// Anthropic's request window.
const ANTHROPIC_REQUESTS: [usize; 3] = [6, 7, 8];
/// Anthropic's token window.
const ANTHROPIC_TOKENS: [usize; 3] = [9, 10, 11];
/// Anthropic's input-token window (read when it sends no token window).
const ANTHROPIC_INPUT_TOKENS: [usize; 3] = [12, 13, 14];
/// `retry-after-ms`, then `retry-after` (the slots of the headers
/// `crate::http` names).
const RETRY_AFTER_MS_SLOT: usize = 15;
const RETRY_AFTER_SLOT: usize = 16;

/// The slot of a header name [`RateInfo::from_headers`] reads (names are
/// lowercase in a `HeaderMap`).
fn slot(name: &str) -> Option<usize> {
    Some(match name {
        "x-ratelimit-limit-requests" => 0,
        "x-ratelimit-remaining-requests" => 1,
        "x-ratelimit-reset-requests" => 2,
        "x-ratelimit-limit-tokens" => 3,
        "x-ratelimit-remaining-tokens" => 4,
        "x-ratelimit-reset-tokens" => 5,
        "anthropic-ratelimit-requests-limit" => 6,
        "anthropic-ratelimit-requests-remaining" => 7,
        "anthropic-ratelimit-requests-reset" => 8,
        "anthropic-ratelimit-tokens-limit" => 9,
        "anthropic-ratelimit-tokens-remaining" => 10,
        "anthropic-ratelimit-tokens-reset" => 11,
        "anthropic-ratelimit-input-tokens-limit" => 12,
        "anthropic-ratelimit-input-tokens-remaining" => 13,
        "anthropic-ratelimit-input-tokens-reset" => 14,
        "retry-after-ms" => 15,
        "retry-after" => 16,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn anthropic_resets_are_instants_and_input_tokens_stand_in_for_tokens() {
        let now = humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap();
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", "2026-11-30T12:00:20Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "1000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-11-30T11:59:00Z",
            ),
        ]);
        let info = RateInfo::from_headers(&h, now);
        let r = info.requests.unwrap();
        assert_eq!(
            (r.limit, r.remaining, r.reset),
            (Some(50), 3, Duration::from_secs(20))
        );
        let t = info.tokens.unwrap();
        assert_eq!(
            (t.remaining, t.reset),
            (1000, Duration::ZERO),
            "a past reset is now"
        );
    }

    #[test]
    fn garbage_is_ignored_and_huge_values_capped() {
        let now = SystemTime::now();
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "-3"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("x-ratelimit-reset-tokens", "1x"),
            ("retry-after", "999999999"),
        ]);
        let info = RateInfo::from_headers(&h, now);
        assert_eq!(info.requests, None);
        assert_eq!(info.tokens, None);
        assert_eq!(info.retry_after, Some(MAX_RESET));
        assert!(RateInfo::from_headers(&HeaderMap::new(), now).is_empty());
        for bad in ["", "s", "1", "1.2.3s", "ms", "-1s", "1 s"] {
            assert_eq!(parse_reset_duration(bad), None, "{bad:?}");
        }
    }

    /// What `from_headers` read before it scanned: a hashed lookup per
    /// name, the first value of each. The scan must answer the same.
    fn by_lookup(headers: &HeaderMap, now: SystemTime) -> RateInfo {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let openai = |kind: &str| {
            Some(RateWindow {
                limit: number(&format!("x-ratelimit-limit-{kind}")),
                remaining: number(&format!("x-ratelimit-remaining-{kind}"))?,
                reset: parse_reset_duration(get(&format!("x-ratelimit-reset-{kind}"))?)?,
            })
        };
        let anthropic = |kind: &str| {
            let reset = get(&format!("anthropic-ratelimit-{kind}-reset"))?;
            let at = humantime::parse_rfc3339_weak(reset.trim()).ok()?;
            Some(RateWindow {
                limit: number(&format!("anthropic-ratelimit-{kind}-limit")),
                remaining: number(&format!("anthropic-ratelimit-{kind}-remaining"))?,
                reset: at
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_RESET),
            })
        };
        RateInfo {
            requests: openai("requests").or_else(|| anthropic("requests")),
            tokens: openai("tokens")
                .or_else(|| anthropic("tokens"))
                .or_else(|| anthropic("input-tokens")),
            retry_after: get("retry-after-ms")
                .and_then(crate::parse_retry_after_ms)
                .or_else(|| get("retry-after").and_then(|v| crate::parse_retry_after(v, now)))
                .map(|d| d.min(MAX_RESET)),
            used_tokens: None,
        }
    }

    proptest::proptest! {
        #[test]
        fn the_scan_reads_what_lookups_read(
            pairs in proptest::collection::vec((0usize..21, 0usize..9), 0..24)
        ) {
            let now = humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap();
            let names = [
                "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-remaining",
                "anthropic-ratelimit-input-tokens-reset", "retry-after-ms", "retry-after",
                "x-request-id", "content-type", "x-ratelimit-limit-requests-extra", "age",
            ];
            let values = [
                "60", "0", " 17 ", "1m30s", "20ms", "2026-11-30T12:00:20Z", "soon", "", "-3",
            ];
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                // append: a name may come twice; the first value counts.
                h.append(
                    http::HeaderName::from_static(names[n]),
                    http::HeaderValue::from_static(values[v]),
                );
            }
            proptest::prop_assert_eq!(RateInfo::from_headers(&h, now), by_lookup(&h, now));
        }
    }
}
