//! Every named scenario, with its bounds asserted.

use std::time::Duration;

use tests::scenario::{run, table, Scenario, ScenarioReport, RATE};

/// The budget: 20% of requests, plus 1 retry/s always.
const RATIO: f64 = 0.2;
const FLOOR_PER_SEC: f64 = 1.0;
/// The breaker's longest open period, plus time for a probe.
const MAX_OPEN: Duration = Duration::from_secs(10);
const PROBE: Duration = Duration::from_secs(2);

fn check(r: &ScenarioReport, duration: Duration) {
    println!("{}", table(std::slice::from_ref(r)));
    assert_eq!(r.errors, 0, "{}: a healthy secondary exists", r.name);
    let bound = 1.0 + RATIO + FLOOR_PER_SEC * duration.as_secs_f64() / r.requests as f64;
    assert!(
        r.amplification <= bound,
        "{}: amplification {} above 1 + ratio + floor = {bound}",
        r.name,
        r.amplification
    );
    let recover = r.time_to_recover.expect("the breaker closed again");
    assert!(
        recover <= MAX_OPEN + PROBE,
        "{}: recovered after {recover:?}",
        r.name
    );
}

#[test]
fn every_scenario_holds_its_bounds() {
    let mut reports = Vec::new();
    for sc in Scenario::all() {
        let r = run(&sc, 7);
        check(&r, sc.duration);
        let detect = r.time_to_detect.expect("the fault was detected");
        let detect_bound = match sc.name {
            // Consecutive failures at 100 rps (with retries) trip at once.
            "full outage" | "flapping (2 s down, 2 s up)" => Duration::from_millis(200),
            "429 storm (Retry-After 3 s)" => Duration::from_millis(100),
            // Timeouts need the attempt timeout (1 s) to fire five times.
            "latency spike (3 s)" | "stalled streams (hang)" => Duration::from_millis(1200),
            // Half the calls fail: the window fills within a second.
            _ => Duration::from_secs(1),
        };
        assert!(
            detect <= detect_bound,
            "{}: detected after {detect:?}",
            r.name
        );
        // While open, the primary only sees probes: far fewer calls than
        // the 2 000 requests of the fault window.
        assert!(
            r.calls_to_faulty < 20 * RATE / 10,
            "{}: {} calls to a faulty primary",
            r.name,
            r.calls_to_faulty
        );
        reports.push(r);
    }
    println!("{}", table(&reports));
}

#[test]
fn the_simulation_is_deterministic() {
    let sc = &Scenario::all()[1];
    let (a, b) = (run(sc, 42), run(sc, 42));
    assert_eq!(
        (
            a.errors,
            a.retries,
            a.calls_to_faulty,
            a.time_to_detect,
            a.p99
        ),
        (
            b.errors,
            b.retries,
            b.calls_to_faulty,
            b.time_to_detect,
            b.p99
        )
    );
}
