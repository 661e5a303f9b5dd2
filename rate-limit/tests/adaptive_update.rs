//! `AdaptiveLimitHandle::update`: new bounds reach the running limit at once, a new initial
//! limit restarts it, the algorithm and the name are refused.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Overloaded};
use palisade_rate_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer, Aimd, LimitEvent};
use tokio::time::sleep;
use tower::{Layer, Service, ServiceExt, service_fn};

fn aimd(initial: usize, min: usize, max: usize) -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::builder()
        .name("search")
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(1)))
        .initial_limit(initial)
        .limits(min, max)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_lower_max_limit_rejects_at_once_in_services_made_before() {
    let layer = AdaptiveLimitLayer::new(aimd(5, 1, 100));
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(())
    }));

    handle.update(aimd(2, 1, 2)).unwrap();
    assert_eq!(handle.limit(), 2, "restarted from the new initial limit");
    assert_eq!(handle.config().max_limit(), 2);

    let mut a = svc.clone();
    let mut b = svc.clone();
    let mut c = svc.clone();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    c.ready().await.unwrap();
    let (fa, fb) = (a.call(()), b.call(()));
    let err = c.call(()).await.unwrap_err();
    assert!(
        err.is::<Overloaded>(),
        "the third call is over the new limit: {err}"
    );
    fa.await.unwrap();
    fb.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_limit_never_grows_past_an_updated_max() {
    let layer = AdaptiveLimitLayer::new(aimd(3, 1, 100));
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(5)).await;
        Ok::<_, BoxError>(())
    }));
    handle.update(aimd(3, 1, 4)).unwrap();
    // Closed-loop clients keep the limit in use, so AIMD grows it while it can.
    let clients = (0..8).map(|_| {
        let svc = svc.clone();
        async move {
            for _ in 0..200 {
                let _ = svc.clone().oneshot(()).await;
                sleep(Duration::from_millis(1)).await;
            }
        }
    });
    futures_util::future::join_all(clients).await;
    assert_eq!(handle.limit(), 4, "grew to the new max and no further");

    // Lower bounds with the same initial limit: the learned limit is clamped, not restarted.
    handle.update(aimd(3, 1, 3)).unwrap();
    assert_eq!(handle.limit(), 3);
    handle.update(aimd(3, 1, 100)).unwrap();
    assert_eq!(handle.limit(), 3, "wider bounds keep the limit where it is");
}

#[test]
fn a_new_initial_limit_restarts_the_limit_and_says_so() {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&changes);
    let layer = AdaptiveLimitLayer::new(aimd(10, 1, 100)).on_event(move |e| {
        if let LimitEvent::LimitChanged { from, to } = e {
            seen.lock().unwrap().push((*from, *to));
        }
    });
    let handle = layer.handle();
    handle.update(aimd(30, 1, 100)).unwrap();
    assert_eq!(handle.limit(), 30);
    assert_eq!(*changes.lock().unwrap(), vec![(10, 30)]);

    // The same initial limit with other bounds keeps the limit where it is.
    handle.update(aimd(30, 1, 200)).unwrap();
    assert_eq!(handle.limit(), 30);
}

#[test]
fn the_algorithm_and_the_name_are_fixed() {
    let handle = AdaptiveLimitLayer::new(aimd(10, 1, 100)).handle();
    let gradient = AdaptiveLimitConfig::builder()
        .name("search")
        .initial_limit(10)
        .limits(1, 100)
        .build()
        .unwrap();
    let err = handle.update(gradient).unwrap_err();
    assert_eq!(err.field(), "algorithm");
    let renamed = aimd(10, 1, 100).to_builder().name("other").build().unwrap();
    assert_eq!(handle.update(renamed).unwrap_err().field(), "name");
    assert_eq!(handle.config(), aimd(10, 1, 100), "nothing changed");
}
