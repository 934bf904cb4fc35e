//! [`Median`]: the middle of a bench's per-turn figures, and an interval
//! that holds the true median with at least 95% probability.
//!
//! The gateway bench runs its targets in turns, one slice each per round,
//! and divides each target's throughput by the forwarder's in the same
//! round. On a noisy machine one round's ratio can be half or twice the
//! next one's; their sum over a row is pulled by the few rounds the host
//! was busiest in. The median of the rounds' ratios is not, and how sure it
//! is can be said without assuming how the noise is shaped: with `n`
//! rounds sorted, the `k`-th smallest and the `k`-th largest hold the true
//! median unless at least `n + 1 - k` of them fall on one side of it,
//! which for values above or below it with even odds is a binomial tail
//! (the sign test's interval).

/// The median of some figures and, when there are enough of them (six or
/// more), the narrowest interval of two of them that holds the true median
/// with at least 95% probability.
///
/// ```
/// use benches::turns::Median;
///
/// let ratios: Vec<f64> = (1..=30).map(f64::from).collect();
/// let m = Median::of(&ratios).unwrap();
/// assert_eq!(m.median, 15.5);
/// assert_eq!(m.interval, Some((10.0, 21.0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Median {
    /// The middle figure (the mean of the two middle ones for an even
    /// count).
    pub median: f64,
    /// The `k`-th smallest and `k`-th largest figure, for the largest `k`
    /// with at least 95% coverage; `None` with fewer than six figures
    /// (even the smallest and the largest of five hold the median only
    /// 94% of the time).
    pub interval: Option<(f64, f64)>,
}

impl Median {
    /// The median of `values` and its interval; `None` when there are none
    /// or one is not a number.
    pub fn of(values: &[f64]) -> Option<Median> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let interval = rank(n).map(|k| (sorted[k - 1], sorted[n - k]));
        Some(Median { median, interval })
    }
}

/// The largest `k` (1-based) such that `[x_k, x_{n+1-k}]` misses the
/// median with probability at most 5%: `2 P(B <= k - 1) <= 0.05` for `B`
/// binomial with `n` trials at one half.
fn rank(n: usize) -> Option<usize> {
    // P(B = i) in logs, so that large counts neither overflow the
    // binomial coefficient nor underflow one half to the n-th.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_pmf = ln_half_n; // i = 0
    let mut below = 0.0; // P(B <= k - 1)
    let mut best = None;
    for k in 1..=n.div_ceil(2) {
        let i = k - 1;
        if i > 0 {
            ln_pmf += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        below += ln_pmf.exp();
        if 2.0 * below <= 0.05 {
            best = Some(k);
        } else {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranks_are_the_sign_tests() {
        // Known values of the sign test's 95% interval for the median.
        assert_eq!(rank(5), None);
        assert_eq!(rank(6), Some(1));
        assert_eq!(rank(9), Some(2));
        assert_eq!(rank(10), Some(2));
        assert_eq!(rank(20), Some(6));
        assert_eq!(rank(30), Some(10));
        assert_eq!(rank(100), Some(40));
        // Large counts neither overflow nor lose the interval.
        assert_eq!(rank(10_000), Some(4_902));
    }

    #[test]
    fn the_median_and_its_interval_come_from_the_sorted_figures() {
        let m = Median::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            m,
            Median {
                median: 2.0,
                interval: None
            }
        );
        // Order does not matter; an even count averages the middle two.
        let shuffled = [0.9, 1.1, 0.7, 1.0, 0.8, 1.2];
        let m = Median::of(&shuffled).unwrap();
        assert!((m.median - 0.95).abs() < 1e-12);
        assert_eq!(m.interval, Some((0.7, 1.2)));
        // One wild turn moves the median by one place, not by its size.
        let mut turns = vec![0.9; 15];
        turns.extend([1.0; 14]);
        turns.push(40.0);
        let m = Median::of(&turns).unwrap();
        assert!((m.median - 0.95).abs() < 1e-12);
        assert_eq!(m.interval, Some((0.9, 1.0)));
    }

    #[test]
    fn nothing_to_take_the_middle_of_is_refused() {
        assert_eq!(Median::of(&[]), None);
        assert_eq!(Median::of(&[1.0, f64::NAN]), None);
    }
}
