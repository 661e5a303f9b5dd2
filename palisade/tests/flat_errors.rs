//! Errors stay flat in any layer order: one stack, two orders, two error types.
//!
//! Every palisade layer requires only `S::Error: From<TheRejection>` and returns `S::Error`,
//! so `BoxError` and `palisade_core::Error<E>` both satisfy any stack in any order.

use std::time::Duration;

use palisade::prelude::*;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// A backend that hangs on request 0, fails on 1 and answers otherwise; `wrap` turns its
/// own error into the stack's error type.
async fn backend<E>(x: u32, wrap: fn(std::io::Error) -> E) -> Result<u32, E> {
    match x {
        0 => std::future::pending().await,
        1 => Err(wrap(std::io::Error::other("backend failed"))),
        _ => Ok(x),
    }
}

fn boxed(e: std::io::Error) -> BoxError {
    e.into()
}

macro_rules! check_stack {
    ($svc:expr, $is_elapsed:expr, $is_inner:expr) => {{
        let svc = $svc;
        let err = svc.clone().oneshot(0).await.unwrap_err();
        assert!($is_elapsed(&err), "hang should time out: {err:?}");
        let err = svc.clone().oneshot(1).await.unwrap_err();
        assert!(
            $is_inner(&err),
            "backend error should pass through: {err:?}"
        );
        assert_eq!(svc.oneshot(2).await.unwrap(), 2);
    }};
}

#[tokio::test(start_paused = true)]
async fn boxed_errors_in_two_orders() {
    let overall = TimeoutLayer::new(Duration::from_secs(2));
    let attempt = TimeoutLayer::new(Duration::from_millis(500));
    let a = ServiceBuilder::new()
        .layer(overall.clone())
        .layer(attempt.clone())
        .service(service_fn(|x: u32| backend(x, boxed)));
    let b = ServiceBuilder::new()
        .layer(attempt)
        .layer(overall)
        .service(service_fn(|x: u32| backend(x, boxed)));
    let is_elapsed = |e: &BoxError| e.is::<Elapsed>() && e.as_rejection().is_some();
    let is_inner = |e: &BoxError| e.is::<std::io::Error>() && e.as_rejection().is_none();
    check_stack!(a, is_elapsed, is_inner);
    check_stack!(b, is_elapsed, is_inner);
}

#[tokio::test(start_paused = true)]
async fn typed_errors_in_two_orders() {
    let overall = TimeoutLayer::new(Duration::from_secs(2));
    let attempt = TimeoutLayer::new(Duration::from_millis(500));
    let a = overall.clone().layer(
        attempt
            .clone()
            .layer(service_fn(|x: u32| backend(x, Error::Inner))),
    );
    let b = attempt.layer(overall.layer(service_fn(|x: u32| backend(x, Error::Inner))));
    let is_elapsed = |e: &Error<std::io::Error>| matches!(e, Error::Elapsed(_));
    let is_inner = |e: &Error<std::io::Error>| matches!(e, Error::Inner(_));
    check_stack!(a, is_elapsed, is_inner);
    check_stack!(b, is_elapsed, is_inner);
}

#[test]
fn the_metric_list_follows_the_scheme() {
    let all = palisade::metrics();
    assert!(!all.is_empty());
    for m in &all {
        assert!(m.follows_scheme(), "{m:?}");
    }
}
