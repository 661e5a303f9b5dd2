//! Feature `metrics`: counters by trigger and priority, and the mode gauge, reach a recorder.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade_core::{BoxError, Priority};
use palisade_degrade::fallback::Value;
use palisade_degrade::{FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, Switch};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Records counters and gauges by `name{label=value,...}`.
#[derive(Default)]
struct Capture(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl Capture {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.0.lock().expect("lock").entry(id).or_default())
    }

    fn counter(&self, id: &str) -> u64 {
        self.0
            .lock()
            .expect("lock")
            .get(id)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    fn gauge(&self, id: &str) -> f64 {
        f64::from_bits(self.counter(id))
    }
}

struct NoHistogram;

impl metrics::HistogramFn for NoHistogram {
    fn record(&self, _: f64) {}
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(NoHistogram))
    }
}

#[tokio::test]
async fn counters_by_trigger_and_priority_and_the_mode_gauge() {
    let capture = Capture::default();
    let switch = Switch::new();
    let (fallback, shed) = metrics::with_local_recorder(&capture, || {
        let fallback = FallbackLayer::new(
            FallbackConfig::builder().name("fb").build().unwrap(),
            Value::new(Marked::new(0)),
        );
        let shed = ShedLayer::new(
            ShedConfig::builder()
                .name("sh")
                .switch(switch.clone())
                .build()
                .unwrap(),
        )
        .prioritize(|p: &Priority| *p);
        (fallback, shed)
    });
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(shed)
        .service(service_fn(|_: Priority| async {
            Ok::<_, BoxError>(Marked::new(1))
        }));

    assert_eq!(capture.gauge("palisade_degrade_mode{name=sh}"), 0.0);
    switch.degrade();
    assert_eq!(capture.gauge("palisade_degrade_mode{name=sh}"), 1.0);
    for p in [Priority::Sheddable, Priority::Sheddable, Priority::Critical] {
        svc.clone().oneshot(p).await.unwrap();
    }
    assert_eq!(
        capture.counter("palisade_degrade_shed_total{name=sh,priority=sheddable}"),
        2
    );
    assert_eq!(
        capture.counter("palisade_degrade_shed_total{name=sh,priority=critical}"),
        0
    );
    assert_eq!(
        capture.counter("palisade_degrade_fallback_total{name=fb,trigger=shed}"),
        2
    );
    assert_eq!(
        capture.counter("palisade_degrade_fallback_total{name=fb,trigger=failure}"),
        0
    );
}
