//! [`content_length`]: a body's length as a header value, without
//! allocating.
//!
//! Left to hyper, an upstream request's `content-length` is made with
//! `HeaderValue::from(u64)`, which writes the digits into a new buffer:
//! two allocations a request. A length under [`STATIC_BELOW`] (nearly
//! every chat request) is instead a slice of one table of every such
//! length's digits, built at compile time; a longer body's is left to
//! hyper as before.

use http::HeaderValue;

/// Lengths below this one are in the table.
pub(crate) const STATIC_BELOW: usize = 10_000;

/// How many bytes the digits of every length below [`STATIC_BELOW`] take:
/// 10 of one digit, 90 of two, 900 of three, 9 000 of four.
const TABLE_LEN: usize = 10 + 90 * 2 + 900 * 3 + 9_000 * 4;

/// The digits of 0, 1, ..., 9 999, one after the other.
static DIGITS: [u8; TABLE_LEN] = table();

const fn table() -> [u8; TABLE_LEN] {
    let mut out = [0u8; TABLE_LEN];
    let mut n = 0;
    let mut at = 0;
    while n < STATIC_BELOW {
        let width = width(n);
        let mut rest = n;
        let mut i = width;
        while i > 0 {
            i -= 1;
            out[at + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        at += width;
        n += 1;
    }
    out
}

/// How many digits `n` (below [`STATIC_BELOW`]) has.
const fn width(n: usize) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    }
}

/// Where `n`'s digits start in the table.
const fn start(n: usize) -> usize {
    match n {
        0..=9 => n,
        10..=99 => 10 + (n - 10) * 2,
        100..=999 => 10 + 180 + (n - 100) * 3,
        _ => 10 + 180 + 2_700 + (n - 1_000) * 4,
    }
}

/// `len` as a `content-length` value, shared from the table; `None` at
/// [`STATIC_BELOW`] or above (hyper writes those itself).
pub(crate) fn content_length(len: usize) -> Option<HeaderValue> {
    if len >= STATIC_BELOW {
        return None;
    }
    let at = start(len);
    let digits = std::str::from_utf8(&DIGITS[at..at + width(len)]).ok()?;
    Some(HeaderValue::from_static(digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_in_the_table_reads_as_itself() {
        for n in 0..STATIC_BELOW {
            let v = content_length(n).unwrap();
            assert_eq!(v.to_str().unwrap(), n.to_string(), "{n}");
        }
        assert_eq!(start(STATIC_BELOW - 1) + 4, TABLE_LEN, "the table is full");
    }

    #[test]
    fn longer_bodies_are_left_to_hyper() {
        assert!(content_length(STATIC_BELOW).is_none());
        assert!(content_length(usize::MAX).is_none());
    }
}
