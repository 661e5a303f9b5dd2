//! Keyed breakers: isolation, eviction, run-time config.

use std::time::Duration;

use palisade_circuit_breaker::{
    CircuitBreakerConfig, KeyedCircuitBreakerLayer, KeyedLimits, State,
};
use palisade_core::{BoxError, CircuitOpen};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

const MIN: Duration = Duration::from_secs(60);

type Req = (&'static str, bool);

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("hosts")
        .count_window(4)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(10))
        .open_duration_backoff(1.0, Duration::from_secs(10))
        .build()
        .expect("valid config")
}

fn backend() -> impl Service<Req, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|(_, fail): Req| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    })
}

async fn call<S: Service<Req, Error = BoxError>>(
    svc: &mut S,
    host: &'static str,
    fail: bool,
) -> Result<S::Response, BoxError> {
    svc.ready().await?.call((host, fail)).await
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_does_not_open_the_others() {
    let layer = KeyedCircuitBreakerLayer::new(config(), |r: &Req| r.0);
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..2 {
        let _ = call(&mut svc, "a", true).await;
        call(&mut svc, "b", false).await.unwrap();
    }
    let a = handle.get(&"a").unwrap();
    assert_eq!(a.state(), State::Open);
    assert_eq!(handle.get(&"b").unwrap().state(), State::Closed);
    let err = call(&mut svc, "a", false).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(
        open.name().as_str(),
        "hosts/\"a\"",
        "the rejection names the key"
    );
    call(&mut svc, "b", false).await.unwrap();
    assert!(handle.get(&"c").is_none(), "created on first use only");
    assert_eq!(handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_but_forced_open_ones_stay() {
    let limits = KeyedLimits {
        max_keys: 100,
        idle_timeout: 10 * MIN,
    };
    let layer = KeyedCircuitBreakerLayer::with_limits(config(), |r: &Req| r.0, limits).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    call(&mut svc, "idle", false).await.unwrap();
    call(&mut svc, "isolated", false).await.unwrap();
    handle.get(&"isolated").unwrap().force_open();
    advance(5 * MIN).await;
    call(&mut svc, "busy", false).await.unwrap();
    advance(6 * MIN).await;
    call(&mut svc, "busy", false).await.unwrap();
    // A new key triggers the sweep.
    call(&mut svc, "new", false).await.unwrap();
    assert!(handle.get(&"idle").is_none(), "idle for 11 minutes");
    assert!(
        handle.get(&"isolated").is_some(),
        "forced open is an operator's decision"
    );
    assert!(handle.get(&"busy").is_some());
    assert_eq!(handle.len(), 3);
    advance(11 * MIN).await;
    assert_eq!(handle.evict_idle(), 2, "busy and new went idle too");
}

#[tokio::test(start_paused = true)]
async fn a_full_registry_evicts_the_least_recently_used() {
    let limits = KeyedLimits {
        max_keys: 8,
        idle_timeout: 10 * MIN,
    };
    let layer = KeyedCircuitBreakerLayer::with_limits(config(), |r: &Req| r.0, limits).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    for k in keys {
        call(&mut svc, k, false).await.unwrap();
        advance(MIN).await;
    }
    assert_eq!(handle.len(), 8);
    call(&mut svc, "k8", false).await.unwrap();
    assert!(handle.len() <= 8, "bounded: {}", handle.len());
    assert!(handle.get(&"k0").is_none(), "the oldest went first");
    assert!(handle.get(&"k7").is_some());
    assert!(handle.get(&"k8").is_some());
}

#[tokio::test(start_paused = true)]
async fn config_updates_reach_every_key() {
    let layer = KeyedCircuitBreakerLayer::new(config(), |r: &Req| r.0);
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    call(&mut svc, "old", false).await.unwrap();
    let strict = CircuitBreakerConfig::builder()
        .count_window(4)
        .minimum_calls(1)
        .failure_rate_threshold(30.0)
        .open_duration(Duration::from_secs(10))
        .open_duration_backoff(1.0, Duration::from_secs(10))
        .build()
        .unwrap();
    handle.update(strict.clone()).unwrap();
    for host in ["old", "fresh"] {
        call(&mut svc, host, false).await.unwrap();
        call(&mut svc, host, true).await.unwrap_err();
        assert_eq!(handle.get(&host).unwrap().state(), State::Open, "{host}");
    }
    let resized = CircuitBreakerConfig::builder()
        .count_window(8)
        .build()
        .unwrap();
    assert_eq!(handle.update(resized).unwrap_err().field(), "window");
}

#[test]
fn limits_are_validated() {
    let bad = KeyedLimits {
        max_keys: 0,
        ..KeyedLimits::default()
    };
    let err = KeyedCircuitBreakerLayer::with_limits(config(), |r: &Req| r.0, bad).unwrap_err();
    assert_eq!(err.field(), "max_keys");
    let short = KeyedLimits {
        idle_timeout: Duration::from_secs(1),
        ..KeyedLimits::default()
    };
    let err = KeyedCircuitBreakerLayer::with_limits(config(), |r: &Req| r.0, short).unwrap_err();
    assert_eq!(err.field(), "idle_timeout");
}
