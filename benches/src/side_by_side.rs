//! The side-by-side table: every palisade row beside its peers.

use crate::{measure, ours, peers, Bare, Row, Settings};

/// Measures every group whose name contains `only` (all when `None`; the
/// bare row always runs) and returns the rows.
pub fn side_by_side(settings: &Settings, only: Option<&str>) -> Vec<Row> {
    let settings = *settings;
    let mut rows = Vec::new();
    let wanted = |group: &str| group == "bare" || only.is_none_or(|o| group.contains(o));
    let mut add =
        |group: &'static str, who: &'static str, what: &str, m: Option<crate::Measurement>| {
            let Some(m) = m else { return };
            eprintln!(
                "measured {who} {what}: {:.1} ns (1 task), {:.1} ns (64 tasks)",
                m.one_task, m.many_tasks
            );
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
        wanted("bare").then(|| measure(&settings, true, || Bare)),
    );

    add(
        "bulkhead",
        "palisade",
        "bulkhead",
        wanted("bulkhead").then(|| measure(&settings, true, ours::bulkhead)),
    );
    add(
        "bulkhead",
        "tower",
        "ConcurrencyLimit",
        wanted("bulkhead").then(|| measure(&settings, true, peers::tower_concurrency_limit)),
    );
    add(
        "bulkhead",
        "tower-resilience",
        "bulkhead",
        wanted("bulkhead").then(|| measure(&settings, true, peers::resilience_bulkhead)),
    );

    add(
        "timeout",
        "palisade",
        "attempt timeout",
        wanted("timeout").then(|| measure(&settings, true, ours::attempt_timeout)),
    );
    add(
        "timeout",
        "palisade",
        "request deadline",
        wanted("timeout").then(|| measure(&settings, true, ours::deadline)),
    );
    add(
        "timeout",
        "tower",
        "Timeout",
        wanted("timeout").then(|| measure(&settings, true, peers::tower_timeout)),
    );
    add(
        "timeout",
        "tower-resilience",
        "time limiter",
        wanted("timeout").then(|| measure(&settings, true, peers::resilience_time_limiter)),
    );

    add(
        "timeout (pending once)",
        "palisade",
        "attempt timeout",
        wanted("timeout").then(|| measure(&settings, true, ours::attempt_timeout_pending)),
    );
    add(
        "timeout (pending once)",
        "tower",
        "Timeout",
        wanted("timeout").then(|| measure(&settings, true, peers::tower_timeout_pending)),
    );
    add(
        "timeout (pending once)",
        "tower-resilience",
        "time limiter",
        wanted("timeout").then(|| measure(&settings, true, peers::resilience_time_limiter_pending)),
    );
    add(
        "retry",
        "palisade",
        "retry + ratio budget",
        wanted("retry").then(|| measure(&settings, true, ours::retry)),
    );
    add(
        "retry",
        "tower",
        "Retry + TpsBudget",
        wanted("retry").then(|| measure(&settings, true, peers::tower_retry_budget)),
    );
    add(
        "retry",
        "tower-resilience",
        "retry + budget",
        wanted("retry").then(|| measure(&settings, true, peers::resilience_retry)),
    );

    add(
        "breaker",
        "palisade",
        "circuit breaker (closed)",
        wanted("breaker").then(|| measure(&settings, true, ours::breaker_closed)),
    );
    add(
        "breaker",
        "tower-resilience",
        "circuit breaker (closed)",
        wanted("breaker").then(|| measure(&settings, true, || peers::resilience_breaker(Bare))),
    );
    add(
        "breaker",
        "failsafe",
        "circuit breaker (closed)",
        wanted("breaker").then(|| measure(&settings, true, || peers::failsafe_breaker(Bare))),
    );

    add(
        "breaker open",
        "palisade",
        "rejection while open",
        wanted("breaker open").then(|| measure(&settings, false, ours::breaker_open)),
    );
    add(
        "breaker open",
        "failsafe",
        "rejection while open",
        wanted("breaker open").then(|| measure(&settings, false, peers::failsafe_breaker_open)),
    );

    add(
        "stack",
        "palisade",
        "deadline>bulkhead>retry>breaker>attempt timeout",
        wanted("stack").then(|| measure(&settings, true, ours::stack)),
    );
    add(
        "stack",
        "tower",
        "limit>retry>timeout",
        wanted("stack").then(|| measure(&settings, true, peers::tower_stack)),
    );
    add(
        "stack",
        "tower-resilience",
        "bulkhead>retry>breaker>timeout",
        wanted("stack").then(|| measure(&settings, true, peers::resilience_stack)),
    );

    rows
}
