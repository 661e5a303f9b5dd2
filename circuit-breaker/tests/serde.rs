//! With the `serde` feature: configs load from data and are validated.
#![cfg(feature = "serde")]

use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreakerConfig, KeyedLimits, SlidingWindow};

#[test]
fn a_config_loads_from_json_with_defaults_for_the_rest() {
    let config: CircuitBreakerConfig = serde_json::from_str(
        r#"{
            "name": "orders",
            "window": { "kind": "time", "duration": "30s", "buckets": 6 },
            "slow_call_duration": "1500ms",
            "consecutive_failures": 5,
            "open_duration_multiplier": 1.5
        }"#,
    )
    .unwrap();
    assert_eq!(config.name().as_str(), "orders");
    assert_eq!(
        config.window(),
        SlidingWindow::Time {
            duration: Duration::from_secs(30),
            buckets: 6
        }
    );
    assert_eq!(
        config.slow_call_duration(),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(config.consecutive_failures(), Some(5));
    let defaults = CircuitBreakerConfig::default();
    assert_eq!(
        config.failure_rate_threshold(),
        defaults.failure_rate_threshold()
    );
    assert_eq!(config.open_duration(), defaults.open_duration());
    let layer = palisade_circuit_breaker::CircuitBreakerLayer::new(config);
    assert_eq!(
        layer.handle().state(),
        palisade_circuit_breaker::State::Closed
    );
}

#[test]
fn invalid_or_unknown_fields_are_refused() {
    for bad in [
        r#"{ "window": { "kind": "count", "size": 0 } }"#,
        r#"{ "failure_rate_threshold": 150 }"#,
        r#"{ "open_duration": "soon" }"#,
        r#"{ "failure_threshold": 50 }"#,
        r#"{ "name": "" }"#,
        r#"{ "open_duration": 30 }"#,
        r#"{ "open_duration": "0s" }"#,
        r#"{ "max_probe_duration": "0s" }"#,
        r#"{ "failure_rate_threshold": 0 }"#,
        r#"{ "open_duration_multiplier": 0.5 }"#,
    ] {
        assert!(
            serde_json::from_str::<CircuitBreakerConfig>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn keyed_limits_load_from_json() {
    let limits: KeyedLimits = serde_json::from_str(r#"{ "idle_timeout": "30m" }"#).unwrap();
    assert_eq!(limits.idle_timeout, Duration::from_secs(1800));
    assert_eq!(limits.max_keys, KeyedLimits::default().max_keys);
}

#[test]
fn a_config_round_trips_exactly() {
    for d in [
        Duration::from_nanos(1),
        Duration::from_micros(500),
        Duration::from_millis(1500),
        Duration::from_secs(30),
        Duration::MAX,
    ] {
        let config = CircuitBreakerConfig::builder()
            .name("rt")
            .slow_call_duration(d)
            .open_duration(d)
            .open_duration_backoff(1.5, Duration::MAX)
            .max_probe_duration(d)
            .minimum_calls(7)
            .build()
            .unwrap();
        let text = serde_json::to_string(&config).unwrap();
        let back: CircuitBreakerConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.slow_call_duration(), Some(d), "{text}");
        assert_eq!(back.open_duration(), d, "{text}");
        assert_eq!(back.max_open_duration(), Duration::MAX);
        assert_eq!(back.max_probe_duration(), d);
        assert_eq!(back.minimum_calls(), 7);
        assert_eq!(back.name().as_str(), "rt");
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}

#[test]
fn bare_numbers_are_refused_with_a_hint() {
    let err = serde_json::from_str::<CircuitBreakerConfig>(r#"{ "open_duration": 30 }"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unit"), "{err}");
}

#[test]
fn keyed_limits_are_validated_when_loaded() {
    for bad in [
        r#"{ "max_keys": 0 }"#,
        r#"{ "idle_timeout": "0s" }"#,
        r#"{ "idle_timeout": 600 }"#,
    ] {
        assert!(serde_json::from_str::<KeyedLimits>(bad).is_err(), "{bad}");
    }
    let limits = KeyedLimits {
        max_keys: 3,
        idle_timeout: Duration::from_micros(1500),
    };
    let text = serde_json::to_string(&limits).unwrap();
    assert_eq!(serde_json::from_str::<KeyedLimits>(&text).unwrap(), limits);
}
