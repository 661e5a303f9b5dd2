//! The metrics the degrade layers emit (feature `metrics`), registered once per layer.

use palisade_core::metrics::{Counter, Gauge, Histogram, Labels, MetricDef, MetricKind};
use palisade_core::{Name, Priority};

use crate::Trigger;

/// Every metric this crate emits; each also carries the label `name` (the layer's name).
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        "palisade_degrade_fallback_total",
        MetricKind::Counter,
        "fallback answers served; label trigger (failure, elapsed, circuit_open, rate_limited, overloaded, retries_exhausted, shed, manual, revalidate)",
    ),
    MetricDef::new(
        "palisade_degrade_fallback_failed_total",
        MetricKind::Counter,
        "fallbacks that failed themselves (their error is returned)",
    ),
    MetricDef::new(
        "palisade_degrade_stale_total",
        MetricKind::Counter,
        "stale cache answers served; label trigger (as for fallback_total)",
    ),
    MetricDef::new(
        "palisade_degrade_stale_missed_total",
        MetricKind::Counter,
        "live failures with no cache entry fresh enough to serve",
    ),
    MetricDef::new(
        "palisade_degrade_stale_age_seconds",
        MetricKind::Histogram,
        "age of the stale answers served",
    ),
    MetricDef::new(
        "palisade_degrade_shed_total",
        MetricKind::Counter,
        "requests shed; label priority (sheddable, default, critical)",
    ),
    MetricDef::new(
        "palisade_degrade_mode",
        MetricKind::Gauge,
        "1 while the layer's degrade switch is in degraded mode, else 0",
    ),
];

const TRIGGER_LABELS: [Labels; 9] = [
    &[("trigger", Trigger::ALL_LABELS[0])],
    &[("trigger", Trigger::ALL_LABELS[1])],
    &[("trigger", Trigger::ALL_LABELS[2])],
    &[("trigger", Trigger::ALL_LABELS[3])],
    &[("trigger", Trigger::ALL_LABELS[4])],
    &[("trigger", Trigger::ALL_LABELS[5])],
    &[("trigger", Trigger::ALL_LABELS[6])],
    &[("trigger", Trigger::ALL_LABELS[7])],
    &[("trigger", Trigger::ALL_LABELS[8])],
];

/// One counter per trigger label, so the hot path indexes instead of building keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByTrigger([Counter; 9]);

impl ByTrigger {
    pub(crate) fn register(metric: &'static str, name: &Name) -> Self {
        Self(TRIGGER_LABELS.map(|labels| Counter::register(metric, name, labels)))
    }

    pub(crate) fn increment(&self, trigger: Trigger) {
        self.0[trigger.index()].increment(1);
    }
}

/// One counter per priority.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByPriority([Counter; 3]);

const PRIORITY_LABELS: [Labels; 3] = [
    &[("priority", "sheddable")],
    &[("priority", "default")],
    &[("priority", "critical")],
];

impl ByPriority {
    pub(crate) fn register(metric: &'static str, name: &Name) -> Self {
        Self(PRIORITY_LABELS.map(|labels| Counter::register(metric, name, labels)))
    }

    pub(crate) fn increment(&self, priority: Priority) {
        self.0[priority_index(priority)].increment(1);
    }
}

pub(crate) const fn priority_index(p: Priority) -> usize {
    match p {
        Priority::Sheddable => 0,
        Priority::Default => 1,
        Priority::Critical => 2,
    }
}

/// The mode gauge of one layer.
pub(crate) fn mode_gauge(name: &Name) -> Gauge {
    Gauge::register("palisade_degrade_mode", name, &[])
}

/// A histogram of stale ages.
pub(crate) fn stale_age(name: &Name) -> Histogram {
    Histogram::register("palisade_degrade_stale_age_seconds", name, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_follows_the_scheme() {
        for m in METRICS {
            assert!(m.follows_scheme(), "{} breaks the naming scheme", m.name);
            assert!(m.name.starts_with("palisade_degrade_"));
        }
    }

    #[test]
    fn priority_labels_match_priorities() {
        for p in [Priority::Sheddable, Priority::Default, Priority::Critical] {
            assert_eq!(PRIORITY_LABELS[priority_index(p)][0].1, p.as_str());
        }
    }
}
