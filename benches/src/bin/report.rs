//! `cargo run --release -p benches --features report --bin report [FILE]`: runs the scenario
//! set and the side-by-side benchmark and writes both tables as markdown
//! (default `report.md`), ready to paste into the README.

use std::fmt::Write as _;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "report.md".to_owned());
    let mut out = String::new();
    let _ = writeln!(out, "## Scenarios\n");
    let _ = writeln!(
        out,
        "Deterministic, on tokio's paused clock (seed 7): {} requests/s for 60 s against a primary and a healthy secondary; the primary's fault lasts from 10 s to 30 s.\n",
        tests::scenario::RATE
    );
    let reports: Vec<_> = tests::scenario::Scenario::all()
        .iter()
        .map(|s| {
            eprintln!("scenario: {}", s.name);
            tests::scenario::run(s, 7)
        })
        .collect();
    out.push_str(&tests::scenario::table(&reports));
    let _ = writeln!(out, "\n## Side by side\n");
    let settings = benches::Settings::from_env();
    let rows = benches::side_by_side(&settings, None);
    out.push_str(&benches::render(&rows, &settings));
    out.push('\n');
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("report: cannot write {path}: {e}");
        std::process::exit(2);
    }
    print!("{out}");
    eprintln!("written to {path}");
}
