//! With the `metrics` feature: exactly one state gauge reads 1, across a full cycle.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, METRICS, State};
use palisade_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Keeps every counter and gauge by `name{label=value,...}`.
#[derive(Default)]
struct Store {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Store {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(
            self.values
                .lock()
                .expect("not poisoned")
                .entry(id)
                .or_default(),
        )
    }

    fn gauge(&self, id: &str) -> f64 {
        let values = self.values.lock().expect("not poisoned");
        f64::from_bits(
            values
                .get(id)
                .unwrap_or_else(|| panic!("no {id}"))
                .load(Ordering::Relaxed),
        )
    }

    fn counter(&self, id: &str) -> u64 {
        self.values
            .lock()
            .expect("not poisoned")
            .get(id)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }
}

struct Shared(Arc<Store>);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn assert_only(store: &Store, current: State) {
    for state in State::ALL {
        let id = format!("palisade_circuit_breaker_state{{name=db,state={state}}}");
        let expected = if state == current { 1.0 } else { 0.0 };
        assert_eq!(store.gauge(&id), expected, "{id} while {current}");
    }
}

#[tokio::test(start_paused = true)]
async fn state_gauges_follow_a_full_cycle() {
    let store = Arc::new(Store::default());
    let recorder = Shared(Arc::clone(&store));
    let config = CircuitBreakerConfig::builder()
        .name("db")
        .count_window(2)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(1))
        .half_open_probes(1)
        .build()
        .unwrap();
    let layer = metrics::with_local_recorder(&recorder, || CircuitBreakerLayer::new(config));
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    assert_only(&store, State::Closed);

    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_only(&store, State::Open);
    assert_eq!(
        store.gauge("palisade_circuit_breaker_failure_rate{name=db}"),
        100.0
    );
    let _ = svc.ready().await.unwrap().call(false).await;
    assert_eq!(
        store.counter("palisade_circuit_breaker_rejected_total{name=db}"),
        1
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = svc.ready().await.unwrap().call(false);
    assert_only(&store, State::HalfOpen);
    probe.await.unwrap();
    assert_only(&store, State::Closed);

    handle.force_open();
    assert_only(&store, State::ForcedOpen);
    handle.disable();
    assert_only(&store, State::Disabled);
    handle.reset();
    assert_only(&store, State::Closed);

    let transitions = |to: &str| {
        store.counter(&format!(
            "palisade_circuit_breaker_transitions_total{{name=db,to={to}}}"
        ))
    };
    assert_eq!(
        [
            transitions("open"),
            transitions("half_open"),
            transitions("closed"),
            transitions("forced_open")
        ],
        [1, 1, 2, 1]
    );
    for m in METRICS {
        assert!(
            store
                .values
                .lock()
                .unwrap()
                .keys()
                .any(|k| k.starts_with(m.name)),
            "{} emitted",
            m.name
        );
    }
}
