//! Side-by-side success-path benchmark: palisade against tower,
//! tower-resilience and failsafe, in one process.
//!
//! Run with `cargo bench -p benches --bench side_by_side`. Set
//! `PALISADE_BENCH_CALLS` / `PALISADE_BENCH_RUNS` to change the amount of
//! work (defaults 200 000 calls, median of 7 runs).

use benches::{measure, ours, peers, render, Bare, Row, Settings};

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments we do not use.
    let settings = Settings::from_env();
    let mut rows = Vec::new();
    let mut add = |group: &'static str, who: &'static str, what: &str, m| {
        eprintln!("measured {who} {what}");
        rows.push(Row {
            group,
            who,
            what: what.to_string(),
            m,
        })
    };

    add(
        "bare",
        "-",
        "bare ready service",
        measure(&settings, true, || Bare),
    );

    add(
        "bulkhead",
        "tower",
        "ConcurrencyLimit",
        measure(&settings, true, peers::tower_concurrency_limit),
    );
    add(
        "bulkhead",
        "tower-resilience",
        "bulkhead",
        measure(&settings, true, peers::resilience_bulkhead),
    );

    add(
        "timeout",
        "tower",
        "Timeout",
        measure(&settings, true, peers::tower_timeout),
    );
    add(
        "timeout",
        "tower-resilience",
        "time limiter",
        measure(&settings, true, peers::resilience_time_limiter),
    );

    add(
        "retry",
        "tower",
        "Retry + TpsBudget",
        measure(&settings, true, peers::tower_retry_budget),
    );
    add(
        "retry",
        "tower-resilience",
        "retry + budget",
        measure(&settings, true, peers::resilience_retry),
    );

    add(
        "breaker",
        "palisade",
        "circuit breaker (closed)",
        measure(&settings, true, ours::breaker_closed),
    );
    add(
        "breaker",
        "tower-resilience",
        "circuit breaker (closed)",
        measure(&settings, true, || peers::resilience_breaker(Bare)),
    );
    add(
        "breaker",
        "failsafe",
        "circuit breaker (closed)",
        measure(&settings, true, || peers::failsafe_breaker(Bare)),
    );

    add(
        "breaker open",
        "palisade",
        "rejection while open",
        measure(&settings, false, ours::breaker_open),
    );
    add(
        "breaker open",
        "failsafe",
        "rejection while open",
        measure(&settings, false, peers::failsafe_breaker_open),
    );

    add(
        "stack",
        "tower",
        "limit>retry>timeout",
        measure(&settings, true, peers::tower_stack),
    );
    add(
        "stack",
        "tower-resilience",
        "bulkhead>retry>breaker>timeout",
        measure(&settings, true, peers::resilience_stack),
    );

    println!("{}", render(&rows, &settings));
}
