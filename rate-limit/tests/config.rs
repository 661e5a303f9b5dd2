//! Configs load from data (feature `serde`) and are validated on the way in.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::time::Duration;

use palisade_rate_limit::{
    AdaptiveLimitConfig, Aimd, Algorithm, ConcurrencyLimitConfig, RateLimitConfig,
};

#[test]
fn rate_limit_config_from_json() {
    let c: RateLimitConfig = serde_json::from_str(
        r#"{"name": "api", "cells": 100, "period": "1s", "burst": 10, "max_wait": "50ms"}"#,
    )
    .unwrap();
    assert_eq!(c.name.as_str(), "api");
    assert_eq!((c.cells, c.effective_burst()), (100, 10));
    assert_eq!(c.period, Duration::from_secs(1));
    assert_eq!(c.max_wait, Duration::from_millis(50));
    // It round-trips through data.
    let again: RateLimitConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
    c.into_layer().unwrap();
    // Defaults fill the rest; invalid values are refused.
    let c: RateLimitConfig = serde_json::from_str(r#"{"cells": 5, "period": 1000}"#).unwrap();
    assert_eq!(c.effective_burst(), 5);
    // Data that parses may still be invalid: validation names the field.
    let bad: RateLimitConfig = serde_json::from_str(r#"{"cells": 0, "period": "1s"}"#).unwrap();
    assert_eq!(bad.into_layer().unwrap_err().field(), "cells");
    assert!(
        serde_json::from_str::<RateLimitConfig>(r#"{"cells": 1, "period": "1s", "typo": 1}"#)
            .is_err()
    );
}

#[test]
fn concurrency_limit_config_from_json() {
    let c: ConcurrencyLimitConfig =
        serde_json::from_str(r#"{"max_in_flight": 8, "max_wait": "1s"}"#).unwrap();
    assert_eq!((c.max_in_flight, c.effective_max_queue()), (8, 8));
    assert_eq!(c.max_wait, Duration::from_secs(1));
    let again: ConcurrencyLimitConfig =
        serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
    let bad: ConcurrencyLimitConfig = serde_json::from_str(r#"{"max_in_flight": 0}"#).unwrap();
    assert_eq!(bad.into_layer().unwrap_err().field(), "max_in_flight");
}

#[test]
fn adaptive_limit_config_from_json() {
    let c: AdaptiveLimitConfig = serde_json::from_str(
        r#"{"algorithm": {"aimd": {"latency_threshold": "250ms"}}, "min_limit": 2, "max_limit": 50}"#,
    )
    .unwrap();
    assert_eq!(
        c.algorithm,
        Algorithm::Aimd(Aimd::new().latency_threshold(Duration::from_millis(250)))
    );
    assert_eq!((c.min_limit, c.max_limit), (2, 50));
    let again: AdaptiveLimitConfig =
        serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
    let c: AdaptiveLimitConfig = serde_json::from_str("{}").unwrap();
    assert!(matches!(c.algorithm, Algorithm::Gradient(_)));
    let bad: AdaptiveLimitConfig = serde_json::from_str(r#"{"min_limit": 0}"#).unwrap();
    assert_eq!(bad.into_layer().unwrap_err().field(), "min_limit");
}
