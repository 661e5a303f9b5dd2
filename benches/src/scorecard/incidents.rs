//! The incidents of the scorecard: one table, every parameter in it.

use std::time::Duration;

use palisade::chaos::Latency;
use palisade::chaos::sim::{FaultScript, Incident as Fault};

/// How long requests arrive in every run.
pub const RUN: Duration = Duration::from_secs(45);
/// When the fault starts in every incident.
pub const FAULT_FROM: Duration = Duration::from_secs(10);
/// When it ends (its recovery ramp, if any, runs on from here).
pub const FAULT_TO: Duration = Duration::from_secs(25);
/// The offered load: open-loop Poisson arrivals, requests per second.
pub const LOAD_RPS: f64 = 100.0;
/// The healthy backend's capacity, calls per second: 1.5x the load, the headroom of a
/// service sized for its peak.
pub const CAPACITY: f64 = 150.0;
/// The longest a call queues in the backend before it is shed (a server-side queue
/// timeout).
pub const MAX_QUEUE: Duration = Duration::from_secs(1);
/// The client's deadline: the caller stops waiting after this, whatever the stack does
/// (the README stack's overall timeout, so palisade's overall timeout never cuts a call
/// that the caller would still have waited for).
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// How long after the fault cleared a run must be healthy again not to count as
/// metastable: the last `SETTLE` of arrivals must succeed at 95% or more.
pub const SETTLE: Duration = Duration::from_secs(10);
/// The seed of every run (arrivals, backend latencies and faults, retry jitter).
pub const SEED: u64 = 0x5CA1E;

/// One named incident of the scorecard.
#[derive(Debug, Clone)]
pub struct Incident {
    /// A short name (file names, test names).
    pub name: &'static str,
    /// What happens, in a few words (the table's header).
    pub what: &'static str,
    /// The backend's fault script.
    pub script: FaultScript,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every incident, in the scorecard's order. Each fault runs from `FAULT_FROM` (10 s) to
/// `FAULT_TO` (25 s) of a 45 s run at 100 req/s against 150 calls/s of capacity.
///
/// | incident | fault during 10-25 s | why it is in the scorecard |
/// |---|---|---|
/// | `random-errors` | 10% of calls fail fast | the everyday flaky dependency: retries should hide it cheaply |
/// | `outage` | every call fails fast, then back at once | a dead backend: stop calling it, notice the recovery quickly |
/// | `latency-spike` | every call +3 s (past the 2 s client deadline) | a stalled backend: timeouts bound latency, retries only add load |
/// | `brown-out` | 30% of calls +3 s | a partial failure: 70% of capacity still works and must be used |
/// | `flapping` | down 2 s / up 3 s, repeating | an intermittent backend: use every up phase |
/// | `gradual-recovery` | outage 10-15 s, capacity ramps 0 → full over 15-35 s | a cold restart: the breaker must follow the ramp |
/// | `overload-2x` | capacity drops to 50/s (2x overload) | too little capacity: shed fast, keep the rest fast |
/// | `retry-storm` | 3 s blackhole (calls +10 s) at 10-13 s | a brief stall: retries of timed-out calls can keep the queue full after it (metastable) |
/// | `rate-limited` | upstream quota 60/s, 429 + Retry-After | a quota: honour the hint, do not hammer |
/// | `hangs` | 5% of calls never answer | the seed list's "timeouts avoid hanging requests" |
pub fn incidents() -> Vec<Incident> {
    let span = FAULT_FROM..FAULT_TO;
    let script = |f: Fault| FaultScript::new().with(f);
    vec![
        Incident {
            name: "random-errors",
            what: "10% of calls fail",
            script: script(Fault::errors(span.clone(), 0.10)),
        },
        Incident {
            name: "heavy-errors",
            what: "60% of calls fail",
            script: script(Fault::errors(span.clone(), 0.60)),
        },
        Incident {
            name: "outage",
            what: "full outage 10-25 s",
            script: script(Fault::outage(span.clone())),
        },
        Incident {
            name: "latency-spike",
            what: "every call +3 s",
            script: script(Fault::latency_spike(span.clone(), Latency::fixed(secs(3)))),
        },
        Incident {
            name: "brown-out",
            what: "30% of calls +3 s",
            script: script(Fault::slow_calls(
                span.clone(),
                0.30,
                Latency::fixed(secs(3)),
            )),
        },
        Incident {
            name: "flapping",
            what: "down 2 s / up 3 s",
            script: script(Fault::flapping(span.clone(), secs(3), secs(2))),
        },
        Incident {
            name: "gradual-recovery",
            what: "outage, capacity ramps back over 20 s",
            script: script(Fault::outage(FAULT_FROM..secs(15)).recovering_over(secs(20))),
        },
        Incident {
            name: "overload-2x",
            what: "capacity 150 → 50/s (2x overload)",
            script: script(Fault::brownout(span.clone(), 1.0 / 3.0)),
        },
        Incident {
            name: "retry-storm",
            what: "3 s blackhole (calls +10 s)",
            script: script(Fault::latency_spike(
                FAULT_FROM..secs(13),
                Latency::fixed(secs(10)),
            )),
        },
        Incident {
            name: "rate-limited",
            what: "quota 60/s, 429 + Retry-After",
            script: script(Fault::rate_limited(span.clone(), 60)),
        },
        Incident {
            name: "hangs",
            what: "5% of calls never answer",
            script: script(Fault::hang(span, 0.05)),
        },
    ]
}

/// The incident named `name`.
pub fn incident(name: &str) -> Option<Incident> {
    incidents().into_iter().find(|i| i.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let all = incidents();
        for i in &all {
            assert_eq!(incident(i.name).map(|f| f.name), Some(i.name));
        }
        let mut names: Vec<_> = all.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
