//! Goodput of candidate defaults in every incident, beside the reference stacks: the
//! numbers the README's "Defaults chosen by incidents" cites for the choices it did not
//! make.
//!
//! `cargo run --release -p palisade-benches --example candidates` prints the table and
//! writes it to `benches/scorecard/candidates.md`; `... --example candidates -- --seeds
//! [FILTER…]` prints the candidates whose names contain a filter, beside the defaults, as
//! their mean goodput over 16 seeds minus no resilience's (a default is judged on means:
//! one seed's luck moves an incident by ±0.5 req/s).
//!
//! Each candidate is the tuned stack ([`TunedParams`]) moved to the defaults (a latency-only
//! AIMD limit at 150 ms, a budget floor of 3/s, timed-out attempts as failures) with one
//! knob changed. The tuned stack's classifiers see an upstream's `429` (not a failure, its
//! Retry-After honoured), so the rate-limited column reads higher than the default stack's.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the table on stdout, errors on stderr"
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
            "retry: 4 attempts, not until the deadline (the previous default)",
            with(&|p| p.until_deadline = false),
        ),
        (
            "limit refuses calls over it (no wait: the previous default)",
            with(&|p| p.limit_wait = None),
        ),
        (
            "limit waits to the deadline (queue 1000)",
            with(&|p| p.limit_wait = Some((Duration::MAX, 1000))),
        ),
        (
            "limit waits 1 s, queue = limit",
            with(&|p| p.limit_wait = Some((ms(1000), 0))),
        ),
        ("limit floor 1", with(&|p| p.min_limit = 1)),
        ("limit floor 8", with(&|p| p.min_limit = 8)),
        ("initial limit 10", with(&|p| p.initial_limit = 10)),
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
        ("failure threshold 50%", with(&|p| p.failure_rate = 50.0)),
        ("failure threshold 90%", with(&|p| p.failure_rate = 90.0)),
        (
            "open 250 ms, 5 probes, 50% (the previous defaults)",
            with(&|p| {
                p.open_duration = ms(250);
                p.max_open = ms(250);
                p.probes = 5;
                p.failure_rate = 50.0;
            }),
        ),
        (
            "open 250 ms",
            with(&|p| {
                p.open_duration = ms(250);
                p.max_open = ms(250);
            }),
        ),
        (
            "open 50 ms",
            with(&|p| {
                p.open_duration = ms(50);
                p.max_open = ms(50);
            }),
        ),
        (
            "open 100 ms, x2 per reopen up to 1 s",
            with(&|p| {
                p.open_multiplier = 2.0;
                p.max_open = ms(1000);
            }),
        ),
        ("2 probes", with(&|p| p.probes = 2)),
        ("5 probes", with(&|p| p.probes = 5)),
        ("budget floor 1/s", with(&|p| p.budget_min_per_sec = 1)),
        ("budget 30%", with(&|p| p.budget_ratio = 0.3)),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--seeds") {
        seeds(&candidates, &args[1..]);
        return;
    }
    use std::fmt::Write as _;
    let incidents = scorecard::incidents();
    let mut out = String::from(
        "Goodput (req/s) of the reference stacks and of candidate defaults, one knob changed \
         each from the defaults (with the tuned stack's 429-aware classifiers), in every \
         incident of the scorecard.\n\n| goodput req/s |",
    );
    for i in &incidents {
        let _ = write!(out, " {} |", i.name);
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(incidents.len()));
    for s in StackKind::ALL {
        let _ = write!(out, "| {} |", s.label());
        for i in &incidents {
            let _ = write!(out, " {:.1} |", scorecard::run_incident(i, s).goodput);
        }
        out.push('\n');
    }
    for (name, p) in candidates {
        let _ = write!(out, "| {name} |");
        for i in &incidents {
            let _ = write!(out, " {:.1} |", scorecard::run_tuned(i, &p).goodput);
        }
        out.push('\n');
    }
    print!("{out}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scorecard/candidates.md");
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// `--seeds [FILTER…]`: each candidate whose name contains a filter (all without one),
/// beside the defaults, as its mean goodput over seeds 10 to 25 minus no resilience's, per
/// incident: the numbers the README quotes "over 16 seeds".
fn seeds(candidates: &[(&str, TunedParams)], filters: &[String]) {
    const SEEDS: std::ops::RangeInclusive<u64> = 10..=25;
    let n = SEEDS.clone().count() as f64;
    let incidents = scorecard::incidents();
    let none: Vec<f64> = incidents
        .iter()
        .map(|i| {
            SEEDS
                .map(|seed| scorecard::run_incident_seeded(i, StackKind::None, seed).goodput)
                .sum::<f64>()
                / n
        })
        .collect();
    print!("| over no resilience, mean of seeds 10-25 |");
    for i in &incidents {
        print!(" {} |", i.name);
    }
    println!("\n|---|{}", "---:|".repeat(incidents.len()));
    let chosen = candidates.iter().enumerate().filter(|(k, (name, _))| {
        *k == 0 || filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    });
    for (_, (name, params)) in chosen {
        print!("| {name} |");
        for (i, none) in incidents.iter().zip(&none) {
            let mean = SEEDS
                .map(|seed| scorecard::run_tuned_seeded(i, params, seed).goodput)
                .sum::<f64>()
                / n;
            print!(" {:+.2} |", mean - none);
        }
        println!();
    }
}
