//! Properties of the chaos layer over random configurations.

use std::time::Duration;

use palisade_chaos::{ChaosConfig, ChaosLayer, Fault, FaultKind, Latency, Window};
use palisade_core::BoxError;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Outcome of one call: the answer (or `None` for an error) and how long it took.
type Call = (Option<u32>, Duration);

async fn drive(
    error: f64,
    replace: f64,
    latency: f64,
    enabled: bool,
    seed: u64,
) -> (Vec<Call>, [u64; 3]) {
    let config = ChaosConfig::<u32, u32, BoxError>::builder()
        .seed(seed)
        .enabled(enabled)
        .error(error, |_| BoxError::from("injected"))
        .replace(replace, |_| u32::MAX)
        .latency(latency, Latency::fixed(Duration::from_millis(7)))
        .build()
        .expect("valid");
    let layer = ChaosLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    let mut calls = Vec::new();
    for n in 0..200 {
        let start = Instant::now();
        let answer = svc.ready().await.expect("ready").call(n).await.ok();
        calls.push((answer, start.elapsed()));
    }
    let counts =
        [FaultKind::Error, FaultKind::Replace, FaultKind::Latency].map(|k| handle.injected(k));
    (calls, counts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_answer_is_the_services_or_an_injected_one_and_counted(
        error in 0.0..=1.0f64,
        replace in 0.0..=1.0f64,
        latency in 0.0..=1.0f64,
        enabled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (calls, [errors, replaced, delayed]) = rt().block_on(drive(error, replace, latency, enabled, seed));
        let n = |f: &dyn Fn(&(usize, &Call)) -> bool| calls.iter().enumerate().filter(|c| f(c)).count() as u64;
        // Each call answers once: the service's own answer (its input), an injected error or
        // an injected replacement; the handle's counters match what callers saw.
        prop_assert_eq!(n(&|(_, (a, _))| a.is_none()), errors);
        prop_assert_eq!(n(&|(_, (a, _))| *a == Some(u32::MAX)), replaced);
        prop_assert_eq!(n(&|(i, (a, _))| *a == Some(*i as u32)), 200 - errors - replaced);
        // A delay is exactly the configured 7 ms, and only when counted.
        prop_assert!(calls.iter().all(|(_, d)| d.is_zero() || *d == Duration::from_millis(7)));
        prop_assert_eq!(n(&|(_, (_, d))| !d.is_zero()), delayed);
        if !enabled {
            prop_assert_eq!(errors + replaced + delayed, 0);
        }
    }

    #[test]
    fn windows_are_active_exactly_inside_their_periods(
        from in 0u64..100, len in 1u64..50, extra in 0u64..50, periodic in any::<bool>(), t in 0u64..1000,
    ) {
        let s = Duration::from_secs;
        let mut window = Window::new(Fault::Hang, s(from)..s(from + len));
        let period = len + extra;
        if periodic {
            window = window.every(s(period));
        }
        let expected = t >= from && if periodic { (t - from) % period < len } else { t - from < len };
        prop_assert_eq!(window.is_active(s(t)), expected);
    }
}
