//! Metric handles and the naming scheme every palisade layer follows.
//!
//! # Naming scheme
//!
//! Metrics go to the [`metrics`](https://docs.rs/metrics) facade when the `metrics` feature
//! is on (off by default; without it these handles are zero-sized no-ops). Names are
//! Prometheus style:
//!
//! | kind | name | unit |
//! |---|---|---|
//! | counter | `palisade_<layer>_<what>_total` | events |
//! | histogram | `palisade_<layer>_<what>_seconds` | seconds |
//! | histogram | `palisade_<layer>_<what>` | a count (e.g. attempts per request) |
//! | gauge | `palisade_<layer>_<what>` | current value |
//!
//! `<layer>` is the crate's concern (`timeout`, `retry`, `circuit_breaker`, `rate_limit`,
//! `degrade`, `chaos`). Every metric carries the label `name` (the layer's [`Name`]);
//! extra labels are listed with the metric (`state`, `reason`, `priority`). Each crate's
//! docs list its metrics and export them as a `METRICS` list of [`MetricDef`]s for tooling
//! (alert rules are checked against it).
//!
//! Handles are registered once, when a layer is built, so the hot path does not build keys
//! or allocate: install your recorder (e.g. the Prometheus exporter) before building the
//! layers.
//!
//! With the `metrics` feature compiled in but **no recorder installed** when a layer is
//! built, its handles are disabled ([`Histogram::is_enabled`] is `false`), so the layer reads
//! no clock and records nothing: a build with the feature and no recorder costs what a build
//! without it costs. (A recorder counts as installed when the current recorder, global or
//! local, is not the facade's zero-sized no-op; a zero-sized recorder of your own is taken
//! for "none".)

use crate::Name;

/// One documented metric: its name, kind and meaning.
///
/// Every middleware crate exports `pub const METRICS: &[MetricDef]` listing what it emits;
/// the `palisade` facade joins them (`palisade::metrics()`), so dashboards and alert rules
/// can be checked against one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The metric name, `palisade_<layer>_...`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// What it measures, and its extra labels.
    pub help: &'static str,
}

impl MetricDef {
    /// A metric definition.
    pub const fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        Self { name, kind, help }
    }

    /// Whether the name follows the scheme above (prefix, `_total` exactly on counters).
    pub fn follows_scheme(&self) -> bool {
        let counter_suffix = self.name.ends_with("_total");
        self.name.starts_with("palisade_")
            && self.help.len() > 3
            && (counter_suffix == (self.kind == MetricKind::Counter))
    }
}

/// The kind of a metric in a [`MetricDef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// Extra labels beyond `name`: `(key, value)` pairs of static strings.
pub type Labels = &'static [(&'static str, &'static str)];

/// A counter handle (`palisade_<layer>_<what>_total`), labelled with the layer name.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Counter>,
}

impl Counter {
    /// Register `metric` for the layer `name`, with extra `labels`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn register(metric: &'static str, name: &Name, labels: Labels) -> Self {
        #[cfg(feature = "metrics")]
        {
            if !recorder_installed() {
                return Self { inner: None };
            }
            let labels = with_name(name, labels);
            Self {
                inner: Some(metrics::counter!(metric, labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// `true` when this handle feeds a recorder. (Without the `metrics` feature, or with
    /// no recorder installed when it was registered: always `false`.)
    #[inline]
    pub fn is_enabled(&self) -> bool {
        #[cfg(feature = "metrics")]
        {
            self.inner.is_some()
        }
        #[cfg(not(feature = "metrics"))]
        {
            false
        }
    }

    /// Add `n`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        if let Some(c) = &self.inner {
            c.increment(n);
        }
    }
}

/// A gauge handle (`palisade_<layer>_<what>`), labelled with the layer name.
#[derive(Clone, Debug, Default)]
pub struct Gauge {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Gauge>,
}

impl Gauge {
    /// Register `metric` for the layer `name`, with extra `labels`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn register(metric: &'static str, name: &Name, labels: Labels) -> Self {
        #[cfg(feature = "metrics")]
        {
            if !recorder_installed() {
                return Self { inner: None };
            }
            let labels = with_name(name, labels);
            Self {
                inner: Some(metrics::gauge!(metric, labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// `true` when this handle feeds a recorder, so a layer knows computing a value for it
    /// (a rate, a window snapshot) is worth it. (Without the `metrics` feature: always
    /// `false`.)
    #[inline]
    pub fn is_enabled(&self) -> bool {
        #[cfg(feature = "metrics")]
        {
            self.inner.is_some()
        }
        #[cfg(not(feature = "metrics"))]
        {
            false
        }
    }

    /// Set the gauge to `value`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        if let Some(g) = &self.inner {
            g.set(value);
        }
    }

    /// Add `delta` (may be negative).
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn add(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        if let Some(g) = &self.inner {
            if delta >= 0.0 {
                g.increment(delta);
            } else {
                g.decrement(-delta);
            }
        }
    }
}

/// A histogram handle (`palisade_<layer>_<what>_seconds` or a count), labelled with the
/// layer name.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    #[cfg(feature = "metrics")]
    inner: Option<metrics::Histogram>,
}

impl Histogram {
    /// Register `metric` for the layer `name`, with extra `labels`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn register(metric: &'static str, name: &Name, labels: Labels) -> Self {
        #[cfg(feature = "metrics")]
        {
            if !recorder_installed() {
                return Self { inner: None };
            }
            let labels = with_name(name, labels);
            Self {
                inner: Some(metrics::histogram!(metric, labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// `true` when this handle feeds a recorder, so a layer knows a clock read for it is
    /// worth making. (Without the `metrics` feature: always `false`.)
    #[inline]
    pub fn is_enabled(&self) -> bool {
        #[cfg(feature = "metrics")]
        {
            self.inner.is_some()
        }
        #[cfg(not(feature = "metrics"))]
        {
            false
        }
    }

    /// Record one observation.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub fn record(&self, value: f64) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.inner {
            h.record(value);
        }
    }
}

/// `true` when a recorder (global, or local to this thread) is installed now.
#[cfg(feature = "metrics")]
fn recorder_installed() -> bool {
    // The facade's fallback is its zero-sized `NoopRecorder`; every real recorder holds
    // state (a registry, a sink), so its size is not zero.
    metrics::with_recorder(|r| size_of_val(r) > 0)
}

#[cfg(feature = "metrics")]
fn with_name(name: &Name, labels: Labels) -> Vec<metrics::Label> {
    let mut out = Vec::with_capacity(labels.len() + 1);
    out.push(metrics::Label::new("name", name.to_shared_string()));
    for (k, v) in labels {
        out.push(metrics::Label::from_static_parts(k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_check_catches_bad_names() {
        assert!(MetricDef::new("palisade_x_total", MetricKind::Counter, "calls").follows_scheme());
        assert!(!MetricDef::new("palisade_x", MetricKind::Counter, "calls").follows_scheme());
        assert!(!MetricDef::new("x_total", MetricKind::Counter, "calls").follows_scheme());
        assert!(!MetricDef::new("palisade_x_total", MetricKind::Gauge, "now").follows_scheme());
    }

    #[test]
    fn handles_work_without_a_recorder() {
        let name = Name::new("t");
        Counter::register("palisade_test_total", &name, &[]).increment(1);
        let gauge = Gauge::register("palisade_test", &name, &[("state", "open")]);
        gauge.set(1.0);
        gauge.add(-1.0);
        let histogram = Histogram::register("palisade_test_seconds", &name, &[]);
        histogram.record(0.5);
        // no recorder: the handles are off, so layers skip the clock reads that feed them
        assert!(!gauge.is_enabled());
        assert!(!histogram.is_enabled());
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn handles_feed_a_recorder_installed_before_registration() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};

        #[derive(Default)]
        struct Count(Arc<AtomicU64>);
        impl metrics::CounterFn for Count {
            fn increment(&self, value: u64) {
                self.0.fetch_add(value, Ordering::Relaxed);
            }
            fn absolute(&self, value: u64) {
                self.0.store(value, Ordering::Relaxed);
            }
        }
        impl metrics::HistogramFn for Count {
            fn record(&self, _: f64) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        impl metrics::GaugeFn for Count {
            fn increment(&self, _: f64) {}
            fn decrement(&self, _: f64) {}
            fn set(&self, _: f64) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        struct Capture(Arc<AtomicU64>);
        impl metrics::Recorder for Capture {
            fn describe_counter(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn describe_gauge(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn describe_histogram(
                &self,
                _: metrics::KeyName,
                _: Option<metrics::Unit>,
                _: metrics::SharedString,
            ) {
            }
            fn register_counter(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Counter {
                metrics::Counter::from_arc(Arc::new(Count(Arc::clone(&self.0))))
            }
            fn register_gauge(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Gauge {
                metrics::Gauge::from_arc(Arc::new(Count(Arc::clone(&self.0))))
            }
            fn register_histogram(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Histogram {
                metrics::Histogram::from_arc(Arc::new(Count(Arc::clone(&self.0))))
            }
        }
        let seen = Arc::new(AtomicU64::new(0));
        let recorder = Capture(Arc::clone(&seen));
        let name = Name::new("t");
        let (counter, gauge, histogram) = metrics::with_local_recorder(&recorder, || {
            (
                Counter::register("palisade_test_total", &name, &[]),
                Gauge::register("palisade_test", &name, &[]),
                Histogram::register("palisade_test_seconds", &name, &[]),
            )
        });
        assert!(gauge.is_enabled());
        assert!(histogram.is_enabled());
        counter.increment(2);
        gauge.set(1.0);
        histogram.record(0.1);
        assert_eq!(seen.load(Ordering::Relaxed), 4);
    }
}
