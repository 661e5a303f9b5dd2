//! The metrics this crate emits (feature `metrics`), and their handles.

use palisade_core::Name;
use palisade_core::metrics::{Counter, Gauge, Histogram, MetricDef, MetricKind};

use crate::event::LimitKind;

/// Calls admitted, label `kind` (`rate`, `concurrency`, `adaptive`).
pub const ADMITTED: &str = "palisade_rate_limit_admitted_total";
/// Calls rejected, label `kind`.
pub const REJECTED: &str = "palisade_rate_limit_rejected_total";
/// Time admitted calls waited for quota or a permit, label `kind`.
pub const WAIT: &str = "palisade_rate_limit_wait_seconds";
/// The current concurrency limit, label `kind` (`concurrency`, `adaptive`).
pub const LIMIT: &str = "palisade_rate_limit_limit";
/// Calls in flight, label `kind` (`concurrency`, `adaptive`).
pub const IN_FLIGHT: &str = "palisade_rate_limit_in_flight";
/// Live keys of a keyed rate limit after the last cleanup.
pub const KEYS: &str = "palisade_rate_limit_keys";

/// Every metric this crate emits. Each carries the label `name` (the layer's name) and
/// `kind` (which layer: `rate`, `concurrency`, `adaptive`).
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(ADMITTED, MetricKind::Counter, "calls admitted; label kind"),
    MetricDef::new(REJECTED, MetricKind::Counter, "calls rejected; label kind"),
    MetricDef::new(
        WAIT,
        MetricKind::Histogram,
        "time admitted calls waited for quota or a permit; label kind",
    ),
    MetricDef::new(
        LIMIT,
        MetricKind::Gauge,
        "current concurrency limit (concurrency, adaptive); label kind",
    ),
    MetricDef::new(
        IN_FLIGHT,
        MetricKind::Gauge,
        "calls in flight (concurrency, adaptive); label kind",
    ),
    MetricDef::new(
        KEYS,
        MetricKind::Gauge,
        "live keys of a keyed rate limit after its last cleanup",
    ),
];

/// The handles of one layer, registered once at build time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) admitted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) wait: Histogram,
    pub(crate) limit: Gauge,
    pub(crate) in_flight: Gauge,
}

impl Metrics {
    pub(crate) fn register(name: &Name, kind: LimitKind) -> Self {
        let labels: palisade_core::metrics::Labels = match kind {
            LimitKind::Rate => &[("kind", "rate")],
            LimitKind::Concurrency => &[("kind", "concurrency")],
            LimitKind::Adaptive => &[("kind", "adaptive")],
        };
        Self {
            admitted: Counter::register(ADMITTED, name, labels),
            rejected: Counter::register(REJECTED, name, labels),
            wait: Histogram::register(WAIT, name, labels),
            limit: Gauge::register(LIMIT, name, labels),
            in_flight: Gauge::register(IN_FLIGHT, name, labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_scheme() {
        for def in METRICS {
            assert!(def.follows_scheme(), "{def:?}");
            assert!(def.name.starts_with("palisade_rate_limit_"), "{def:?}");
        }
    }
}
