//! The chaos layer's events and metrics.

use std::time::Duration;

use palisade_core::Name;
use palisade_core::event::Event;
use palisade_core::metrics::{Counter, Gauge, Histogram, MetricDef, MetricKind};

use crate::fault::FaultKind;

/// What a [`ChaosLayer`](crate::ChaosLayer) reports to listeners and to `tracing` (target
/// `palisade::chaos`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChaosEvent {
    /// A fault was injected into a call (or into `poll_ready`, for
    /// [`FaultKind::Readiness`]).
    Injected {
        /// Which fault.
        fault: FaultKind,
        /// The added delay, for [`FaultKind::Latency`].
        delay: Option<Duration>,
    },
    /// Injection was switched on or off through the handle.
    Toggled {
        /// The new state.
        enabled: bool,
    },
    /// A fault's probability was changed through the handle.
    RateChanged {
        /// Which fault.
        fault: FaultKind,
        /// The new probability.
        rate: f64,
    },
}

impl Event for ChaosEvent {
    const TARGET: &'static str = "palisade::chaos";

    fn tracing_enabled() -> bool {
        tracing::enabled!(target: "palisade::chaos", tracing::Level::DEBUG)
    }

    fn trace(&self, name: &Name) {
        match self {
            ChaosEvent::Injected { fault, delay } => tracing::debug!(
                target: "palisade::chaos",
                name = %name,
                fault = fault.as_str(),
                delay = ?delay,
                "fault injected"
            ),
            ChaosEvent::Toggled { enabled } => tracing::debug!(
                target: "palisade::chaos",
                name = %name,
                enabled,
                "fault injection toggled"
            ),
            ChaosEvent::RateChanged { fault, rate } => tracing::debug!(
                target: "palisade::chaos",
                name = %name,
                fault = fault.as_str(),
                rate,
                "fault rate changed"
            ),
        }
    }
}

/// Every metric the chaos layer emits (feature `metrics`), each labelled `name`.
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        "palisade_chaos_injected_total",
        MetricKind::Counter,
        "faults injected; label `fault` (error, replace, latency, hang, readiness, behaviour)",
    ),
    MetricDef::new(
        "palisade_chaos_injected_delay_seconds",
        MetricKind::Histogram,
        "delay added by latency faults",
    ),
    MetricDef::new(
        "palisade_chaos_enabled",
        MetricKind::Gauge,
        "1 while injection is on, 0 while it is off",
    ),
];

/// The registered metric handles of one layer.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    injected: [Counter; 6],
    delay: Histogram,
    enabled: Gauge,
}

impl Metrics {
    pub(crate) fn register(name: &Name) -> Self {
        Self {
            injected: FaultKind::BY_INDEX
                .map(|kind| Counter::register(METRICS[0].name, name, label_for(kind))),
            delay: Histogram::register(METRICS[1].name, name, &[]),
            enabled: Gauge::register(METRICS[2].name, name, &[]),
        }
    }

    pub(crate) fn injected(&self, kind: FaultKind, delay: Option<Duration>) {
        self.injected[kind.index()].increment(1);
        if let Some(d) = delay {
            self.delay.record(d.as_secs_f64());
        }
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.set(if on { 1.0 } else { 0.0 });
    }
}

// Metric labels must be `&'static`, so each kind has its own label list.
fn label_for(kind: FaultKind) -> palisade_core::metrics::Labels {
    match kind {
        FaultKind::Error => &[("fault", "error")],
        FaultKind::Replace => &[("fault", "replace")],
        FaultKind::Latency => &[("fault", "latency")],
        FaultKind::Hang => &[("fault", "hang")],
        FaultKind::Readiness => &[("fault", "readiness")],
        FaultKind::Behaviour => &[("fault", "behaviour")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_scheme() {
        for m in METRICS {
            assert!(m.follows_scheme(), "{m:?}");
            assert!(m.name.starts_with("palisade_chaos_"), "{m:?}");
        }
    }

    #[test]
    fn labels_match_kind_names() {
        for kind in FaultKind::ALL {
            assert_eq!(label_for(kind)[0].1, kind.as_str());
        }
    }
}
