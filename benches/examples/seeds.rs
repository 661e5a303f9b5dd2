//! The default stack against no resilience on many seeds: one seed's luck (where a fault
//! ends relative to the breaker's open interval, Poisson arrivals) moves an incident's
//! goodput by ±0.5 req/s, so a default is judged on averages.
//!
//! `cargo run --release -p palisade-benches --example seeds [FIRST LAST]` prints, per
//! incident, the mean goodput of no resilience and of the default stack over seeds
//! `FIRST..=LAST` (default 10 to 25), their difference, and the default's mean p99.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: the table on stdout"
)]

use palisade_benches::scorecard::{self, StackKind};

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let first = args.next().and_then(Result::ok).unwrap_or(10);
    let last = args.next().and_then(Result::ok).unwrap_or(25).max(first);
    let n = (last - first + 1) as f64;
    println!("| incident | no resilience | palisade default | difference | default p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for incident in scorecard::incidents() {
        let (mut none, mut default, mut p99) = (0.0, 0.0, 0.0);
        for seed in first..=last {
            none += scorecard::run_incident_seeded(&incident, StackKind::None, seed).goodput;
            let row = scorecard::run_incident_seeded(&incident, StackKind::PalisadeDefault, seed);
            default += row.goodput;
            p99 += row.p99.as_secs_f64() * 1000.0;
        }
        println!(
            "| {} | {:.2} | {:.2} | {:+.2} | {:.0} |",
            incident.name,
            none / n,
            default / n,
            (default - none) / n,
            p99 / n
        );
    }
}
