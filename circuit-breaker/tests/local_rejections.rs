//! A caller's own limit can never open its breaker: with the default classifier
//! (`palisade_core::RejectionAware`), rejections made by the caller's own layers below the
//! breaker (`RateLimited`, `Overloaded`, `CircuitOpen`) are neither successes nor failures;
//! the backend's errors and an attempt's `Elapsed` still are failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreakerLayer, State};
use palisade_core::{BoxError, CircuitOpen, Elapsed, Error, Name, Overloaded, RateLimited};
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

/// The numbers: count window 20, minimum calls 10.
fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("backend")
        .count_window(20)
        .minimum_calls(10)
        .build()
        .expect("valid config")
}

/// A reject-mode rate limit (10/s, burst 10) under the breaker over a healthy backend:
/// a burst of 30 calls gets 20 `RateLimited`, and the breaker must stay closed.
#[tokio::test(start_paused = true)]
async fn a_burst_over_a_reject_mode_rate_limit_does_not_open_the_breaker() {
    let layer = breaker();
    let handle = layer.handle();
    let tokens = Arc::new(AtomicUsize::new(10));
    let limited_backend = service_fn(move |_: u32| {
        let admitted = tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .is_ok();
        async move {
            if admitted {
                Ok::<_, BoxError>("ok")
            } else {
                Err(RateLimited::new(Name::new("limit"), Duration::from_millis(100)).into())
            }
        }
    });
    let svc = layer.layer(limited_backend);
    let calls: Vec<_> = (0..30)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut limited = 0;
    for call in calls {
        if let Err(e) = call.await.unwrap() {
            assert!(e.is::<RateLimited>(), "{e}");
            limited += 1;
        }
    }
    assert_eq!(limited, 20);
    assert_eq!(handle.state(), State::Closed, "the backend never failed");
    let snap = handle.snapshot();
    assert_eq!(
        (snap.calls, snap.failures),
        (10, 0),
        "rejections are not counted"
    );
}

/// A concurrency limit of 4 rejecting the excess of 20 concurrent callers, with the
/// `palisade_core::Error<E>` error style: the breaker stays closed.
#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_rejecting_the_excess_does_not_open_the_breaker() {
    let layer = breaker();
    let handle = layer.handle();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let limited_backend = service_fn(move |_: u32| {
        let in_flight = Arc::clone(&in_flight);
        async move {
            if in_flight.fetch_add(1, Ordering::AcqRel) >= 4 {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::<std::io::Error>::from(Overloaded::new(
                    Name::new("concurrency"),
                    "max in-flight",
                )));
            }
            sleep(SEC).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            Ok("ok")
        }
    });
    let svc = layer.layer(limited_backend);
    let calls: Vec<_> = (0..20)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut overloaded = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(Error::Overloaded(_)) => overloaded += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(overloaded, 16);
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().failures, 0);
}

/// Nested breakers: the inner one's `CircuitOpen` says nothing about the backend the outer
/// one guards; the backend's own errors and timeouts still open it.
#[tokio::test(start_paused = true)]
async fn inner_circuit_open_is_ignored_but_failures_and_timeouts_count() {
    let layer = breaker();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|kind: u8| async move {
        match kind {
            0 => Err::<(), BoxError>(CircuitOpen::new(Name::new("inner"), Some(SEC)).into()),
            1 => Err(Elapsed::new(Name::new("attempt"), SEC).into()),
            _ => Err("connection reset".into()),
        }
    }));
    for _ in 0..40 {
        let _ = svc.clone().oneshot(0).await;
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().calls, 0);
    for _ in 0..5 {
        let _ = svc.clone().oneshot(1).await;
    }
    for _ in 0..5 {
        let _ = svc.clone().oneshot(2).await;
    }
    assert_eq!(
        handle.state(),
        State::Open,
        "timeouts and errors are failures"
    );
}
