//! The side-by-side table: every palisade row beside its peers.

use crate::{measure, ours, peers, Bare, Row, Settings};

/// Measures every group whose name contains `only` (all when `None`; the
/// bare row always runs) and returns the rows.
///
/// The whole table is measured `settings.rounds` times, rows interleaved,
/// and each figure is the median of its rounds: this machine's speed drifts
/// over tens of seconds, and measuring every row in every round spreads
/// that drift over palisade and its peers alike instead of landing on
/// whichever rows ran during a slow spell.
pub fn side_by_side(settings: &Settings, only: Option<&str>) -> Vec<Row> {
    let rounds: Vec<Vec<Row>> = (0..settings.rounds.max(1))
        .map(|r| {
            eprintln!("round {} of {}", r + 1, settings.rounds.max(1));
            one_round(settings, only)
        })
        .collect();
    let mut rows = rounds[0].clone();
    for (i, row) in rows.iter_mut().enumerate() {
        let pick =
            |f: fn(&Row) -> f64| crate::median(rounds.iter().map(|round| f(&round[i])).collect());
        row.m.one_task = pick(|r| r.m.one_task);
        row.m.many_tasks = pick(|r| r.m.many_tasks);
    }
    rows
}

fn one_round(settings: &Settings, only: Option<&str>) -> Vec<Row> {
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
        "chaos",
        "palisade",
        "chaos layer, off",
        wanted("chaos").then(|| measure(&settings, true, ours::chaos_off)),
    );
    add(
        "chaos",
        "palisade",
        "chaos layer, on, nothing drawn",
        wanted("chaos").then(|| measure(&settings, true, ours::chaos_on_quiet)),
    );
    add(
        "chaos",
        "tower-resilience",
        "chaos layer, rates 0",
        wanted("chaos").then(|| measure(&settings, true, peers::resilience_chaos)),
    );

    add(
        "cache",
        "palisade",
        "cache hit, 100 000 entries",
        wanted("cache").then(|| measure(&settings, true, ours::cache_hit)),
    );
    add(
        "cache",
        "tower-resilience",
        "cache hit, 100 000 entries",
        wanted("cache").then(|| measure(&settings, true, peers::resilience_cache_hit)),
    );
    add(
        "cache",
        "palisade",
        "cache miss (call, answer stored)",
        wanted("cache").then(|| measure(&settings, true, ours::cache_miss)),
    );
    add(
        "cache",
        "tower-resilience",
        "cache miss (call, answer stored)",
        wanted("cache").then(|| measure(&settings, true, peers::resilience_cache_miss)),
    );
    add(
        "coalesce",
        "palisade",
        "coalescing, no duplicate",
        wanted("coalesce").then(|| measure(&settings, true, ours::coalesce_unique)),
    );
    add(
        "coalesce",
        "tower-resilience",
        "coalescing, no duplicate",
        wanted("coalesce").then(|| measure(&settings, true, peers::resilience_coalesce_unique)),
    );

    add(
        "batch",
        "palisade",
        "batch, no delay, up to 64 a call",
        wanted("batch").then(|| measure(&settings, true, ours::batch)),
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
        "rate limit",
        "palisade",
        "one quota, weight 1",
        wanted("rate limit").then(|| measure(&settings, true, ours::rate_limit_one_quota)),
    );
    add(
        "rate limit",
        "palisade",
        "one quota, one limiter per task (not shared, as tower's row)",
        wanted("rate limit").then(|| measure(&settings, true, ours::rate_limit_one_quota_per_task)),
    );
    add(
        "rate limit",
        "palisade",
        "one quota, following the provider's headers (default)",
        wanted("rate limit").then(|| measure(&settings, true, ours::rate_limit_following)),
    );
    add(
        "rate limit",
        "palisade",
        "direct check (RateLimitHandle::try_acquire)",
        wanted("rate limit").then(|| measure(&settings, true, ours::rate_limit_direct)),
    );
    add(
        "rate limit",
        "palisade",
        "two quotas (requests + tokens)",
        wanted("rate limit").then(|| measure(&settings, true, ours::rate_limit_two_quotas)),
    );
    add(
        "rate limit",
        "governor",
        "direct GCRA check",
        wanted("rate limit").then(|| measure(&settings, true, peers::governor_direct)),
    );
    add(
        "rate limit",
        "tower",
        "RateLimit, one per task (not shared)",
        wanted("rate limit").then(|| measure(&settings, true, peers::tower_rate_limit)),
    );
    add(
        "rate limit",
        "tower (shared)",
        "RateLimit, one for all tasks (behind a Buffer)",
        wanted("rate limit").then(|| measure(&settings, true, peers::tower_rate_limit_shared)),
    );
    add(
        "rate limit",
        "tower-resilience",
        "rate limiter",
        wanted("rate limit").then(|| measure(&settings, true, peers::resilience_rate_limiter)),
    );

    add(
        "keyed rate limit",
        "palisade",
        "10 000 keys, one quota each",
        wanted("keyed rate limit").then(|| measure(&settings, true, ours::keyed_rate_limit)),
    );
    add(
        "keyed rate limit",
        "governor",
        "keyed (dashmap) check, 10 000 keys",
        wanted("keyed rate limit").then(|| measure(&settings, true, peers::governor_keyed)),
    );

    for (group, n) in [("balance (3 services)", 3), ("balance (16 services)", 16)] {
        add(
            group,
            "palisade",
            "p2c + peak EWMA, one shared view",
            wanted("balance").then(|| measure(&settings, true, || ours::balance_p2c(n))),
        );
        add(
            group,
            "tower",
            "p2c Balance + PeakEwma, one per task",
            wanted("balance").then(|| measure(&settings, true, || peers::tower_balance(n))),
        );
        add(
            group,
            "tower",
            "Buffer(p2c Balance + PeakEwma), shared",
            wanted("balance")
                .then(|| measure(&settings, true, || peers::tower_balance_buffered(n))),
        );
    }

    add(
        "hedge (no hedge fires)",
        "palisade",
        "p95 delay, 10% budget",
        wanted("hedge").then(|| measure(&settings, true, ours::hedge)),
    );
    add(
        "hedge (no hedge fires)",
        "tower",
        "Hedge p95, one per task",
        wanted("hedge").then(|| measure(&settings, true, peers::tower_hedge)),
    );
    add(
        "hedge (pending once, no hedge fires)",
        "palisade",
        "p95 delay, 10% budget",
        wanted("hedge").then(|| measure(&settings, true, ours::hedge_pending)),
    );
    add(
        "hedge (pending once, no hedge fires)",
        "tower",
        "Hedge p95, one per task",
        wanted("hedge").then(|| measure(&settings, true, peers::tower_hedge_pending)),
    );

    add(
        "stack",
        "palisade",
        "deadline>bulkhead>retry>rate limit>breaker>attempt timeout",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny table, to prove every breaker row measures the path it names
    /// (the harness panics if a success-path row fails or a rejection row
    /// succeeds) and that rounds are merged row by row.
    #[test]
    fn a_small_table_measures_the_named_paths() {
        let settings = Settings {
            calls: 256,
            runs: 1,
            tasks: 4,
            rounds: 2,
        };
        let rows = side_by_side(&settings, Some("breaker"));
        let names: Vec<_> = rows.iter().map(|r| (r.group, r.who)).collect();
        assert_eq!(
            names,
            [
                ("bare", "-"),
                ("breaker", "palisade"),
                ("breaker", "tower-resilience"),
                ("breaker", "failsafe"),
                ("breaker open", "palisade"),
                ("breaker open", "failsafe"),
            ]
        );
        assert!(rows
            .iter()
            .all(|r| r.m.one_task > 0.0 && r.m.many_tasks > 0.0));
        let table = crate::render(&rows, &settings);
        assert!(table.contains("median over 2 rounds"), "{table}");
        assert!(table.contains("rejection while open"), "{table}");
    }
}
