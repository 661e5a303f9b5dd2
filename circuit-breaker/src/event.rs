//! The breaker's events and metrics.

use std::fmt;
use std::time::Duration;

use palisade_core::metrics::{Counter, Gauge, MetricDef, MetricKind};
use palisade_core::{Event, Name, Outcome};

use crate::window::Counts;

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum State {
    /// Traffic flows; outcomes are recorded in the window.
    Closed,
    /// Calls are rejected with `CircuitOpen` until the open duration has passed.
    Open,
    /// A limited number of probe calls are admitted; their outcomes close or re-open it.
    HalfOpen,
    /// An operator isolated the backend: every call is rejected until the breaker is reset.
    ForcedOpen,
    /// An operator disabled the breaker: every call is admitted and recorded, and the
    /// breaker never opens, until it is reset.
    Disabled,
}

impl State {
    /// Every state, in gauge order.
    pub const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ];

    /// The lower-case name used in events and in the `state` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The window's failure rate (percent) reached the threshold.
    FailureRate(f64),
    /// The window's slow-call rate (percent) reached the threshold.
    SlowCallRate(f64),
    /// This many failures in a row.
    ConsecutiveFailures(u32),
    /// The open duration passed; probes are admitted.
    OpenDurationElapsed,
    /// All probes completed with rates under the thresholds.
    ProbesSucceeded,
    /// The probes' failure or slow-call rate (percent) reached a threshold.
    ProbesFailed {
        /// Failure rate of the probes, percent.
        failure_rate: f64,
        /// Slow-call rate of the probes, percent.
        slow_call_rate: f64,
    },
    /// An operator forced the state through the handle.
    Operator,
    /// An upstream's throttle hint (a result read by the layer's
    /// [`throttle_hint`](crate::CircuitBreakerLayer::throttle_hint)) opened the breaker until
    /// the hinted instant, without recording a failure.
    UpstreamThrottle {
        /// How long the hint asked for, from the result's arrival.
        hinted: Duration,
    },
}

/// What a circuit breaker reports to listeners registered with
/// [`on_event`](crate::CircuitBreakerLayer::on_event), and to `tracing` on the
/// target `palisade::circuit_breaker`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CircuitBreakerEvent {
    /// The breaker changed state.
    StateTransition {
        /// The breaker's name (for a keyed breaker: the layer's name and the key).
        name: Name,
        /// The state before.
        from: State,
        /// The state after.
        to: State,
        /// Why.
        reason: TransitionReason,
    },
    /// A call was refused without reaching the service (or, in metrics-only mode, would
    /// have been and was let through).
    CallRejected {
        /// When a probe will be admitted; `None` when forced open.
        retry_after: Option<Duration>,
        /// `false` in metrics-only mode: the call was let through.
        enforced: bool,
    },
    /// A call's outcome was recorded.
    CallRecorded {
        /// How the classifier judged it.
        outcome: Outcome,
        /// Whether it took at least the slow-call duration.
        slow: bool,
        /// Whether it was a half-open probe.
        probe: bool,
    },
}

impl Event for CircuitBreakerEvent {
    const TARGET: &'static str = "palisade::circuit_breaker";

    #[inline]
    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::circuit_breaker", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            // Transitions are logged at INFO by the breaker itself (see
            // `trace_transition`), so they show up without DEBUG enabled.
            CircuitBreakerEvent::StateTransition { .. } => {}
            CircuitBreakerEvent::CallRejected {
                retry_after,
                enforced,
            } => tracing::debug!(
                target: "palisade::circuit_breaker",
                name = %name,
                retry_after = ?retry_after,
                enforced,
                "call rejected: circuit open"
            ),
            CircuitBreakerEvent::CallRecorded {
                outcome,
                slow,
                probe,
            } => tracing::trace!(
                target: "palisade::circuit_breaker",
                name = %name,
                outcome = ?outcome,
                slow,
                probe,
                "call recorded"
            ),
        }
    }
}

/// Log a state transition at INFO on `palisade::circuit_breaker` (rare and important, so
/// not behind the DEBUG check that guards the per-call events).
pub(crate) fn trace_transition(name: &Name, from: State, to: State, reason: &TransitionReason) {
    tracing::info!(
        target: "palisade::circuit_breaker",
        name = %name,
        from = from.as_str(),
        to = to.as_str(),
        reason = ?reason,
        "circuit breaker state changed"
    );
}

// ===== metrics =====

/// Every metric the breaker emits (feature `metrics`), each labelled `name`.
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        "palisade_circuit_breaker_state",
        MetricKind::Gauge,
        "1 for the breaker's current state, 0 for the others; label `state` \
         (closed, open, half_open, forced_open, disabled)",
    ),
    MetricDef::new(
        "palisade_circuit_breaker_transitions_total",
        MetricKind::Counter,
        "state transitions; label `to` (the state entered)",
    ),
    MetricDef::new(
        "palisade_circuit_breaker_rejected_total",
        MetricKind::Counter,
        "calls rejected with CircuitOpen (not counting metrics-only pass-throughs)",
    ),
    MetricDef::new(
        "palisade_circuit_breaker_failure_rate",
        MetricKind::Gauge,
        "failure rate of the sliding window, percent",
    ),
    MetricDef::new(
        "palisade_circuit_breaker_slow_call_rate",
        MetricKind::Gauge,
        "slow-call rate of the sliding window, percent",
    ),
];

const STATE_LABELS: [&[(&str, &str)]; 5] = [
    &[("state", "closed")],
    &[("state", "open")],
    &[("state", "half_open")],
    &[("state", "forced_open")],
    &[("state", "disabled")],
];

const TO_LABELS: [&[(&str, &str)]; 5] = [
    &[("to", "closed")],
    &[("to", "open")],
    &[("to", "half_open")],
    &[("to", "forced_open")],
    &[("to", "disabled")],
];

/// Metric handles, registered once when the breaker is built.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// `None` for the per-key breakers of a keyed breaker: their state series would outlive
    /// evicted keys.
    state: Option<[Gauge; 5]>,
    transitions: [Counter; 5],
    rejected: Counter,
    /// `None` for per-key breakers too: keys would overwrite each other's rates.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    rates: Option<[Gauge; 2]>,
}

impl Metrics {
    /// Register the handles under `name`; `per_breaker` adds the gauges that describe one
    /// breaker (state, rates), which the per-key breakers of a keyed breaker leave out.
    pub(crate) fn register(name: &Name, per_breaker: bool) -> Self {
        let reg_gauge = |i: usize| Gauge::register(METRICS[0].name, name, STATE_LABELS[i]);
        let reg_counter = |i: usize| Counter::register(METRICS[1].name, name, TO_LABELS[i]);
        Self {
            state: per_breaker.then(|| std::array::from_fn(reg_gauge)),
            transitions: std::array::from_fn(reg_counter),
            rejected: Counter::register(METRICS[2].name, name, &[]),
            rates: per_breaker.then(|| {
                [
                    Gauge::register(METRICS[3].name, name, &[]),
                    Gauge::register(METRICS[4].name, name, &[]),
                ]
            }),
        }
    }

    /// Set every state gauge: 1 for `current`, 0 for the others, so no old state stays at 1.
    pub(crate) fn set_state(&self, current: State) {
        if let Some(gauges) = &self.state {
            for (state, gauge) in State::ALL.iter().zip(gauges) {
                gauge.set(if *state == current { 1.0 } else { 0.0 });
            }
        }
    }

    pub(crate) fn transition(&self, to: State) {
        self.transitions[to.index()].increment(1);
        self.set_state(to);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }

    /// Set the rate gauges from the window's totals (computed only when they feed a
    /// recorder: no division per call otherwise, with or without the `metrics` feature).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(crate) fn rates(&self, counts: Counts) {
        #[cfg(feature = "metrics")]
        if let Some([failure, slow]) = &self.rates
            && failure.is_enabled()
        {
            failure.set(counts.failure_rate());
            slow.set(counts.slow_rate());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_scheme() {
        for m in METRICS {
            assert!(m.follows_scheme(), "{}", m.name);
            assert!(m.name.starts_with("palisade_circuit_breaker_"));
        }
    }

    #[test]
    fn state_indices_match_all() {
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }
}
