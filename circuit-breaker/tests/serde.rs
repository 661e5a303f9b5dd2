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
            "slow_call_duration": 1500,
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
    assert!(config.into_layer().is_ok());
}

#[test]
fn invalid_or_unknown_fields_are_refused() {
    for bad in [
        r#"{ "window": { "kind": "count", "size": 0 } }"#,
        r#"{ "failure_rate_threshold": 150 }"#,
        r#"{ "open_duration": "soon" }"#,
        r#"{ "failure_threshold": 50 }"#,
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
