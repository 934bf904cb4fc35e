//! Conformance with tower's `TpsBudget` (tower 0.5,
//! `tower/src/retry/budget/tps_budget.rs`, its `tests` module), whose
//! semantics palisade's ratio budget claims (Finagle's retry budget).
//!
//! Each test re-states one of tower's cases against
//! [`RetryBudget::ratio`] on tokio's paused clock, with tower's arguments
//! mapped one to one: `TpsBudget::new(ttl, min_per_sec, retry_percent)` is
//! `RetryBudget::ratio(retry_percent, ttl, min_per_sec)`, `deposit` is
//! `deposit` and `withdraw` is `try_withdraw`.

use std::time::Duration;

use palisade_retry::RetryBudget;
use tokio::time::advance;

const MS: Duration = Duration::from_millis(1);

/// tower `tps_empty`: no deposits and no floor, no retry.
#[tokio::test(start_paused = true)]
async fn tps_empty() {
    let b = RetryBudget::ratio(1.0, Duration::from_secs(1), 0).unwrap();
    assert!(!b.try_withdraw());
}

/// tower `tps_leaky`: a deposit older than the ttl is gone.
#[tokio::test(start_paused = true)]
async fn tps_leaky() {
    let b = RetryBudget::ratio(1.0, Duration::from_secs(1), 0).unwrap();
    b.deposit();
    advance(Duration::from_secs(3)).await;
    assert!(!b.try_withdraw());
}

/// tower `tps_slots`: deposits count for exactly one ttl from when they
/// were made, whatever happened (or did not) in between. Before deposits
/// were stamped with their own time, the last two deposits here were
/// filed under the slot of the last withdrawal, 2 s stale, and wiped.
#[tokio::test(start_paused = true)]
async fn tps_slots() {
    let b = RetryBudget::ratio(0.5, Duration::from_secs(1), 0).unwrap();
    b.deposit();
    b.deposit();
    advance(901 * MS).await;
    // 900 ms later, the deposits are still valid.
    assert!(b.try_withdraw());

    // A blank slate.
    advance(2001 * MS).await;

    b.deposit();
    advance(301 * MS).await;
    b.deposit();
    advance(801 * MS).await;
    b.deposit();

    // The first of the three has expired; the second is still valid and,
    // with the third, pays for one retry.
    assert!(b.try_withdraw());
    assert!(!b.try_withdraw(), "and only one");
}

/// tower `tps_reserve`: `min_per_sec` × ttl retries with no traffic.
#[tokio::test(start_paused = true)]
async fn tps_reserve() {
    let b = RetryBudget::ratio(1.0, Duration::from_secs(1), 5).unwrap();
    for i in 0..5 {
        assert!(b.try_withdraw(), "reserve retry {i}");
    }
    assert!(!b.try_withdraw());
}

/// The low-traffic case: after 30 s of silence with a 10 s ttl,
/// two deposits made a millisecond ago are worth one retry at ratio 0.5.
#[tokio::test(start_paused = true)]
async fn fresh_deposits_after_a_long_silence_count() {
    let b = RetryBudget::ratio(0.5, Duration::from_secs(10), 0).unwrap();
    b.deposit();
    assert!(!b.try_withdraw(), "half a retry is not a retry");
    advance(Duration::from_secs(30)).await;
    b.deposit();
    b.deposit();
    advance(MS).await;
    assert!(b.try_withdraw());
    assert!(!b.try_withdraw());
}

/// Every deposit lives exactly one ttl (to the slot: a tenth of the ttl),
/// at any traffic level: deposits spread over 20 s, one every 250 ms, are
/// worth exactly the ones made in the last 10 s.
#[tokio::test(start_paused = true)]
async fn a_steady_trickle_is_worth_one_ttl_of_deposits() {
    let b = RetryBudget::ratio(1.0, Duration::from_secs(10), 0).unwrap();
    for _ in 0..80 {
        b.deposit();
        advance(250 * MS).await;
    }
    // 20 s have passed; the deposits of the last 10 s (40 of them) count,
    // give or take the slot the window's edge falls in (1 s = 4 deposits).
    let taken = (0..100).take_while(|_| b.try_withdraw()).count();
    assert!((36..=40).contains(&taken), "{taken} retries");
}

/// Deliberate difference: tower accepts a zero `retry_percent` (a budget
/// that only ever allows the floor); palisade refuses it, naming the field.
/// A zero reads as "no retries" yet would still allow the floor, so the
/// user is asked to say which is meant: no retries is `max_attempts(1)`,
/// the floor alone is a tiny ratio such as 0.001.
#[test]
fn deliberate_a_zero_ratio_is_refused() {
    let err = RetryBudget::ratio(0.0, Duration::from_secs(10), 10).unwrap_err();
    assert_eq!(err.problems()[0].path, "retry.budget.ratio");
}
