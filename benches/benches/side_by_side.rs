//! Side-by-side success-path benchmark: palisade against tower,
//! tower-resilience and failsafe, in one process.
//!
//! Run with `cargo bench -p benches --bench side_by_side`. Set
//! `PALISADE_BENCH_CALLS` / `PALISADE_BENCH_RUNS` to change the amount of
//! work (defaults 200 000 calls, median of 7 runs), and `PALISADE_BENCH_ONLY`
//! to run only the groups whose name contains it (the bare row always runs).

use benches::{render, side_by_side, Settings};

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments we do not use.
    let settings = Settings::from_env();
    // PALISADE_BENCH_ONLY=breaker runs only the groups whose name contains it.
    let only = std::env::var("PALISADE_BENCH_ONLY").ok();
    let rows = side_by_side(&settings, only.as_deref());
    println!("{}", render(&rows, &settings));
}
