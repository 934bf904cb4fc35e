//! [`Flight`]: the calls a limiter that reads responses has sent and seen
//! answered.

use std::sync::atomic::{AtomicU64, Ordering};

/// Calls and tokens, counted together on one cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Tally {
    calls: AtomicU64,
    tokens: AtomicU64,
}

/// The calls sent and answered by a limiter that reads responses: where a
/// call stands among those sent (its mark, for what a provider's headers
/// may not count yet) and how many are in flight. One atomic add per send
/// and per answer, each side on a line of its own; reading is two loads
/// per side (a striped counter's sum would read every stripe, on lines the
/// other threads keep writing).
#[derive(Debug, Default)]
pub(crate) struct Flight {
    sent: Tally,
    done: Tally,
}

impl Flight {
    /// Counts a call of `tokens` sent; answers the calls and tokens sent up
    /// to and including it.
    #[inline]
    pub(crate) fn send(&self, tokens: u64) -> (u64, u64) {
        let calls = self.sent.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let tokens = if tokens > 0 {
            self.sent.tokens.fetch_add(tokens, Ordering::Relaxed) + tokens
        } else {
            self.sent.tokens.load(Ordering::Relaxed)
        };
        (calls, tokens)
    }

    /// Counts a call of `tokens` answered (or gone).
    #[inline]
    pub(crate) fn done(&self, tokens: u64) {
        self.done.calls.fetch_add(1, Ordering::Relaxed);
        if tokens > 0 {
            self.done.tokens.fetch_add(tokens, Ordering::Relaxed);
        }
    }

    /// Calls and tokens sent so far.
    pub(crate) fn sent(&self) -> (u64, u64) {
        (
            self.sent.calls.load(Ordering::Relaxed),
            self.sent.tokens.load(Ordering::Relaxed),
        )
    }

    /// Calls and tokens answered so far.
    pub(crate) fn answered(&self) -> (u64, u64) {
        (
            self.done.calls.load(Ordering::Relaxed),
            self.done.tokens.load(Ordering::Relaxed),
        )
    }

    /// Calls and tokens sent and not yet answered.
    pub(crate) fn in_flight(&self) -> (u64, u64) {
        out(self.sent(), self.answered())
    }
}

/// What of `sent` is not in `answered`.
pub(crate) fn out(sent: (u64, u64), answered: (u64, u64)) -> (u64, u64) {
    (
        sent.0.saturating_sub(answered.0),
        sent.1.saturating_sub(answered.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_count_up_and_answers_take_calls_out_of_flight() {
        let f = Flight::default();
        assert_eq!(f.send(10), (1, 10));
        assert_eq!(f.send(0), (2, 10));
        assert_eq!(f.send(5), (3, 15));
        assert_eq!(f.in_flight(), (3, 15));
        f.done(10);
        f.done(0);
        assert_eq!(f.in_flight(), (1, 5));
        assert_eq!(f.sent(), (3, 15));
    }

    #[test]
    fn many_threads_get_distinct_marks_and_nothing_is_lost() {
        let f = std::sync::Arc::new(Flight::default());
        let marks: Vec<u64> = (0..8)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| {
                            let (calls, _) = f.send(2);
                            f.done(2);
                            calls
                        })
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut sorted = marks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8000, "every send its own mark");
        assert_eq!(f.sent(), (8000, 16_000));
        assert_eq!(f.in_flight(), (0, 0));
    }
}
