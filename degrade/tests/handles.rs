//! The degrade layers' handles, against the public API: name, config, a validated update
//! at run time, the switch and a snapshot, as every palisade layer's handle.

use std::time::Duration;

use palisade_core::{BoxError, Name, Overloaded, Priority, RateLimited, RejectionKind};
use palisade_degrade::fallback::Value;
use palisade_degrade::{FallbackConfig, FallbackLayer, ShedConfig, ShedLayer};
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test]
async fn a_fallback_handle_changes_its_triggers_under_running_services() {
    let layer = FallbackLayer::new(
        FallbackConfig::builder().name("search").build().unwrap(),
        Value::new("cached".to_string()),
    )
    .unmarked();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_: ()| async {
        Err::<String, BoxError>(RateLimited::new(Name::new("api"), Duration::from_secs(1)).into())
    }));
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), "cached");

    // A rate limit no longer triggers: the rejection reaches the caller.
    let quieter = handle
        .config()
        .to_builder()
        .on_rejection(RejectionKind::RateLimited, false)
        .build()
        .unwrap();
    handle.update(quieter).unwrap();
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert!(err.is::<RateLimited>(), "{err}");
    assert!(!handle.snapshot().triggers.rate_limited);

    // Another layer's config changes nothing.
    let other = FallbackConfig::builder().name("other").build().unwrap();
    assert_eq!(handle.update(other).unwrap_err().field(), "name");
    assert!(!handle.config().triggers().rate_limited);

    // The switch through the handle: degraded mode answers from the fallback.
    handle.switch().degrade();
    assert!(handle.snapshot().degraded);
    assert_eq!(svc.oneshot(()).await.unwrap(), "cached");
    assert_eq!(handle.name().as_str(), "search");
}

#[tokio::test]
async fn a_shed_handle_changes_its_limits_for_the_next_admission() {
    let layer = ShedLayer::new(
        ShedConfig::builder()
            .name("api")
            .max_in_flight(2)
            .build()
            .unwrap(),
    )
    .prioritize(|_: &oneshot::Receiver<()>| Priority::Critical);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|rx: oneshot::Receiver<()>| async move {
        let _ = rx.await;
        Ok::<_, BoxError>(())
    }));
    // Critical traffic may use the whole cap of 2.
    let (tx1, rx1) = oneshot::channel();
    let (tx2, rx2) = oneshot::channel();
    let a = tokio::spawn(svc.clone().oneshot(rx1));
    let b = tokio::spawn(svc.clone().oneshot(rx2));
    while handle.snapshot().in_flight < 2 {
        tokio::task::yield_now().await;
    }
    let (_tx3, rx3) = oneshot::channel();
    let err = svc.clone().oneshot(rx3).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");

    // Raise the cap: the next admission sees it, the admitted requests keep their slots.
    let wider = handle
        .config()
        .to_builder()
        .max_in_flight(3)
        .build()
        .unwrap();
    handle.update(wider).unwrap();
    assert_eq!(handle.config().max_in_flight(), Some(3));
    let (tx3, rx3) = oneshot::channel();
    let c = tokio::spawn(svc.clone().oneshot(rx3));
    while handle.snapshot().in_flight < 3 {
        tokio::task::yield_now().await;
    }
    for tx in [tx1, tx2, tx3] {
        tx.send(()).unwrap();
    }
    for h in [a, b, c] {
        h.await.unwrap().unwrap();
    }
    assert_eq!(handle.snapshot().in_flight, 0);

    // Another layer's config changes nothing.
    let other = ShedConfig::builder()
        .name("db")
        .max_in_flight(1)
        .build()
        .unwrap();
    assert_eq!(handle.update(other).unwrap_err().field(), "name");
    assert_eq!(handle.config().max_in_flight(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_stale_handle_changes_the_staleness_bound_and_refuses_a_new_capacity() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use palisade_degrade::{StaleCacheLayer, StaleConfig};

    let down = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&down);
    let layer = StaleCacheLayer::new(
        StaleConfig::builder()
            .name("weather")
            .max_staleness(Duration::from_secs(10))
            .build()
            .unwrap(),
        |city: &u32| *city,
    );
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |city: u32| {
        let down = flag.load(Ordering::SeqCst);
        async move {
            if down {
                Err::<palisade_degrade::Marked<u32>, BoxError>("down".into())
            } else {
                Ok(palisade_degrade::Marked::new(city * 10))
            }
        }
    }));
    assert_eq!(*svc.clone().oneshot(7).await.unwrap(), 70);
    assert_eq!(handle.snapshot().entries, 1);
    down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;

    // 30 s is past the built bound of 10 s; a longer bound serves the kept entry, from
    // the next call on.
    let longer = handle
        .config()
        .to_builder()
        .max_staleness(Duration::from_secs(60))
        .build()
        .unwrap();
    handle.update(longer).unwrap();
    let stale = svc.clone().oneshot(7).await.unwrap();
    assert_eq!(*stale, 70);
    assert!(stale.degraded().is_some());

    // A shorter one hides it at once (and a lookup drops what is too old).
    let shorter = handle
        .config()
        .to_builder()
        .max_staleness(Duration::from_secs(20))
        .build()
        .unwrap();
    handle.update(shorter).unwrap();
    assert!(svc.clone().oneshot(7).await.is_err(), "30 s is too stale");
    assert_eq!(handle.snapshot().entries, 0);
    assert_eq!(
        svc.clone().oneshot(8).await.unwrap_err().to_string(),
        "down"
    );

    // The capacity and the name are fixed: refused by field, nothing changes.
    let bigger = handle.config().to_builder().capacity(5).build().unwrap();
    assert_eq!(handle.update(bigger).unwrap_err().field(), "capacity");
    let other = StaleConfig::builder().name("other").build().unwrap();
    assert_eq!(handle.update(other).unwrap_err().field(), "name");
    assert_eq!(handle.config().max_staleness(), Duration::from_secs(20));
    down.store(false, Ordering::SeqCst);
    svc.oneshot(9).await.unwrap();
    assert_eq!(handle.snapshot().entries, 1);
    handle.clear();
    assert_eq!(handle.snapshot().entries, 0);

    // "Forever" round-trips through the handle.
    let forever = handle
        .config()
        .to_builder()
        .max_staleness(Duration::MAX)
        .build()
        .unwrap();
    handle.update(forever).unwrap();
    assert_eq!(handle.config().max_staleness(), Duration::MAX);
}
