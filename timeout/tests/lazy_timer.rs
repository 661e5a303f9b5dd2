//! The timer is built on the first poll that finds the inner call pending, but it fires at
//! the deadline set when the call was made: time before the first poll counts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::{BoxError, Elapsed};
use palisade_timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_call_not_the_first_poll() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        std::future::pending::<()>().await;
        Ok::<(), BoxError>(())
    }));
    let start = Instant::now();
    let fut = svc.ready().await.unwrap().call(());
    // Not polled for 600 ms: the timer does not exist yet, the deadline does.
    tokio::time::advance(Duration::from_millis(600)).await;
    let err = fut.await.unwrap_err();
    assert!(err.downcast_ref::<Elapsed>().is_some(), "{err}");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "at the call's deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_polled_after_its_deadline_elapses_at_once() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        std::future::pending::<()>().await;
        Ok::<(), BoxError>(())
    }));
    let fut = svc.ready().await.unwrap().call(());
    tokio::time::advance(Duration::from_millis(250)).await;
    let start = Instant::now();
    let err = fut.await.unwrap_err();
    assert!(err.downcast_ref::<Elapsed>().is_some(), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO);
}
