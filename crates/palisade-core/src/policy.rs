//! The per-kind policy table: is a failure retried, counted by the breaker,
//! handed to the next provider?

use std::fmt;

use crate::classify::{Failure, FailureClass, FailureKind};

/// One of the three decisions a [`Policy`] makes about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The retry layer may send the request again.
    Retry,
    /// The circuit breaker counts it as a failure of the provider.
    CountForBreaker,
    /// The fallback layer moves on to the next provider.
    Fallback,
}

impl Action {
    const fn bit(self) -> u8 {
        match self {
            Action::Retry => 1,
            Action::CountForBreaker => 2,
            Action::Fallback => 4,
        }
    }
}

const R: u8 = Action::Retry.bit();
const B: u8 = Action::CountForBreaker.bit();
const F: u8 = Action::Fallback.bit();

/// Status codes the table holds per-status rows for: 400..=599.
const STATUS_LO: u16 = 400;
const STATUS_HI: u16 = 599;
const STATUS_ROWS: usize = (STATUS_HI - STATUS_LO + 1) as usize;

/// Which [`Action`]s apply to which failures, with the defaults ARCHITECTURE.md gives.
///
/// Rows are kept per [`FailureClass`] and, for `Server` and `Client`
/// failures, per status code 400..=599, so that 408 and 409 can be retried
/// while 400 and 422 are not. A [`Failure`]'s `retry_hint` (the provider's
/// `x-should-retry` header) overrides the retry row.
///
/// Defaults ([`Policy::default`]):
///
/// | failure | retry | breaker counts | fallback |
/// |---|---|---|---|
/// | Timeout, Connect | yes | yes | yes |
/// | RateLimited | yes | no (the breaker cools down for `retry_after` instead) | yes |
/// | Overloaded (503/529) | yes | yes | yes |
/// | Server (other 5xx) | yes | yes | yes |
/// | Client 408 | yes | no | yes |
/// | Client 409 | yes | no | no |
/// | Client (other 4xx) | no | no | no |
/// | ContextLengthExceeded, ContentFiltered | no | no | yes (routed to providers marked for it) |
/// | Rejected (our own fast-fail) | no | no | yes |
/// | Other (unrecognised error) | no | yes | yes |
///
/// `Other`: an error nothing recognises is most often
/// the provider's or the transport's, so it counts for the breaker and falls
/// back; it is not retried because nothing says a re-send is safe.
///
/// Lookups are a couple of array reads; build the policy once and share it.
///
/// ```
/// use palisade_core::{Action, Failure, FailureClass, FailureKind, Policy};
/// use http::StatusCode;
///
/// let policy = Policy::default()
///     .with_status(StatusCode::NOT_FOUND, Action::Fallback, true)
///     .with_class(FailureClass::Other, Action::Retry, true);
/// let not_found = Failure::new(FailureKind::Client(StatusCode::NOT_FOUND));
/// assert!(policy.falls_back(&not_found));
/// assert!(!policy.retries(&not_found));
/// assert!(policy.retries(&Failure::new(FailureKind::Other)));
/// // The provider's own word wins over the table.
/// let told_no = Failure::new(FailureKind::Server(StatusCode::BAD_GATEWAY)).with_retry_hint(false);
/// assert!(!policy.retries(&told_no));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Policy {
    classes: [u8; FailureClass::ALL.len()],
    statuses: [u8; STATUS_ROWS],
}

impl Policy {
    /// A policy that does nothing for any failure: no retry, no breaker
    /// count, no fallback. Start from here to allow-list.
    pub const fn none() -> Self {
        Policy {
            classes: [0; FailureClass::ALL.len()],
            statuses: [0; STATUS_ROWS],
        }
    }

    /// Sets `action` on or off for every failure of `class`. For `Server`
    /// and `Client` this sets every status row of that class too.
    pub fn with_class(mut self, class: FailureClass, action: Action, on: bool) -> Self {
        set(&mut self.classes[class as usize], action, on);
        let range = match class {
            FailureClass::Client => Some(400..=499u16),
            FailureClass::Server => Some(500..=599u16),
            _ => None,
        };
        if let Some(range) = range {
            for s in range {
                set(&mut self.statuses[(s - STATUS_LO) as usize], action, on);
            }
        }
        self
    }

    /// Sets `action` on or off for one status code. Codes outside
    /// 400..=599 have no row of their own (they follow their class) and are
    /// ignored here.
    pub fn with_status(mut self, status: http::StatusCode, action: Action, on: bool) -> Self {
        if let Some(i) = status_row(status.as_u16()) {
            set(&mut self.statuses[i], action, on);
        }
        self
    }

    /// Whether `action` applies to `failure` by the table alone (ignoring
    /// the provider's retry hint).
    pub fn applies(&self, action: Action, failure: &Failure) -> bool {
        self.row(&failure.kind) & action.bit() != 0
    }

    /// Whether the retry layer may re-send after `failure`. The provider's
    /// `retry_hint` wins over the table.
    pub fn retries(&self, failure: &Failure) -> bool {
        match failure.retry_hint {
            Some(hint) => hint,
            None => self.applies(Action::Retry, failure),
        }
    }

    /// Whether the breaker counts `failure` against the provider.
    pub fn counts_for_breaker(&self, failure: &Failure) -> bool {
        self.applies(Action::CountForBreaker, failure)
    }

    /// Whether a fallback chain moves on to the next provider after
    /// `failure`.
    pub fn falls_back(&self, failure: &Failure) -> bool {
        self.applies(Action::Fallback, failure)
    }

    fn row(&self, kind: &FailureKind) -> u8 {
        match kind.status().and_then(|s| status_row(s.as_u16())) {
            Some(i) => self.statuses[i],
            None => self.classes[kind.class() as usize],
        }
    }
}

fn status_row(code: u16) -> Option<usize> {
    (STATUS_LO..=STATUS_HI)
        .contains(&code)
        .then(|| (code - STATUS_LO) as usize)
}

fn set(cell: &mut u8, action: Action, on: bool) {
    if on {
        *cell |= action.bit();
    } else {
        *cell &= !action.bit();
    }
}

impl Default for Policy {
    fn default() -> Self {
        use FailureClass::*;
        let mut p = Policy::none();
        let rows: [(FailureClass, u8); 10] = [
            (Timeout, R | B | F),
            (Connect, R | B | F),
            (RateLimited, R | F),
            (Overloaded, R | B | F),
            (Server, R | B | F),
            (Client, 0),
            (ContextLengthExceeded, F),
            (ContentFiltered, F),
            (Rejected, F),
            (Other, B | F),
        ];
        for (class, bits) in rows {
            p.classes[class as usize] = bits;
        }
        for s in 500..=599u16 {
            p.statuses[(s - STATUS_LO) as usize] = R | B | F;
        }
        p.statuses[(408 - STATUS_LO) as usize] = R | F;
        p.statuses[(409 - STATUS_LO) as usize] = R;
        p
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for class in FailureClass::ALL {
            m.entry(&class, &Bits(self.classes[class as usize]));
        }
        m.finish()
    }
}

struct Bits(u8);
impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [(R, "retry"), (B, "breaker"), (F, "fallback")]
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{names:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RejectReason;
    use http::StatusCode;
    use std::time::Duration;

    fn f(kind: FailureKind) -> Failure {
        Failure::new(kind)
    }

    fn client(code: u16) -> Failure {
        f(FailureKind::Client(StatusCode::from_u16(code).unwrap()))
    }
    fn server(code: u16) -> Failure {
        f(FailureKind::Server(StatusCode::from_u16(code).unwrap()))
    }

    #[test]
    fn default_retry_rows_match_design() {
        let p = Policy::default();
        for yes in [
            f(FailureKind::Timeout),
            f(FailureKind::Connect),
            f(FailureKind::RateLimited { retry_after: None }),
            f(FailureKind::Overloaded {
                retry_after: Some(Duration::from_secs(1)),
            }),
            client(408),
            client(409),
            server(500),
            server(502),
            server(599),
        ] {
            assert!(p.retries(&yes), "{yes:?} should be retried");
        }
        for no in [
            client(400),
            client(401),
            client(403),
            client(404),
            client(422),
            f(FailureKind::ContextLengthExceeded),
            f(FailureKind::ContentFiltered),
            f(FailureKind::Rejected(RejectReason::BulkheadFull)),
            f(FailureKind::Other),
        ] {
            assert!(!p.retries(&no), "{no:?} should not be retried");
        }
    }

    #[test]
    fn default_breaker_rows_match_design() {
        let p = Policy::default();
        assert!(p.counts_for_breaker(&f(FailureKind::Timeout)));
        assert!(p.counts_for_breaker(&f(FailureKind::Connect)));
        assert!(p.counts_for_breaker(&f(FailureKind::Overloaded { retry_after: None })));
        assert!(p.counts_for_breaker(&server(503)));
        assert!(!p.counts_for_breaker(&f(FailureKind::RateLimited { retry_after: None })));
        assert!(!p.counts_for_breaker(&client(400)));
        assert!(!p.counts_for_breaker(&client(408)));
        assert!(!p.counts_for_breaker(&f(FailureKind::Rejected(RejectReason::BudgetExhausted))));
    }

    #[test]
    fn default_fallback_rows_match_design() {
        let p = Policy::default();
        assert!(p.falls_back(&server(500)));
        assert!(p.falls_back(&f(FailureKind::ContextLengthExceeded)));
        assert!(
            p.falls_back(&f(FailureKind::Rejected(RejectReason::CircuitOpen(
                crate::CircuitState::Open
            ))))
        );
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!p.falls_back(&client(code)), "{code}");
        }
    }

    #[test]
    fn retry_hint_overrides_both_ways() {
        let p = Policy::default();
        assert!(p.retries(&client(400).with_retry_hint(true)));
        assert!(!p.retries(&server(500).with_retry_hint(false)));
        // the hint does not touch the other actions
        assert!(p.counts_for_breaker(&server(500).with_retry_hint(false)));
    }

    #[test]
    fn overrides_per_class_and_status() {
        let p = Policy::default()
            .with_class(FailureClass::Server, Action::Retry, false)
            .with_status(StatusCode::BAD_GATEWAY, Action::Retry, true);
        assert!(!p.retries(&server(500)));
        assert!(p.retries(&server(502)));
        // a status outside the table follows its class row
        let odd = f(FailureKind::Server(StatusCode::from_u16(600).unwrap()));
        assert!(!p.retries(&odd));
        let same = p
            .clone()
            .with_status(StatusCode::from_u16(600).unwrap(), Action::Retry, true);
        assert_eq!(same, p);
        assert!(format!("{:?}", Policy::default()).contains("Timeout"));
    }

    #[test]
    fn none_does_nothing() {
        let p = Policy::none();
        assert!(!p.retries(&f(FailureKind::Timeout)));
        assert!(!p.counts_for_breaker(&server(500)));
        assert!(!p.falls_back(&f(FailureKind::Connect)));
    }
}
