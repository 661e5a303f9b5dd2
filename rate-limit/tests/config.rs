//! Configs load from data (feature `serde`) and are validated on the way in; every value a
//! user can type is either honoured or refused with the field named, never panicked on.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::time::Duration;

use palisade_core::BoxError;
use palisade_rate_limit::{
    AdaptiveLimitConfig, AdaptiveLimitLayer, Aimd, ConcurrencyLimitConfig, ConcurrencyLimitLayer,
    Gradient, RateLimitConfig, RateLimitLayer,
};
use tower::{Layer, ServiceExt, service_fn};

const EDGES: [Duration; 3] = [Duration::ZERO, Duration::from_nanos(1), Duration::MAX];

fn ok_service()
-> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|x: u32| std::future::ready(Ok::<_, BoxError>(x)))
}

/// Every duration field of every config at 0, 1 ns and `Duration::MAX`, through the
/// builder: each is either refused with the field named or builds a layer that serves calls.
#[tokio::test(start_paused = true)]
async fn every_duration_at_its_edges_builds_or_is_refused_never_panics() {
    for d in EDGES {
        // rate limit: period
        match RateLimitLayer::builder(1, d).build() {
            Ok(layer) => {
                assert_eq!(d, Duration::from_nanos(1));
                layer.layer(ok_service()).oneshot(1).await.unwrap();
            }
            Err(e) => assert_eq!(e.field(), "period", "{d:?}: {e}"),
        }
        // rate limit: max_wait (every value valid; MAX is "forever")
        let layer = RateLimitLayer::builder(1, Duration::from_secs(1))
            .max_wait(d)
            .build()
            .unwrap();
        let svc = layer.layer(ok_service());
        svc.clone().oneshot(1).await.unwrap();
        let second = svc.clone().oneshot(2).await;
        assert_eq!(second.is_ok(), d == Duration::MAX, "{d:?}");
        // rate limit: cleanup_interval (zero refused)
        match RateLimitLayer::builder(1, Duration::from_secs(1))
            .cleanup_interval(d)
            .build()
        {
            Ok(layer) => layer
                .layer(ok_service())
                .oneshot(1)
                .await
                .map(drop)
                .unwrap(),
            Err(e) => {
                assert!(d.is_zero());
                assert_eq!(e.field(), "cleanup_interval");
            }
        }
        // concurrency limit: max_wait (every value valid)
        let layer = ConcurrencyLimitLayer::builder(1)
            .max_wait(d)
            .build()
            .unwrap();
        layer.layer(ok_service()).oneshot(1).await.unwrap();
        // adaptive limit: the AIMD latency threshold (zero refused)
        match AdaptiveLimitLayer::builder()
            .algorithm(Aimd::new().latency_threshold(d))
            .build()
        {
            Ok(layer) => layer
                .layer(ok_service())
                .oneshot(1)
                .await
                .map(drop)
                .unwrap(),
            Err(e) => {
                assert!(d.is_zero());
                assert_eq!(e.field(), "aimd.latency_threshold");
            }
        }
    }
}

#[test]
fn every_builder_refuses_an_empty_name() {
    let s = Duration::from_secs(1);
    assert_eq!(
        RateLimitLayer::builder(1, s)
            .name("")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
    assert_eq!(
        RateLimitLayer::builder(1, s)
            .name("")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
    assert_eq!(
        ConcurrencyLimitLayer::builder(1)
            .name("")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
    assert_eq!(
        AdaptiveLimitLayer::builder()
            .name("")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
}

#[cfg(feature = "serde")]
mod data {
    use super::*;
    use palisade_rate_limit::Algorithm;

    fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
        serde_json::from_str::<T>(text).unwrap_err().to_string()
    }

    #[test]
    fn rate_limit_config_from_json() {
        let c: RateLimitConfig = serde_json::from_str(
            r#"{"name": "api", "cells": 100, "period": "1s", "burst": 10, "max_wait": "50ms"}"#,
        )
        .unwrap();
        assert_eq!(c.name().as_str(), "api");
        assert_eq!((c.cells(), c.effective_burst()), (100, 10));
        assert_eq!(c.period(), Duration::from_secs(1));
        assert_eq!(c.max_wait(), Duration::from_millis(50));
        // It round-trips through data.
        let again: RateLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let _ = RateLimitLayer::new(c);
        // Defaults fill the rest.
        let c: RateLimitConfig = serde_json::from_str(r#"{"cells": 5, "period": "1s"}"#).unwrap();
        assert_eq!(c.effective_burst(), 5);
        // Invalid data never loads: the error names the field and the range.
        let bad = err::<RateLimitConfig>(r#"{"cells": 0, "period": "1s"}"#);
        assert!(
            bad.contains("cells = 0") && bad.contains("1 or more"),
            "{bad}"
        );
        assert!(err::<RateLimitConfig>(r#"{"cells": 1, "period": "0s"}"#).contains("period"));
        assert!(
            err::<RateLimitConfig>(r#"{"name": "", "cells": 1, "period": "1s"}"#).contains("name")
        );
        let never = serde_json::json!({"cells": 1, "period": palisade_core::config::duration::format(Duration::MAX)});
        assert!(
            serde_json::from_value::<RateLimitConfig>(never)
                .unwrap_err()
                .to_string()
                .contains("period")
        );
        assert!(
            err::<RateLimitConfig>(r#"{"cells": 1, "period": "1s", "cleanup_interval": "0s"}"#)
                .contains("cleanup_interval")
        );
        // A bare number is refused: milliseconds or seconds?
        assert!(err::<RateLimitConfig>(r#"{"cells": 5, "period": 1000}"#).contains("bare number"));
        assert!(
            err::<RateLimitConfig>(r#"{"cells": 1, "period": "1s", "typo": 1}"#).contains("typo")
        );
    }

    #[test]
    fn concurrency_limit_config_from_json() {
        let c: ConcurrencyLimitConfig =
            serde_json::from_str(r#"{"max_in_flight": 8, "max_wait": "1s"}"#).unwrap();
        assert_eq!((c.max_in_flight(), c.effective_max_queue()), (8, 8));
        assert_eq!(c.max_wait(), Duration::from_secs(1));
        let again: ConcurrencyLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let bad = err::<ConcurrencyLimitConfig>(r#"{"max_in_flight": 0}"#);
        assert!(bad.contains("max_in_flight = 0"), "{bad}");
        assert!(
            err::<ConcurrencyLimitConfig>(r#"{"name": "", "max_in_flight": 1}"#).contains("name")
        );
        assert!(
            err::<ConcurrencyLimitConfig>(r#"{"max_in_flight": 1, "max_wait": 100}"#)
                .contains("bare number")
        );
    }

    #[test]
    fn adaptive_limit_config_from_json() {
        let c: AdaptiveLimitConfig = serde_json::from_str(
            r#"{"algorithm": {"aimd": {"latency_threshold": "250ms"}}, "min_limit": 2, "max_limit": 50}"#,
        )
        .unwrap();
        assert_eq!(
            *c.algorithm(),
            Algorithm::Aimd(Aimd::new().latency_threshold(Duration::from_millis(250)))
        );
        assert_eq!((c.min_limit(), c.max_limit()), (2, 50));
        let again: AdaptiveLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let c: AdaptiveLimitConfig = serde_json::from_str("{}").unwrap();
        assert!(matches!(c.algorithm(), Algorithm::Gradient(_)));
        assert!(err::<AdaptiveLimitConfig>(r#"{"min_limit": 0}"#).contains("min_limit = 0"));
        assert!(err::<AdaptiveLimitConfig>(r#"{"name": ""}"#).contains("name"));
        assert!(
            err::<AdaptiveLimitConfig>(r#"{"algorithm": {"aimd": {"backoff_ratio": 5.0}}}"#)
                .contains("aimd.backoff_ratio")
        );
        assert!(
            err::<AdaptiveLimitConfig>(r#"{"algorithm": {"gradient": {"smoothing": 0.0}}}"#)
                .contains("gradient.smoothing")
        );
        assert!(
            err::<AdaptiveLimitConfig>(r#"{"algorithm": {"gradient": {"tolerance": 1000.0}}}"#)
                .contains("gradient.tolerance")
        );
        assert!(
            err::<AdaptiveLimitConfig>(r#"{"algorithm": {"aimd": {"latency_threshold": 250}}}"#)
                .contains("bare number")
        );
    }

    /// Every duration field round-trips exactly through data at its edges (the ones the
    /// builder accepts), `Duration::MAX` included.
    #[test]
    fn durations_round_trip_exactly() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_micros(500),
            Duration::MAX,
        ] {
            let c = RateLimitConfig::builder(1, Duration::from_secs(1))
                .max_wait(d)
                .cleanup_interval(d)
                .build()
                .unwrap();
            let again: RateLimitConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c);
            let c = ConcurrencyLimitConfig::builder(3)
                .max_wait(d)
                .build()
                .unwrap();
            let again: ConcurrencyLimitConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c);
            let c = AdaptiveLimitConfig::builder()
                .algorithm(Aimd::new().latency_threshold(d))
                .build()
                .unwrap();
            let again: AdaptiveLimitConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c);
        }
        let c = AdaptiveLimitConfig::builder()
            .algorithm(Gradient::new().tolerance(1.5))
            .build()
            .unwrap();
        let again: AdaptiveLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }
}
