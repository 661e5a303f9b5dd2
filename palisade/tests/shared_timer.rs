//! The overall deadline holds in the composed stack, now that an overall timeout relies on
//! a timer armed inside it (the attempt timeout's, a retry's back-off) instead of its own:
//! with a hedge beside the retry (which drops the losing attempt), a limit under the
//! breaker, and a spawned task in between (whose timers wake another task).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade::prelude::*;
use palisade::rate_limit::ConcurrencyLimitLayer;
use palisade::retry::hedge::HedgeLayer;
use palisade::{BoxError, Elapsed};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const OVERALL: Duration = Duration::from_secs(1);

/// A backend that never answers.
fn silent() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|_: u32| async {
        std::future::pending::<()>().await;
        Ok::<u32, BoxError>(0)
    })
}

fn timeout(name: &'static str, d: Duration) -> TimeoutLayer {
    TimeoutLayer::builder()
        .name(name)
        .timeout(d)
        .build()
        .unwrap()
}

/// The recommended stack inside the overall timeout, with a hedge beside the retry.
fn inner_stack() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send
{
    ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .name("retry")
                .max_attempts(10)
                .backoff(Backoff::exponential(Duration::from_millis(20)).jitter(Jitter::None))
                .build()
                .unwrap(),
        )
        .layer(
            HedgeLayer::builder()
                .name("hedge")
                .delay(Duration::from_millis(50))
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::builder()
                .name("breaker")
                .build()
                .unwrap(),
        )
        .layer(
            ConcurrencyLimitLayer::builder(4)
                .name("limit")
                .build()
                .unwrap(),
        )
        .layer(timeout("attempt", Duration::from_millis(300)))
        .service(silent())
}

/// `svc` fails by the overall deadline, never after it, and does not hang (bounded).
async fn ends_by_the_overall_deadline<S>(svc: S)
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(1))
        .await
        .expect("the overall deadline holds");
    let err = result.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert!(
        start.elapsed() <= OVERALL,
        "ended after the deadline: {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_recommended_stack_with_a_hedge_ends_by_the_overall_deadline() {
    let svc = ServiceBuilder::new()
        .layer(timeout("overall", OVERALL))
        .service(inner_stack());
    ends_by_the_overall_deadline(svc).await;
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_holds_across_a_spawned_task() {
    // Behind a spawn the timers inside wake the spawned task, not the caller's: the overall
    // timeout must arm its own.
    let spawned = service_fn(|req: u32| async move {
        tokio::spawn(inner_stack().oneshot(req))
            .await
            .map_err(BoxError::from)?
    });
    let svc = ServiceBuilder::new()
        .layer(timeout("overall", OVERALL))
        .service(spawned);
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(1))
        .await
        .expect("the overall deadline holds");
    let err = result.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed");
    assert_eq!(elapsed.name().as_str(), "overall");
    assert_eq!(start.elapsed(), OVERALL);
}
