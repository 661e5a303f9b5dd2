//! Behaviour through the service, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use palisade_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerEvent, CircuitBreakerLayer, State, TransitionReason,
};
use palisade_core::{BoxError, CircuitOpen, Elapsed, Name, Outcome};
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

const SEC: Duration = Duration::from_secs(1);

fn base() -> palisade_circuit_breaker::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .failure_rate_threshold(50.0)
        .count_window(4)
        .minimum_calls(4)
        .open_duration(10 * SEC)
        .open_duration_backoff(1.0, 10 * SEC)
}

#[tokio::test(start_paused = true)]
async fn slow_calls_are_measured_on_the_tokio_clock() {
    let layer = CircuitBreakerLayer::new(
        base()
            .slow_call_duration(2 * SEC)
            .slow_call_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|secs: u64| async move {
        sleep(Duration::from_secs(secs)).await;
        Ok::<_, BoxError>(())
    }));
    for secs in [0, 0, 3] {
        svc.ready().await.unwrap().call(secs).await.unwrap();
    }
    assert_eq!(handle.snapshot().slow_calls, 1);
    assert_eq!(handle.state(), State::Closed);
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(handle.state(), State::Open, "2 of 4 calls took at least 2s");
}

#[tokio::test(start_paused = true)]
async fn inner_rejections_count_as_failures() {
    let layer = CircuitBreakerLayer::new(base().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>(Elapsed::new(Name::new("t"), SEC).into())
    }));
    for _ in 0..4 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<Elapsed>());
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_classifier_decides_what_fails() {
    // HTTP-style: 5xx is a failure, 4xx is the caller's problem.
    let layer = CircuitBreakerLayer::new(base().build().unwrap()).classifier(
        |res: &Result<u16, BoxError>| match res {
            Ok(s) if *s >= 500 => Outcome::Failure,
            Ok(s) if *s == 499 => Outcome::Ignore,
            _ => Outcome::Success,
        },
    );
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|s: u16| async move { Ok::<_, BoxError>(s) }));
    for s in [404, 404, 404, 404, 499, 499] {
        svc.ready().await.unwrap().call(s).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().calls, 4, "ignored calls are not counted");
    svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "1 of the last 4");
    svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(handle.state(), State::Open, "2 of the last 4");
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_in_half_open_get_only_the_probes() {
    let layer = CircuitBreakerLayer::new(base().half_open_probes(2).build().unwrap());
    let handle = layer.handle();
    let (svc, mut backend) = mock::pair::<u32, u32>();
    let mut svc = layer.layer(svc).map_err(|e: BoxError| e);
    backend.allow(100);
    for _ in 0..4 {
        let fut = svc.ready().await.unwrap().call(0);
        let (_, send) = backend.next_request().await.unwrap();
        send.send_error("down");
        assert!(fut.await.is_err());
    }
    assert_eq!(handle.state(), State::Open);
    advance(10 * SEC).await;

    // Ten calls at once: two probes go through and stay in flight; eight are rejected.
    let mut probes = Vec::new();
    let mut rejected = 0;
    for i in 0..10 {
        let mut fut = Box::pin(svc.ready().await.unwrap().call(i));
        match poll_once(&mut fut).await {
            Poll::Ready(Err(e)) if e.is::<CircuitOpen>() => rejected += 1,
            Poll::Ready(other) => panic!("unexpected {other:?}"),
            Poll::Pending => probes.push(fut),
        }
    }
    assert_eq!((probes.len(), rejected), (2, 8));
    assert_eq!(handle.state(), State::HalfOpen);

    // A caller gives up on one probe: its permit comes back for the next call.
    let (_, first) = backend.next_request().await.unwrap();
    drop(first);
    probes.remove(0);
    let mut third = Box::pin(svc.ready().await.unwrap().call(99));
    assert!(
        poll_once(&mut third).await.is_pending(),
        "admitted as a probe"
    );
    probes.push(third);

    for _ in 0..2 {
        let (_, send) = backend.next_request().await.unwrap();
        send.send_response(1);
    }
    for probe in probes {
        probe.await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
}

async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

#[tokio::test(start_paused = true)]
async fn listeners_see_every_transition_with_its_reason() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let config = base().half_open_probes(1).build().unwrap();
    let layer = CircuitBreakerLayer::new(config).on_event(move |e: &CircuitBreakerEvent| {
        if let CircuitBreakerEvent::StateTransition {
            from, to, reason, ..
        } = e
        {
            sink.lock().unwrap().push((*from, *to, *reason));
        }
    });
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    advance(10 * SEC).await;
    let _ = svc.ready().await.unwrap().call(true).await;
    advance(10 * SEC).await;
    svc.ready().await.unwrap().call(false).await.unwrap();
    layer.handle().force_open();
    let got = seen.lock().unwrap().clone();
    let expected = [
        (
            State::Closed,
            State::Open,
            TransitionReason::FailureRate(100.0),
        ),
        (
            State::Open,
            State::HalfOpen,
            TransitionReason::OpenDurationElapsed,
        ),
        (
            State::HalfOpen,
            State::Open,
            TransitionReason::ProbesFailed {
                failure_rate: 100.0,
                slow_call_rate: 0.0,
            },
        ),
        (
            State::Open,
            State::HalfOpen,
            TransitionReason::OpenDurationElapsed,
        ),
        (
            State::HalfOpen,
            State::Closed,
            TransitionReason::ProbesSucceeded,
        ),
        (State::Closed, State::ForcedOpen, TransitionReason::Operator),
    ];
    assert_eq!(got, expected);
}

#[tokio::test(start_paused = true)]
async fn a_running_breakers_config_seeds_an_independent_breaker_alike() {
    let first = CircuitBreakerLayer::new(base().build().unwrap());
    // The handle's config is data: a second layer built from it is a second breaker.
    let second = CircuitBreakerLayer::new(first.handle().config());
    assert_eq!(second.handle().config().minimum_calls(), 4);
    first.handle().force_open();
    assert_eq!(
        second.handle().state(),
        State::Closed,
        "not the same breaker"
    );
    assert_eq!(
        first
            .layer(service_fn(|(): ()| async { Ok::<_, BoxError>(()) }))
            .handle()
            .state(),
        State::ForcedOpen
    );
}

/// A probe that hangs (no timeout below the breaker) cannot keep the breaker half-open:
/// rejections meanwhile carry a useful `retry_after`, and at `max_probe_duration` the probe
/// counts as a failure.
#[tokio::test(start_paused = true)]
async fn a_hung_probe_does_not_keep_the_breaker_half_open() {
    let layer = CircuitBreakerLayer::new(
        base()
            .half_open_probes(1)
            .max_probe_duration(5 * SEC)
            .build()
            .unwrap(),
    );
    let handle = layer.handle();
    // 0: fail, 1: hang forever, 2: succeed.
    let svc = layer.layer(service_fn(|kind: u8| async move {
        match kind {
            0 => Err::<(), BoxError>("down".into()),
            1 => std::future::pending().await,
            _ => Ok(()),
        }
    }));
    for _ in 0..4 {
        let _ = svc.clone().oneshot(0).await;
    }
    assert_eq!(handle.state(), State::Open);
    advance(10 * SEC).await;
    let hung = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    let err = svc.clone().oneshot(2).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(
        open.retry_after(),
        Some(SEC),
        "not 0s: a tenth of the 10s open period (the probe is due in 5s)"
    );
    advance(5 * SEC).await;
    // The probe is overdue: it counts as a failure and the breaker re-opens.
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Some(10 * SEC)
    );
    assert_eq!(handle.state(), State::Open);
    advance(10 * SEC).await;
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "recovers once probes answer");
    hung.abort();
}

/// An upstream said "slow down for 30s": the handle opens the breaker for that long without
/// a failure in the window, then it probes as usual.
#[tokio::test(start_paused = true)]
async fn open_for_and_open_until_pause_the_backend_without_a_failure() {
    let layer = CircuitBreakerLayer::new(base().half_open_probes(1).build().unwrap());
    let handle = layer.handle();
    let calls = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&calls);
    let svc = layer.layer(service_fn(move |()| {
        *counted.lock().unwrap() += 1;
        async { Ok::<_, BoxError>(()) }
    }));
    svc.clone().oneshot(()).await.unwrap();
    handle.open_for(30 * SEC);
    assert_eq!(handle.state(), State::Open);
    advance(10 * SEC).await;
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Some(20 * SEC)
    );
    assert_eq!(*calls.lock().unwrap(), 1, "the backend was not called");
    advance(20 * SEC).await;
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().failures, 0);

    handle.open_until(tokio::time::Instant::now() + 5 * SEC);
    assert_eq!(handle.retry_after(), Some(5 * SEC));
    advance(5 * SEC).await;
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    // "Forever" saturates instead of panicking; reset ends it.
    handle.open_for(Duration::MAX);
    assert!(svc.clone().oneshot(()).await.is_err());
    handle.reset();
    svc.clone().oneshot(()).await.unwrap();
}
