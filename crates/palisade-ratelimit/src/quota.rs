//! [`Quota`]: how much may be sent per period, in requests or tokens.

use std::time::Duration;

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests (attempts): each costs 1.
    Requests,
    /// Tokens: each request costs its weight (see
    /// [`Weigh`](crate::Weigh)), corrected by the usage its response
    /// reports.
    Tokens,
}

impl Unit {
    /// What a call of `tokens` costs in this unit.
    ///
    /// ```
    /// use palisade_ratelimit::Unit;
    /// assert_eq!(Unit::Requests.cost(500), 1);
    /// assert_eq!(Unit::Tokens.cost(500), 500);
    /// ```
    #[inline]
    pub fn cost(self, tokens: u64) -> u64 {
        match self {
            Unit::Requests => 1,
            Unit::Tokens => tokens,
        }
    }

    /// Its name in snapshots and logs: `requests` or `tokens`.
    ///
    /// ```
    /// use palisade_ratelimit::Unit;
    /// assert_eq!(Unit::Tokens.as_str(), "tokens");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// A limit of `amount` units per `period`, of which up to `burst` may be
/// spent at once (by default a whole period's worth).
///
/// ```
/// use palisade_ratelimit::{Quota, Unit};
/// use std::time::Duration;
///
/// let rpm = Quota::per_minute(500).burst(20);
/// let tpm = Quota::tokens_per_minute(200_000);
/// assert_eq!(rpm.unit(), Unit::Requests);
/// assert_eq!(tpm.burst_size(), 200_000);
/// assert_eq!(Quota::new(Unit::Requests, 10, Duration::from_secs(1)).burst_size(), 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub(crate) unit: Unit,
    pub(crate) amount: u64,
    pub(crate) period: Duration,
    pub(crate) burst: Option<u64>,
}

impl Quota {
    /// `amount` units of `unit` per `period`.
    pub fn new(unit: Unit, amount: u64, period: Duration) -> Self {
        Quota {
            unit,
            amount,
            period,
            burst: None,
        }
    }

    /// `n` requests per minute.
    pub fn per_minute(n: u64) -> Self {
        Quota::new(Unit::Requests, n, Duration::from_secs(60))
    }

    /// `n` requests per second.
    pub fn per_second(n: u64) -> Self {
        Quota::new(Unit::Requests, n, Duration::from_secs(1))
    }

    /// `n` tokens per minute.
    pub fn tokens_per_minute(n: u64) -> Self {
        Quota::new(Unit::Tokens, n, Duration::from_secs(60))
    }

    /// At most `n` units at once (default: `amount`).
    pub fn burst(mut self, n: u64) -> Self {
        self.burst = Some(n);
        self
    }

    /// What it counts.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Units per period.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Units that may be spent at once.
    pub fn burst_size(&self) -> u64 {
        self.burst.unwrap_or(self.amount)
    }

    /// Nanoseconds per unit.
    /// Adds what is wrong with this quota to `p`.
    pub(crate) fn check(&self, p: &mut palisade_core::Problems) {
        if self.amount == 0 {
            p.add(
                "quota",
                "an amount of 0 admits nothing; leave the quota out",
            );
        } else if self.period.is_zero() || self.period > Duration::from_secs(366 * 24 * 3600) {
            p.add(
                "quota",
                format!("period {:?} is not within (0s, 366 days]", self.period),
            );
        } else if self.burst == Some(0) {
            p.add("burst", "0 admits nothing; use at least 1");
        }
    }

    pub(crate) fn interval(&self) -> u64 {
        (self.period.as_nanos() / u128::from(self.amount.max(1))).min(u64::MAX as u128) as u64
    }
}
