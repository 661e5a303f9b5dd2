//! The breaker's state machine and windows pinned down where mutation testing found them
//! loose (`src/state.rs`, `src/window.rs`), through the public API on paused time.
#![allow(clippy::unwrap_used)] // tests unwrap

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_circuit_breaker::{
    CircuitBreakerConfigBuilder, CircuitBreakerEvent, CircuitBreakerHandle, CircuitBreakerLayer,
    State, TransitionReason,
};
use palisade_core::{BoxError, CircuitOpen};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

type Svc = tower::util::BoxCloneService<bool, &'static str, BoxError>;

/// A service behind a breaker built from `b`: the request says whether the call fails.
fn breaker(b: CircuitBreakerConfigBuilder<CircuitBreakerLayer>) -> (Svc, CircuitBreakerHandle) {
    let layer: CircuitBreakerLayer = b.build().unwrap();
    let handle = layer.handle();
    let inner = service_fn(|fail: bool| async move {
        if fail {
            Err::<&'static str, BoxError>("backend down".into())
        } else {
            Ok("ok")
        }
    });
    (Svc::new(layer.layer(inner)), handle)
}

/// `Ok(true)`: admitted and succeeded, `Ok(false)`: admitted and failed, `Err(retry_after)`:
/// rejected by the breaker.
async fn call(svc: &mut Svc, fail: bool) -> Result<bool, Option<Duration>> {
    match svc.ready().await.unwrap().call(fail).await {
        Ok(_) => Ok(true),
        Err(e) => match e.downcast_ref::<CircuitOpen>() {
            Some(open) => Err(open.retry_after()),
            None => Ok(false),
        },
    }
}

/// The half-open bookkeeping is tagged with the low 16 bits of the transition count: past
/// 65,536 transitions the tag wraps and half-open still admits and judges its probes.
#[tokio::test(start_paused = true)]
async fn half_open_works_after_the_probe_tag_wraps() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .count_window(2)
            .minimum_calls(2)
            .open_duration(SEC)
            .half_open_probes(1),
    );
    for _ in 0..70_000 {
        handle.reset();
    }
    for round in 0..3 {
        call(&mut svc, true).await.unwrap();
        call(&mut svc, true).await.unwrap();
        assert_eq!(handle.state(), State::Open, "round {round}");
        advance(SEC).await;
        assert_eq!(
            call(&mut svc, false).await,
            Ok(true),
            "the probe, round {round}"
        );
        assert_eq!(handle.state(), State::Closed, "round {round}");
    }
}

/// Slow calls are timed by the service (it reads the clock at the start only when slow
/// calls are tracked) and trip the breaker on their rate alone.
#[tokio::test(start_paused = true)]
async fn slow_successes_through_the_service_open_the_breaker() {
    let layer: CircuitBreakerLayer = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_calls(4)
        .slow_call_duration(SEC)
        .slow_call_rate_threshold(50.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|took: Duration| async move {
        tokio::time::sleep(took).await;
        Ok::<_, BoxError>(())
    }));
    for took in [Duration::ZERO, 2 * SEC, Duration::from_millis(10)] {
        svc.ready().await.unwrap().call(took).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().slow_calls, 1);
    svc.ready().await.unwrap().call(SEC).await.unwrap();
    assert_eq!(handle.state(), State::Open, "2 of 4 calls took 1 s or more");
}

/// A threshold below the 0.001-point precision still needs a failure (or a slow call): a
/// window of successes never reaches it.
#[tokio::test(start_paused = true)]
async fn a_tiny_threshold_is_not_zero() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            .failure_rate_threshold(0.0001)
            .slow_call_duration(Duration::MAX)
            .slow_call_rate_threshold(0.0001),
    );
    for _ in 0..8 {
        assert_eq!(call(&mut svc, false).await, Ok(true));
    }
    assert_eq!(handle.state(), State::Closed);
    call(&mut svc, true).await.unwrap();
    assert_eq!(
        handle.state(),
        State::Open,
        "one failure in four is above 0.0001%"
    );
}

/// The reasons of the transitions a breaker made, in order.
type Reasons = Arc<Mutex<Vec<TransitionReason>>>;

fn recording(
    b: CircuitBreakerConfigBuilder<CircuitBreakerLayer>,
) -> (CircuitBreakerConfigBuilder<CircuitBreakerLayer>, Reasons) {
    let reasons = Reasons::default();
    let log = Arc::clone(&reasons);
    let b = b.on_event(move |e| {
        if let CircuitBreakerEvent::StateTransition { reason, .. } = e {
            log.lock().unwrap().push(*reason);
        }
    });
    (b, reasons)
}

/// The rates a snapshot and a transition report are the window's, in percent.
#[tokio::test(start_paused = true)]
async fn rates_are_reported_in_percent() {
    let (b, reasons) = recording(
        CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .open_duration(SEC)
            .half_open_probes(4),
    );
    let (mut svc, handle) = breaker(b);
    for fail in [false, true, false] {
        call(&mut svc, fail).await.unwrap();
    }
    let s = handle.snapshot();
    assert_eq!((s.calls, s.failures), (3, 1));
    assert!(
        (s.failure_rate - 100.0 / 3.0).abs() < 1e-9,
        "{}",
        s.failure_rate
    );
    assert_eq!(s.slow_call_rate, 0.0);
    call(&mut svc, true).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.snapshot().failure_rate, 50.0);
    // Probes: 3 of 4 fail.
    advance(SEC).await;
    for fail in [true, false, true, true] {
        call(&mut svc, fail).await.unwrap();
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            TransitionReason::FailureRate(50.0),
            TransitionReason::OpenDurationElapsed,
            TransitionReason::ProbesFailed {
                failure_rate: 75.0,
                slow_call_rate: 0.0
            },
        ]
    );
}

/// The slow-call rate is reported like the failure rate.
#[tokio::test(start_paused = true)]
async fn slow_rates_are_reported_in_percent() {
    let (b, reasons) = recording(
        CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            .slow_call_duration(SEC)
            .slow_call_rate_threshold(75.0)
            .open_duration(SEC)
            .half_open_probes(2),
    );
    let layer: CircuitBreakerLayer = b.build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|took: Duration| async move {
        tokio::time::sleep(took).await;
        Ok::<_, BoxError>(())
    }));
    for took in [2 * SEC, Duration::ZERO, SEC] {
        svc.ready().await.unwrap().call(took).await.unwrap();
    }
    let s = handle.snapshot();
    assert!(
        (s.slow_call_rate - 200.0 / 3.0).abs() < 1e-9,
        "{}",
        s.slow_call_rate
    );
    assert_eq!(s.failure_rate, 0.0);
    svc.ready().await.unwrap().call(SEC).await.unwrap();
    assert_eq!(handle.state(), State::Open);
    advance(SEC).await;
    // Both probes slow: re-opened.
    let a = svc.ready().await.unwrap().call(2 * SEC);
    let b = svc.ready().await.unwrap().call(2 * SEC);
    let (a, b) = tokio::join!(a, b);
    a.unwrap();
    b.unwrap();
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            TransitionReason::SlowCallRate(75.0),
            TransitionReason::OpenDurationElapsed,
            TransitionReason::ProbesFailed {
                failure_rate: 0.0,
                slow_call_rate: 100.0
            },
        ]
    );
}

/// Probes still out at the probe deadline count as failed, each once: the verdict's rate is
/// theirs, 100%.
#[tokio::test(start_paused = true)]
async fn hung_probes_count_once_each_in_the_verdict() {
    let (b, reasons) = recording(
        CircuitBreakerLayer::builder()
            .half_open_probes(2)
            .max_probe_duration(5 * SEC),
    );
    let layer: CircuitBreakerLayer = b.build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|took: Duration| async move {
        tokio::time::sleep(took).await;
        Ok::<_, BoxError>(())
    }));
    handle.open_for(SEC);
    advance(SEC).await;
    let hung: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(Duration::from_secs(3600))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    advance(6 * SEC).await;
    let err = svc.clone().oneshot(Duration::ZERO).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            TransitionReason::Operator,
            TransitionReason::OpenDurationElapsed,
            TransitionReason::ProbesFailed {
                failure_rate: 100.0,
                slow_call_rate: 0.0
            },
        ]
    );
    for h in hung {
        h.abort();
    }
}

/// Repeating a hint for the same instant changes nothing: the open period it started keeps
/// its length, which bounds the `retry_after` of calls rejected in half-open (a tenth).
#[tokio::test(start_paused = true)]
async fn a_repeated_hint_keeps_the_open_period() {
    let layer: CircuitBreakerLayer = CircuitBreakerLayer::builder()
        .half_open_probes(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|took: Duration| async move {
        tokio::time::sleep(took).await;
        Ok::<_, BoxError>(())
    }));
    let until = tokio::time::Instant::now() + 10 * SEC;
    handle.open_until(until);
    advance(8 * SEC).await;
    handle.open_until(until);
    assert_eq!(handle.retry_after(), Some(2 * SEC));
    advance(2 * SEC).await;
    let probe = tokio::spawn(svc.clone().oneshot(Duration::from_secs(30)));
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    let err = svc.clone().oneshot(Duration::ZERO).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("rejected");
    assert_eq!(
        open.retry_after(),
        Some(SEC),
        "a tenth of the 10 s open period"
    );
    probe.abort();
}
