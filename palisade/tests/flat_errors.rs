//! Errors stay flat in any layer order: one stack of every palisade layer, built in two
//! orders, with each of the two error types.
//!
//! Every palisade layer requires only `S::Error: From<TheRejection>` and returns `S::Error`,
//! so `BoxError` and `palisade_core::Error<E>` both satisfy any stack in any order, and a
//! caller tells a rejection from the backend's own error by type, never by message.

#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::time::Duration;

use palisade::circuit_breaker::CircuitBreakerHandle;
use palisade::prelude::*;
use palisade::{RejectionKind, Stack};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

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

/// One of each layer, fresh for each stack.
struct Layers {
    overall: TimeoutLayer,
    attempt: TimeoutLayer,
    retry: RetryLayer,
    breaker: CircuitBreakerLayer,
    limit: RateLimitLayer,
    handle: CircuitBreakerHandle,
}

fn layers() -> Layers {
    let breaker = CircuitBreakerLayer::builder()
        .name("flat")
        .minimum_calls(100)
        .build()
        .unwrap();
    Layers {
        overall: TimeoutLayer::builder()
            .name("overall")
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        attempt: TimeoutLayer::builder()
            .name("attempt")
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
        retry: RetryLayer::builder()
            .name("flat")
            .max_attempts(2)
            .no_budget()
            .build()
            .unwrap(),
        handle: breaker.handle(),
        breaker,
        limit: RateLimitLayer::builder(1_000, Duration::from_secs(1))
            .name("flat")
            .reject()
            .build()
            .unwrap(),
    }
}

/// What the stack's error is, as seen by a caller.
fn kind_of_boxed(e: &BoxError) -> Option<RejectionKind> {
    e.as_rejection().map(|r| r.kind())
}

fn kind_of_typed(e: &Error<std::io::Error>) -> Option<RejectionKind> {
    e.as_rejection().map(|r| r.kind())
}

/// Drive a stack through the four outcomes: success, backend error, hang, open circuit.
async fn check<S, E>(
    mut svc: S,
    handle: &CircuitBreakerHandle,
    kind: fn(&E) -> Option<RejectionKind>,
) where
    S: Service<u32, Response = u32, Error = E> + Clone,
    E: std::fmt::Debug,
{
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);

    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        kind(&err),
        None,
        "the backend's error must pass through: {err:?}"
    );

    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectionKind::Elapsed), "{err:?}");

    handle.force_open();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectionKind::CircuitOpen), "{err:?}");
    handle.reset();
}

/// Build the same layers in the recommended order (through the facade's `Stack`) and
/// upside down, over a backend whose errors `wrap` turns into the stack's error type, and
/// check both. A macro, because each order is a different service type.
macro_rules! check_two_orders {
    ($wrap:expr, $kind:expr) => {{
        let l = layers();
        let recommended = Stack::new()
            .timeout(l.overall)
            .retry(l.retry)
            .circuit_breaker(l.breaker)
            .limit(l.limit)
            .attempt_timeout(l.attempt)
            .layer(service_fn(|x: u32| backend(x, $wrap)));
        check(recommended, &l.handle, $kind).await;

        let l = layers();
        let reversed = ServiceBuilder::new()
            .layer(l.attempt)
            .layer(l.limit)
            .layer(l.breaker)
            .layer(l.retry)
            .layer(l.overall)
            .service(service_fn(|x: u32| backend(x, $wrap)));
        check(reversed, &l.handle, $kind).await;
    }};
}

#[tokio::test(start_paused = true)]
async fn boxed_errors_in_two_orders() {
    check_two_orders!(boxed, kind_of_boxed);
}

#[tokio::test(start_paused = true)]
async fn typed_errors_in_two_orders() {
    check_two_orders!(Error::Inner, kind_of_typed);
}

#[test]
fn the_metric_list_follows_the_scheme() {
    let all = palisade::metrics();
    assert!(all.len() > 20, "every crate's metrics are listed");
    let mut names: Vec<_> = all.iter().map(|m| m.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "no metric is listed twice");
    for m in &all {
        assert!(m.follows_scheme(), "{m:?}");
    }
}
