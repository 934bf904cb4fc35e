//! The demo, shortened: palisade keeps the caller's errors near zero while
//! the primary is down and rate-limiting; without it, most requests fail.

use std::time::Duration;

use palisade_gateway::demo::{run, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_palisade_absorbing_the_outage() {
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("timeline.svg");
    let report = run(DemoOptions {
        duration: Duration::from_secs(3),
        // Enough calls in the short slow-tail phase that the direct side
        // meets the tail (20% slow: none in 30 calls is a 0.1% chance).
        workers: 4,
        svg: Some(svg_path.clone()),
        progress: false,
        // The last phase is under a second here: a bucket of 10.
        primary_rpm: 10,
    })
    .await
    .unwrap();
    let (with, without) = (&report.with, &report.without);
    assert!(with.requests > 20 && without.requests > 20, "{report:?}");
    // Down for 25% of the run and rate-limited for 25% more: straight to
    // the primary, a large share fails; through palisade, almost none.
    assert!(
        without.errors * 4 > without.requests,
        "without palisade: {without:?}"
    );
    assert!(
        with.errors * 100 <= with.requests,
        "with palisade: {with:?}"
    );
    assert!(with.failovers > 0);
    // Both deployments of the primary model answer through palisade.
    assert!(
        with.by_provider[0] > 0 && with.by_provider[1] > 0,
        "{with:?}"
    );
    // In the slow-tail phase, one direct call in five takes 1.5 s more;
    // palisade balances away from it and hedges what is late.
    assert!(
        without.tail_p99 >= Duration::from_millis(1500),
        "without palisade: {without:?}"
    );
    assert!(
        with.tail_p99 * 3 < without.tail_p99,
        "with palisade: {with:?}"
    );
    assert_eq!(without.hedged, 0);
    // In the last phase the primary enforces its own limit: straight to
    // it, requests over the limit get 429s; palisade, pacing itself by the
    // primary's headers, sends it none it refuses.
    assert!(without.primary_429s > 0, "without palisade: {without:?}");
    assert_eq!(with.primary_429s, 0, "with palisade: {with:?}");
    assert!(report.table.contains("| with palisade |"));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Both sides, with their legend, and every phase named.
    for text in [
        "with palisade",
        "without: straight to the primary",
        "primary down",
        "primary recovered",
        "breaker: green closed, amber half-open, red open",
    ] {
        assert!(svg.contains(text), "{text} missing from the timeline");
    }
    assert!(svg.matches("<polyline").count() >= 2, "two series");
    std::fs::remove_dir_all(&dir).unwrap();
}
