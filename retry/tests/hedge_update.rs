//! `HedgeHandle::update`: a fixed delay and `max_hedges` change for services already made;
//! the delay's kind, a percentile's parameters, the budget and the name are refused.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_retry::BudgetConfig;
use palisade_retry::hedge::{HedgeConfig, HedgeDelay, HedgeLayer};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};

/// A backend whose first call of each request hangs for a second; copies answer in 10ms.
fn backend(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |first: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let wait = if n == first { 1000 } else { 10 };
            sleep(Duration::from_millis(wait)).await;
            Ok::<_, BoxError>(n)
        }
    })
}

fn fixed(delay_ms: u64) -> HedgeConfig {
    HedgeConfig::builder()
        .name("lookup")
        .delay(Duration::from_millis(delay_ms))
        .no_budget()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_new_fixed_delay_reaches_services_made_before_the_update() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = HedgeLayer::new(fixed(50));
    let handle = layer.handle();
    let svc = layer.layer(backend(Arc::clone(&calls)));

    let start = Instant::now();
    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(60),
        "hedged after 50ms"
    );

    handle.update(fixed(20)).unwrap();
    assert_eq!(
        handle.config().delay(),
        HedgeDelay::Fixed {
            delay: Duration::from_millis(20)
        }
    );
    assert_eq!(handle.current_delay(), Some(Duration::from_millis(20)));
    let first = calls.load(Ordering::SeqCst);
    let start = Instant::now();
    svc.clone().oneshot(first).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(30),
        "the same service hedges after the new 20ms"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_max_hedges_reaches_services_made_before_the_update() {
    // Every call hangs for a second: copies go out every 10ms up to max_hedges.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let hanging = service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>(0u32)
        }
    });
    let layer = HedgeLayer::new(fixed(10));
    let handle = layer.handle();
    let svc = layer.layer(hanging);

    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(
        calls.swap(0, Ordering::SeqCst),
        2,
        "the request and one copy"
    );

    handle
        .update(fixed(10).to_builder().max_hedges(3).build().unwrap())
        .unwrap();
    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the request and three copies"
    );
}

#[test]
fn fixed_parts_and_the_name_are_refused_and_change_nothing() {
    let handle = HedgeLayer::new(fixed(50)).handle();

    let percentile = fixed(50)
        .to_builder()
        .hedge_delay(HedgeDelay::default())
        .build()
        .unwrap();
    let err = handle.update(percentile).unwrap_err();
    assert_eq!(err.field(), "delay");
    assert!(err.expected().contains("kind of delay"), "{err}");

    let budget = fixed(50)
        .to_builder()
        .budget_config(BudgetConfig::default())
        .build()
        .unwrap();
    assert_eq!(handle.update(budget).unwrap_err().field(), "budget");

    let renamed = fixed(50).to_builder().name("other").build().unwrap();
    assert_eq!(handle.update(renamed).unwrap_err().field(), "name");

    assert_eq!(handle.config(), fixed(50), "nothing changed");
    assert_eq!(handle.current_delay(), Some(Duration::from_millis(50)));
}

#[test]
fn a_percentile_layer_takes_max_hedges_but_keeps_its_parameters() {
    let config = HedgeConfig::builder()
        .name("p")
        .hedge_delay(HedgeDelay::default())
        .build()
        .unwrap();
    let handle = HedgeLayer::new(config.clone()).handle();
    handle
        .update(config.to_builder().max_hedges(2).build().unwrap())
        .unwrap();
    assert_eq!(handle.config().max_hedges(), 2);

    let other = config
        .to_builder()
        .hedge_delay(HedgeDelay::Percentile {
            percentile: 0.99,
            window: 1000,
            min_samples: 100,
        })
        .build()
        .unwrap();
    assert_eq!(handle.update(other).unwrap_err().field(), "delay");
    assert_eq!(handle.config().max_hedges(), 2);
}
