//! Goodput of candidate defaults in every incident, beside the reference stacks: the
//! numbers the README's "Defaults chosen by incidents" cites for the choices it did not
//! make.
//!
//! `cargo run --release -p palisade-benches --example candidates`
//!
//! Each candidate is the tuned stack ([`TunedParams`]) moved to the defaults (a latency-only
//! AIMD limit at 150 ms, a budget floor of 3/s, timed-out attempts as failures) with one
//! knob changed. The tuned stack's classifiers see an upstream's `429` (not a failure, its
//! Retry-After honoured), so the rate-limited column reads higher than the default stack's.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: the table on stdout"
)]

use std::time::Duration;

use palisade_benches::scorecard::{self, Limit, Signal, StackKind, TunedParams};

fn main() {
    let ms = Duration::from_millis;
    let base = TunedParams {
        adaptive_limit: Limit::AimdSignal(ms(150), Signal::Latency),
        budget_min_per_sec: 3,
        elapsed_is_slow: false,
        ..TunedParams::default()
    };
    let with = |f: &dyn Fn(&mut TunedParams)| {
        let mut p = base.clone();
        f(&mut p);
        p
    };
    let candidates: Vec<(&str, TunedParams)> = vec![
        ("defaults (tuned classifiers)", base.clone()),
        (
            "no adaptive limit",
            with(&|p| p.adaptive_limit = Limit::None),
        ),
        (
            "limit: elapsed = drop",
            with(&|p| p.adaptive_limit = Limit::AimdSignal(ms(150), Signal::Elapsed)),
        ),
        (
            "limit: any error = drop",
            with(&|p| p.adaptive_limit = Limit::AimdSignal(ms(150), Signal::AnyError)),
        ),
        (
            "limit: gradient",
            with(&|p| p.adaptive_limit = Limit::Gradient),
        ),
        (
            "limit: 100 ms",
            with(&|p| p.adaptive_limit = Limit::AimdSignal(ms(100), Signal::Latency)),
        ),
        (
            "limit: 250 ms",
            with(&|p| p.adaptive_limit = Limit::AimdSignal(ms(250), Signal::Latency)),
        ),
        ("limit: backoff 0.9", with(&|p| p.aimd_backoff = 0.9)),
        ("limit: backoff 0.95", with(&|p| p.aimd_backoff = 0.95)),
        ("elapsed = slow call", with(&|p| p.elapsed_is_slow = true)),
        (
            "open 100 ms",
            with(&|p| {
                p.open_duration = ms(100);
                p.max_open = ms(100);
            }),
        ),
        (
            "open 500 ms",
            with(&|p| {
                p.open_duration = ms(500);
                p.max_open = ms(500);
            }),
        ),
        ("1 probe", with(&|p| p.probes = 1)),
        ("20 probes", with(&|p| p.probes = 20)),
        ("budget floor 1/s", with(&|p| p.budget_min_per_sec = 1)),
        ("budget 30%", with(&|p| p.budget_ratio = 0.3)),
    ];
    let incidents = scorecard::incidents();
    print!("| goodput req/s |");
    for i in &incidents {
        print!(" {} |", i.name);
    }
    println!();
    println!("|---|{}", "---:|".repeat(incidents.len()));
    for s in StackKind::ALL {
        print!("| {} |", s.label());
        for i in &incidents {
            print!(" {:.1} |", scorecard::run_incident(i, s).goodput);
        }
        println!();
    }
    for (name, p) in candidates {
        print!("| {name} |");
        for i in &incidents {
            print!(" {:.1} |", scorecard::run_tuned(i, &p).goodput);
        }
        println!();
    }
}
