//! Timeouts carried in headers: gRPC's `grpc-timeout` and a plain
//! milliseconds header, read from incoming requests and written to
//! outgoing ones.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

/// The `grpc-timeout` header name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest value `grpc-timeout` may carry in any unit (8 digits).
const GRPC_MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits followed by one of
/// `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
/// (microseconds), `n` (nanoseconds). Anything else is refused with `None`,
/// never a panic.
///
/// ```
/// use palisade_deadline::parse_grpc_timeout;
/// use std::time::Duration;
///
/// assert_eq!(parse_grpc_timeout(b"1500m"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None); // 9 digits
/// assert_eq!(parse_grpc_timeout(b"10x"), None);
/// assert_eq!(parse_grpc_timeout(b"-1S"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value in the finest unit whose
/// value fits in 8 digits. The value is rounded down, so the upstream is
/// never told it has more time than it has. Durations beyond 99,999,999
/// hours are written as that.
///
/// ```
/// use palisade_deadline::format_grpc_timeout;
/// use std::time::Duration;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365 * 10)), "5256000M");
/// ```
pub fn format_grpc_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in UNITS {
        let v = nanos / per;
        if v <= GRPC_MAX_VALUE as u128 {
            return format!("{v}{unit}");
        }
    }
    format!("{GRPC_MAX_VALUE}H")
}

/// Where a timeout travels in a request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutHeader {
    /// `grpc-timeout`, in gRPC's own format. Use it for tonic clients and
    /// servers.
    Grpc,
    /// A header holding whole milliseconds (for example
    /// `x-request-timeout-ms`).
    Millis(HeaderName),
    /// A header holding seconds, whole or decimal (`600`, `2.5`): the
    /// OpenAI SDKs send their own timeout this way in
    /// `x-stainless-timeout`.
    Seconds(HeaderName),
}

impl TimeoutHeader {
    /// A milliseconds header by name; `None` if the name is not a valid
    /// header name.
    pub fn millis(name: &str) -> Option<Self> {
        HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(TimeoutHeader::Millis)
    }

    /// A seconds header by name; `None` if the name is not a valid header
    /// name.
    ///
    /// ```
    /// use palisade_deadline::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let stainless = TimeoutHeader::seconds("x-stainless-timeout").unwrap();
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-stainless-timeout", "2.5".parse().unwrap());
    /// assert_eq!(stainless.read(&headers), Some(Duration::from_millis(2500)));
    /// headers.insert("x-stainless-timeout", "soon".parse().unwrap());
    /// assert_eq!(stainless.read(&headers), None, "garbage is ignored");
    /// ```
    pub fn seconds(name: &str) -> Option<Self> {
        HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(TimeoutHeader::Seconds)
    }

    /// Whether `name` is this header's name (for a caller that finds the
    /// header itself, then reads it with [`parse`](Self::parse)).
    ///
    /// ```
    /// use palisade_deadline::TimeoutHeader;
    ///
    /// assert!(TimeoutHeader::Grpc.is_named(&http::HeaderName::from_static("grpc-timeout")));
    /// assert!(!TimeoutHeader::Grpc.is_named(&http::header::HOST));
    /// ```
    pub fn is_named(&self, name: &HeaderName) -> bool {
        match self {
            TimeoutHeader::Grpc => name == GRPC_TIMEOUT,
            TimeoutHeader::Millis(n) | TimeoutHeader::Seconds(n) => name == n,
        }
    }

    fn name(&self) -> HeaderName {
        match self {
            TimeoutHeader::Grpc => GRPC_TIMEOUT,
            TimeoutHeader::Millis(n) | TimeoutHeader::Seconds(n) => n.clone(),
        }
    }

    /// Reads the timeout from `headers`; garbage (or a missing header) is
    /// `None`.
    pub fn read(&self, headers: &http::HeaderMap) -> Option<Duration> {
        self.parse(headers.get(self.name())?)
    }

    /// Reads the timeout from a value of this header (found by the
    /// caller, say in one pass over a request's headers); garbage is
    /// `None`.
    ///
    /// ```
    /// use http::HeaderValue;
    /// use palisade_deadline::TimeoutHeader;
    /// use std::time::Duration;
    ///
    /// let grpc = TimeoutHeader::Grpc;
    /// assert_eq!(grpc.parse(&HeaderValue::from_static("250m")), Some(Duration::from_millis(250)));
    /// assert_eq!(grpc.parse(&HeaderValue::from_static("soon")), None);
    /// ```
    pub fn parse(&self, value: &HeaderValue) -> Option<Duration> {
        let v = value.as_bytes();
        match self {
            TimeoutHeader::Grpc => parse_grpc_timeout(v),
            TimeoutHeader::Millis(_) => {
                let s = std::str::from_utf8(v).ok()?.trim();
                if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse::<u64>().ok().map(Duration::from_millis)
            }
            TimeoutHeader::Seconds(_) => {
                let s = std::str::from_utf8(v).ok()?.trim();
                // Digits with at most one point: no sign, exponent, `inf`
                // or `nan`; at most 12 characters, so at most ~31 700
                // years.
                let digits_and_one_point = s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    && s.bytes().filter(|&b| b == b'.').count() <= 1
                    && s.bytes().any(|b| b.is_ascii_digit());
                if s.len() > 12 || !digits_and_one_point {
                    return None;
                }
                // Exact decimal: whole seconds, then up to nine digits of
                // fraction (more are dropped), no float rounding.
                let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
                let secs = if whole.is_empty() {
                    0
                } else {
                    whole.parse::<u64>().ok()?
                };
                let digits = &frac[..frac.len().min(9)];
                let nanos = if digits.is_empty() {
                    0
                } else {
                    digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
                };
                Some(Duration::new(secs, nanos))
            }
        }
    }

    /// Writes `remaining` into `headers`, replacing any value there.
    pub fn write(&self, headers: &mut http::HeaderMap, remaining: Duration) {
        let text = match self {
            TimeoutHeader::Grpc => format_grpc_timeout(remaining),
            TimeoutHeader::Millis(name) => {
                // A number is a valid value as it is: no text to make and
                // check again (this is written on every call upstream).
                let ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
                headers.insert(name.clone(), decimal(ms));
                return;
            }
            TimeoutHeader::Seconds(_) => {
                // Truncated to the millisecond: never more than is left.
                let ms = remaining.as_millis();
                format!("{}.{:03}", ms / 1000, ms % 1000)
            }
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(self.name(), v);
        }
    }
}

/// `n` in decimal as a header value, written on the stack and copied once
/// (`HeaderValue::from(u64)` grows a buffer and freezes it: two
/// allocations on every call upstream).
fn decimal(mut n: u64) -> HeaderValue {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).expect("digits are a valid header value")
}

/// Reads an incoming request's own timeout, for
/// [`DeadlineLayer::adopt`](crate::DeadlineLayer::adopt). Implemented for
/// `http::Request<B>` by [`TimeoutHeader`], and for every request by
/// [`NoAdopt`].
pub trait Adopt<Req> {
    /// The timeout the request asks for, if it names one.
    fn timeout_of(&self, req: &Req) -> Option<Duration>;
}

/// Adopts nothing: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdopt;

impl<Req> Adopt<Req> for NoAdopt {
    #[inline]
    fn timeout_of(&self, _: &Req) -> Option<Duration> {
        None
    }
}

/// Adopts the first of the listed headers that is present and valid.
impl<B> Adopt<http::Request<B>> for Vec<TimeoutHeader> {
    fn timeout_of(&self, req: &http::Request<B>) -> Option<Duration> {
        self.iter().find_map(|h| h.read(req.headers()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_written_in_decimal() {
        for n in [0, 7, 10, 999, 1_234_567_890, u64::MAX] {
            assert_eq!(decimal(n).to_str().unwrap(), n.to_string());
        }
    }
    use proptest::prelude::*;

    #[test]
    fn every_unit_round_trips() {
        let cases = [
            ("7n", Duration::from_nanos(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("12u", Duration::from_micros(12)),
            ("100000000u", Duration::ZERO), // 9 digits: refused
            ("250m", Duration::from_millis(250)),
            ("30S", Duration::from_secs(30)),
            ("5M", Duration::from_secs(300)),
            ("2H", Duration::from_secs(7200)),
        ];
        for (text, d) in cases {
            match parse_grpc_timeout(text.as_bytes()) {
                Some(parsed) => {
                    assert_eq!(parsed, d, "{text}");
                    let again = format_grpc_timeout(parsed);
                    assert_eq!(parse_grpc_timeout(again.as_bytes()), Some(d), "{again}");
                }
                None => assert_eq!(text.len(), 10, "only the 9-digit case is refused"),
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        for g in [
            &b""[..],
            b"S",
            b"1",
            b"1s",
            b"1.5S",
            b" 1S",
            b"1S ",
            b"+1S",
            b"123456789m",
            b"\xff\xfeS",
            b"1HH",
        ] {
            assert_eq!(parse_grpc_timeout(g), None, "{g:?}");
        }
    }

    #[test]
    fn millis_header_reads_and_writes() {
        let h = TimeoutHeader::millis("x-timeout-ms").unwrap();
        let mut headers = http::HeaderMap::new();
        h.write(&mut headers, Duration::from_millis(1234));
        assert_eq!(headers["x-timeout-ms"], "1234");
        assert_eq!(h.read(&headers), Some(Duration::from_millis(1234)));
        headers.insert("x-timeout-ms", HeaderValue::from_static("soon"));
        assert_eq!(h.read(&headers), None);
        headers.insert("x-timeout-ms", HeaderValue::from_static("-5"));
        assert_eq!(h.read(&headers), None);
        assert!(TimeoutHeader::millis("bad header").is_none());
    }

    proptest! {
        #[test]
        fn format_then_parse_never_extends_and_loses_under_one_unit(nanos in 0u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let text = format_grpc_timeout(d);
            let back = parse_grpc_timeout(text.as_bytes()).expect("our own output parses");
            prop_assert!(back <= d);
            let unit = match text.as_bytes().last().unwrap() {
                b'n' => 1u128, b'u' => 1_000, b'm' => 1_000_000, b'S' => 1_000_000_000,
                b'M' => 60_000_000_000, _ => 3_600_000_000_000,
            };
            prop_assert!(d.as_nanos() - back.as_nanos() < unit);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&bytes);
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut headers = http::HeaderMap::new();
                headers.insert("x-t", v);
                let _ = TimeoutHeader::seconds("x-t").unwrap().read(&headers);
                let _ = TimeoutHeader::millis("x-t").unwrap().read(&headers);
            }
        }

        #[test]
        fn seconds_written_then_read_never_extend_and_lose_under_a_millisecond(
            ms in 0u64..10_000_000_000,
            extra_nanos in 0u32..1_000_000,
        ) {
            let d = Duration::from_millis(ms) + Duration::from_nanos(u64::from(extra_nanos));
            let h = TimeoutHeader::seconds("x-stainless-timeout").unwrap();
            let mut headers = http::HeaderMap::new();
            h.write(&mut headers, d);
            let back = h.read(&headers).expect("our own output parses");
            prop_assert!(back <= d, "{back:?} > {d:?}");
            prop_assert!(d - back < Duration::from_millis(1), "{back:?} vs {d:?}");
        }
    }
}
