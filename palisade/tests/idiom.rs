//! The one idiom, checked: every public layer, service, config and handle has the common
//! traits users rely on, and one policy file with every layer's config becomes a working,
//! hooked stack whose layers change at run time through their handles.
#![cfg(all(
    feature = "serde",
    feature = "timeout",
    feature = "retry",
    feature = "circuit-breaker",
    feature = "rate-limit",
    feature = "degrade"
))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerHandle, State};
use palisade::degrade::{FallbackLayer, ShedLayer, StaleCacheLayer, fallback::Value};
use palisade::prelude::*;
use palisade::rate_limit::{
    AdaptiveLimitHandle, ConcurrencyLimitHandle, RateLimitHandle, ThrottleConfig, ThrottleHandle,
    ThrottleLayer,
};
use palisade::retry::hedge::{HedgeConfig, HedgeHandle, HedgeLayer};
use palisade::retry::{RetryEvent, RetryHandle};
use palisade::timeout::TimeoutHandle;
use palisade::{RejectionKind, ServiceBuilderExt};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn common<T: std::fmt::Debug + Clone + Send + Sync + 'static>() {}
fn shared<T: std::fmt::Debug + Send + Sync + 'static>() {}

/// C-COMMON-TRAITS and C-SEND-SYNC: what users clone, print and share across tasks.
#[test]
fn every_public_layer_config_and_handle_has_the_common_traits() {
    // configs: plain data
    common::<TimeoutConfig>();
    common::<RetryConfig>();
    common::<HedgeConfig>();
    common::<CircuitBreakerConfig>();
    common::<RateLimitConfig>();
    common::<ConcurrencyLimitConfig>();
    common::<AdaptiveLimitConfig>();
    common::<ThrottleConfig>();
    common::<FallbackConfig>();
    common::<ShedConfig>();
    common::<StaleConfig>();
    // layers (default hooks)
    common::<TimeoutLayer>();
    common::<RetryLayer>();
    common::<HedgeLayer>();
    common::<CircuitBreakerLayer>();
    common::<RateLimitLayer>();
    common::<ConcurrencyLimitLayer>();
    common::<AdaptiveLimitLayer>();
    common::<ThrottleLayer>();
    common::<ShedLayer>();
    shared::<FallbackLayer<Value<u32>>>();
    shared::<StaleCacheLayer<fn(&u32) -> u32, u32, u32>>();
    common::<Stack>();
    // handles
    common::<TimeoutHandle>();
    common::<RetryHandle>();
    common::<HedgeHandle>();
    common::<CircuitBreakerHandle>();
    common::<RateLimitHandle>();
    common::<ConcurrencyLimitHandle>();
    common::<AdaptiveLimitHandle>();
    common::<ThrottleHandle>();
    common::<palisade::degrade::fallback::FallbackHandle>();
    common::<palisade::degrade::shed::ShedHandle>();
    common::<palisade::degrade::stale::StaleHandle>();
    // services
    type Svc = tower::util::BoxCloneSyncService<u32, u32, BoxError>;
    shared::<palisade::timeout::Timeout<Svc>>();
    shared::<palisade::retry::Retry<Svc>>();
    shared::<palisade::circuit_breaker::CircuitBreaker<Svc>>();
    shared::<palisade::rate_limit::RateLimit<Svc>>();
    shared::<palisade::rate_limit::ConcurrencyLimit<Svc>>();
}

/// One operator's file: every layer of the recommended stack, by name.
#[derive(serde::Deserialize)]
struct Policy {
    timeout: TimeoutConfig,
    retry: RetryConfig,
    circuit_breaker: CircuitBreakerConfig,
    rate_limit: RateLimitConfig,
    attempt_timeout: TimeoutConfig,
}

const POLICY: &str = r#"
[timeout]
name = "payments"
timeout = "2s"

[retry]
name = "payments"
max_attempts = 3
backoff = { kind = "constant", delay = "10ms", jitter = "none" }
budget = { kind = "none" }

[circuit_breaker]
name = "payments"
window = { kind = "count", size = 10 }
minimum_calls = 5
failure_rate_threshold = 50.0
open_duration = "1s"

[rate_limit]
name = "payments"
cells = 100
period = "1s"

[attempt_timeout]
name = "payments-attempt"
timeout = "300ms"
"#;

/// The issue's "done when": a policy file with every layer's config, code hooks attached,
/// a working stack, and each layer's config changed at run time through its handle.
#[tokio::test(start_paused = true)]
async fn a_policy_file_becomes_a_hooked_stack_changed_at_run_time() {
    let policy: Policy = toml::from_str(POLICY).expect("the policy loads and validates");

    // Code-only hooks, attached to layers made from the file's configs.
    let retries = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&retries);
    let retry = RetryLayer::new(policy.retry).on_event(move |e: &RetryEvent| {
        if matches!(e, RetryEvent::Retrying { .. }) {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    // A 503-like answer (here: an `Err` carrying "503") is a failure; others count as
    // successes.
    let breaker = CircuitBreakerLayer::new(policy.circuit_breaker).classifier(
        |res: &Result<u32, BoxError>| match res {
            Ok(_) => Outcome::Success,
            Err(e) if e.to_string().contains("503") => Outcome::Failure,
            Err(_) => Outcome::Ignore,
        },
    );
    let timeout = TimeoutLayer::new(policy.timeout);
    let limit = RateLimitLayer::new(policy.rate_limit);
    let attempt = TimeoutLayer::new(policy.attempt_timeout);
    let handles = (
        timeout.handle(),
        retry.handle(),
        breaker.handle(),
        limit.handle(),
        attempt.handle(),
    );

    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let backend = service_fn(move |x: u32| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            if x == 0 {
                Err::<u32, BoxError>("503 unavailable".into())
            } else if n.is_multiple_of(2) && x == 1 {
                Err("503 once".into())
            } else {
                Ok(x * 10)
            }
        }
    });
    let svc = Stack::new()
        .attempt_timeout(attempt)
        .limit(limit)
        .circuit_breaker(breaker)
        .retry(retry)
        .timeout(timeout)
        .layer(backend);

    // It works: a failure the classifier calls a failure is retried and then answered.
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 10);
    assert_eq!(retries.load(Ordering::Relaxed), 1);

    // Each layer's config changes at run time through its handle.
    let (t, r, b, l, a) = &handles;
    t.update(
        t.config()
            .to_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(t.timeout(), Duration::from_secs(5));
    a.update(
        a.config()
            .to_builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(a.timeout(), Duration::from_millis(100));
    r.update(r.config().to_builder().max_attempts(1).build().unwrap())
        .unwrap();
    let before = calls.load(Ordering::Relaxed);
    assert!(svc.clone().oneshot(0).await.is_err());
    assert_eq!(
        calls.load(Ordering::Relaxed) - before,
        1,
        "max_attempts 1 from the handle: no retry"
    );
    b.update(
        b.config()
            .to_builder()
            .open_duration(Duration::from_secs(7))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(b.config().open_duration(), Duration::from_secs(7));
    l.update(
        RateLimitConfig::builder(10, Duration::from_secs(1))
            .name("payments")
            .burst(100)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(l.rate(), (10, Duration::from_secs(1)));

    // Updates are validated: another name or a bad value changes nothing.
    let err = t
        .update(TimeoutConfig::builder().name("other").build().unwrap())
        .unwrap_err();
    assert_eq!(err.field(), "name");
    assert_eq!(t.timeout(), Duration::from_secs(5));

    // The breaker opens on failures as its updated config says, and the stack says so.
    for _ in 0..5 {
        let _ = svc.clone().oneshot(0).await;
    }
    assert_eq!(b.state(), State::Open);
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        palisade::find_rejection(&*err).map(|r| r.kind()),
        Some(RejectionKind::CircuitOpen)
    );
}

/// The same stack in one `ServiceBuilder` chain, each slot typed by its layer kind.
#[tokio::test(start_paused = true)]
async fn service_builder_ext_takes_each_layer_kind() {
    let svc = ServiceBuilder::new()
        .timeout_with(TimeoutLayer::builder().name("overall").build().unwrap())
        .retry_with(
            RetryLayer::builder()
                .name("api")
                .no_budget()
                .build()
                .unwrap(),
        )
        .circuit_breaker(CircuitBreakerLayer::builder().name("api").build().unwrap())
        .rate_limit_with(
            RateLimitLayer::builder(10, Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .concurrency_limit_with(ConcurrencyLimitLayer::builder(4).build().unwrap())
        .throttle(ThrottleLayer::new(
            ThrottleConfig::builder().build().unwrap(),
        ))
        .hedge(HedgeLayer::new(
            HedgeConfig::builder()
                .delay(Duration::from_secs(1))
                .build()
                .unwrap(),
        ))
        .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    let mut svc = svc;
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
}
