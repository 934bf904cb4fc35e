//! Random sequences of outcomes and clock advances, driven through the real
//! breaker and a small reference model; both must agree on every step: the
//! state, the open period left, and every counter of the metrics snapshot
//! (successes are counted through the count window's cursor, so this also
//! checks that derivation against plain counting).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::*;
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{CircuitState, HttpClassifier};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

#[derive(Debug, Clone)]
enum Op {
    Ok,
    Fail,
    ClientError,
    RateLimited(u64),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Ok),
        4 => Just(Op::Fail),
        1 => Just(Op::ClientError),
        1 => (1u64..20).prop_map(Op::RateLimited),
        3 => (0u64..15_000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Params {
    consecutive: u32,
    rate: f64,
    window: usize,
    min_calls: u64,
    successes: u32,
}

/// The reference: the documented rules, written plainly for one caller.
struct Model {
    p: Params,
    state: CircuitState,
    now: u64,
    open_until: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    streak: u32,
    succ: u32,
}

const BASE_MS: u64 = 10_000;
const MAX_MS: u64 = 40_000;
const COOLDOWN_MAX_MS: u64 = 15_000;

impl Model {
    fn trip(&mut self) {
        let d = (BASE_MS << self.streak.min(10)).min(MAX_MS);
        self.streak += 1;
        self.open(d);
    }

    fn open(&mut self, ms: u64) {
        self.state = CircuitState::Open;
        self.open_until = self.now + ms;
        self.succ = 0;
    }

    fn close(&mut self) {
        self.state = CircuitState::Closed;
        self.consecutive = 0;
        self.window.clear();
        self.streak = 0;
        self.succ = 0;
    }

    /// Returns whether the call reached the provider.
    fn call(&mut self, op: &Op) -> bool {
        if self.state == CircuitState::Open {
            if self.now < self.open_until {
                return false;
            }
            self.state = CircuitState::HalfOpen;
            self.succ = 0;
        }
        if self.state == CircuitState::HalfOpen {
            match op {
                Op::Ok => {
                    self.succ += 1;
                    if self.succ >= self.p.successes {
                        self.close();
                    }
                }
                Op::Fail => self.trip(),
                Op::RateLimited(s) => self.open((s * 1000).min(COOLDOWN_MAX_MS)),
                Op::ClientError | Op::Advance(_) => {}
            }
            return true;
        }
        match op {
            Op::RateLimited(s) => self.open((s * 1000).min(COOLDOWN_MAX_MS)),
            Op::ClientError | Op::Advance(_) => {}
            Op::Ok => {
                self.consecutive = 0;
                self.push(false);
            }
            Op::Fail => {
                self.consecutive += 1;
                self.push(true);
                let calls = self.window.len() as u64;
                let fails = self.window.iter().filter(|f| **f).count() as f64;
                if self.consecutive >= self.p.consecutive
                    || (calls >= self.p.min_calls && fails / calls as f64 >= self.p.rate)
                {
                    self.trip();
                }
            }
        }
        true
    }

    fn push(&mut self, failed: bool) {
        self.window.push_back(failed);
        if self.window.len() > self.p.window {
            self.window.pop_front();
        }
    }
}

/// What the metrics snapshot must say, counted plainly.
#[derive(Debug, Default)]
struct Counted {
    successes: u64,
    failures: u64,
    ignored: u64,
    rejected: u64,
}

fn to_call(op: &Op) -> Call {
    match op {
        Op::Ok => OK,
        Op::Fail => FAIL,
        Op::ClientError => BAD_REQUEST,
        Op::RateLimited(s) => rate_limited(*s),
        Op::Advance(_) => unreachable!(),
    }
}

fn params() -> impl Strategy<Value = Params> {
    (1u32..6, 0.2f64..1.0, 1usize..12, 1u32..4).prop_flat_map(
        |(consecutive, rate, window, successes)| {
            (1u64..=window as u64).prop_map(move |min_calls| Params {
                consecutive,
                rate,
                window,
                min_calls,
                successes,
            })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_reference_model(p in params(), ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let provider = Provider::default();
            let layer = CircuitBreakerLayer::builder()
                .classifier(HttpClassifier::new())
                .consecutive_failures(Some(p.consecutive))
                .failure_rate(Some(p.rate))
                .count_window(p.window)
                .minimum_calls(p.min_calls)
                .open_duration(Duration::from_millis(BASE_MS))
                .open_backoff(2.0, Duration::from_millis(MAX_MS))
                .open_jitter(0.0)
                .half_open_probes(1)
                .half_open_successes(p.successes)
                .retry_after_cooldown(true, Duration::from_millis(COOLDOWN_MAX_MS))
                .build()
                .unwrap();
            let handle = layer.handle();
            let mut svc = layer.layer(provider.clone());
            let mut model = Model {
                p,
                state: CircuitState::Closed,
                now: 0,
                open_until: 0,
                consecutive: 0,
                window: VecDeque::new(),
                streak: 0,
                succ: 0,
            };
            let mut counted = Counted::default();
            for (i, op) in ops.iter().enumerate() {
                if let Op::Advance(ms) = op {
                    tokio::time::advance(Duration::from_millis(*ms)).await;
                    model.now += ms;
                    continue;
                }
                let before = provider.calls();
                let res = svc.ready().await.unwrap().call(to_call(op)).await;
                let reached = provider.calls() > before;
                if let Err(e) = &res {
                    prop_assert!(e.is_refused(), "only refusals fail here: {}", e);
                }
                let expect = model.call(op);
                prop_assert_eq!(reached, expect, "step {} {:?}: reached provider", i, op);
                match (expect, op) {
                    (false, _) => counted.rejected += 1,
                    (true, Op::Ok) => counted.successes += 1,
                    (true, Op::Fail | Op::RateLimited(_)) => counted.failures += 1,
                    (true, Op::ClientError) => counted.ignored += 1,
                    (true, Op::Advance(_)) => unreachable!(),
                }
                let m = handle.snapshot();
                prop_assert_eq!(
                    (m.successes, m.failures, m.ignored, m.rejected),
                    (counted.successes, counted.failures, counted.ignored, counted.rejected),
                    "step {} {:?}: metrics", i, op
                );
                prop_assert_eq!(m.calls, counted.successes + counted.failures + counted.ignored);
                if model.state == CircuitState::Closed {
                    prop_assert_eq!(m.window_calls, model.window.len() as u64, "step {}: window", i);
                }
                prop_assert_eq!(handle.state(), model.state, "step {} {:?}", i, op);
                if model.state == CircuitState::Open {
                    let left = handle.open_remaining().unwrap();
                    prop_assert_eq!(left, Duration::from_millis(model.open_until - model.now), "step {}", i);
                }
            }
            Ok(())
        })?;
    }
}
